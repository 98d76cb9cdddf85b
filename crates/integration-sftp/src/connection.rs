//! One SSH connection with its SFTP channel: host key check, login,
//! subsystem start and the server's limits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_core::{Error, ErrorKind, Result};
use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::{Config as SftpConfig, RawSftpSession};
use secrecy::ExposeSecret;
use tracing::{debug, warn};

use crate::SftpSettings;
use crate::host_key::{HostKeyMismatch, HostKeyPolicy, fingerprint};
use crate::target::{Login, Target};

/// AES-GCM first: with AES-NI it encrypts faster than ChaCha20-Poly1305.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_128_CTR,
];

const POSIX_RENAME: &str = "posix-rename@openssh.com";

/// A logged-in SSH connection and its SFTP session.
pub(crate) struct Connection {
    ssh: Handle<HostKeyCheck>,
    pub(crate) sftp: RawSftpSession,
    /// Bytes per read or write request, within the server's limits.
    pub(crate) chunk: u32,
    pub(crate) posix_rename: bool,
    last_used: Mutex<Instant>,
}

impl Connection {
    /// Connects, checks the host key, logs in and starts the SFTP subsystem,
    /// all within the connect timeout.
    pub(crate) async fn open(target: &Arc<Target>, settings: &SftpSettings) -> Result<Self> {
        let deadline = settings.connect_timeout;
        tokio::time::timeout(deadline, Self::open_unbounded(target, settings))
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "connecting to {}:{} took longer than {} s",
                        target.host,
                        target.port,
                        deadline.as_secs_f32()
                    ),
                ))
            })
    }

    async fn open_unbounded(target: &Arc<Target>, settings: &SftpSettings) -> Result<Self> {
        let config = Arc::new(client::Config {
            keepalive_interval: Some(settings.keepalive_interval),
            keepalive_max: 3,
            // Large windows and packets keep the link busy while requests are in flight.
            window_size: 16 * 1024 * 1024,
            maximum_packet_size: 256 * 1024,
            channel_buffer_size: 256,
            nodelay: true,
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(CIPHERS),
                ..russh::Preferred::default()
            },
            ..client::Config::default()
        });
        let mismatch = Arc::new(Mutex::new(None));
        let check = HostKeyCheck {
            target: Arc::clone(target),
            mismatch: Arc::clone(&mismatch),
        };
        let address = (target.host.as_str(), target.port);
        let mut ssh = match client::connect(config, address, check).await {
            Ok(ssh) => ssh,
            Err(error) => {
                let refused = mismatch.lock().map(|mut slot| slot.take()).unwrap_or_default();
                return Err(match refused {
                    Some(mismatch) => Error::new(
                        ErrorKind::Refused,
                        format!("{}:{}: {mismatch}", target.host, target.port),
                    ),
                    None => transport(target, "cannot connect to", error),
                });
            }
        };

        let user = target.username.expose_secret();
        let outcome = match &target.login {
            Login::Password(password) => ssh.authenticate_password(user, password.expose_secret()).await,
            Login::Key(key) => {
                let hash = ssh
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|error| transport(target, "cannot log in to", error))?
                    .flatten();
                ssh.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
                    .await
            }
        }
        .map_err(|error| transport(target, "cannot log in to", error))?;
        if let client::AuthResult::Failure { remaining_methods, .. } = outcome {
            let accepted: Vec<&str> = remaining_methods.iter().map(<&str>::from).collect();
            let what = match target.login {
                Login::Password(_) => "password",
                Login::Key(_) => "private key",
            };
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    // The username is a credential: it is not quoted.
                    "{}:{} refused the {what} of the account's user (it accepts: {})",
                    target.host,
                    target.port,
                    accepted.join(", ")
                ),
            ));
        }

        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|error| transport(target, "cannot open a channel on", error))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|error| transport(target, "cannot start SFTP on", error))?;
        let sftp = RawSftpSession::new_with_config(
            channel.into_stream(),
            SftpConfig {
                request_timeout_secs: settings.request_timeout.as_secs().max(1),
                ..SftpConfig::default()
            },
        );
        let version = sftp
            .init()
            .await
            .map_err(|error| sftp_transport(target, "cannot start SFTP on", error))?;
        let has = |name: &str, number: &str| version_has(&version.extensions, name, number);
        let mut chunk = settings.chunk_size;
        if has("limits@openssh.com", "1") {
            let limits = sftp
                .limits()
                .await
                .map_err(|error| sftp_transport(target, "cannot read the SFTP limits of", error))?;
            for limit in [limits.max_read_len, limits.max_write_len] {
                if limit > 0 {
                    chunk = chunk.min(u32::try_from(limit).unwrap_or(u32::MAX));
                }
            }
            if limits.max_packet_len > 1024 {
                // Room for the write request's header and handle.
                chunk = chunk.min(u32::try_from(limits.max_packet_len - 1024).unwrap_or(u32::MAX));
            }
        } else {
            // SFTP draft: servers must accept 32 KiB; more is a guess.
            chunk = chunk.min(32 * 1024);
        }
        debug!(host = %target.host, port = target.port, chunk, "SFTP connection open");
        Ok(Self {
            ssh,
            sftp,
            chunk,
            posix_rename: has(POSIX_RENAME, "1"),
            last_used: Mutex::new(Instant::now()),
        })
    }

    /// Whether the SSH connection still stands.
    pub(crate) fn is_open(&self) -> bool {
        !self.ssh.is_closed()
    }

    pub(crate) fn touch(&self) {
        if let Ok(mut last_used) = self.last_used.lock() {
            *last_used = Instant::now();
        }
    }

    pub(crate) fn idle_for(&self) -> Duration {
        self.last_used.lock().map(|last| last.elapsed()).unwrap_or_default()
    }

    pub(crate) async fn close(&self) {
        let _ = self.sftp.close_session();
        let _ = self.ssh.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

fn version_has(extensions: &std::collections::HashMap<String, String>, name: &str, version: &str) -> bool {
    extensions.get(name).is_some_and(|value| value == version)
}

fn transport(target: &Target, action: &str, error: russh::Error) -> Error {
    let kind = match error {
        russh::Error::ConnectionTimeout | russh::Error::KeepaliveTimeout | russh::Error::InactivityTimeout => {
            ErrorKind::Timeout
        }
        _ => ErrorKind::Transport,
    };
    Error::new(kind, format!("{action} {}:{}: {error}", target.host, target.port))
}

fn sftp_transport(target: &Target, action: &str, error: russh_sftp::client::error::Error) -> Error {
    let kind = match error {
        russh_sftp::client::error::Error::Timeout => ErrorKind::Timeout,
        _ => ErrorKind::Transport,
    };
    Error::new(kind, format!("{action} {}:{}: {error}", target.host, target.port))
}

/// The SHA256 fingerprint of the host key the server at `host:port`
/// presents, read without logging in, within `timeout`: for someone to
/// confirm it before trusting it.
pub async fn presented_host_key(host: &str, port: u16, timeout: Duration) -> Result<String> {
    let presented = Arc::new(Mutex::new(None));
    let handler = PresentedKey(Arc::clone(&presented));
    let config = Arc::new(client::Config::default());
    let connected = tokio::time::timeout(timeout, client::connect(config, (host, port), handler)).await;
    if let Some(fingerprint) = presented.lock().ok().and_then(|mut slot| slot.take()) {
        return Ok(fingerprint);
    }
    Err(match connected {
        Err(_) => Error::new(
            ErrorKind::Timeout,
            format!(
                "connecting to {host}:{port} took longer than {} s",
                timeout.as_secs_f32()
            ),
        ),
        Ok(Err(error)) => Error::new(
            ErrorKind::Transport,
            format!("cannot connect to {host}:{port}: {error}"),
        ),
        Ok(Ok(_)) => Error::new(ErrorKind::Transport, format!("{host}:{port} presented no host key")),
    })
}

/// A russh handler that keeps the presented key's fingerprint, then ends
/// the connection.
struct PresentedKey(Arc<Mutex<Option<String>>>);

impl client::Handler for PresentedKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, presented: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = presented
            && let Ok(mut slot) = self.0.lock()
        {
            *slot = Some(fingerprint(key));
        }
        Ok(false)
    }
}

/// The russh handler: checks the host key against the account's policy.
pub(crate) struct HostKeyCheck {
    target: Arc<Target>,
    mismatch: Arc<Mutex<Option<HostKeyMismatch>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, presented: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let target = &self.target;
        let PublicKeyOrCertificate::PublicKey { key, .. } = presented else {
            // Host certificates are not offered in the negotiation, so none should arrive.
            return Ok(false);
        };
        match &target.host_keys {
            HostKeyPolicy::AcceptAny => {
                warn!(
                    account = %target.account,
                    host = %target.host,
                    port = target.port,
                    fingerprint = %fingerprint(key),
                    "accepting the server's host key unchecked: the account's host_key is insecure-accept-any"
                );
                Ok(true)
            }
            policy => match policy.check(&target.host, target.port, key) {
                Ok(()) => Ok(true),
                Err(mismatch) => {
                    warn!(account = %target.account, host = %target.host, port = target.port, "{mismatch}");
                    if let Ok(mut slot) = self.mismatch.lock() {
                        *slot = Some(mismatch);
                    }
                    Ok(false)
                }
            },
        }
    }
}
