//! Building and sending one request through an account.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_core::{Error, ErrorKind, Result};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use secrecy::ExposeSecret;
use url::Url;

use crate::account::AccountClient;
use crate::auth::{Credential, Injected};

/// A request through an account: add headers, query and body, then
/// [`send`](RequestBuilder::send). The account's request parameters and
/// credential are applied when it is sent.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    client: AccountClient,
    method: Method,
    url: Result<Url>,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    body: Body,
    timeout: Option<Duration>,
    error: Option<Error>,
}

enum Body {
    None,
    /// Kept whole, so the request can be sent again.
    Bytes(Bytes),
    /// Sent once: never retried.
    Stream(reqwest::Body),
}

impl RequestBuilder {
    pub(crate) fn new(client: AccountClient, method: Method, url: Result<Url>) -> Self {
        Self {
            client,
            method,
            url,
            headers: HeaderMap::new(),
            query: Vec::new(),
            body: Body::None,
            timeout: None,
            error: None,
        }
    }

    /// Adds a header. It replaces a request parameter of the same name; the
    /// header that carries the credential cannot be set.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            (Err(_), _) => self.fail(ErrorKind::InvalidInput, "invalid header name"),
            (_, Err(_)) => self.fail(ErrorKind::InvalidInput, "invalid header value"),
        }
        self
    }

    /// Adds headers.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        for (name, value) in &headers {
            self.headers.append(name, value.clone());
        }
        self
    }

    /// Adds query parameters.
    pub fn query<K: Into<String>, V: Into<String>>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        self.query.extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets the body. A body held in memory can be sent again, so the
    /// request can be retried.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }

    /// Sets a streaming body. It cannot be replayed, so the request is never
    /// retried, not even after a 401.
    pub fn streaming_body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.body = Body::Stream(body.into());
        self
    }

    /// Overrides the integration's time limit for this request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn fail(&mut self, kind: ErrorKind, message: &'static str) {
        if self.error.is_none() {
            self.error = Some(Error::new(kind, message).with_context("account", self.client.account()));
        }
    }

    /// Sends the request: the credential and request parameters applied,
    /// retried as the integration's policy says, once more with a fresh
    /// credential after a 401. The response comes back as it came.
    pub async fn send(self) -> Result<Response> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let url = self.url?;
        let client = self.client;
        let inner = &client.inner;
        if let Some(header) = client.credential_header()
            && self.headers.contains_key(header)
        {
            return Err(refused(
                &client,
                &format!("header `{header}` carries the account's credential and cannot be set"),
            ));
        }
        if let Some(name) = client.credential_query()
            && (self.query.iter().any(|(key, _)| key == name) || url.query_pairs().any(|(key, _)| key == name))
        {
            return Err(refused(
                &client,
                &format!("query parameter `{name}` carries the account's credential and cannot be set"),
            ));
        }
        let timeout = self.timeout.unwrap_or(inner.timeout);
        let (bytes, mut stream) = match self.body {
            Body::None => (None, None),
            Body::Bytes(bytes) => (Some(bytes), None),
            Body::Stream(body) => (None, Some(body)),
        };
        let replayable = stream.is_none();
        let started = Instant::now();
        let mut attempt = 1;
        let mut renewed_after_401 = false;
        loop {
            let credential = inner.authenticator.credential().await?;
            let body = match (&bytes, stream.take()) {
                (Some(bytes), _) => Some(reqwest::Body::from(bytes.clone())),
                (None, stream) => stream,
            };
            let request = build(
                &client,
                &self.method,
                &url,
                &self.headers,
                &self.query,
                &credential,
                body,
                timeout,
            )?;
            match inner.http.reqwest().execute(request).await {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED && replayable && !renewed_after_401 => {
                    if !inner.authenticator.rejected(&credential).await? {
                        return Ok(response);
                    }
                    tracing::debug!(account = %inner.account, "401: retrying once with a new credential");
                    renewed_after_401 = true;
                }
                Ok(response) => {
                    let wait = replayable
                        .then(|| inner.retry.after_response(&response, &self.method, attempt, started))
                        .flatten();
                    let Some(wait) = wait else {
                        return Ok(response);
                    };
                    tracing::debug!(account = %inner.account, status = %response.status(), attempt, ?wait, "retrying");
                    drop(response);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(error) => {
                    let wait = replayable
                        .then(|| inner.retry.after_error(&error, &self.method, attempt, started))
                        .flatten();
                    let Some(wait) = wait else {
                        return Err(transport_error(&client, error, attempt));
                    };
                    tracing::debug!(account = %inner.account, attempt, ?wait, "transport error: retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "one call site, in the send loop")]
fn build(
    client: &AccountClient,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    query: &[(String, String)],
    credential: &Credential,
    body: Option<reqwest::Body>,
    timeout: Duration,
) -> Result<reqwest::Request> {
    let inner = &client.inner;
    if let Some((name, _)) = credential.ready_header()
        && headers.contains_key(name)
    {
        return Err(refused(
            client,
            &format!("header `{name}` carries the account's credential and cannot be set"),
        ));
    }
    let injected = client.injected(credential)?;
    let token_query = match injected {
        Some(Injected::Query(name, value)) => Some((name.as_str(), value.expose_secret())),
        _ => None,
    };
    let mut url = url.clone();
    if !inner.query.is_empty() || !query.is_empty() || token_query.is_some() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in &inner.query {
            pairs.append_pair(name, value);
        }
        for (name, value) in query {
            pairs.append_pair(name, value);
        }
        if let Some((name, value)) = token_query {
            pairs.append_pair(name, value);
        }
    }
    let mut request = reqwest::Request::new(method.clone(), url);
    *request.timeout_mut() = Some(timeout);
    let request_headers = request.headers_mut();
    request_headers.reserve(inner.headers.len() + headers.len() + 1);
    for (name, value) in &inner.headers {
        if !headers.contains_key(name) {
            request_headers.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in headers {
        request_headers.append(name.clone(), value.clone());
    }
    match (injected, credential.ready_header()) {
        (Some(Injected::Header(name, value)), _) | (None, Some((name, value))) => {
            request_headers.insert(name.clone(), value.clone());
        }
        _ => {}
    }
    *request.body_mut() = body;
    Ok(request)
}

fn refused(client: &AccountClient, message: &str) -> Error {
    Error::new(ErrorKind::Refused, format!("request refused: {message}"))
        .with_context("account", client.account())
        .with_context("integration", client.integration())
}

fn transport_error(client: &AccountClient, error: reqwest::Error, attempts: u32) -> Error {
    // Without the URL: its query may hold a credential.
    let error = error.without_url();
    let (kind, message) = if error.is_timeout() {
        (ErrorKind::Timeout, "the request timed out")
    } else if error.is_connect() {
        (ErrorKind::Transport, "cannot connect")
    } else {
        (ErrorKind::Transport, "the request failed")
    };
    let message = if attempts > 1 {
        format!("{message} (after {attempts} attempts)")
    } else {
        message.to_owned()
    };
    Error::new(kind, message)
        .with_context("account", client.account())
        .with_context("integration", client.integration())
        .with_source(error)
        .temporary()
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("account", self.client.account())
            .field("method", &self.method)
            .field("host", &self.url.as_ref().ok().and_then(Url::host_str))
            .finish_non_exhaustive()
    }
}
