//! A response body read from the connection as it arrives; the connection
//! goes back to the pool once the body is read to its end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio_util::io::poll_read_buf;

use super::chunked::{Decoded, Decoder};
use super::connection::{Connection, Pool};

/// How much is read from the connection at a time.
const READ_SIZE: usize = 16 * 1024;

/// How the body's end is found (RFC 9112 6.3).
#[derive(Debug)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked(Decoder),
    UntilClose,
}

/// The body of a relayed response.
#[derive(Debug)]
pub(crate) struct RelayBody {
    connection: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl RelayBody {
    pub(crate) fn new(pool: Arc<Pool>, connection: Connection, framing: Framing, keep_alive: bool) -> Self {
        let mut body = Self {
            connection: Some(connection),
            framing,
            keep_alive,
            pool,
        };
        if matches!(body.framing, Framing::Empty | Framing::Length(0)) {
            body.finish();
        }
        body
    }

    /// The body is read to its end: the connection is reused when the
    /// server keeps it open and sent nothing beyond the response.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let Some(connection) = self.connection.take()
            && self.keep_alive
            && connection.buffer.is_empty()
        {
            self.pool.check_in(connection);
        }
    }
}

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Empty => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(remaining) => {
                    if !connection.buffer.is_empty() {
                        let take = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(connection.buffer.len());
                        let data = connection.buffer.split_to(take).freeze();
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(decoder) => match decoder.decode(&mut connection.buffer) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(error) => {
                        this.connection = None;
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                Framing::UntilClose => {
                    if !connection.buffer.is_empty() {
                        let data = connection.buffer.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            connection.buffer.reserve(READ_SIZE);
            let read = ready!(poll_read_buf(
                Pin::new(&mut connection.stream),
                cx,
                &mut connection.buffer
            ));
            match read {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before the end of the body",
                    ))));
                }
                Ok(_) => {}
                Err(error) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || matches!(self.framing, Framing::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.framing, &self.connection) {
            (_, None) | (Framing::Empty, _) => SizeHint::with_exact(0),
            (Framing::Length(remaining), _) => SizeHint::with_exact(*remaining),
            _ => SizeHint::default(),
        }
    }
}

/// The body of a response from [`forward`](crate::RequestBuilder::forward):
/// streamed from the upstream as it arrives.
#[derive(Debug)]
pub struct ForwardBody(Source);

#[derive(Debug)]
enum Source {
    Relay(RelayBody),
    Reqwest(reqwest::Body),
}

impl ForwardBody {
    pub(crate) fn relay(body: RelayBody) -> Self {
        Self(Source::Relay(body))
    }

    pub(crate) fn reqwest(body: reqwest::Body) -> Self {
        Self(Source::Reqwest(body))
    }
}

impl http_body::Body for ForwardBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.0 {
            Source::Relay(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Source::Reqwest(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Source::Relay(body) => body.is_end_stream(),
            Source::Reqwest(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Source::Relay(body) => body.size_hint(),
            Source::Reqwest(body) => body.size_hint(),
        }
    }
}
