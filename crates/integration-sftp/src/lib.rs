#![doc = include_str!("../README.md")]

mod client;
mod connection;
mod definition;
pub mod host_key;
mod private_key;
mod target;

use std::time::Duration;

use russh_sftp::protocol::FileAttributes;
use serde::Serialize;

pub use client::{RefusalHook, SftpClient};
pub use connection::presented_host_key;
pub use definition::{Sftp, client};
pub use host_key::{ACCEPT_ANY, HostKeyPolicy};
pub use target::server_address;

/// Timeouts and transfer tuning.
#[derive(Debug, Clone)]
pub struct SftpSettings {
    /// Connecting, checking the host key, logging in and starting SFTP.
    pub connect_timeout: Duration,
    /// Each SFTP request, from sending it to its answer.
    pub request_timeout: Duration,
    /// A connection unused this long is closed.
    pub idle_timeout: Duration,
    /// A keepalive goes out after this long without a word from the server;
    /// three unanswered close the connection.
    pub keepalive_interval: Duration,
    /// Read or write requests in flight during a transfer.
    pub requests_in_flight: usize,
    /// Bytes per read or write request, lowered to the server's limits.
    pub chunk_size: u32,
}

impl Default for SftpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
            requests_in_flight: 64,
            // OpenSSH's sftp-server takes up to 255 KiB per request.
            chunk_size: 255 * 1024,
        }
    }
}

/// How [`SftpClient::write_from`] writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Write to a temporary name beside the file and rename it into place
    /// when complete.
    pub atomic: bool,
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (listings do not follow links).
    Symlink,
    /// Anything else, or unknown.
    Other,
}

/// A file's attributes, as far as the server tells them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    /// File, directory, link or other.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Permission bits, e.g. 420 (`0o644`).
    pub permissions: Option<u32>,
    /// Last modification, Unix seconds.
    pub modified: Option<u32>,
    /// Owner's user id.
    pub uid: Option<u32>,
    /// Owner's group id.
    pub gid: Option<u32>,
}

impl FileInfo {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }
}

impl From<&FileAttributes> for FileInfo {
    fn from(attributes: &FileAttributes) -> Self {
        let kind = if attributes.permissions.is_none() {
            FileKind::Other
        } else if attributes.is_dir() {
            FileKind::Directory
        } else if attributes.is_symlink() {
            FileKind::Symlink
        } else if attributes.is_regular() {
            FileKind::File
        } else {
            FileKind::Other
        };
        Self {
            kind,
            size: attributes.size,
            permissions: attributes.permissions.map(|mode| mode & 0o7777),
            modified: attributes.mtime,
            uid: attributes.uid,
            gid: attributes.gid,
        }
    }
}

/// An entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirEntry {
    /// The entry's name within the directory.
    pub name: String,
    /// Its attributes (a link's own, not its target's).
    pub info: FileInfo,
}
