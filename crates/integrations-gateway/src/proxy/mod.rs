//! The proxy: a request forwarded through an account, with its request
//! parameters and credential applied, streamed both ways.

pub(crate) mod policy;

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use integrations::AccountId;
use integrations::http::{RawResponse, reqwest};

use crate::AppState;
use crate::error::ApiError;
use crate::metrics;

pub(crate) use policy::{BUFFERED_BODY, split};

/// Forwards the request to the account's integration: the path is relative
/// to its `base_url`, the query and headers go as they came (less
/// hop-by-hop headers and the gateway's API key), and the upstream response
/// comes back as it came.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options), path = "/v1/accounts/{id}/proxy/{path}", tag = "proxy",
    params(
        ("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"),
        ("path" = String, Path, description = "The path, relative to the integration's base_url"),
    ),
    responses(
        (status = 200, description = "The upstream response, as it came (any status)"),
        (status = 400, body = crate::error::ErrorBody, description = "An invalid account id, or a body that cannot be read"),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody, description = "Refused: a header that carries the credential, or a host the integration does not name"),
        (status = 404, body = crate::error::ErrorBody),
        (status = 405, body = crate::error::ErrorBody, description = "TRACE and CONNECT are not forwarded"),
        (status = 409, body = crate::error::ErrorBody, description = "The account must be connected again"),
        (status = 502, body = crate::error::ErrorBody, description = "The upstream failed or a token could not be obtained"),
        (status = 504, body = crate::error::ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn proxy(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let key = request.extensions().get::<crate::KeyId>().map(|key| key.0.clone());
    forward(
        &state,
        request,
        crate::server::ConnectionSettings::default().body_read_timeout,
        key.as_deref(),
    )
    .await
}

/// What [`proxy`] does, for a request already let through by its API key:
/// hyper's path. A buffered body must arrive within `body_read_timeout`, a
/// streamed one may pause at most that long between its parts.
pub(crate) async fn forward(
    state: &AppState,
    request: Request,
    body_read_timeout: Duration,
    key: Option<&str>,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let Some((id, _)) = policy::split(request.uri().path()) else {
        return ApiError::invalid("not a proxy path").into_response();
    };
    let id = id.to_owned();
    let (response, integration) = forward_unobserved(state, request, body_read_timeout).await;
    metrics::observe_proxy(&metrics::Observed {
        key,
        account: Some(&id),
        integration: integration.as_deref(),
        method: &method,
        route: PROXY_ROUTE,
        status: response.status(),
        started,
    });
    response
}

/// The route of proxied requests, as the access log names it.
const PROXY_ROUTE: &str = "/v1/accounts/{id}/proxy/{*path}";

/// [`forward`], and the integration of the account when it was found.
async fn forward_unobserved(
    state: &AppState,
    request: Request,
    body_read_timeout: Duration,
) -> (Response, Option<String>) {
    if !policy::FORWARDED.contains(request.method()) {
        return (policy::refuse_method(request.method()), None);
    }
    let (parts, body) = request.into_parts();
    let Some((id, path)) = policy::split(parts.uri.path()) else {
        return (ApiError::invalid("not a proxy path").into_response(), None);
    };
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let headers = policy::end_to_end(parts.headers, true);
    let account = match AccountId::new(id) {
        Ok(id) => state.integrations.client(&id).await,
        Err(error) => Err(error),
    };
    let account = match account {
        Ok(account) => account,
        Err(error) => return (ApiError::from(error).into_response(), None),
    };
    let integration = Some(account.integration().to_owned());
    let target = policy::upstream_target(path, parts.uri.query());
    let mut upstream = account.request(parts.method.clone(), &target).headers(headers);
    let failure = Arc::new(OnceLock::new());
    match length {
        _ if http_body::Body::is_end_stream(&body) => {}
        Some(length) if length <= BUFFERED_BODY => {
            match tokio::time::timeout(body_read_timeout, axum::body::to_bytes(body, BUFFERED_BODY as usize)).await {
                Ok(Ok(bytes)) => upstream = upstream.body(bytes),
                Ok(Err(error)) => return (BodyFailure::Invalid(error.to_string()).into_response(), integration),
                Err(_) => return (BodyFailure::TimedOut.into_response(), integration),
            }
        }
        _ => {
            let stream = streamed(body, body_read_timeout, Arc::clone(&failure));
            upstream = upstream.streaming_body(reqwest::Body::wrap_stream(stream));
        }
    }
    // The upstream response is handed back as it is: its status and headers
    // (less hop-by-hop ones) moved, its body streamed.
    let response = match upstream.forward().await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            parts.headers = policy::end_to_end(parts.headers, false);
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => match failure.get() {
            // The client's body failed, not the upstream.
            Some(failed) => failed.clone().into_response(),
            None => ApiError::from(error).into_response(),
        },
    };
    (response, integration)
}

/// Why a request's body could not be read from the client.
#[derive(Debug, Clone)]
enum BodyFailure {
    /// Malformed, such as a bad chunk size.
    Invalid(String),
    /// Not received within the body read timeout.
    TimedOut,
}

impl IntoResponse for BodyFailure {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(error) => {
                ApiError::invalid(format!("the request body could not be read: {error}")).into_response()
            }
            Self::TimedOut => policy::body_timed_out(),
        }
    }
}

/// `body` as a stream of its data for the upstream request; trailers are
/// not forwarded. A failure is kept in `failure`, for the answer to name
/// the client's body rather than the upstream.
fn streamed(
    body: Body,
    idle: Duration,
    failure: Arc<OnceLock<BodyFailure>>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(body), move |body| {
        let failure = Arc::clone(&failure);
        async move {
            let mut body = body?;
            loop {
                let failed = match tokio::time::timeout(idle, body.frame()).await {
                    Ok(None) => return None,
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => return Some((Ok(data), Some(body))),
                        Err(_) => continue,
                    },
                    Ok(Some(Err(error))) => BodyFailure::Invalid(error.to_string()),
                    Err(_) => BodyFailure::TimedOut,
                };
                let _ = failure.set(failed);
                return Some((Err(io::Error::other("the request body could not be read")), None));
            }
        }
    })
}

/// A proxy request the front read whole, its API key already checked.
pub(crate) struct Incoming {
    pub(crate) method: Method,
    pub(crate) account: AccountId,
    /// Relative to the integration's `base_url`: `/{path}?{query}` of
    /// `/v1/accounts/{id}/proxy/{path}?{query}`, as the client sent it.
    pub(crate) target: String,
    /// End-to-end headers only: no hop-by-hop header and no API key.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// What the front writes back for a proxy request.
pub(crate) enum Answer {
    /// The upstream's response, its head as it came.
    Upstream(RawResponse),
    /// The gateway's own: an error.
    Gateway(Response),
}

/// What [`forward`] does, for a request the front read whole: the front's
/// path. The upstream response head comes back as it came, for the front
/// to write on.
pub(crate) async fn forward_read(
    state: &AppState,
    incoming: Incoming,
    key: Option<&str>,
) -> Result<RawResponse, ApiError> {
    let started = Instant::now();
    let Incoming {
        method,
        account: id,
        target,
        headers,
        body,
    } = incoming;
    let observe = |integration: Option<&str>, status: StatusCode| {
        metrics::observe_proxy(&metrics::Observed {
            key,
            account: Some(id.as_str()),
            integration,
            method: &method,
            route: PROXY_ROUTE,
            status,
            started,
        });
    };
    let account = match state.integrations.client(&id).await {
        Ok(account) => account,
        Err(error) => {
            let error = ApiError::from(error);
            observe(None, error.status());
            return Err(error);
        }
    };
    let mut upstream = account.request(method.clone(), &target).headers(headers);
    if !body.is_empty() {
        upstream = upstream.body(body);
    }
    match upstream.forward_raw().await {
        Ok(response) => {
            observe(Some(account.integration()), response.status);
            Ok(response)
        }
        Err(error) => {
            let error = ApiError::from(error);
            observe(Some(account.integration()), error.status());
            Err(error)
        }
    }
}
