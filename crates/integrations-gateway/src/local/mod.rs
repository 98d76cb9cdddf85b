//! The gateway's local socket, `gateway.sock` in the data directory: how
//! the `integrations` commands reach a running gateway on the same machine.
//!
//! The embedded store belongs to one process; while `integrations serve`
//! holds it, the commands make their store calls through the gateway
//! instead ([`SocketStorage`]), and `integrations status` asks it what it
//! runs ([`GatewayStatus`]). Only sealed records cross the socket: the
//! command seals and opens them with its own keyring, which must be the
//! gateway's. The socket asks for no API key because only its owner can
//! reach it: it is bound in the owner's private (0700) data directory,
//! with mode 0600.

mod client;
mod protocol;
mod server;

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use integrations::time::OffsetDateTime;
use serde::{Deserialize, Serialize};

pub use client::{LocalGateway, SocketStorage};
pub use server::LocalService;

/// The socket's name in the data directory.
pub const SOCKET_NAME: &str = "gateway.sock";

/// The version of what goes over the socket; a command refuses a gateway
/// that speaks another.
pub const PROTOCOL: u32 = 2;

/// What a running gateway says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Its process id.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// The version of the socket's calls it speaks ([`PROTOCOL`]).
    #[serde(default)]
    pub protocol: u32,
    /// Where it listens, `http://…`.
    pub address: String,
    /// Its store, as `integrations serve` logs it (never a password).
    pub store: String,
    /// Whether the commands use its store through the socket (the embedded
    /// store), rather than reaching the store themselves (a database).
    #[serde(default)]
    pub store_shared: bool,
    /// Whether its store keeps webhook endpoints.
    #[serde(default)]
    pub store_keeps_webhooks: bool,
    /// The ids of the keys it opens records with, the sealing one first
    /// (public fingerprints, not keys).
    #[serde(default)]
    pub key_ids: Vec<String>,
    /// When it started.
    #[serde(with = "integrations::time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

impl GatewayStatus {
    /// This process, listening on `address`, on `store`.
    pub fn of_this_process(address: String, store: String) -> Self {
        Self {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL,
            address,
            store,
            store_shared: false,
            store_keeps_webhooks: false,
            key_ids: Vec::new(),
            started_at: OffsetDateTime::now_utc(),
        }
    }
}

/// A bound local socket; its file is removed when this is dropped, if it
/// is still this socket's.
#[derive(Debug)]
pub struct LocalSocket {
    path: PathBuf,
    /// The socket file's device and inode, to remove only this one.
    file: (u64, u64),
    listener: Option<UnixListener>,
}

impl LocalSocket {
    /// Binds `path` with mode 0600, in a directory that must be a private
    /// (0700) directory of this process's user. A socket left there by a
    /// gateway that stopped without removing it is replaced; a socket
    /// another process answers on is refused (`AddrInUse`), and so is
    /// anything else at the path (a file, a symlink), which is left as it
    /// is.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let refused = |message: String| io::Error::new(io::ErrorKind::PermissionDenied, message);
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir_meta = std::fs::symlink_metadata(dir)?;
        if !dir_meta.is_dir() || dir_meta.mode() & 0o077 != 0 {
            return Err(refused(format!(
                "{} is not a private directory (mode 0700): no socket is made in it",
                dir.display()
            )));
        }
        match std::fs::symlink_metadata(path) {
            Ok(existing) if existing.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("another gateway answers on {}", path.display()),
                        ));
                    }
                    // Nobody listens: a gateway stopped without removing it.
                    Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
                    Err(error) => return Err(error),
                }
            }
            Ok(_) => {
                return Err(refused(format!(
                    "{} exists and is not a socket: it is left as it is; remove it",
                    path.display()
                )));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let listener = UnixListener::bind(path)?;
        let bound = std::fs::symlink_metadata(path)?;
        let socket = Self {
            path: path.to_owned(),
            file: (bound.dev(), bound.ino()),
            listener: Some(listener),
        };
        // The socket is this process's: a directory of another user could
        // have its entries swapped (root serving a user's directory).
        if dir_meta.uid() != bound.uid() {
            return Err(refused(format!(
                "{} belongs to another user: no socket is made in it",
                dir.display()
            )));
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(socket)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its listener, to [`serve`] (once); the file stays until this value
    /// is dropped.
    pub fn take_listener(&mut self) -> io::Result<UnixListener> {
        self.listener
            .take()
            .ok_or_else(|| io::Error::other("the local socket's listener was taken already"))
    }
}

/// Serves `service` on `listener` until the task is dropped; call from a
/// tokio runtime.
pub async fn serve(listener: UnixListener, service: LocalService) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    axum::serve(listener, service.router()).await
}

impl Drop for LocalSocket {
    fn drop(&mut self) {
        // Another gateway may have taken the path over since: its socket stays.
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|file| (file.dev(), file.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
