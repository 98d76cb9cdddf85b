//! The proxy route end to end: forwarding both ways, the router embedded
//! alone, pipelining, dot segments and `Connection`-listed headers.
//! `proxy_paths.rs` holds the two HTTP paths to the same bytes.

use std::sync::Arc;

use integrations::auth::oauth2::RedirectUri;
use integrations::secrecy::ExposeSecret;
use integrations_gateway::AppState;
use integrations_gateway::keys::ApiKeys;
use reqwest::StatusCode;
use serde_json::json;

mod common;
use common::*;

#[tokio::test]
async fn the_proxy_forwards_through_the_account_both_ways() {
    use wiremock::matchers::{body_bytes, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/forecast/berlin"))
        .and(query_param("days", "3"))
        .and(header("x-key", "token-s3cret"))
        .and(header("x-trace", "t1"))
        .respond_with(
            ResponseTemplate::new(418)
                .insert_header("x-upstream", "yes")
                .set_body_string("short and stout"),
        )
        .mount(&upstream)
        .await;
    let large = vec![7u8; 3 * 1024 * 1024];
    Mock::given(method("PUT"))
        .and(path("/v1/upload"))
        .and(body_bytes(large.clone()))
        .respond_with(ResponseTemplate::new(201))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/small"))
        .and(body_bytes(b"{\"a\":1}".to_vec()))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(large.clone()))
        .mount(&upstream)
        .await;
    let definitions = DEFINITIONS.replace("https://api.weather.example/v1", &format!("{}/v1", upstream.uri()));
    let gateway = Gateway::with_definitions(&definitions).await;
    let (status, _) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "w1", "integration": "weather", "credentials": { "token": "token-s3cret" } })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let response = gateway
        .http
        .get(format!("{}/v1/accounts/w1/proxy/forecast/berlin?days=3", gateway.base))
        .bearer_auth(&gateway.key)
        .header("x-trace", "t1")
        .send()
        .await
        .expect("proxied");
    assert_eq!(
        response.status(),
        StatusCode::IM_A_TEAPOT,
        "the upstream status comes back as it came"
    );
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.text().await.expect("body"), "short and stout");

    // TRACE would echo the credential back: refused before anything is sent.
    let traced = gateway
        .http
        .request(
            reqwest::Method::TRACE,
            format!("{}/v1/accounts/w1/proxy/forecast", gateway.base),
        )
        .bearer_auth(&gateway.key)
        .send()
        .await
        .expect("trace");
    assert_eq!(traced.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        traced.headers()["allow"],
        "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
    );

    // The path goes as it came: `%2F` stays a character of a segment and
    // `%25` is not decoded twice.
    let encoded = gateway
        .http
        .get(format!("{}/v1/accounts/w1/proxy/files/a%2Fb%2541%20c", gateway.base))
        .bearer_auth(&gateway.key)
        .send()
        .await
        .expect("proxied");
    assert_eq!(encoded.status(), StatusCode::NOT_FOUND, "no mock for it upstream");

    let received = upstream.received_requests().await.expect("recording");
    assert!(
        received
            .iter()
            .any(|request| request.url.path() == "/v1/files/a%2Fb%2541%20c"),
        "{:?}",
        received.iter().map(|request| request.url.path()).collect::<Vec<_>>()
    );
    let first = &received[0];
    assert_eq!(
        first.headers["x-literal-key"], "literal-s3cret",
        "request parameters are applied"
    );
    let forwarded_auth = first.headers.get("authorization");
    assert!(forwarded_auth.is_none(), "the gateway's API key is not forwarded");

    // A large body is streamed up; a small one is buffered; a large
    // response is streamed down.
    let uploaded = gateway
        .http
        .put(format!("{}/v1/accounts/w1/proxy/upload", gateway.base))
        .bearer_auth(&gateway.key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            large
                .chunks(64 * 1024)
                .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
                .collect::<Vec<_>>(),
        )))
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let small = gateway
        .http
        .post(format!("{}/v1/accounts/w1/proxy/small", gateway.base))
        .bearer_auth(&gateway.key)
        .body("{\"a\":1}")
        .send()
        .await
        .expect("small");
    assert_eq!(small.status(), StatusCode::OK);
    assert_eq!(small.bytes().await.expect("body").len(), large.len());

    // The credential's header cannot be set through the proxy.
    let refused = gateway
        .http
        .get(format!("{}/v1/accounts/w1/proxy/forecast/berlin", gateway.base))
        .bearer_auth(&gateway.key)
        .header("x-key", "mine")
        .send()
        .await
        .expect("refused");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let missing = gateway
        .http
        .get(format!("{}/v1/accounts/nobody/proxy/x", gateway.base))
        .bearer_auth(&gateway.key)
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let invalid = gateway
        .http
        .get(format!("{}/v1/accounts/bad%20id/proxy/x", gateway.base))
        .bearer_auth(&gateway.key)
        .send()
        .await
        .expect("invalid");
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = invalid.json().await.expect("error body");
    assert_eq!(body["error"]["kind"], "invalid_input", "{body}");
}

#[tokio::test]
async fn the_router_alone_proxies_as_the_gateway_does() {
    use integrations::http::HttpClient;
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let upstream = MockServer::start().await;
    Mock::given(path("/v1/files/a%2Fb"))
        .respond_with(ResponseTemplate::new(200).set_body_string("file"))
        .mount(&upstream)
        .await;
    let (integrations, keys, key, _dir) =
        weather_account(&upstream.uri(), HttpClient::new().expect("http client")).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&base).expect("redirect"),
        openapi_requires_key: false,
    });
    // Embedded in an axum application of one's own.
    tokio::spawn(async move { axum::serve(listener, integrations_gateway::router(state)).await });

    let http = reqwest::Client::new();
    let url = format!("{base}/v1/accounts/w1/proxy/files/a%2Fb");
    let response = http.get(&url).bearer_auth(&key).send().await.expect("proxied");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "file");
    let refused = http.get(&url).send().await.expect("response");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn one_connection_carries_pipelined_proxy_requests_then_anything_else() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (address, key, dir) = gateway_over_echoing_upstream().await;
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut buffer = Vec::new();
    let auth = format!("Authorization: Bearer {key}\r\n");

    // Three requests in one write: answered in order, bodies reframed.
    let pipelined = format!(
        "GET /v1/accounts/w1/proxy/a?x=1 HTTP/1.1\r\nHost: g\r\n{auth}\r\n\
         POST /v1/accounts/w1/proxy/chunked HTTP/1.1\r\nHost: g\r\n{auth}Content-Length: 5\r\n\r\nhello\
         HEAD /v1/accounts/w1/proxy/h HTTP/1.1\r\nHost: g\r\n{auth}\r\n"
    );
    stream.write_all(pipelined.as_bytes()).await.expect("write");
    let (status, _, body) = read_response(&mut stream, &mut buffer, false).await;
    assert_eq!((status, body.as_str()), (200, "GET /v1/a?x=1 []"));
    let (status, head, body) = read_response(&mut stream, &mut buffer, false).await;
    assert_eq!((status, body.as_str()), (200, "POST /v1/chunked [hello]"));
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let (status, head, _) = read_response(&mut stream, &mut buffer, true).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-length: 13"),
        "a HEAD keeps the upstream's length: {head}"
    );

    // Upstream headers come back as they were sent, less hop-by-hop ones.
    stream
        .write_all(format!("GET /v1/accounts/w1/proxy/hop HTTP/1.1\r\nHost: g\r\n{auth}\r\n").as_bytes())
        .await
        .expect("write");
    let (status, head, body) = read_response(&mut stream, &mut buffer, false).await;
    assert_eq!((status, body.as_str()), (200, "GET /v1/hop []"));
    assert!(head.contains("x-echo-case: kept\r\n"), "{head}");
    for hop in ["keep-alive", "proxy-authenticate"] {
        assert!(!head.contains(hop), "{head}");
    }

    // A revoked key is refused on the connection it was accepted on.
    let other_keys = ApiKeys::in_data_dir(dir.path()).await.expect("keys");
    let (revocable, revocable_key) = other_keys.create("revocable").await.expect("key");
    let with =
        |key: &str| format!("GET /v1/accounts/w1/proxy/r HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\r\n");
    tokio::time::sleep(integrations_gateway::keys::RELOAD_INTERVAL * 2).await;
    stream
        .write_all(with(revocable_key.expose_secret()).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream, &mut buffer, false).await.0, 200);
    other_keys.revoke(&revocable.id).await.expect("revoke");
    tokio::time::sleep(integrations_gateway::keys::RELOAD_INTERVAL * 2).await;
    stream
        .write_all(with(revocable_key.expose_secret()).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream, &mut buffer, false).await.0, 401);

    // A streamed (chunked) request body, then another route: the same
    // connection, served on by hyper.
    let streamed = format!(
        "PUT /v1/accounts/w1/proxy/up HTTP/1.1\r\nHost: g\r\n{auth}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n"
    );
    stream.write_all(streamed.as_bytes()).await.expect("write");
    let (status, _, body) = read_response(&mut stream, &mut buffer, false).await;
    assert_eq!((status, body.as_str()), (200, "PUT /v1/up [abc]"));
    assert_eq!(read_response(&mut stream, &mut buffer, false).await.0, 200);

    // `Connection: close` is honoured.
    let mut closing = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request = format!("GET /v1/accounts/w1/proxy/last HTTP/1.1\r\nHost: g\r\n{auth}Connection: close\r\n\r\n");
    closing.write_all(request.as_bytes()).await.expect("write");
    let mut buffer = Vec::new();
    let (status, head, _) = read_response(&mut closing, &mut buffer, false).await;
    assert_eq!(status, 200);
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(
        closing.read(&mut [0; 16]).await.expect("read"),
        0,
        "closed after the response"
    );
}

/// `..` in a proxied path, in any form, is answered 400 on the front's fast
/// path and on hyper's.
#[tokio::test]
async fn dot_segments_in_a_proxied_path_are_refused_on_both_paths() {
    use tokio::io::AsyncWriteExt;

    let (address, key, _dir) = gateway_over_echoing_upstream().await;
    let auth = format!("Authorization: Bearer {key}\r\n");
    for path in [
        "../../other-tenant/x",
        "%2e%2e/%2E%2E/other-tenant/x",
        "..\\..\\other-tenant\\x",
        "a/./b",
    ] {
        // A plain GET is the front's; a chunked body hands it to hyper.
        for (which, extra) in [
            ("the front", String::new()),
            ("hyper", "Transfer-Encoding: chunked\r\n".to_owned()),
        ] {
            let body = if extra.is_empty() { "" } else { "0\r\n\r\n" };
            let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
            let request = format!(
                "GET /v1/accounts/w1/proxy/{path} HTTP/1.1\r\nHost: g\r\n{auth}{extra}Connection: close\r\n\r\n{body}"
            );
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut buffer = Vec::new();
            let (status, _, body) = read_response(&mut stream, &mut buffer, false).await;
            assert_eq!(status, 400, "{which}, {path}: {body}");
            assert!(body.contains("segment"), "{which}, {path}: {body}");
            assert!(!body.contains("token-s3cret"), "{body}");
        }
    }
}

/// Headers a `Connection` header names are hop-by-hop (RFC 9110 7.6.1):
/// neither the client's nor the upstream's are passed on, on the front's
/// path and on hyper's.
#[tokio::test]
async fn headers_named_by_connection_are_not_forwarded_either_way() {
    use tokio::io::AsyncWriteExt;

    let (address, key, _dir) = gateway_over_echoing_upstream().await;
    let auth = format!("Authorization: Bearer {key}\r\n");
    for (which, method, extra, body) in [
        ("the front", "GET", "", ""),
        ("hyper", "POST", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        let request = format!(
            "{method} /v1/accounts/w1/proxy/listed HTTP/1.1\r\nHost: g\r\n{auth}{extra}\
             Connection: X-Client-Hop\r\nX-Client-Hop: client-hop\r\n\r\n{body}"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut buffer = Vec::new();
        let (status, head, echo) = read_response(&mut stream, &mut buffer, false).await;
        assert_eq!(status, 200, "{which}: {echo}");
        assert!(echo.starts_with(&format!("{method} /v1/listed")), "{which}: {echo}");
        assert!(
            !echo.contains("x-client-hop"),
            "{which}: the client's listed header was forwarded: {echo}"
        );
        assert!(head.contains("x-kept: 1"), "{which}: {head}");
        assert!(
            !head.contains("x-listed"),
            "{which}: the upstream's listed header came back: {head}"
        );
    }
}
