//! The proxy's two HTTP implementations held to one behaviour: every case
//! runs through the front (the fast path) and through hyper (the fast path
//! switched off), and the upstream requests and the client's response must
//! be the same bytes, but for the `Date` header's value.
//!
//! The cases are tables: add a row to [`BEHAVIOURS`] for a proxy behaviour,
//! to [`SMUGGLING`] for a request whose framing an attacker might play with.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use integrations::auth::oauth2::RedirectUri;
use integrations_gateway::AppState;
use integrations_gateway::server::ConnectionSettings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::weather_account;

/// The credential the account `w1` sends upstream, in `X-Key` (the shared
/// `weather_account`'s).
const TOKEN: &str = "token-s3cret";

/// A proxy request, what the upstream answers it, and what the client must
/// get first (the status of the first response), where that is known.
struct Case {
    name: &'static str,
    /// What the client sends; `{key}` stands for a valid API key.
    request: &'static str,
    /// What the upstream answers every request with; `None`: nothing
    /// listens on the upstream's address.
    upstream: Option<&'static str>,
    /// The first response's status; 0: the connection closes without one.
    status: u16,
    /// Whether the gateway refuses the request itself: then the upstream
    /// gets none of it, only requests pipelined after it.
    refused: bool,
}

const fn case(name: &'static str, request: &'static str, upstream: &'static str, status: u16) -> Case {
    Case {
        name,
        request,
        upstream: Some(upstream),
        status,
        refused: false,
    }
}

/// A request the gateway answers `status` itself.
const fn refused(name: &'static str, request: &'static str, status: u16) -> Case {
    Case {
        name,
        request,
        upstream: Some(OK_JSON),
        status,
        refused: true,
    }
}

const OK_JSON: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";

/// What the proxy forwards, refuses, strips and limits.
const BEHAVIOURS: &[Case] = &[
    case(
        "a GET with a query",
        "GET /v1/accounts/w1/proxy/items?page=2&q=a%2Fb HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Accept: application/json\r\nX-Request-Id: 7\r\nConnection: close\r\n\r\n",
        OK_JSON,
        200,
    ),
    case(
        "a POST with a body",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"name\":\"a\"}\n",
        "HTTP/1.1 201 Created\r\nLocation: /v1/items/9\r\nContent-Length: 0\r\n\r\n",
        201,
    ),
    case(
        "every forwarded method: PUT",
        "PUT /v1/accounts/w1/proxy/items/9 HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{}",
        OK_JSON,
        200,
    ),
    case(
        "every forwarded method: PATCH",
        "PATCH /v1/accounts/w1/proxy/items/9 HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{}",
        OK_JSON,
        200,
    ),
    case(
        "every forwarded method: DELETE",
        "DELETE /v1/accounts/w1/proxy/items/9 HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
        204,
    ),
    case(
        "every forwarded method: OPTIONS",
        "OPTIONS /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nAllow: GET, POST\r\n\r\n",
        204,
    ),
    case(
        "HEAD keeps the length the GET would have",
        "HEAD /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n",
        200,
    ),
    case(
        "a chunked upstream response",
        "GET /v1/accounts/w1/proxy/stream HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        200,
    ),
    case(
        "an upstream response ended by closing",
        "GET /v1/accounts/w1/proxy/old HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end",
        200,
    ),
    case(
        "an upstream error status comes back as it came",
        "GET /v1/accounts/w1/proxy/missing HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"error\":\"nope\"}\n",
        404,
    ),
    case(
        "hop-by-hop headers are stripped both ways",
        "GET /v1/accounts/w1/proxy/hop HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nKeep-Alive: timeout=9\r\n\
         TE: trailers\r\nProxy-Authorization: Basic eDp5\r\nConnection: close, X-Client-Hop\r\nX-Client-Hop: 1\r\n\
         X-End-To-End: kept\r\n\r\n",
        "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, X-Upstream-Hop\r\nX-Upstream-Hop: 1\r\n\
         Proxy-Authenticate: Basic\r\nUpgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
        200,
    ),
    case(
        "repeated headers keep their values and order",
        "GET /v1/accounts/w1/proxy/cookies HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nAccept: a\r\n\
         Accept: b\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
        200,
    ),
    case(
        "two pipelined requests",
        "GET /v1/accounts/w1/proxy/one HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\r\n\
         GET /v1/accounts/w1/proxy/two HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        OK_JSON,
        200,
    ),
    case(
        "an upstream 100 Continue before the response",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        200,
    ),
    case(
        "an upstream 103 Early Hints before the response",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        200,
    ),
    case(
        "an upstream 204 with a body: the body is not passed on",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nextra",
        204,
    ),
    case(
        "an upstream 304 with a body: the body is not passed on",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nIf-None-Match: \"v1\"\r\n\
         Connection: close\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\nextra",
        304,
    ),
    case(
        "an upstream body shorter than announced",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\nshort",
        0,
    ),
    refused(
        "no API key",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
        401,
    ),
    refused(
        "a wrong API key",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ik_wrong_key\r\nConnection: close\r\n\r\n",
        401,
    ),
    refused(
        "a refused request's body is dropped and the next pipelined one answered",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\nhello\
         GET /v1/accounts/w1/proxy/two HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        401,
    ),
    refused(
        "a body that stops coming",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 10\r\n\r\nhello",
        408,
    ),
    refused(
        "a chunked body that stops coming",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        408,
    ),
    refused(
        "HEAD of an unknown account",
        "HEAD /v1/accounts/nobody/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        404,
    ),
    refused(
        "TRACE is not forwarded",
        "TRACE /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        405,
    ),
    refused(
        "a dot segment",
        "GET /v1/accounts/w1/proxy/../other HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        400,
    ),
    refused(
        "a percent-encoded dot segment",
        "GET /v1/accounts/w1/proxy/%2E%2e/other HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        400,
    ),
    refused(
        "the credential's header set by the client",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nX-Key: mine\r\n\
         Connection: close\r\n\r\n",
        403,
    ),
    refused(
        "an unknown account",
        "GET /v1/accounts/nobody/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        404,
    ),
    refused(
        "an invalid account id",
        "GET /v1/accounts/no%20body/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        400,
    ),
    Case {
        name: "an upstream that refuses connections",
        request: "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        upstream: None,
        status: 502,
        refused: false,
    },
    case(
        "Expect: 100-continue",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nExpect: 100-continue\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        OK_JSON,
        100,
    ),
    case(
        "HTTP/1.0",
        "GET /v1/accounts/w1/proxy/items HTTP/1.0\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\r\n",
        OK_JSON,
        200,
    ),
];

/// Requests whose framing is ambiguous or malformed: each is refused with
/// 400, or handled as hyper handles it, never forwarded with a body the
/// gateway and the upstream could read differently.
const SMUGGLING: &[Case] = &[
    // hyper removes the length and reads the chunks, as RFC 9112 6.3 asks
    // of an intermediary; the front leaves such requests to hyper.
    case(
        "Content-Length and Transfer-Encoding: the chunks count",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        OK_JSON,
        200,
    ),
    refused(
        "two different Content-Length headers",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 5\r\n\
         Content-Length: 4\r\nConnection: close\r\n\r\nhello",
        400,
    ),
    // Taken as one (RFC 9110 8.6), and forwarded with one.
    case(
        "two equal Content-Length headers",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 5\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\nhello",
        OK_JSON,
        200,
    ),
    case(
        "Content-Length and Transfer-Encoding, then a pipelined request",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
         GET /v1/accounts/w1/proxy/after HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        OK_JSON,
        200,
    ),
    refused(
        "a Content-Length list",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 5, 5\r\n\
         Connection: close\r\n\r\nhello",
        400,
    ),
    refused(
        "a signed Content-Length",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: +5\r\n\
         Connection: close\r\n\r\nhello",
        400,
    ),
    refused(
        "Transfer-Encoding: chunked, identity",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    refused(
        "Transfer-Encoding: identity",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: identity\r\nConnection: close\r\n\r\nhello",
        400,
    ),
    refused(
        "a header folded over two lines (obs-fold)",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nX-Folded: a\r\n b\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\nhello",
        400,
    ),
    refused(
        "a folded Transfer-Encoding",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 5\r\n\
         Transfer-Encoding:\r\n chunked\r\nConnection: close\r\n\r\nhello",
        400,
    ),
    case(
        "lines ended by a bare LF",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\nHost: g\nAuthorization: Bearer {key}\nConnection: close\n\n",
        OK_JSON,
        200,
    ),
    refused(
        "a space before a header's colon",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length : 5\r\n\
         Connection: close\r\n\r\nhello",
        400,
    ),
    refused(
        "a space inside a header's name",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nTransfer Encoding: chunked\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\nhello",
        400,
    ),
    refused(
        "a chunk size that overflows",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nffffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    refused(
        "a chunk size that is not hexadecimal",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    case(
        "chunk extensions are dropped",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;name=value\r\nhello\r\n0;last\r\n\r\n",
        OK_JSON,
        200,
    ),
    case(
        "trailers are not forwarded",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: smuggled\r\n\r\n",
        OK_JSON,
        200,
    ),
    refused(
        "a request hidden in a refused request's body",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nContent-Length: 71\r\n\r\n\
         GET /v1/accounts/w1/proxy/smuggled HTTP/1.1\r\nHost: g\r\nX-Hidden: 1\r\n\r\n\
         GET /v1/accounts/w1/proxy/after HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        401,
    ),
    refused(
        "a pipelined request after a malformed one",
        "POST /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 1, 2\r\n\r\n\
         GET /v1/accounts/w1/proxy/after HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        400,
    ),
    refused(
        "a NUL in a header value",
        "GET /v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nX-Value: a\0b\r\n\
         Connection: close\r\n\r\n",
        400,
    ),
    // The target's host is not the upstream's: the account's base URL is.
    case(
        "an absolute-form target goes to the account's upstream",
        "GET http://evil.example/v1/accounts/w1/proxy/items HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\
         Connection: close\r\n\r\n",
        OK_JSON,
        200,
    ),
];

#[tokio::test]
async fn every_proxy_behaviour_is_the_same_on_both_paths() {
    check_both_paths(BEHAVIOURS).await;
}

#[tokio::test]
async fn ambiguous_framing_is_refused_or_handled_as_hyper_does() {
    check_both_paths(SMUGGLING).await;
}

async fn check_both_paths(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let front = exchange(case, true).await;
        let hyper = exchange(case, false).await;
        if front != hyper {
            failures.push(format!(
                "{}: the paths differ\n  front: {front:?}\n  hyper: {hyper:?}",
                case.name
            ));
            continue;
        }
        let status = match front.client.get(9..12) {
            Some(status) => String::from_utf8_lossy(status).into_owned(),
            None => "0".to_owned(),
        };
        if status != case.status.to_string() {
            failures.push(format!("{}: expected {}, got {front:?}", case.name, case.status));
        }
        if front
            .client
            .windows(TOKEN.len())
            .any(|window| window == TOKEN.as_bytes())
        {
            failures.push(format!("{}: the credential came back to the client", case.name));
        }
        // A refused request never reaches the upstream; only the requests
        // pipelined after it, to `/two` or `/after`, may.
        let forwarded_anyway = front
            .upstream
            .iter()
            .any(|request| !request.starts_with(b"GET /v1/two ") && !request.starts_with(b"GET /v1/after "));
        if case.refused && forwarded_anyway {
            failures.push(format!("{}: refused, yet forwarded: {front:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What one path did with a case: the requests the upstream received and
/// the bytes the client received, `Date` values masked.
#[derive(PartialEq, Eq)]
struct Exchange {
    upstream: Vec<Vec<u8>>,
    client: Vec<u8>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let upstream: Vec<_> = self
            .upstream
            .iter()
            .map(|bytes| String::from_utf8_lossy(bytes))
            .collect();
        formatter
            .debug_struct("Exchange")
            .field("upstream", &upstream)
            .field("client", &String::from_utf8_lossy(&self.client))
            .finish()
    }
}

/// Runs `case` against a gateway of its own, its fast path on or off.
async fn exchange(case: &Case, fast_path: bool) -> Exchange {
    let received = Arc::new(Mutex::new(Vec::new()));
    let upstream = match case.upstream {
        Some(answer) => scripted_upstream(answer, Arc::clone(&received)).await,
        None => {
            // Bound and closed: nothing listens there.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").to_string()
        }
    };
    let upstream_address = upstream.clone();
    let (address, key, _dir) = gateway(&upstream, fast_path).await;
    let mut client = TcpStream::connect(address).await.expect("connect");
    client
        .write_all(case.request.replace("{key}", &key).as_bytes())
        .await
        .expect("write");
    let mut response = Vec::new();
    // Every case's last request asks to close, or its body never ends; a
    // path that keeps the connection open shows as a difference.
    let _ = tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut response)).await;
    // Each run has an upstream of its own, on a port of its own.
    let upstream = received
        .lock()
        .expect("lock")
        .iter()
        .map(|request| {
            String::from_utf8_lossy(request)
                .replace(&upstream, "upstream")
                .into_bytes()
        })
        .collect();
    // Errors name the upstream's address.
    let client = String::from_utf8_lossy(&mask_dates(&response)).replace(&upstream_address, "upstream");
    Exchange {
        upstream,
        client: client.into_bytes(),
    }
}

/// `response` with each `Date` header's value replaced by `*`.
fn mask_dates(response: &[u8]) -> Vec<u8> {
    let mut masked = Vec::with_capacity(response.len());
    let mut rest = response;
    while let Some(start) = rest
        .windows(7)
        .position(|window| window.eq_ignore_ascii_case(b"\ndate: "))
    {
        let value = start + 7;
        let end = rest[value..]
            .iter()
            .position(|&byte| byte == b'\r')
            .map_or(rest.len(), |end| value + end);
        masked.extend_from_slice(&rest[..value]);
        masked.push(b'*');
        rest = &rest[end..];
    }
    masked.extend_from_slice(rest);
    masked
}

/// An upstream that records each request it receives, whole, and answers
/// every one with `answer`; it closes a connection once a request's answer
/// asks to, or the request came without keep-alive.
async fn scripted_upstream(answer: &'static str, received: Arc<Mutex<Vec<Vec<u8>>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let end = loop {
                        if let Some(end) = request_end(&buffer) {
                            break end;
                        }
                        let mut chunk = [0; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    };
                    received.lock().expect("lock").push(buffer.drain(..end).collect());
                    if stream.write_all(answer.as_bytes()).await.is_err()
                        || answer.to_ascii_lowercase().contains("connection: close")
                    {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// Where the whole request at the front of `bytes` ends: its head, and a
/// body by `Content-Length` or chunked.
fn request_end(bytes: &[u8]) -> Option<usize> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut slots);
    let httparse::Status::Complete(head) = request.parse(bytes).ok()? else {
        return None;
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|slot| slot.name.eq_ignore_ascii_case(name))
            .map(|slot| String::from_utf8_lossy(slot.value).into_owned())
    };
    if header("transfer-encoding").is_some() {
        let mut at = head;
        loop {
            let httparse::Status::Complete((used, size)) = httparse::parse_chunk_size(&bytes[at..]).ok()? else {
                return None;
            };
            at += used + usize::try_from(size).ok()? + 2;
            if bytes.len() < at {
                return None;
            }
            if size == 0 {
                return Some(at);
            }
        }
    }
    let length: usize = header("content-length").map_or(Some(0), |value| value.parse().ok())?;
    (bytes.len() >= head + length).then_some(head + length)
}

/// A gateway over the shared test definitions, whose account `w1` of
/// `weather` has its base URL on `upstream` and sends [`TOKEN`] in `X-Key`:
/// its address and an API key.
async fn gateway(upstream: &str, fast_path: bool) -> (std::net::SocketAddr, String, tempfile::TempDir) {
    let http = integrations::http::HttpClient::with_pool_per_thread().expect("http client");
    let (integrations, keys, key, dir) = weather_account(&format!("http://{upstream}"), http).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&format!("http://{address}")).expect("redirect"),
        openapi_requires_key: false,
    });
    let settings = ConnectionSettings {
        fast_path,
        body_read_timeout: Duration::from_millis(500),
        ..ConnectionSettings::default()
    };
    tokio::spawn(integrations_gateway::serve_with(
        listener,
        state,
        settings,
        std::future::pending(),
    ));
    (address, key, dir)
}
