//! The proxy: a request forwarded through an account, with its request
//! parameters and credential applied, streamed both ways.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use integrations::AccountId;
use integrations::http::{RawResponse, RequestBuilder, reqwest};

use crate::AppState;
use crate::error::ApiError;

/// Bodies up to this size are held in memory, so the request can be
/// retried; larger ones, and those of unknown length, are streamed.
pub(crate) const BUFFERED_BODY: u64 = 1024 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1):
/// never forwarded.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// The index of `name` in [`HOP_BY_HOP`], if it is one: a `match`, which
/// compiles to a switch on the length before any bytes are compared. Kept
/// in step with the list, as [`is_hop_by_hop`] is, by the tests below.
pub(crate) fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-authenticate" => 2,
        "proxy-authorization" => 3,
        "te" => 4,
        "trailer" => 5,
        "transfer-encoding" => 6,
        "upgrade" => 7,
        "host" => 8,
        _ => return None,
    })
}

/// The methods the proxy forwards: not TRACE (it would echo the credential
/// back) nor CONNECT.
pub(crate) const FORWARDED: [axum::http::Method; 7] = [
    axum::http::Method::GET,
    axum::http::Method::POST,
    axum::http::Method::PUT,
    axum::http::Method::PATCH,
    axum::http::Method::DELETE,
    axum::http::Method::HEAD,
    axum::http::Method::OPTIONS,
];

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
pub async fn proxy(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    forward(&state, request).await
}

/// `/v1/accounts/{id}/proxy/{path}` split into the id and the path, both as
/// the client sent them: not percent-decoded, so that `%2F` stays within its
/// segment and `%25` is not decoded twice on the way.
pub(crate) fn split(path: &str) -> Option<(&str, &str)> {
    let (id, rest) = path.strip_prefix("/v1/accounts/")?.split_once('/')?;
    let path = rest.strip_prefix("proxy/")?;
    // As the route `{*path}` wants: something after `proxy/`.
    (!id.is_empty() && !path.is_empty()).then_some((id, path))
}

/// What [`proxy`] does, for a request already let through by its API key.
pub(crate) async fn forward(state: &AppState, request: Request) -> Result<Response, ApiError> {
    if !FORWARDED.contains(request.method()) {
        let mut refusal = ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not forwarded", request.method()),
        )
        .into_response();
        refusal.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
        );
        return Ok(refusal);
    }
    let (parts, body) = request.into_parts();
    let (id, path) = split(parts.uri.path()).ok_or_else(|| ApiError::invalid("not a proxy path"))?;
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    let mut upstream = upstream(state, &parts.method, id, path, parts.uri.query(), headers).await?;
    upstream = match length {
        Some(0) => upstream,
        Some(length) if length <= BUFFERED_BODY => {
            let bytes = axum::body::to_bytes(body, BUFFERED_BODY as usize)
                .await
                .map_err(|_| ApiError::invalid("the request body could not be read"))?;
            upstream.body(bytes)
        }
        _ if parts.method == reqwest::Method::GET || parts.method == reqwest::Method::HEAD => upstream,
        _ => upstream.streaming_body(reqwest::Body::wrap_stream(body.into_data_stream())),
    };
    // The upstream response is handed back as it is: its status and headers
    // (less hop-by-hop ones) moved, its body streamed.
    let (mut parts, body) = upstream.forward().await?.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
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

/// What [`forward`] does for a request the front read, with the upstream
/// response head kept as it came, for the front to write on.
pub(crate) async fn relay(state: &AppState, incoming: Incoming) -> Result<RawResponse, ApiError> {
    let Incoming {
        method,
        account,
        target,
        headers,
        body,
    } = incoming;
    let account = state.integrations.account(&account).await?;
    let mut upstream = account.request(method, &target).headers(headers);
    if !body.is_empty() {
        upstream = upstream.body(body);
    }
    Ok(upstream.forward_raw().await?)
}

/// The request to the account `id`'s integration: `path` relative to its
/// `base_url`, with `query` and `headers`.
async fn upstream(
    state: &AppState,
    method: &Method,
    id: &str,
    path: &str,
    query: Option<&str>,
    headers: HeaderMap,
) -> Result<RequestBuilder, ApiError> {
    let id = AccountId::new(id)?;
    let account = state.integrations.account(&id).await?;
    Ok(account
        .request(method.clone(), &upstream_target(path, query))
        .headers(headers))
}

/// `/{path}?{query}`: the target relative to the integration's `base_url`.
pub(crate) fn upstream_target(path: &str, query: Option<&str>) -> String {
    let mut target = String::with_capacity(path.len() + query.map_or(0, |query| query.len() + 1) + 1);
    target.push('/');
    target.push_str(path);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    target
}

/// Whether `name`, in any case, is one of [`HOP_BY_HOP`]: its length picks
/// the one or two names it is compared with.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    let candidates: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        4 => &[b"host"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        17 => &[b"transfer-encoding"],
        18 => &[b"proxy-authenticate"],
        19 => &[b"proxy-authorization"],
        _ => return false,
    };
    candidates.iter().any(|candidate| name.eq_ignore_ascii_case(candidate))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Named by `Connection` first: the header itself goes below.
    let listed = connection_listed(headers.get_all(header::CONNECTION).iter().map(|value| value.as_bytes()));
    for name in &listed {
        headers.remove(name);
    }
    // One pass over the names, then only those present removed: cheaper
    // than looking each hop-by-hop name up.
    let mut present = [false; HOP_BY_HOP.len()];
    for index in headers.keys().filter_map(hop_by_hop_index) {
        present[index] = true;
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// The headers that `Connection` values name as hop-by-hop for this
/// connection (RFC 9110 7.6.1), beside the fixed ones: never forwarded.
/// Empty, and allocation-free, for the usual `close` or `keep-alive`.
pub(crate) fn connection_listed<'v>(values: impl Iterator<Item = &'v [u8]>) -> Vec<HeaderName> {
    let mut listed = Vec::new();
    for token in values.flat_map(|value| value.split(|&byte| byte == b',')) {
        let token = token.trim_ascii();
        if token.is_empty() || is_hop_by_hop(token) || token.eq_ignore_ascii_case(b"close") {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            listed.push(name);
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_recognised() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(index), "{name}");
            assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
            assert!(is_hop_by_hop(name.as_str().to_ascii_uppercase().as_bytes()), "{name}");
        }
        for name in [
            header::AUTHORIZATION,
            header::CONTENT_LENGTH,
            header::DATE,
            HeaderName::from_static("x-host"),
        ] {
            assert_eq!(hop_by_hop_index(&name), None, "{name}");
            assert!(!is_hop_by_hop(name.as_str().as_bytes()), "{name}");
        }
    }

    #[test]
    fn stripping_keeps_end_to_end_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        headers.insert(HeaderName::from_static("keep-alive"), "timeout=5".parse().unwrap());
        headers.insert(header::HOST, "example.com".parse().unwrap());
        headers.append(header::ACCEPT, "text/plain".parse().unwrap());
        headers.append(header::ACCEPT, "application/json".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers.get_all(header::ACCEPT).iter().count(), 2);
    }
}
