//! Building and sending one request through an account.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_core::{Error, ErrorKind, Result};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use secrecy::ExposeSecret;
use url::Url;

use crate::account::AccountClient;
use crate::headers::AttemptHeaders;
use crate::relay::{ForwardBody, RawHeaders, RawResponse, RelayError};
use crate::retry::FailureKind;
use integration_core::method::{Credential, Outgoing, Placed};

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
            // The value is not quoted: it may be a secret.
            (Ok(name), Err(_)) => self.fail(
                ErrorKind::InvalidInput,
                format!("invalid value for header `{name}` (a control character, or not visible ASCII)"),
            ),
        }
        self
    }

    /// Sets a JSON body, serialized from `value`, and `Content-Type:
    /// application/json` unless a content type is set already. Held in
    /// memory, so the request can be retried.
    ///
    /// ```no_run
    /// # async fn example(account: &integration_http::AccountClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let created = account
    ///     .post("/contacts")
    ///     .json(&serde_json::json!({ "name": "Ada Lovelace" }))
    ///     .send()
    ///     .await?;
    /// let contact: serde_json::Value = created.json().await?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                if !self.headers.contains_key(reqwest::header::CONTENT_TYPE) {
                    self.headers.insert(
                        reqwest::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                self.body = Body::Bytes(bytes.into());
            }
            Err(error) => self.fail(ErrorKind::InvalidInput, format!("cannot encode the JSON body: {error}")),
        }
        self
    }

    /// Adds headers.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        if self.headers.is_empty() {
            self.headers = headers;
        } else {
            for (name, value) in &headers {
                self.headers.append(name, value.clone());
            }
        }
        self
    }

    /// Adds query parameters, as reqwest's `query` does: anything serde
    /// serializes as a form, such as pairs, a map or a struct.
    ///
    /// ```no_run
    /// # async fn example(account: &integration_http::AccountClient) -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(serde::Serialize)]
    /// struct Page {
    ///     page: u32,
    ///     per_page: u32,
    /// }
    /// let first = account.get("/contacts").query(&Page { page: 1, per_page: 50 }).send().await?;
    /// let found = account.get("/search").query(&[("q", "Ada & Charles")]).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn query<T: serde::Serialize + ?Sized>(mut self, query: &T) -> Self {
        match serde_urlencoded::to_string(query) {
            Ok(encoded) => self.query.extend(
                url::form_urlencoded::parse(encoded.as_bytes())
                    .map(|(name, value)| (name.into_owned(), value.into_owned())),
            ),
            Err(error) => self.fail(ErrorKind::InvalidInput, format!("cannot encode the query: {error}")),
        }
        self
    }

    /// Sets a form body (`application/x-www-form-urlencoded`, unless a
    /// `Content-Type` is set), as reqwest's `form` does.
    ///
    /// ```no_run
    /// # async fn example(account: &integration_http::AccountClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let charged = account
    ///     .post("/v1/charges")
    ///     .form(&[("amount", "2000"), ("currency", "eur")])
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn form<T: serde::Serialize + ?Sized>(mut self, form: &T) -> Self {
        match serde_urlencoded::to_string(form) {
            Ok(encoded) => {
                if !self.headers.contains_key(reqwest::header::CONTENT_TYPE) {
                    self.headers.insert(
                        reqwest::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    );
                }
                self.body = Body::Bytes(encoded.into());
            }
            Err(error) => self.fail(ErrorKind::InvalidInput, format!("cannot encode the form body: {error}")),
        }
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

    fn fail(&mut self, kind: ErrorKind, message: impl Into<Cow<'static, str>>) {
        if self.error.is_none() {
            self.error = Some(Error::new(kind, message).with_context("account", self.client.account()));
        }
    }

    /// Sends the request: the credential and request parameters applied,
    /// retried as the integration's policy says, once more with a fresh
    /// credential after a 401. The response comes back as it came. The time
    /// limit covers the whole exchange, body included.
    pub async fn send(self) -> Result<Response> {
        let (prepared, mut stream) = self.prepare()?;
        let Prepared {
            client,
            method,
            bytes,
            timeout,
            ..
        } = &prepared;
        let reqwest = client.http().reqwest();
        exchange(&prepared, |credential| {
            let (url, headers) = prepared.target(credential)?;
            let mut request = reqwest::Request::new(method.clone(), url.into_owned());
            *request.headers_mut() = headers;
            *request.timeout_mut() = Some(*timeout);
            *request.body_mut() = next_body(bytes, &mut stream);
            Ok(async move { reqwest.execute(request).await.map_err(Failure::from) })
        })
        .await
    }

    /// Sends the request as a proxy forwards it: like [`send`](Self::send),
    /// but the response comes back as an `http::Response` whose body streams
    /// for as long as the upstream sends it (the time limit covers the wait
    /// for the response head), and without reqwest's per-request layers
    /// unless an outbound proxy is configured (`HTTPS_PROXY` and the like)
    /// or the client is a caller's own reqwest client.
    pub async fn forward(self) -> Result<http::Response<ForwardBody>> {
        self.forward_raw().await?.into_http()
    }

    /// Sends the request as [`forward`](Self::forward) does, but the
    /// response head comes back as the upstream sent it: header names in
    /// their case and values as bytes, nothing copied into a header map.
    /// For a proxy that writes the head on to its own client.
    pub async fn forward_raw(self) -> Result<RawResponse> {
        let (prepared, mut stream) = self.prepare()?;
        let Prepared {
            client,
            method,
            bytes,
            timeout,
            ..
        } = &prepared;
        let transports = client.http().transports();
        let mut next_body = move || next_body(bytes, &mut stream);
        match &transports.forward {
            Some(relay) => {
                exchange(&prepared, |credential| {
                    let (url, headers) = prepared.attempt(credential)?;
                    let body = next_body().unwrap_or_else(|| reqwest::Body::from(Bytes::new()));
                    // The relay keeps the time limit itself, with a timer per
                    // connection rather than one per request.
                    Ok(async move {
                        relay
                            .send(method, &url, &headers, body, *timeout)
                            .await
                            .map_err(Failure::from)
                    })
                })
                .await
            }
            None => {
                let reqwest = &transports.reqwest;
                // Boxed: the rare transport here (an outbound proxy, a
                // caller's client), whose futures would otherwise make every
                // forwarded request's future twice as large.
                let response = Box::pin(exchange(&prepared, |credential| {
                    let (url, headers) = prepared.target(credential)?;
                    let mut request = reqwest::Request::new(method.clone(), url.into_owned());
                    *request.headers_mut() = headers;
                    *request.body_mut() = next_body();
                    Ok(within(*timeout, reqwest.execute(request)))
                }))
                .await?;
                let (parts, body) = http::Response::from(response).into_parts();
                Ok(RawResponse::new(
                    parts.status,
                    parts.version,
                    RawHeaders::from_map(&parts.headers),
                    ForwardBody::reqwest(body),
                ))
            }
        }
    }

    /// Checks what does not change between attempts; a streaming body comes
    /// apart, to be sent once.
    fn prepare(self) -> Result<(Prepared, Option<reqwest::Body>)> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let url = self.url?;
        let client = self.client;
        if let Some(header) = client.credential_header()
            && self.headers.contains_key(header)
        {
            return Err(refused(
                &client,
                &format!("header `{header}` carries the account's credential and cannot be set"),
            ));
        }
        if let Some(name) = client.credential_query()
            && (self.query.iter().any(|(key, _)| key == name) || query_names(&url).any(|key| key == name))
        {
            return Err(refused(
                &client,
                &format!("query parameter `{name}` carries the account's credential and cannot be set"),
            ));
        }
        let timeout = self.timeout.unwrap_or(client.time_limit());
        let (bytes, stream) = match self.body {
            Body::None => (None, None),
            Body::Bytes(bytes) => (Some(bytes), None),
            Body::Stream(body) => (None, Some(body)),
        };
        let prepared = Prepared {
            client,
            method: self.method,
            url,
            headers: self.headers,
            query: self.query,
            replayable: stream.is_none(),
            bytes,
            timeout,
        };
        Ok((prepared, stream))
    }
}

/// The body of the next attempt: the bytes again, or the stream the first
/// time.
fn next_body(bytes: &Option<Bytes>, stream: &mut Option<reqwest::Body>) -> Option<reqwest::Body> {
    match bytes {
        Some(bytes) => Some(reqwest::Body::from(bytes.clone())),
        None => stream.take(),
    }
}

/// A request checked and ready to be sent, once or more.
struct Prepared {
    client: AccountClient,
    method: Method,
    url: Url,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    /// Without a streaming body, which is sent once: never retried.
    replayable: bool,
    /// Kept whole, so the request can be sent again.
    bytes: Option<Bytes>,
    timeout: Duration,
}

impl Prepared {
    /// The URL and headers of one attempt with `credential`: request
    /// parameters and the credential applied.
    fn target(&self, credential: &Credential) -> Result<(Cow<'_, Url>, HeaderMap)> {
        let (url, headers) = self.attempt(credential)?;
        Ok((url, headers.to_map()))
    }

    /// What [`target`](Self::target) gives, with the headers as a view
    /// rather than a map of their own.
    fn attempt(&self, credential: &Credential) -> Result<(Cow<'_, Url>, AttemptHeaders<'_>)> {
        let client = &self.client;
        if let Some((name, _)) = credential.ready_header()
            && self.headers.contains_key(name)
        {
            return Err(refused(
                client,
                &format!("header `{name}` carries the account's credential and cannot be set"),
            ));
        }
        let injected = client.injected(credential)?;
        let token_query = match injected {
            Some(Placed::Query(name, value)) => Some((name.as_str(), value.expose_secret())),
            _ => None,
        };
        let mut url = Cow::Borrowed(&self.url);
        let parameter_query = client.parameter_query();
        if !parameter_query.is_empty() || !self.query.is_empty() || token_query.is_some() {
            let url = url.to_mut();
            let mut pairs = url.query_pairs_mut();
            for (name, value) in parameter_query {
                pairs.append_pair(name, value);
            }
            for (name, value) in &self.query {
                pairs.append_pair(name, value);
            }
            if let Some((name, value)) = token_query {
                pairs.append_pair(name, value);
            }
        }
        let credential = match (injected, credential.ready_header()) {
            (Some(Placed::Header(name, value)), _) | (None, Some((name, value))) => Some((name.clone(), value.clone())),
            _ => None,
        };
        let mut headers = AttemptHeaders {
            parameters: client.parameter_headers(),
            own: &self.headers,
            credential,
            signature: Vec::new(),
        };
        if client.authenticator().signs_requests() {
            headers.signature = self.sign(&url, &headers)?;
        }
        Ok((url, headers))
    }

    /// The auth method's signature of this attempt.
    fn sign(&self, url: &Url, headers: &AttemptHeaders<'_>) -> Result<Vec<(HeaderName, HeaderValue)>> {
        let client = &self.client;
        let unsigned = headers.to_map();
        let signature = client.authenticator().sign(&Outgoing {
            method: &self.method,
            url,
            headers: &unsigned,
            body: self.bytes.as_deref(),
            streamed: !self.replayable,
        })?;
        if let Some((name, _)) = signature.iter().find(|(name, _)| unsigned.contains_key(name)) {
            return Err(refused(
                client,
                &format!("header `{name}` carries the request's signature and cannot be set"),
            ));
        }
        Ok(signature
            .into_iter()
            .map(|(name, mut value)| {
                value.set_sensitive(true);
                (name, value)
            })
            .collect())
    }
}

/// The attempts of one request: each gets the current credential; a 401 is
/// tried once more with a renewed one and failures are retried as the
/// integration's policy says, as long as the body can be sent again.
async fn exchange<R, F, Fut>(prepared: &Prepared, mut attempt_with: F) -> Result<R>
where
    R: Reply,
    F: FnMut(&Credential) -> Result<Fut>,
    Fut: Future<Output = std::result::Result<R, Failure>>,
{
    let client = &prepared.client;
    let authenticator = client.authenticator();
    let retry = client.retry();
    let method = &prepared.method;
    let replayable = prepared.replayable;
    let started = Instant::now();
    let mut attempt = 1;
    let mut renewed_after_401 = false;
    loop {
        let credential = authenticator.credential().await?;
        // Its own statement: a `?` in the awaited expression would keep a
        // second copy of the attempt's future across the await.
        let exchanged = attempt_with(&credential)?;
        match exchanged.await {
            Ok(response) if response.status() == StatusCode::UNAUTHORIZED && replayable && !renewed_after_401 => {
                if !authenticator.rejected(&credential).await? {
                    return Ok(response);
                }
                tracing::debug!(account = %client.account(), "401: retrying once with a new credential");
                renewed_after_401 = true;
            }
            Ok(response) => {
                let wait = replayable
                    .then(|| {
                        retry.after_response(
                            response.status(),
                            |name| response.header(name),
                            method,
                            attempt,
                            started,
                        )
                    })
                    .flatten();
                let Some(wait) = wait else {
                    return Ok(response);
                };
                tracing::debug!(account = %client.account(), status = %response.status(), attempt, ?wait, "retrying");
                drop(response);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(failure) => {
                let wait = replayable
                    .then(|| retry.after_failure(failure.kind, method, attempt, started))
                    .flatten();
                let Some(wait) = wait else {
                    return Err(transport_error(prepared, failure, attempt));
                };
                tracing::debug!(account = %client.account(), attempt, ?wait, "transport error: retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// What the retry loop reads of a response.
trait Reply {
    fn status(&self) -> StatusCode;
    /// The value of header `name` (lowercase).
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl Reply for Response {
    fn status(&self) -> StatusCode {
        self.status()
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().get(name).map(HeaderValue::as_bytes)
    }
}

impl Reply for RawResponse {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }
}

/// An attempt that got no response.
struct Failure {
    kind: FailureKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl From<reqwest::Error> for Failure {
    fn from(error: reqwest::Error) -> Self {
        let kind = if error.is_builder() {
            FailureKind::Invalid
        } else if error.is_timeout() {
            FailureKind::Timeout
        } else if error.is_connect() {
            FailureKind::Connect
        } else {
            FailureKind::Exchange
        };
        // Without the URL: its query may hold a credential.
        Self {
            kind,
            source: Box::new(error.without_url()),
        }
    }
}

impl From<RelayError> for Failure {
    fn from(error: RelayError) -> Self {
        Self {
            kind: error.kind,
            source: Box::new(error.source),
        }
    }
}

/// `attempt` within `timeout`.
async fn within<R, E: Into<Failure>>(
    timeout: Duration,
    attempt: impl Future<Output = std::result::Result<R, E>>,
) -> std::result::Result<R, Failure> {
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome.map_err(Into::into),
        Err(elapsed) => Err(Failure {
            kind: FailureKind::Timeout,
            source: Box::new(elapsed),
        }),
    }
}

fn refused(client: &AccountClient, message: &str) -> Error {
    Error::new(ErrorKind::Refused, format!("request refused: {message}"))
        .with_context("account", client.account())
        .with_context("integration", client.integration())
}

/// The error of a request that got no response: what failed (refused,
/// DNS, TLS, a timeout) and where, `host:port`, in its message.
fn transport_error(prepared: &Prepared, failure: Failure, attempts: u32) -> Error {
    let url = &prepared.url;
    let destination = if prepared.client.destination_is_secret() {
        // A secret parameter may be in the host: never in a message.
        "the integration's host".to_owned()
    } else {
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        )
    };
    let cause = cause(failure.source.as_ref());
    let (kind, mut message) = match failure.kind {
        FailureKind::Timeout => (ErrorKind::Timeout, format!("the request to {destination} timed out")),
        FailureKind::Connect => (ErrorKind::Transport, format!("cannot connect to {destination}")),
        FailureKind::Invalid | FailureKind::Exchange => {
            (ErrorKind::Transport, format!("the request to {destination} failed"))
        }
    };
    if let Some(cause) = cause {
        message.push_str(": ");
        message.push_str(&cause);
    }
    if attempts > 1 {
        message.push_str(&format!(" (after {attempts} attempts)"));
    }
    Error::new(kind, message)
        .with_context("account", prepared.client.account())
        .with_context("integration", prepared.client.integration())
        .with_source(failure.source)
        .temporary()
}

/// What a transport failure came down to, read off its chain of sources:
/// a TLS error (its own words), a refused or reset connection, a DNS
/// lookup that failed. `None` when the chain says nothing more precise.
fn cause(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(format!("TLS: {tls}"));
        }
        let text = error.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return Some("DNS lookup failed".to_owned());
        }
        current = error.source();
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Some("connection refused".to_owned()),
                std::io::ErrorKind::ConnectionReset => return Some("connection reset".to_owned()),
                std::io::ErrorKind::ConnectionAborted => return Some("connection aborted".to_owned()),
                _ => {}
            }
            // An `io::Error`'s `source()` skips the error it wraps (such
            // as rustls' in tokio-rustls' errors): that one comes next.
            if let Some(inner) = io.get_ref() {
                current = Some(inner as &(dyn std::error::Error + 'static));
            }
        }
    }
    None
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

/// The names in `url`'s query, decoded, with `;` taken as a separator as
/// well as `&`: some servers split on it, so `?a=1;appid=x` sets `appid`.
fn query_names(url: &Url) -> impl Iterator<Item = Cow<'_, str>> {
    url.query()
        .unwrap_or_default()
        .split(';')
        .flat_map(|part| url::form_urlencoded::parse(part.as_bytes()).map(|(key, _)| key))
}

/// Starting requests: the builder holds the client it sends through.
impl AccountClient {
    /// Starts a request. `url` is absolute, or relative to the
    /// integration's `base_url` (appended to its path: with a base of
    /// `https://x.example/api`, `contacts/1` and `/contacts/1` both go to
    /// `https://x.example/api/contacts/1`).
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, self.resolve(url))
    }

    /// `request(Method::GET, url)`.
    ///
    /// ```no_run
    /// # async fn example(account: &integration_http::AccountClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let contacts: serde_json::Value = account.get("/contacts").send().await?.json().await?;
    /// # Ok(()) }
    /// ```
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// `request(Method::POST, url)`.
    ///
    /// ```no_run
    /// # async fn example(account: &integration_http::AccountClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let created = account.post("/contacts").json(&serde_json::json!({ "name": "Ada" })).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// `request(Method::PUT, url)`.
    ///
    /// ```no_run
    /// # async fn example(account: &integration_http::AccountClient) -> Result<(), Box<dyn std::error::Error>> {
    /// account.put("/contacts/7").json(&serde_json::json!({ "name": "Ada L." })).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn put(&self, url: &str) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// `request(Method::PATCH, url)`.
    ///
    /// ```no_run
    /// # async fn example(account: &integration_http::AccountClient) -> Result<(), Box<dyn std::error::Error>> {
    /// account.patch("/contacts/7").form(&[("name", "Ada L.")]).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn patch(&self, url: &str) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// `request(Method::DELETE, url)`.
    ///
    /// ```no_run
    /// # async fn example(account: &integration_http::AccountClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let removed = account.delete("/contacts/7").send().await?;
    /// assert!(removed.status().is_success());
    /// # Ok(()) }
    /// ```
    pub fn delete(&self, url: &str) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }
}
