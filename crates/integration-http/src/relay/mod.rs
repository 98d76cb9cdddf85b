//! The transport of [`forward`]: a lean HTTP/1.1 client over pooled
//! connections, plain or TLS (rustls).
//!
//! A proxied request is one write and, for a small response, one read:
//! the request is written from the prepared URL and headers straight into
//! one buffer, and the response head is parsed (httparse) in the task that
//! awaits it. A general-purpose client (hyper's) drives each connection
//! from a task of its own and hands requests, responses and body chunks
//! across channels, which cost a proxy more CPU than the forwarding itself.
//!
//! Connections are kept per thread and per origin (scheme, host, port), so
//! a server that runs one single-threaded runtime per core never shares
//! one across threads.
//!
//! [`forward`]: crate::RequestBuilder::forward

mod body;
mod chunked;
mod connection;
mod head;

use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{Method, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use url::Url;

pub use body::ForwardBody;
pub(crate) use body::RelayBody;
use connection::{Connection, Origin, Pool};
pub use head::{RawHeaders, RawResponse};

use crate::headers::AttemptHeaders;
use crate::retry::FailureKind;

/// The most a response head may take; a bigger one is refused.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers a response may have.
const MAX_HEADERS: usize = 128;

/// Headers the transport writes itself, or that describe one connection
/// (RFC 9110 7.6.1): a caller's are not sent.
static MANAGED: [HeaderName; 6] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// The HTTP/1.1 client of [`forward`](crate::RequestBuilder::forward).
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    pool: Arc<Pool>,
}

/// An attempt that got no response: how it failed, for the retry policy.
#[derive(Debug)]
pub(crate) struct RelayError {
    pub(crate) kind: FailureKind,
    pub(crate) source: io::Error,
}

impl RelayError {
    fn connect(source: io::Error) -> Self {
        Self {
            kind: FailureKind::Connect,
            source,
        }
    }

    fn timeout() -> Self {
        Self {
            kind: FailureKind::Timeout,
            source: io::Error::new(io::ErrorKind::TimedOut, "no response within the time limit"),
        }
    }

    fn exchange(source: io::Error) -> Self {
        Self {
            kind: FailureKind::Exchange,
            source,
        }
    }
}

impl Relay {
    pub(crate) fn new(tls: rustls::ClientConfig, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            pool: Arc::new(Pool::new(tls, connect_timeout, idle_timeout)),
        }
    }

    /// Sends one request and reads the response head; the body streams from
    /// the connection, which goes back to the pool once it is read to the
    /// end.
    pub(crate) async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &AttemptHeaders<'_>,
        body: reqwest::Body,
        timeout: Duration,
    ) -> Result<RawResponse, RelayError> {
        let now = Instant::now();
        let deadline = now + timeout;
        let origin = Origin::of(url).map_err(RelayError::connect)?;
        let declared = declared_length(&body, headers);
        let head = request_head(method, url, headers, &origin, declared);
        let idempotent = crate::retry::is_idempotent(method);
        // Small bodies held in memory go out with the head, in one write.
        let mut body = Some(body);
        let inline = body
            .as_ref()
            .and_then(|body| body.as_bytes().map(Bytes::copy_from_slice));
        let inline = match inline {
            Some(bytes) => {
                body = None;
                bytes
            }
            None => Bytes::new(),
        };
        let streamed = body.is_some();
        let mut connection = match self.pool.take_idle(&origin, now) {
            Some(connection) => connection,
            None => self.connect(&origin, deadline).await?,
        };
        loop {
            connection.last_used = now;
            let reused = connection.is_reused();
            let Connection {
                stream,
                buffer,
                deadline: limit,
                ..
            } = &mut connection;
            limit.as_mut().reset(deadline);
            let exchanged = tokio::select! {
                biased;
                exchanged = exchange(stream, buffer, &head, &inline, body.take(), method, declared) => exchanged,
                () = limit.as_mut() => return Err(RelayError::timeout()),
            };
            match exchanged {
                Ok(response) => return Ok(self.response(connection, response)),
                // A pooled connection the server closed meanwhile: send again
                // on a new one if the request cannot have been processed, or
                // can safely be processed twice.
                Err(failed) if reused && !streamed && failed.unanswered && (failed.unsent || idempotent) => {
                    tracing::debug!(error = %failed.error, "pooled connection closed by the server: sending on a new one");
                    connection = self.connect(&origin, deadline).await?;
                }
                Err(failed) => return Err(RelayError::exchange(failed.error)),
            }
        }
    }

    async fn connect(&self, origin: &Origin<'_>, deadline: Instant) -> Result<Connection, RelayError> {
        tokio::time::timeout_at(deadline, self.pool.connect(origin))
            .await
            .unwrap_or_else(|_| Err(RelayError::timeout()))
    }

    fn response(&self, connection: Connection, head: ResponseHead) -> RawResponse {
        let ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        } = head;
        let body = RelayBody::new(Arc::clone(&self.pool), connection, framing, keep_alive);
        RawResponse::new(status, version, headers, ForwardBody::relay(body))
    }
}

/// The length the request body declares: its own exact size, or the
/// caller's `Content-Length` for a stream.
fn declared_length(body: &reqwest::Body, headers: &AttemptHeaders<'_>) -> Option<u64> {
    body.size_hint().exact().or_else(|| {
        headers
            .get(&header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok())
    })
}

/// The request line and headers, in HTTP/1.1.
fn request_head(
    method: &Method,
    url: &Url,
    headers: &AttemptHeaders<'_>,
    origin: &Origin<'_>,
    length: Option<u64>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(url.path().as_bytes());
    if let Some(query) = url.query() {
        head.push(b'?');
        head.extend_from_slice(query.as_bytes());
    }
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if headers.get(&header::HOST).is_none() {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(origin.authority.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers.iter() {
        if MANAGED.contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match length {
        Some(0) if !sends_a_body(method) => {}
        Some(length) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Methods whose empty body is still declared (`content-length: 0`), as
/// clients do.
fn sends_a_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// A failed exchange: whether the request head could not be written, and
/// whether the server closed the connection without answering (as it does
/// with an idle keep-alive connection).
struct Exchanged {
    error: io::Error,
    unsent: bool,
    unanswered: bool,
}

impl Exchanged {
    fn after_sending(error: io::Error) -> Self {
        Self {
            error,
            unsent: false,
            unanswered: false,
        }
    }
}

/// Writes the request and reads the response head.
async fn exchange(
    stream: &mut connection::Stream,
    buffer: &mut BytesMut,
    head: &[u8],
    inline: &Bytes,
    body: Option<reqwest::Body>,
    method: &Method,
    declared: Option<u64>,
) -> Result<ResponseHead, Exchanged> {
    let written = if inline.is_empty() || inline.len() > 16 * 1024 {
        let mut written = stream.write_all(head).await;
        if written.is_ok() && !inline.is_empty() {
            written = stream.write_all(inline).await;
        }
        written
    } else {
        let mut message = Vec::with_capacity(head.len() + inline.len());
        message.extend_from_slice(head);
        message.extend_from_slice(inline);
        stream.write_all(&message).await
    };
    if let Err(error) = written {
        return Err(Exchanged {
            error,
            unsent: true,
            unanswered: true,
        });
    }
    if let Some(body) = body {
        write_streamed_body(stream, body, declared)
            .await
            .map_err(Exchanged::after_sending)?;
    }
    stream.flush().await.map_err(Exchanged::after_sending)?;
    let mut answered = false;
    loop {
        if let Some(head) = parse_response_head(buffer, method).map_err(Exchanged::after_sending)? {
            return Ok(head);
        }
        if buffer.len() >= MAX_HEAD {
            return Err(Exchanged::after_sending(invalid("the response head is too large")));
        }
        buffer.reserve(8 * 1024);
        match stream.read_buf(buffer).await {
            Ok(0) => {
                return Err(Exchanged {
                    error: io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"),
                    unsent: false,
                    unanswered: !answered,
                });
            }
            Ok(_) => answered = true,
            Err(error) => {
                return Err(Exchanged {
                    unsent: false,
                    unanswered: !answered && is_reset(&error),
                    error,
                });
            }
        }
    }
}

fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
    )
}

/// A streamed request body: with the declared length, which it must match,
/// or chunked.
async fn write_streamed_body(
    stream: &mut connection::Stream,
    body: reqwest::Body,
    declared: Option<u64>,
) -> io::Result<()> {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut sent: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match declared {
            Some(length) if sent > length => return Err(invalid("the request body is longer than its Content-Length")),
            Some(_) => stream.write_all(&data).await?,
            None => {
                // One write per chunk, framing included.
                let mut chunk = Vec::with_capacity(data.len() + 20);
                chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                stream.write_all(&chunk).await?;
            }
        }
    }
    match declared {
        Some(length) if sent != length => Err(invalid("the request body is shorter than its Content-Length")),
        Some(_) => Ok(()),
        None => stream.write_all(b"0\r\n\r\n").await,
    }
}

/// A response head as read.
struct ResponseHead {
    status: StatusCode,
    version: Version,
    headers: RawHeaders,
    framing: body::Framing,
    keep_alive: bool,
}

/// Parses a response head at the front of `buffer` and takes it off, or
/// `None` when more bytes are needed. Interim (1xx) responses are skipped.
fn parse_response_head(buffer: &mut BytesMut, method: &Method) -> io::Result<Option<ResponseHead>> {
    loop {
        // Left uninitialised: zeroing them costs more than parsing a head.
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buffer,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(invalid(&format!("invalid response head: {error}"))),
        };
        let code = response.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| invalid("invalid response status"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(invalid("the server switched protocols unasked"));
            }
            buffer.advance(length);
            continue;
        }
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let mut headers = RawHeaders::with_capacity(response.headers.len());
        let mut keep_alive = version == Version::HTTP_11;
        let mut length_header: Option<u64> = None;
        let mut chunked = false;
        let mut other_coding = false;
        // Offsets into the head, which is taken off the buffer whole once
        // the parser no longer borrows it.
        let start = buffer.as_ptr() as usize;
        let at = |slice: &[u8]| {
            let from = (slice.as_ptr() as usize).saturating_sub(start);
            (from, from + slice.len())
        };
        for slot in response.headers.iter() {
            headers.push(at(slot.name.as_bytes()), at(slot.value));
            let name = slot.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                for token in slot.value.split(|&byte| byte == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                        keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Only the last coding frames the message (RFC 9112 6.1).
                let last = slot.value.rsplit(|&byte| byte == b',').next().unwrap_or_default();
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                other_coding = !chunked;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let parsed = std::str::from_utf8(slot.value)
                    .ok()
                    .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| invalid("invalid Content-Length in the response"))?;
                if length_header.is_some_and(|seen| seen != parsed) {
                    return Err(invalid("conflicting Content-Length headers in the response"));
                }
                length_header = Some(parsed);
            }
        }
        headers.seal(buffer.split_to(length).freeze());
        // RFC 9112 6.3: no body after HEAD, 204 or 304; chunked wins over a
        // length; another coding, or neither, runs to the end of the
        // connection.
        let framing =
            if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                body::Framing::Empty
            } else if chunked {
                body::Framing::Chunked(chunked::Decoder::new())
            } else if other_coding {
                keep_alive = false;
                body::Framing::UntilClose
            } else if let Some(length) = length_header {
                body::Framing::Length(length)
            } else {
                keep_alive = false;
                body::Framing::UntilClose
            };
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// Entry points for the fuzz targets in `fuzz/`: the response-head and
/// chunked-body parsers, fed whatever bytes an upstream could send.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;
    use reqwest::Method;

    use super::chunked::{Decoded, Decoder};

    /// Parses `bytes` as a response head, as to a GET and to a HEAD.
    pub fn response_head(bytes: &[u8]) {
        for method in [Method::GET, Method::HEAD] {
            let mut buffer = BytesMut::from(bytes);
            let _ = super::parse_response_head(&mut buffer, &method);
        }
    }

    /// Decodes `bytes` as a chunked body, fed in pieces of `step` bytes.
    pub fn chunked_body(bytes: &[u8], step: usize) {
        let mut decoder = Decoder::new();
        let mut buffer = BytesMut::new();
        for piece in bytes.chunks(step.max(1)) {
            buffer.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buffer) {
                    Ok(Decoded::Data(data)) => assert!(!data.is_empty(), "a data frame is never empty"),
                    Ok(Decoded::End) | Err(_) => return,
                    Ok(Decoded::NeedMore) => break,
                }
            }
        }
    }
}
