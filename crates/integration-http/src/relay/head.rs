//! A response head kept as the upstream sent it, for a proxy that writes it
//! on: no header map built, no name or value copied.

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use integration_core::{Error, ErrorKind, Result};

use super::body::ForwardBody;

/// A response from [`forward_raw`](crate::RequestBuilder::forward_raw): its
/// status, its headers as the upstream sent them, its body streamed.
#[derive(Debug)]
#[non_exhaustive]
pub struct RawResponse {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version the upstream answered in.
    pub version: Version,
    /// The headers, as sent.
    pub headers: RawHeaders,
    /// The body, streamed from the upstream as it arrives.
    pub body: ForwardBody,
}

impl RawResponse {
    pub(crate) fn new(status: StatusCode, version: Version, headers: RawHeaders, body: ForwardBody) -> Self {
        Self {
            status,
            version,
            headers,
            body,
        }
    }

    /// The same response as an `http::Response`, its headers in a map.
    pub fn into_http(self) -> Result<http::Response<ForwardBody>> {
        let headers = self.headers.to_header_map()?;
        let mut response = http::Response::new(self.body);
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Response headers as the upstream sent them: in their order, names in
/// their own case, values as bytes. They are views into the response head,
/// which is kept whole.
#[derive(Clone, Default)]
pub struct RawHeaders {
    head: Bytes,
    lines: Vec<Line>,
}

/// Where one header's name and value are in the head.
#[derive(Clone, Copy)]
struct Line {
    name: (u32, u32),
    value: (u32, u32),
}

impl RawHeaders {
    /// Headers over `head`, added with [`push`](Self::push) as offsets into it.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            head: Bytes::new(),
            lines: Vec::with_capacity(capacity),
        }
    }

    /// Adds the header whose name and value are at these offsets of the
    /// head given to [`seal`](Self::seal). Both are checked by the parser:
    /// the name a token, the value visible characters, spaces and tabs.
    pub(crate) fn push(&mut self, name: (usize, usize), value: (usize, usize)) {
        // The head is at most 64 KiB: its offsets fit.
        let offset = |at: usize| u32::try_from(at).unwrap_or(u32::MAX);
        self.lines.push(Line {
            name: (offset(name.0), offset(name.1)),
            value: (offset(value.0), offset(value.1)),
        });
    }

    /// The head the offsets given to [`push`](Self::push) point into.
    pub(crate) fn seal(&mut self, head: Bytes) {
        self.head = head;
    }

    /// Headers taken from a map, for a response read by another client.
    pub(crate) fn from_map(headers: &HeaderMap) -> Self {
        let mut head = Vec::new();
        let mut raw = Self::with_capacity(headers.len());
        for (name, value) in headers {
            let name_at = head.len();
            head.extend_from_slice(name.as_str().as_bytes());
            let value_at = head.len();
            head.extend_from_slice(value.as_bytes());
            raw.push((name_at, value_at), (value_at, head.len()));
        }
        raw.seal(Bytes::from(head));
        raw
    }

    /// The headers in the order they came: name as sent (a token: ASCII),
    /// value.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
        self.lines
            .iter()
            .map(|line| (self.slice(line.name), self.slice(line.value)))
    }

    /// The value of the first header called `name`, whatever its case.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The headers in a map, names lowercased.
    pub fn to_header_map(&self) -> Result<HeaderMap> {
        let mut headers = HeaderMap::with_capacity(self.len());
        for line in &self.lines {
            let name = HeaderName::from_bytes(self.slice(line.name)).map_err(|_| {
                Error::new(ErrorKind::Transport, "invalid response header name")
                    .with_context("header", String::from_utf8_lossy(self.slice(line.name)))
            })?;
            let value = HeaderValue::from_maybe_shared(self.head.slice_ref(self.slice(line.value))).map_err(|_| {
                Error::new(ErrorKind::Transport, "invalid response header value").with_context("header", name.as_str())
            })?;
            headers.append(name, value);
        }
        Ok(headers)
    }

    fn slice(&self, (start, end): (u32, u32)) -> &[u8] {
        self.head.get(range((start, end))).unwrap_or_default()
    }
}

fn range((start, end): (u32, u32)) -> std::ops::Range<usize> {
    start as usize..end as usize
}

/// Names only: values may carry secrets (`Set-Cookie`, tokens).
impl fmt::Debug for RawHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, _)| String::from_utf8_lossy(name)))
            .finish()
    }
}
