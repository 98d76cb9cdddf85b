//! The gateway's local socket, `gateway.sock` in the data directory: how
//! the `integrations` commands reach a running gateway on the same machine.
//!
//! The embedded store belongs to one process; while `integrations serve`
//! holds it, the commands make their store calls through the gateway
//! instead ([`SocketStorage`]), and `integrations status` asks it what it
//! runs ([`GatewayStatus`]). The socket is the owner's only (mode 0600, in
//! the owner's 0700 data directory): whoever may connect may read the
//! store's files and its key anyway, so it asks for no API key.

mod client;
mod protocol;
mod server;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use integrations::time::OffsetDateTime;
use serde::{Deserialize, Serialize};

pub use client::{LocalGateway, SocketStorage};
pub use server::LocalService;

/// The socket's name in the data directory.
pub const SOCKET_NAME: &str = "gateway.sock";

/// What a running gateway says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Its process id.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// Where it listens, `http://…`.
    pub address: String,
    /// Its store, as `integrations serve` logs it (never a password).
    pub store: String,
    /// Whether the commands use its store through the socket (the embedded
    /// store), rather than reaching the store themselves (a database).
    #[serde(default)]
    pub store_shared: bool,
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
            address,
            store,
            store_shared: false,
            started_at: OffsetDateTime::now_utc(),
        }
    }
}

/// A bound local socket; its file is removed when this is dropped.
#[derive(Debug)]
pub struct LocalSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl LocalSocket {
    /// Binds `path` with mode 0600. A file left there by a gateway that
    /// stopped without removing it is replaced; a socket another process
    /// still answers on is refused (`AddrInUse`).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let listener = match UnixListener::bind(path) {
            Ok(listener) => listener,
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another gateway answers on {}", path.display()),
                    ));
                }
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            Err(error) => return Err(error),
        };
        // Bound with the umask's mode: made the owner's only before any use.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            path: path.to_owned(),
            listener: Some(listener),
        })
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
        let _ = std::fs::remove_file(&self.path);
    }
}
