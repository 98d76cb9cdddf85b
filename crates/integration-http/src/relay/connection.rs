//! Connections to upstream servers, plain or TLS, and the per-thread pool
//! of idle ones.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use rustc_hash::FxHashMap;
use rustls::pki_types::ServerName;
use thread_local::ThreadLocal;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use url::{Host, Position, Url};

use super::RelayError;

/// The most idle connections kept per origin and thread.
const MAX_IDLE_PER_ORIGIN: usize = 256;
/// A connection idle longer than this is checked for a close by the server
/// before it is used again.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Where connections go: scheme, host and port, read from a URL without
/// copying it.
#[derive(Debug)]
pub(crate) struct Origin<'u> {
    /// `host[:port]` as the URL spells it (without user info), as the
    /// `Host` header wants it: with `tls`, the pool's key.
    pub(crate) authority: &'u str,
    tls: bool,
    host: Host<&'u str>,
    port: u16,
}

impl<'u> Origin<'u> {
    pub(crate) fn of(url: &'u Url) -> io::Result<Self> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            scheme => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unsupported URL scheme `{scheme}`"),
                ));
            }
        };
        let host = url
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the URL has no host"))?;
        let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            authority: &url[Position::BeforeHost..Position::AfterPort],
            tls,
            host,
            port,
        })
    }
}

/// An open connection and the bytes read from it and not yet consumed.
pub(crate) struct Connection {
    pub(crate) stream: Stream,
    pub(crate) buffer: BytesMut,
    /// The time limit of the exchange in progress: one timer per
    /// connection, moved on for each request, rather than one per request.
    pub(crate) deadline: Pin<Box<Sleep>>,
    /// Its origin's authority, and whether over TLS: the pool's key.
    authority: Box<str>,
    tls: bool,
    /// Whether it came from the pool, having served a request before.
    reused: bool,
    /// When its last request began: the clock is read once per request,
    /// and a connection idle a little longer than this says is only checked
    /// a little sooner.
    pub(crate) last_used: Instant,
}

impl std::fmt::Debug for Connection {
    /// Without the bytes read: they may hold a response's secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("authority", &self.authority)
            .field("tls", &self.tls)
            .field("buffered", &self.buffer.len())
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn is_reused(&self) -> bool {
        self.reused
    }

    /// Whether an idle connection can still be used: the server has not
    /// closed it, nor sent anything unasked.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.tcp().try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Idle connections of one thread, by authority: plain ones, then TLS ones.
// FxHash rather than SipHash: the keys are the origins this process sends
// to, not values a remote party picks.
type Idle = RefCell<[FxHashMap<Box<str>, Vec<Connection>>; 2]>;

/// Opens connections and keeps idle ones, per thread.
pub(crate) struct Pool {
    idle: ThreadLocal<Idle>,
    tls: TlsConnector,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(mut tls: rustls::ClientConfig, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            idle: ThreadLocal::new(),
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout,
            idle_timeout,
        }
    }

    /// An idle connection to `origin` of this thread.
    pub(crate) fn take_idle(&self, origin: &Origin<'_>, now: Instant) -> Option<Connection> {
        let mut idle = self.idle.get_or_default().borrow_mut();
        let connections = idle[usize::from(origin.tls)].get_mut(origin.authority)?;
        while let Some(connection) = connections.pop() {
            let idle_for = now.saturating_duration_since(connection.last_used);
            if idle_for < CHECK_AFTER_IDLE || (idle_for < self.idle_timeout && connection.is_open()) {
                return Some(connection);
            }
        }
        None
    }

    /// Puts a connection whose exchange ended cleanly back, for the next
    /// request to `origin` on this thread.
    pub(crate) fn check_in(&self, mut connection: Connection) {
        connection.reused = true;
        let mut idle = self.idle.get_or_default().borrow_mut();
        let idle = &mut idle[usize::from(connection.tls)];
        let connections = match idle.get_mut(&*connection.authority) {
            Some(connections) => connections,
            None => idle.entry(connection.authority.clone()).or_default(),
        };
        // The oldest first: those idle too long are closed, not kept.
        let now = connection.last_used;
        while connections
            .first()
            .is_some_and(|oldest| now.saturating_duration_since(oldest.last_used) >= self.idle_timeout)
        {
            connections.remove(0);
        }
        // The oldest are the first to be closed by the server.
        if connections.len() >= MAX_IDLE_PER_ORIGIN {
            connections.remove(0);
        }
        connections.push(connection);
    }

    /// A new connection to `origin`.
    pub(crate) async fn connect(&self, origin: &Origin<'_>) -> Result<Connection, RelayError> {
        // Boxed: a TLS handshake's state is kilobytes, which every request's
        // future would otherwise carry (and copy) for the rare connect.
        let connecting = Box::pin(async {
            let tcp = match &origin.host {
                Host::Domain(name) => TcpStream::connect((*name, origin.port)).await?,
                Host::Ipv4(address) => TcpStream::connect((*address, origin.port)).await?,
                Host::Ipv6(address) => TcpStream::connect((*address, origin.port)).await?,
            };
            tcp.set_nodelay(true)?;
            if !origin.tls {
                return Ok(Stream::Plain(tcp));
            }
            let name = match &origin.host {
                Host::Domain(name) => ServerName::try_from((*name).to_owned())
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?,
                Host::Ipv4(address) => ServerName::from(std::net::IpAddr::V4(*address)),
                Host::Ipv6(address) => ServerName::from(std::net::IpAddr::V6(*address)),
            };
            let tls = self.tls.connect(name, tcp).await?;
            Ok(Stream::Tls(Box::new(tls)))
        });
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| RelayError::connect(io::Error::new(io::ErrorKind::TimedOut, "connecting timed out")))?
            .map_err(RelayError::connect)?;
        Ok(Connection {
            stream,
            buffer: BytesMut::with_capacity(8 * 1024),
            deadline: Box::pin(tokio::time::sleep(self.idle_timeout)),
            authority: origin.authority.into(),
            tls: origin.tls,
            reused: false,
            last_used: Instant::now(),
        })
    }
}

/// A connection's byte stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
