//! `forward` and `forward_raw`, as a proxy sends: on both transports, the
//! response streamed back, every framing read, broken responses refused.

use std::sync::Arc;
use std::time::Duration;

use integrations::ErrorKind;
use integrations::http::{HttpClient, Method, StatusCode};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::*;

#[tokio::test]
async fn forward_sends_what_send_sends_and_streams_the_response_back() {
    for (transport, http) in forwarding_clients() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/contacts"))
            .respond_with(
                ResponseTemplate::new(201)
                    .insert_header("X-Upstream", "yes")
                    .set_body_string("created"),
            )
            .mount(&server)
            .await;
        let definitions = format!(
            r#"
            [[integration]]
            key = "crm"
            name = "CRM"
            base_url = "{uri}/api"
            auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
            request_parameters = [
              {{ type = "header", name = "Accept", value = "application/json" }},
              {{ type = "url_parameter", name = "tenant", value = "t 1" }},
            ]
            "#,
            uri = server.uri()
        );
        let hub = hub_with(http, &definitions, &[("token", "tok-123")]).await;
        let account = hub.client(&acct()).await.expect("account");
        let response = account
            .request(Method::POST, "contacts?page=2")
            .header("Content-Type", "text/plain")
            .body("new contact")
            .forward()
            .await
            .unwrap_or_else(|error| panic!("{transport}: {error}"));
        assert_eq!(response.status(), StatusCode::CREATED, "{transport}");
        assert_eq!(response.headers()["x-upstream"], "yes", "{transport}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"created", "{transport}");

        let request = only_request(&server).await;
        assert_eq!(request.url.query(), Some("page=2&tenant=t+1"), "{transport}");
        assert_eq!(
            header_values(&request, "authorization"),
            ["Bearer tok-123"],
            "{transport}"
        );
        assert_eq!(header_values(&request, "accept"), ["application/json"], "{transport}");
        assert_eq!(header_values(&request, "content-type"), ["text/plain"], "{transport}");
        assert_eq!(request.body, b"new contact", "{transport}");

        let error = account
            .request(Method::GET, "contacts")
            .header("authorization", "Bearer mine")
            .forward()
            .await
            .expect_err("the credential's header cannot be set");
        assert_eq!(error.kind(), ErrorKind::Refused, "{transport}");
    }
}

/// An upstream that sends the response head at once and the body a second
/// later.
async fn slow_body_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n").await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = stream.write_all(b"pong").await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn forward_limits_the_wait_for_the_head_not_the_body() {
    for (transport, http) in forwarding_clients() {
        let upstream = slow_body_upstream().await;
        let definition = retrying_definition(&upstream, "max_attempts = 1");
        let hub = hub_with(http, &definition, &[("token", "tok")]).await;
        let account = hub.client(&acct()).await.expect("account");

        let response = account
            .request(Method::GET, "/ping")
            .forward()
            .await
            .unwrap_or_else(|error| panic!("{transport}: {error}"));
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap_or_else(|error| panic!("{transport}: the body is not cut: {error}"))
            .to_bytes();
        assert_eq!(&body[..], b"pong", "{transport}");

        // `send` holds the whole exchange, body included, to the limit.
        let response = account.request(Method::GET, "/ping").send().await.expect("head");
        let error = response.bytes().await.expect_err("the body comes after the limit");
        assert!(error.is_timeout(), "{transport}: {error}");
    }

    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    for (transport, http) in forwarding_clients() {
        let definition = retrying_definition(&server.uri(), "max_attempts = 1");
        let hub = hub_with(http, &definition, &[("token", "tok")]).await;
        let account = hub.client(&acct()).await.expect("account");
        let error = account
            .request(Method::GET, "/slow")
            .forward()
            .await
            .expect_err("no head within the limit");
        assert_eq!(error.kind(), ErrorKind::Timeout, "{transport}: {error}");
    }
}

#[tokio::test]
async fn forward_retries_a_connection_that_never_opens_then_reports_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    for (transport, http) in forwarding_clients() {
        let definition = retrying_definition(
            &format!("http://127.0.0.1:{port}"),
            "max_attempts = 3, initial_backoff_seconds = 0.01",
        );
        let hub = hub_with(http, &definition, &[("token", "tok-s3cret")]).await;
        let account = hub.client(&acct()).await.expect("account");
        let error = account
            .request(Method::POST, "/x")
            .body("x")
            .forward()
            .await
            .expect_err("refused connection");
        assert_eq!(error.kind(), ErrorKind::Transport, "{transport}");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot connect to 127.0.0.1:{port}: connection refused (after 3 attempts) \
                 (account `acct`, integration `crm`)"
            ),
            "{transport}"
        );
        assert!(!format!("{error:?}").contains("s3cret"), "{transport}");
    }
}

/// An upstream that answers the requests on each connection with the next
/// of `responses` (raw HTTP/1.1), and closes a connection after a response
/// marked `close`. Returns its URL and the number of connections it took.
async fn scripted_upstream(responses: Vec<(&'static [u8], bool)>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::clone(&connections);
    let responses = Arc::new(std::sync::Mutex::new(responses.into_iter()));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let responses = Arc::clone(&responses);
            tokio::spawn(async move {
                let mut received = Vec::new();
                loop {
                    while !received.windows(4).any(|window| window == b"\r\n\r\n") {
                        let mut chunk = [0; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => received.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let end = received
                        .windows(4)
                        .position(|window| window == b"\r\n\r\n")
                        .expect("head")
                        + 4;
                    received.drain(..end);
                    let Some((response, close)) = responses.lock().expect("responses").next() else {
                        return;
                    };
                    stream.write_all(response).await.expect("respond");
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{address}"), connections)
}

async fn body_of(response: http::Response<integrations::http::ForwardBody>) -> Vec<u8> {
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes()
        .to_vec()
}

#[tokio::test]
async fn forward_raw_keeps_the_head_as_sent() {
    let (upstream, _) = scripted_upstream(vec![
        (
            b"HTTP/1.1 201 Created\r\nX-Request-Id: r-1\r\nSet-Cookie: session=s3cret\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        (
            b"HTTP/1.1 201 Created\r\nX-Request-Id: r-1\r\nSet-Cookie: session=s3cret\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
    ])
    .await;
    let definition = retrying_definition(&upstream, "max_attempts = 1");
    let hub = hub_with(HttpClient::new().expect("client"), &definition, &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");

    let raw = account.request(Method::GET, "/x").forward_raw().await.expect("raw");
    assert_eq!(raw.status, StatusCode::CREATED);
    let headers: Vec<(&[u8], &[u8])> = raw.headers.iter().collect();
    assert_eq!(
        headers,
        [
            (&b"X-Request-Id"[..], &b"r-1"[..]),
            (b"Set-Cookie", b"session=s3cret"),
            (b"set-cookie", b"b=2"),
            (b"Content-Length", b"2"),
        ]
    );
    assert_eq!(raw.headers.get("x-request-id"), Some(&b"r-1"[..]));
    assert_eq!(raw.headers.get("SET-COOKIE"), Some(&b"session=s3cret"[..]));
    assert_eq!(raw.headers.get("retry-after"), None);
    // Names only: values may be secrets.
    let shown = format!("{raw:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("Set-Cookie"), "{shown}");
    assert_eq!(
        http_body_util::BodyExt::collect(raw.body)
            .await
            .expect("body")
            .to_bytes(),
        &b"ok"[..]
    );

    // The same response through `forward`: the headers in a map.
    let response = account.request(Method::GET, "/x").forward().await.expect("forward");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], "r-1");
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["session=s3cret", "b=2"]);
    assert_eq!(body_of(response).await, b"ok");
}

#[tokio::test]
async fn forward_raw_honours_retry_after() {
    let (upstream, _) = scripted_upstream(vec![
        (
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false),
    ])
    .await;
    let definition = retrying_definition(
        &upstream,
        "max_attempts = 2, initial_backoff_seconds = 0.01, max_total_seconds = 5",
    );
    let hub = hub_with(HttpClient::new().expect("client"), &definition, &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let started = std::time::Instant::now();
    let raw = account.request(Method::GET, "/x").forward_raw().await.expect("raw");
    assert_eq!(raw.status, StatusCode::OK);
    // The server's second, not the policy's 10 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn forward_reads_every_framing_and_keeps_the_connection_for_the_next() {
    use std::sync::atomic::Ordering;
    let (upstream, connections) = scripted_upstream(vec![
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc", false),
        (b"HTTP/1.1 204 No Content\r\nx-kind: empty\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nlast", true),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    ])
    .await;
    let definition = retrying_definition(&upstream, "max_attempts = 1");
    let hub = hub_with(HttpClient::new().expect("client"), &definition, &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let forward = |method: Method| account.request(method, "/x").forward();

    let chunked = forward(Method::GET).await.expect("chunked");
    assert_eq!(body_of(chunked).await, b"hello, world");
    let after_interim = forward(Method::GET).await.expect("after 100");
    assert_eq!(after_interim.status(), StatusCode::OK);
    assert_eq!(body_of(after_interim).await, b"abc");
    let empty = forward(Method::GET).await.expect("204");
    assert_eq!(empty.status(), StatusCode::NO_CONTENT);
    assert_eq!(empty.headers()["x-kind"], "empty");
    assert_eq!(body_of(empty).await, b"");
    let head = forward(Method::HEAD).await.expect("HEAD");
    assert_eq!(
        head.headers()["content-length"],
        "5",
        "the length is the GET's, as sent"
    );
    assert_eq!(body_of(head).await, b"");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection so far, kept alive"
    );

    let until_close = forward(Method::GET).await.expect("HTTP/1.0 without length");
    assert_eq!(body_of(until_close).await, b"until the end");
    let closing = forward(Method::GET).await.expect("connection: close");
    assert_eq!(body_of(closing).await, b"last");
    let fresh = forward(Method::GET).await.expect("on a new connection");
    assert_eq!(body_of(fresh).await, b"ok");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        3,
        "a closed connection is not reused"
    );
}

#[tokio::test]
async fn forward_refuses_a_response_that_breaks_http() {
    for (response, what) in [
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"[..],
            "two lengths",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "a negative length"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
            "an unasked upgrade",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", "no status line"),
    ] {
        let (upstream, _) = scripted_upstream(vec![(response, true)]).await;
        let definition = retrying_definition(&upstream, "max_attempts = 1");
        let hub = hub_with(HttpClient::new().expect("client"), &definition, &[("token", "tok")]).await;
        let account = hub.client(&acct()).await.expect("account");
        let error = account.request(Method::GET, "/x").forward().await.expect_err(what);
        assert_eq!(error.kind(), ErrorKind::Transport, "{what}: {error}");
    }

    let (upstream, _) = scripted_upstream(vec![(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", true)]).await;
    let definition = retrying_definition(&upstream, "max_attempts = 1");
    let hub = hub_with(HttpClient::new().expect("client"), &definition, &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "/x").forward().await.expect("head");
    let error = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect_err("a body cut short is an error, not a short body");
    assert!(
        error
            .to_string()
            .contains("closed the connection before the end of the body"),
        "{error}"
    );
}

#[tokio::test]
async fn forward_sends_again_when_the_server_closed_a_pooled_connection() {
    use std::sync::atomic::Ordering;
    // The server closes each connection after one response without saying
    // so, as servers do with idle keep-alive connections.
    let (upstream, connections) = scripted_upstream(vec![
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst", true),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond", true),
    ])
    .await;
    let definition = retrying_definition(&upstream, "max_attempts = 1");
    let hub = hub_with(HttpClient::new().expect("client"), &definition, &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let first = account.request(Method::GET, "/x").forward().await.expect("first");
    assert_eq!(body_of(first).await, b"first");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = account
        .request(Method::GET, "/x")
        .forward()
        .await
        .expect("sent again on a new connection, not counted as an attempt");
    assert_eq!(body_of(second).await, b"second");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_forwarded_response_prints_without_its_body() {
    let (upstream, _) = scripted_upstream(vec![(
        b"HTTP/1.1 200 OK\r\ncontent-length: 23\r\n\r\n{\"token\":\"body-s3cret\"}",
        false,
    )])
    .await;
    let definition = retrying_definition(&upstream, "max_attempts = 1");
    let hub = hub_with(HttpClient::new().expect("client"), &definition, &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "/x").forward().await.expect("response");
    let printed = format!("{response:?}");
    assert!(!printed.contains("body-s3cret"), "{printed}");
    assert_eq!(body_of(response).await, b"{\"token\":\"body-s3cret\"}");
}
