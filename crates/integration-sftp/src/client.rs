//! The per-account client: one connection reused, reopened when it
//! dropped, closed when idle; the file operations.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Weak};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use integration_core::definition::Integration;
use integration_core::{ConnectedAccount, Error, ErrorKind, Result};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use tracing::debug;

use crate::connection::Connection;
use crate::target::Target;
use crate::{DirEntry, FileInfo, SftpSettings, WriteOptions};

/// SFTP through one connected account.
///
/// Cheap to clone; clones share the connection. The connection opens on
/// the first call, is reused by the next ones (concurrent calls share it),
/// is reopened when it dropped, and closes after
/// [`idle_timeout`](SftpSettings::idle_timeout) without use.
#[derive(Clone, Debug)]
pub struct SftpClient {
    inner: Arc<Inner>,
}

struct Inner {
    target: Arc<Target>,
    settings: SftpSettings,
    slot: Mutex<Option<Arc<ConnectionHandle>>>,
    refused: Option<RefusalHook>,
}

/// Called when the server refuses the account's login or presents a host
/// key the account does not trust.
pub type RefusalHook = Arc<dyn Fn(&Error) + Send + Sync>;

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("target", &self.target)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A connection in the slot; closed when the last user lets go of it
/// after it left the slot.
struct ConnectionHandle(Connection);

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl SftpClient {
    /// A client for `account` of `integration` (an `sftp` integration).
    /// Checks the credentials (private key, host keys) now; connects on
    /// first use.
    pub fn new(integration: &Integration, account: &ConnectedAccount, settings: SftpSettings) -> Result<Self> {
        let target = Arc::new(Target::new(integration, account)?);
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                settings,
                slot: Mutex::new(None),
                refused: None,
            }),
        })
    }

    /// Calls `hook` whenever connecting fails because the server refused
    /// the login or its host key is not trusted (the account's credentials
    /// no longer work), rather than for a network failure. Set it before
    /// the client is cloned; later it is ignored.
    pub fn on_refused(mut self, hook: RefusalHook) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.refused = Some(hook);
        }
        self
    }

    /// Connects now if no connection is open: checks the host key and the
    /// login without doing anything else.
    pub async fn connect(&self) -> Result<()> {
        self.connection().await.map(|_| ())
    }

    /// Closes the connection, if one is open. The next call opens another.
    pub async fn close(&self) {
        let connection = self.inner.slot.lock().await.take();
        if let Some(connection) = connection {
            connection.0.close().await;
        }
    }

    /// The entries of directory `path`, without `.` and `..`, sorted by name.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        check_path(path)?;
        self.retrying("list", path, |connection| async move {
            let sftp = &connection.0.sftp;
            let handle = sftp.opendir(path).await?.handle;
            let mut entries = Vec::new();
            let outcome = loop {
                match sftp.readdir(handle.as_str()).await {
                    Ok(name) => entries.extend(
                        name.files
                            .into_iter()
                            .filter(|file| file.filename != "." && file.filename != "..")
                            .map(|file| DirEntry {
                                name: file.filename,
                                info: FileInfo::from(&file.attrs),
                            }),
                    ),
                    Err(SftpError::Status(status)) if status.status_code == StatusCode::Eof => break Ok(()),
                    Err(error) => break Err(error),
                }
            };
            let _ = sftp.close(handle).await;
            outcome?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await
    }

    /// What `path` is (symbolic links followed).
    pub async fn stat(&self, path: &str) -> Result<FileInfo> {
        check_path(path)?;
        self.retrying("stat", path, |connection| async move {
            Ok(FileInfo::from(&connection.0.sftp.stat(path).await?.attrs))
        })
        .await
    }

    /// Whether `path` exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Renames `from` to `to`. An existing file at `to` is replaced when the
    /// server supports `posix-rename@openssh.com` (OpenSSH does), as `mv`
    /// does; other servers refuse to overwrite.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        check_path(from)?;
        check_path(to)?;
        self.retrying("rename", from, |connection| async move {
            rename_on(&connection.0, from, to).await
        })
        .await
    }

    /// Removes file `path`.
    pub async fn remove(&self, path: &str) -> Result<()> {
        check_path(path)?;
        self.retrying("remove", path, |connection| async move {
            connection.0.sftp.remove(path).await.map(drop)
        })
        .await
    }

    /// Creates directory `path`; with `parents`, the missing directories
    /// above it too, and an existing directory is no error (`mkdir -p`).
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<()> {
        check_path(path)?;
        if !parents {
            return self
                .retrying("mkdir", path, |connection| async move {
                    connection.0.sftp.mkdir(path, FileAttributes::empty()).await.map(drop)
                })
                .await;
        }
        let mut prefix = String::with_capacity(path.len());
        if path.starts_with('/') {
            prefix.push('/');
        }
        for component in path.split('/').filter(|component| !component.is_empty()) {
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            prefix.push_str(component);
            match self.stat(&prefix).await {
                Ok(info) if info.is_dir() => continue,
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("mkdir {path}: {prefix} exists and is not a directory"),
                    ));
                }
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            let dir = prefix.as_str();
            let made = self
                .retrying("mkdir", dir, |connection| async move {
                    connection.0.sftp.mkdir(dir, FileAttributes::empty()).await.map(drop)
                })
                .await;
            // Another client may have made it meanwhile.
            if let Err(error) = made
                && !self.stat(dir).await.is_ok_and(|info| info.is_dir())
            {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Removes the empty directory `path`.
    pub async fn rmdir(&self, path: &str) -> Result<()> {
        check_path(path)?;
        self.retrying("rmdir", path, |connection| async move {
            connection.0.sftp.rmdir(path).await.map(drop)
        })
        .await
    }

    /// Streams file `path` into `out`, with many read requests in flight;
    /// returns the number of bytes written. `out` is flushed, not shut down.
    pub async fn read_to<W>(&self, path: &str, out: &mut W) -> Result<u64>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        check_path(path)?;
        let connection = self.connection().await?;
        let sftp = &connection.0.sftp;
        let handle = sftp
            .open(path, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|error| self.failed(&connection, "read", path, error))?
            .handle;
        let outcome = self.download(&connection, &handle, path, out).await;
        let _ = sftp.close(handle).await;
        connection.0.touch();
        outcome
    }

    async fn download<W>(&self, connection: &ConnectionHandle, handle: &str, path: &str, out: &mut W) -> Result<u64>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let sftp = &connection.0.sftp;
        let chunk = u64::from(connection.0.chunk);
        let read = |offset: u64, len: u64| async move {
            let len = u32::try_from(len).unwrap_or(u32::MAX);
            (offset, len, sftp.read(handle, offset, len).await)
        };
        let mut in_flight = FuturesOrdered::new();
        let mut next_offset = 0;
        let mut written = 0;
        let mut end = false;
        loop {
            while !end && in_flight.len() < self.inner.settings.requests_in_flight {
                in_flight.push_back(read(next_offset, chunk));
                next_offset += chunk;
            }
            let Some((offset, len, outcome)) = in_flight.next().await else {
                break;
            };
            let mut position = offset;
            let mut outcome = outcome;
            // A short read leaves a gap before the next request's offset: fill it first.
            loop {
                match outcome {
                    Ok(data) if !data.data.is_empty() => {
                        out.write_all(&data.data)
                            .await
                            .map_err(|error| local_write(path, error))?;
                        position += data.data.len() as u64;
                        written += data.data.len() as u64;
                    }
                    Ok(_) => {
                        end = true;
                        break;
                    }
                    Err(SftpError::Status(status)) if status.status_code == StatusCode::Eof => {
                        end = true;
                        break;
                    }
                    Err(error) => return Err(self.failed(connection, "read", path, error)),
                }
                if position >= offset + u64::from(len) {
                    break;
                }
                outcome = read(position, offset + u64::from(len) - position).await.2;
            }
            if end {
                break;
            }
        }
        drop(in_flight);
        out.flush().await.map_err(|error| local_write(path, error))?;
        Ok(written)
    }

    /// Streams `input` into file `path`, with many write requests in
    /// flight; returns the number of bytes written. With
    /// [`WriteOptions::atomic`], the data goes to a temporary name beside
    /// `path` and is renamed over it when complete, so readers never see a
    /// partial file; the temporary file is removed on failure.
    pub async fn write_from<R>(&self, path: &str, input: &mut R, options: WriteOptions) -> Result<u64>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        check_path(path)?;
        let connection = self.connection().await?;
        let destination = if options.atomic {
            temporary_name(path)
        } else {
            path.to_owned()
        };
        let sftp = &connection.0.sftp;
        let handle = sftp
            .open(
                destination.as_str(),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                FileAttributes::empty(),
            )
            .await
            .map_err(|error| self.failed(&connection, "write", path, error))?
            .handle;
        let outcome = self.upload(&connection, &handle, path, input).await;
        let closed = sftp.close(handle).await;
        let outcome = match (outcome, closed) {
            (Ok(written), Ok(_)) => Ok(written),
            (Ok(_), Err(error)) => Err(self.failed(&connection, "write", path, error)),
            (Err(error), _) => Err(error),
        };
        let outcome = match outcome {
            Ok(written) if options.atomic => rename_on(&connection.0, &destination, path)
                .await
                .map(|()| written)
                .map_err(|error| self.failed(&connection, "rename into", path, error)),
            other => other,
        };
        if outcome.is_err() && options.atomic && connection.0.is_open() {
            let _ = sftp.remove(destination.as_str()).await;
        }
        connection.0.touch();
        outcome
    }

    async fn upload<R>(
        &self,
        connection: &Arc<ConnectionHandle>,
        handle: &str,
        path: &str,
        input: &mut R,
    ) -> Result<u64>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let chunk = connection.0.chunk as usize;
        let mut in_flight = VecDeque::with_capacity(self.inner.settings.requests_in_flight);
        let mut offset = 0u64;
        let outcome = async {
            loop {
                let mut buffer = vec![0; chunk];
                let mut filled = 0;
                while filled < chunk {
                    match input.read(&mut buffer[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(error) => {
                            return Err(Error::new(
                                ErrorKind::Transport,
                                format!("write {path}: reading the data to send failed: {error}"),
                            ));
                        }
                    }
                }
                if filled == 0 {
                    break;
                }
                buffer.truncate(filled);
                // Spawned so that the request goes out now, while the next chunk is read.
                let writer = Arc::clone(connection);
                let handle = handle.to_owned();
                let at = offset;
                in_flight.push_back(tokio::spawn(async move {
                    writer.0.sftp.write(handle, at, buffer).await.map(drop)
                }));
                offset += filled as u64;
                if in_flight.len() >= self.inner.settings.requests_in_flight
                    && let Some(oldest) = in_flight.pop_front()
                {
                    self.acknowledged(connection, path, oldest).await?;
                }
                if filled < chunk {
                    break;
                }
            }
            while let Some(oldest) = in_flight.pop_front() {
                self.acknowledged(connection, path, oldest).await?;
            }
            Ok(offset)
        }
        .await;
        for task in in_flight {
            task.abort();
        }
        outcome
    }

    async fn acknowledged(
        &self,
        connection: &ConnectionHandle,
        path: &str,
        task: tokio::task::JoinHandle<Result<(), SftpError>>,
    ) -> Result<()> {
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.failed(connection, "write", path, error)),
            Err(error) => Err(Error::new(ErrorKind::Transport, format!("write {path}: {error}"))),
        }
    }

    /// Runs an operation that is safe to repeat; repeats it once on a fresh
    /// connection when a reused one turned out to be broken.
    async fn retrying<'a, T, F, Fut>(&'a self, action: &str, path: &str, operation: F) -> Result<T>
    where
        F: Fn(Arc<ConnectionHandle>) -> Fut,
        Fut: Future<Output = Result<T, SftpError>> + 'a,
    {
        let (connection, fresh) = self.connection_and_age().await?;
        match operation(Arc::clone(&connection)).await {
            Ok(value) => {
                connection.0.touch();
                Ok(value)
            }
            Err(error) if !fresh && is_broken(&error) => {
                debug!(account = %self.inner.target.account, %error, "reused SFTP connection broken; reconnecting");
                self.discard(&connection).await;
                let connection = self.connection().await?;
                let outcome = operation(Arc::clone(&connection)).await;
                connection.0.touch();
                outcome.map_err(|error| self.failed(&connection, action, path, error))
            }
            Err(error) => Err(self.failed(&connection, action, path, error)),
        }
    }

    async fn connection(&self) -> Result<Arc<ConnectionHandle>> {
        self.connection_and_age().await.map(|(connection, _)| connection)
    }

    /// The open connection, or a new one; and whether it is new.
    async fn connection_and_age(&self) -> Result<(Arc<ConnectionHandle>, bool)> {
        let mut slot = self.inner.slot.lock().await;
        if let Some(connection) = slot.as_ref().filter(|connection| connection.0.is_open()) {
            connection.0.touch();
            return Ok((Arc::clone(connection), false));
        }
        let opened = Connection::open(&self.inner.target, &self.inner.settings).await;
        // Only a refused login or host key is `Refused` when connecting.
        if let (Err(error), Some(hook)) = (&opened, &self.inner.refused)
            && error.kind() == ErrorKind::Refused
        {
            hook(error);
        }
        let connection = Arc::new(ConnectionHandle(opened?));
        *slot = Some(Arc::clone(&connection));
        tokio::spawn(close_when_idle(
            Arc::downgrade(&self.inner),
            Arc::downgrade(&connection),
        ));
        Ok((connection, true))
    }

    /// Takes `connection` out of the slot (if still there) so that the next
    /// call opens another.
    async fn discard(&self, connection: &ConnectionHandle) {
        take_if_current(&mut *self.inner.slot.lock().await, connection);
    }

    /// The error for a failed SFTP call; a broken connection leaves the slot.
    fn failed(&self, connection: &ConnectionHandle, action: &str, path: &str, error: SftpError) -> Error {
        if is_broken(&error) || !connection.0.is_open() {
            // A later call sees `is_open() == false` or a timeout again; make sure it reconnects.
            if let Ok(mut slot) = self.inner.slot.try_lock() {
                take_if_current(&mut slot, connection);
            }
        }
        sftp_error(action, path, error, &self.inner.settings)
    }
}

/// Empties `slot` if it holds `connection`, so that the next call opens
/// another; a newer connection in the slot stays.
fn take_if_current(slot: &mut Option<Arc<ConnectionHandle>>, connection: &ConnectionHandle) {
    if slot.as_deref().is_some_and(|current| std::ptr::eq(current, connection)) {
        slot.take();
    }
}

/// Closes the connection once it has been idle for the idle timeout and no
/// call holds it.
async fn close_when_idle(client: Weak<Inner>, connection: Weak<ConnectionHandle>) {
    let Some(idle_timeout) = client.upgrade().map(|client| client.settings.idle_timeout) else {
        return;
    };
    let period = (idle_timeout / 4).max(std::time::Duration::from_millis(50));
    loop {
        tokio::time::sleep(period).await;
        let (Some(client), Some(held)) = (client.upgrade(), connection.upgrade()) else {
            return;
        };
        if !held.0.is_open() {
            return;
        }
        if held.0.idle_for() < idle_timeout {
            continue;
        }
        let mut slot = client.slot.lock().await;
        // Held by the slot and by this task only: nobody is using it.
        if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, &held)) && Arc::strong_count(&held) == 2 {
            slot.take();
            drop(slot);
            debug!(account = %client.target.account, "closing idle SFTP connection");
            held.0.close().await;
            return;
        }
    }
}

async fn rename_on(connection: &Connection, from: &str, to: &str) -> Result<(), SftpError> {
    if !connection.posix_rename {
        return connection.sftp.rename(from, to).await.map(drop);
    }
    let mut data = Vec::with_capacity(8 + from.len() + to.len());
    for text in [from, to] {
        data.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_be_bytes());
        data.extend_from_slice(text.as_bytes());
    }
    match connection.sftp.extended("posix-rename@openssh.com", data).await? {
        Packet::Status(status) if status.status_code == StatusCode::Ok => Ok(()),
        Packet::Status(status) => Err(SftpError::Status(status)),
        _ => Err(SftpError::UnexpectedPacket),
    }
}

/// `dir/.name.<random>.part` beside `path`.
fn temporary_name(path: &str) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((dir, name)) => (Some(dir), name),
        None => (None, path),
    };
    let name = format!(".{name}.{:016x}.part", fastrand::u64(..));
    match dir {
        Some(dir) => format!("{dir}/{name}"),
        None => name,
    }
}

fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, "the path is empty"));
    }
    if path.contains('\0') {
        return Err(Error::new(ErrorKind::InvalidInput, "the path contains a NUL character"));
    }
    Ok(())
}

/// Whether `error` means the connection (not the file) failed.
fn is_broken(error: &SftpError) -> bool {
    !matches!(error, SftpError::Status(_) | SftpError::Limited(_))
}

fn local_write(path: &str, error: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Transport,
        format!("read {path}: writing the received data failed: {error}"),
    )
}

fn sftp_error(action: &str, path: &str, error: SftpError, settings: &SftpSettings) -> Error {
    match error {
        SftpError::Status(status) => {
            let kind = match status.status_code {
                StatusCode::NoSuchFile => ErrorKind::NotFound,
                StatusCode::PermissionDenied => ErrorKind::Refused,
                // OpenSSH answers a generic failure for what the file system
                // refused: the path exists, the directory is not empty...
                StatusCode::Failure => ErrorKind::Conflict,
                _ => ErrorKind::Provider,
            };
            let reason = if status.error_message.is_empty() {
                status.status_code.to_string()
            } else {
                status.error_message
            };
            Error::new(kind, format!("{action} {path}: {reason}"))
        }
        SftpError::Timeout => Error::new(
            ErrorKind::Timeout,
            format!(
                "{action} {path}: the server did not answer within {} s",
                settings.request_timeout.as_secs()
            ),
        ),
        SftpError::Limited(reason) => Error::new(ErrorKind::Provider, format!("{action} {path}: {reason}")),
        other => Error::new(
            ErrorKind::Transport,
            format!("{action} {path}: the connection broke ({other})"),
        ),
    }
}
