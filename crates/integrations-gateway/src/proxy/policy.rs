//! What the proxy forwards, refuses, strips and limits: one policy, which
//! both HTTP implementations call (the front's fast path in
//! `server/front.rs` and hyper's in [`super::forward`]), so that they cannot
//! drift apart. `tests/proxy_paths.rs` holds them to the same bytes.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse as _, Response};

use crate::error::ApiError;
use crate::keys::ApiKeys;

/// Bodies up to this size are held in memory, so the request can be
/// retried; larger ones, and those of unknown length, are streamed.
pub(crate) const BUFFERED_BODY: u64 = 1024 * 1024;

/// The methods forwarded: not TRACE (it would echo the credential back)
/// nor CONNECT.
pub(crate) const FORWARDED: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

/// 405 for a method that is not [`FORWARDED`], with `Allow`.
pub(crate) fn refuse_method(method: &Method) -> Response {
    let mut refusal = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not forwarded"),
    )
    .into_response();
    refusal.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
    );
    refusal
}

/// 408 for a body that did not all arrive in time; the connection closes,
/// as the rest of the body may still come.
pub(crate) fn body_timed_out() -> Response {
    let mut response = StatusCode::REQUEST_TIMEOUT.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The id of the valid API key `Authorization` holds (`Bearer <key>`), if
/// it holds one.
pub(crate) fn presented_key(keys: &ApiKeys, authorization: Option<&[u8]>) -> Option<String> {
    authorization
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|key| keys.verify(key.trim()))
        .map(|key| key.id)
}

/// `/v1/accounts/{id}/proxy/{path}` split into the id and the path, both as
/// the client sent them: not percent-decoded, so that `%2F` stays within its
/// segment and `%25` is not decoded twice on the way. Dot segments in the
/// path are refused later, when it is joined to the base URL.
pub(crate) fn split(path: &str) -> Option<(&str, &str)> {
    let (id, rest) = path.strip_prefix("/v1/accounts/")?.split_once('/')?;
    let path = rest.strip_prefix("proxy/")?;
    // As the route `{*path}` wants: something after `proxy/`.
    (!id.is_empty() && !path.is_empty()).then_some((id, path))
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

/// Whether `name` is hop-by-hop: one of the headers that describe one
/// connection, not the message (RFC 9110 7.6.1), or `Host`; never
/// forwarded, either way. A `match`, which compiles to a
/// switch on the length before any bytes are compared.
pub(crate) fn is_hop_by_hop_name(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// Whether `name`, in any case, is hop-by-hop (see [`is_hop_by_hop_name`]): its length picks
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

/// Whether a header is forwarded, given the names `Connection` listed: not
/// hop-by-hop, not listed, and not the gateway's API key (`request`).
pub(crate) fn forwards(name: &[u8], listed: &[HeaderName], request: bool) -> bool {
    let api_key = request && name.eq_ignore_ascii_case(b"authorization");
    let named = listed
        .iter()
        .any(|listed| name.eq_ignore_ascii_case(listed.as_str().as_bytes()));
    !(is_hop_by_hop(name) || api_key || named)
}

/// The end-to-end headers of a request (`request`) or a response, in their
/// order: what [`forwards`] lets through.
pub(crate) fn end_to_end(headers: HeaderMap, request: bool) -> HeaderMap {
    let listed = connection_listed(headers.get_all(header::CONNECTION).iter().map(HeaderValue::as_bytes));
    let kept = |name: &HeaderName| forwards(name.as_str().as_bytes(), &listed, request);
    if headers.keys().all(kept) {
        return headers;
    }
    // Rebuilt rather than removed from: removal moves the last header into
    // the gap, and the order must stay as it came.
    let mut forwarded = HeaderMap::with_capacity(headers.len());
    let mut current = None;
    for (name, value) in headers {
        if let Some(name) = name {
            current = Some(name);
        }
        if let Some(name) = current.as_ref().filter(|name| kept(name)) {
            forwarded.append(name.clone(), value);
        }
    }
    forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hop-by-hop name.
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

    #[test]
    fn hop_by_hop_names_are_recognised() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop_name(name), "{name}");
            assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
            assert!(is_hop_by_hop(name.as_str().to_ascii_uppercase().as_bytes()), "{name}");
        }
        for name in [
            header::AUTHORIZATION,
            header::CONTENT_LENGTH,
            header::DATE,
            HeaderName::from_static("x-host"),
        ] {
            assert!(!is_hop_by_hop_name(&name), "{name}");
            assert!(!is_hop_by_hop(name.as_str().as_bytes()), "{name}");
        }
    }

    #[test]
    fn end_to_end_headers_keep_their_order() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "example.com".parse().unwrap());
        headers.insert(header::CONNECTION, "keep-alive, X-Listed".parse().unwrap());
        headers.append(header::ACCEPT, "text/plain".parse().unwrap());
        headers.append(header::ACCEPT, "application/json".parse().unwrap());
        headers.insert(HeaderName::from_static("x-listed"), "1".parse().unwrap());
        headers.insert(HeaderName::from_static("keep-alive"), "timeout=5".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer key".parse().unwrap());
        headers.insert(header::DATE, "now".parse().unwrap());
        let names: Vec<_> = end_to_end(headers.clone(), true)
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect();
        assert_eq!(names, ["accept: text/plain", "accept: application/json", "date: now"]);
        assert!(end_to_end(headers, false).contains_key(header::AUTHORIZATION));
    }
}
