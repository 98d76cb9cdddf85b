//! The proxy's own HTTP/1.1 front: a connection's proxy requests are read
//! (httparse) and answered here, in the connection's task, with one write
//! per response; anything else, and anything unusual, goes to hyper.
//!
//! hyper serves every request through layers a proxy does not need
//! (dispatcher state, a service future, response encoding generic over any
//! body), which cost a proxied request as much as its syscalls. The front
//! takes only requests it reads completely and unambiguously: HTTP/1.1, a
//! proxy path, a forwarded method, no `Transfer-Encoding`, `Expect` or
//! `Upgrade`, at most one `Content-Length` of at most 1 MiB. The first
//! request that is not one of those hands the connection, with the bytes
//! read so far, to hyper for the rest of its life.

use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::time::{Duration, SystemTime};

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use integrations::AccountId;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::ConnectionSettings;
use super::rewind::Rewind;
use crate::error::ApiError;
use crate::proxy::{self, policy};
use crate::{AcceptedKey, Gateway};
use axum::response::IntoResponse as _;

/// The most a request head may take here; hyper answers bigger ones.
const MAX_HEAD: usize = 16 * 1024;
/// The most request headers taken here; hyper takes requests with more.
const MAX_HEADERS: usize = 64;
/// How much is read from the connection at a time.
const READ_SIZE: usize = 8 * 1024;
/// Response bytes gathered before they are written, when more are ready.
const WRITE_SIZE: usize = 64 * 1024;
/// How long a refused request's unread body is drained before closing.
const LINGER: Duration = Duration::from_secs(1);

/// Serves one connection until the client closes it, `stop` is set while it
/// is idle, or a request is handed to hyper.
pub(crate) async fn serve(
    stream: TcpStream,
    app: Gateway,
    http: hyper::server::conn::http1::Builder,
    settings: ConnectionSettings,
    stop: watch::Receiver<bool>,
) {
    let mut front = Front {
        stream,
        buffer: BytesMut::with_capacity(READ_SIZE),
        out: Vec::with_capacity(READ_SIZE),
        accepted: None,
        presented: Vec::new(),
        head_deadline: Box::pin(tokio::time::sleep(settings.header_read_timeout)),
    };
    if !settings.fast_path {
        return hand_over(front, app, http, stop).await;
    }
    // One future for the whole connection, rather than one made and
    // dropped for each request.
    let mut stopped = pin!(stopping(stop.clone()));
    loop {
        let head = match front.next_head(settings.header_read_timeout, stopped.as_mut()).await {
            Next::Proxy(head) => head,
            Next::Other => return hand_over(front, app, http, stop).await,
            Next::Closed => return,
        };
        let Head {
            request:
                ProxyRequest {
                    mut incoming,
                    authorization,
                    close,
                },
            head_length,
            body_length,
        } = head;
        let close = close || *stop.borrow();
        let head_only = incoming.method == Method::HEAD;
        // The key is checked as soon as the head is read: a body is never
        // read, nor held in memory, for a client without one.
        let presented = authorization.then_some(&front.presented[..]);
        if !app.accepts_on_connection(presented, &mut front.accepted) {
            // A body already read is dropped; one still to come is not
            // waited for, and the connection closes.
            let buffered = front.buffer.len() >= head_length + body_length;
            if buffered {
                front.buffer.advance(head_length + body_length);
            }
            let close = close || !buffered;
            let refused = ApiError::key_refused(&app.state.keys).into_response();
            if front.write_gateway_response(refused, head_only, close).await.is_err() {
                return;
            }
            if !buffered {
                front.linger_close().await;
            }
            if close {
                return;
            }
            continue;
        }
        match front
            .read_body(head_length, body_length, settings.body_read_timeout)
            .await
        {
            Ok(body) => incoming.body = body,
            Err(BodyRead::TimedOut) => {
                tracing::debug!("request body not received in time");
                let _ = front
                    .write_gateway_response(policy::body_timed_out(), head_only, true)
                    .await;
                return;
            }
            Err(BodyRead::Closed) => return,
        }
        let key = front
            .accepted
            .as_ref()
            .map(|accepted| std::sync::Arc::clone(&accepted.id));
        let written = match app.forward_accepted(incoming, key.as_deref()).await {
            proxy::Answer::Upstream(upstream) => {
                let listed = policy::connection_listed(
                    upstream
                        .headers
                        .iter()
                        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
                        .map(|(_, value)| value),
                );
                front
                    .write_response(
                        upstream.status,
                        upstream.headers.iter(),
                        &listed,
                        upstream.body,
                        head_only,
                        close,
                    )
                    .await
            }
            proxy::Answer::Gateway(refused) => front.write_gateway_response(refused, head_only, close).await,
        };
        if let Err(error) = written {
            tracing::debug!(%error, "connection ended while answering");
            return;
        }
        if close {
            return;
        }
    }
}

/// Serves the rest of the connection with hyper, finishing the request in
/// flight when `stop` is set.
async fn hand_over(front: Front, app: Gateway, http: hyper::server::conn::http1::Builder, stop: watch::Receiver<bool>) {
    let io = TokioIo::new(Rewind::new(front.buffer.freeze(), front.stream));
    let mut connection = pin!(http.serve_connection(io, app));
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = stopping(stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Completes once `stop` is set.
async fn stopping(mut stop: watch::Receiver<bool>) {
    // A dropped sender stops too.
    let _ = stop.wait_for(|stop| *stop).await;
}

struct Front {
    stream: TcpStream,
    /// Bytes read and not yet used.
    buffer: BytesMut,
    /// The response being written.
    out: Vec<u8>,
    /// When the request head being read must be complete: one timer per
    /// connection, moved on for each request.
    head_deadline: Pin<Box<Sleep>>,
    accepted: Option<AcceptedKey>,
    /// The `Authorization` value of the request being answered: kept here,
    /// not copied into a header value, as it is compared, not forwarded.
    presented: Vec<u8>,
}

/// What the connection sent next.
#[allow(
    clippy::large_enum_variant,
    reason = "one per request, never stored: boxing would allocate per request"
)]
enum Next {
    Proxy(Head),
    /// A request for hyper: another route, or one the front does not take.
    Other,
    /// Closed, idle at shutdown, or too slow to send its head.
    Closed,
}

/// A proxy request read whole.
struct ProxyRequest {
    incoming: proxy::Incoming,
    /// Whether it has an `Authorization` header, kept in
    /// [`Front::presented`] apart from the headers that are forwarded.
    authorization: bool,
    /// The client asked to close the connection after the response.
    close: bool,
}

/// A request head the front takes, and the length of its body.
struct Head {
    request: ProxyRequest,
    head_length: usize,
    body_length: usize,
}

#[allow(
    clippy::large_enum_variant,
    reason = "one per request, never stored: boxing would allocate per request"
)]
enum Parsed {
    Proxy(Head),
    Other,
    Partial,
}

/// Why a request's body was not read.
enum BodyRead {
    /// Not all of it arrived within the body read timeout.
    TimedOut,
    /// The connection closed or failed.
    Closed,
}

impl Front {
    /// The next request's head, or what else the connection sent;
    /// `stopped` completes at shutdown, which closes an idle connection.
    async fn next_head(
        &mut self,
        header_read_timeout: Duration,
        mut stopped: Pin<&mut impl Future<Output = ()>>,
    ) -> Next {
        self.head_deadline.as_mut().reset(Instant::now() + header_read_timeout);
        let head = loop {
            if !self.buffer.is_empty() {
                match parse(&self.buffer, &mut self.presented) {
                    Parsed::Proxy(head) => break head,
                    Parsed::Other => return Next::Other,
                    Parsed::Partial if self.buffer.len() >= MAX_HEAD => return Next::Other,
                    Parsed::Partial => {}
                }
            }
            let idle = self.buffer.is_empty();
            self.buffer.reserve(READ_SIZE);
            let read = tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.buffer) => read,
                () = self.head_deadline.as_mut() => return Next::Closed,
                () = stopped.as_mut(), if idle => return Next::Closed,
            };
            match read {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(_) => {}
            }
        };
        Next::Proxy(head)
    }

    /// Reads the rest of a request's body, which must all arrive within
    /// `timeout`, and takes the head and the body off the buffer.
    async fn read_body(
        &mut self,
        head_length: usize,
        body_length: usize,
        timeout: Duration,
    ) -> Result<Bytes, BodyRead> {
        let end = head_length + body_length;
        if self.buffer.len() < end {
            // The head's timer, moved on: still one timer per connection.
            self.head_deadline.as_mut().reset(Instant::now() + timeout);
            while self.buffer.len() < end {
                self.buffer.reserve(end - self.buffer.len());
                tokio::select! {
                    biased;
                    read = self.stream.read_buf(&mut self.buffer) => match read {
                        Ok(0) | Err(_) => return Err(BodyRead::Closed),
                        Ok(_) => {}
                    },
                    () = self.head_deadline.as_mut() => return Err(BodyRead::TimedOut),
                }
            }
        }
        self.buffer.advance(head_length);
        Ok(self.buffer.split_to(body_length).freeze())
    }

    /// Ends a connection whose request body was left unread: the write side
    /// is closed first, then what the client still sends is read and
    /// dropped for at most [`LINGER`], never kept, so that its TCP stack
    /// does not reset the connection before it has read the answer.
    async fn linger_close(&mut self) {
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + LINGER;
        let mut scratch = [0u8; READ_SIZE];
        while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
            if read == 0 {
                break;
            }
        }
    }

    /// Writes a response the gateway made itself (a refusal or an error).
    async fn write_gateway_response(
        &mut self,
        response: axum::response::Response,
        head_only: bool,
        close: bool,
    ) -> io::Result<()> {
        let (parts, body) = response.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
        self.write_response(parts.status, headers, &[], body, head_only, close)
            .await
    }

    /// Writes a response as hyper writes it, byte for byte: header names in
    /// lower case and in their order, less those [`policy::forwards`] drops
    /// (hop-by-hop, or listed in `Connection`); then `connection: close`,
    /// the framing when the headers had none (`content-length` when the
    /// body's size is known, chunked otherwise), and `date`. Small bodies go
    /// in the head's write.
    async fn write_response<'h, B>(
        &mut self,
        status: StatusCode,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
        listed: &[HeaderName],
        mut body: B,
        head_only: bool,
        close: bool,
    ) -> io::Result<()>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let bodiless =
            status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let length = http_body::Body::size_hint(&body).exact();
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut dated = false;
        let mut framed = false;
        for (name, value) in headers {
            if !policy::forwards(name, listed, false) {
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                // The upstream's length frames the body (the upstream client read it
                // by it); a HEAD response keeps the length the GET would
                // have; a bodiless status has none.
                // hyper writes an empty body's length after the others.
                if bodiless || framed || (!head_only && length == Some(0)) {
                    continue;
                }
                framed = true;
            }
            dated |= name.eq_ignore_ascii_case(b"date");
            write_header(out, name, value);
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        let chunked = !bodiless && !head_only && !framed && length.is_none();
        if bodiless || framed {
        } else if let Some(length) = length {
            write_header(out, b"content-length", itoa::Buffer::new().format(length).as_bytes());
        } else if !head_only {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !dated {
            write_header(out, b"date", httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if bodiless || head_only {
            return self.stream.write_all(&self.out).await;
        }
        let mut sent: u64 = 0;
        loop {
            // What is ready now joins the bytes not yet written; the rest
            // is waited for after writing them.
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    self.stream.write_all(&self.out).await?;
                    self.out.clear();
                    body.frame().await
                }
            };
            let Some(frame) = frame else {
                break;
            };
            let frame = frame.map_err(io::Error::other)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if length.is_some_and(|length| sent > length) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the body is longer than announced",
                ));
            }
            if chunked {
                self.out.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
                self.out.extend_from_slice(&data);
                self.out.extend_from_slice(b"\r\n");
            } else {
                self.out.extend_from_slice(&data);
            }
            if self.out.len() >= WRITE_SIZE {
                self.stream.write_all(&self.out).await?;
                self.out.clear();
            }
        }
        if length.is_some_and(|length| sent != length) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the body ended before its length",
            ));
        }
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.stream.write_all(&self.out).await
    }
}

/// One header line, its name in lower case.
fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend(name.iter().map(u8::to_ascii_lowercase));
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Reads a request head at the front of `buffer`, if the front takes it.
/// An `Authorization` value is put in `presented`.
/// [`parse`], its outcome dropped.
pub(super) fn parse_for_fuzzing(buffer: &[u8], presented: &mut Vec<u8>) {
    let _ = parse(buffer, presented);
}

fn parse(buffer: &[u8], presented: &mut Vec<u8>) -> Parsed {
    // Left uninitialised: zeroing them costs more than parsing a head.
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_length = match parsed.parse_with_uninit_headers(buffer, &mut slots) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // hyper answers malformed requests and those with more headers.
        Err(_) => return Parsed::Other,
    };
    let (Some(1), Some(target), Some(method)) = (parsed.version, parsed.path, parsed.method) else {
        return Parsed::Other;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    // An invalid account id is hyper's to refuse, as any other request.
    let Some((account, path)) = policy::split(path) else {
        return Parsed::Other;
    };
    let Ok(account) = AccountId::new(account) else {
        return Parsed::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if !policy::FORWARDED.contains(&method) {
        return Parsed::Other;
    }
    // Allocated at the first forwarded header: many requests have none
    // beyond `Host` and the API key.
    let mut headers = HeaderMap::new();
    let mut authorization = false;
    let mut body_length = None;
    let mut close = false;
    // Empty, without allocating, unless `Connection` names a header.
    let listed = policy::connection_listed(
        parsed
            .headers
            .iter()
            .filter(|slot| slot.name.eq_ignore_ascii_case("connection"))
            .map(|slot| slot.value),
    );
    for slot in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(slot.name.as_bytes()) else {
            return Parsed::Other;
        };
        let hop_by_hop = policy::is_hop_by_hop_name(&name);
        if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
            return Parsed::Other;
        }
        if name == header::CONTENT_LENGTH {
            let length = std::str::from_utf8(slot.value)
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok());
            match (length, body_length) {
                (Some(length), None) if length <= policy::BUFFERED_BODY => body_length = Some(length),
                _ => return Parsed::Other,
            }
        }
        if name == header::CONNECTION {
            for token in slot.value.split(|&byte| byte == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
        // The API key and hop-by-hop headers are the gateway's, not
        // forwarded; a second key is hyper's to refuse.
        if hop_by_hop {
            continue;
        }
        if name == header::AUTHORIZATION {
            if authorization {
                return Parsed::Other;
            }
            authorization = true;
            presented.clear();
            presented.extend_from_slice(slot.value);
            continue;
        }
        if !listed.is_empty() && !policy::forwards(name.as_str().as_bytes(), &listed, true) {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(slot.value) else {
            return Parsed::Other;
        };
        headers.append(name, value);
    }
    Parsed::Proxy(Head {
        request: ProxyRequest {
            incoming: proxy::Incoming {
                method,
                account,
                target: policy::upstream_target(path, query),
                headers,
                body: Bytes::new(),
            },
            authorization,
            close,
        },
        head_length,
        body_length: usize::try_from(body_length.unwrap_or(0)).unwrap_or(usize::MAX),
    })
}
