//! Retries as the integration's policy says, and transport errors reported.

use std::time::Duration;

use integrations::ErrorKind;
use integrations::http::{Method, StatusCode};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::*;

#[tokio::test]
async fn retries_follow_the_policy() {
    let server = MockServer::start().await;
    Mock::given(path("/busy"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "0"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/busy"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    Mock::given(path("/broken"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let definition = retrying_definition(
        &server.uri(),
        "max_attempts = 3, initial_backoff_seconds = 0.01, max_total_seconds = 5",
    );
    let hub = hub(&definition, &[], &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");

    let busy = account.request(Method::GET, "/busy").send().await.expect("sent");
    assert_eq!(
        busy.status(),
        StatusCode::OK,
        "a GET is retried after 503 and Retry-After"
    );
    assert_eq!(hits(&server).await, 3);

    server.reset().await;
    Mock::given(path("/broken"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let post = account
        .request(Method::POST, "/broken")
        .body("x")
        .send()
        .await
        .expect("sent");
    assert_eq!(post.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(hits(&server).await, 1, "a POST is not retried after a 500");

    let get = account.request(Method::GET, "/broken").send().await.expect("sent");
    assert_eq!(get.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(hits(&server).await, 4, "a GET is tried three times in all");

    server.reset().await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let limited = account
        .request(Method::POST, "/limited")
        .body("x")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        limited.status(),
        StatusCode::CREATED,
        "429 was not processed: even a POST is sent again"
    );

    server.reset().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let error = account
        .request(Method::POST, "/slow")
        .body("x")
        .send()
        .await
        .expect_err("timed out");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert_eq!(
        hits(&server).await,
        1,
        "a POST that may have reached the server is not retried"
    );
}

#[tokio::test]
async fn retry_after_beyond_the_budget_returns_the_response() {
    let server = MockServer::start().await;
    Mock::given(path("/busy"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "120"))
        .mount(&server)
        .await;
    let definition = retrying_definition(&server.uri(), "max_total_seconds = 2");
    let hub = hub(&definition, &[], &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "/busy").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits(&server).await, 1);
}

#[tokio::test]
async fn a_streaming_body_is_never_replayed() {
    let server = MockServer::start().await;
    Mock::given(path("/upload"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "0"))
        .mount(&server)
        .await;
    let definition = retrying_definition(&server.uri(), "max_attempts = 5, initial_backoff_seconds = 0.01");
    let hub = hub(&definition, &[], &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account
        .request(Method::PUT, "/upload")
        .streaming_body(reqwest::Body::from("streamed"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits(&server).await, 1);
}

#[tokio::test]
async fn a_connection_that_never_opens_is_retried_then_reported() {
    // A port that was just free: connections to it are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let definition = retrying_definition(
        &format!("http://127.0.0.1:{port}"),
        "max_attempts = 3, initial_backoff_seconds = 0.01",
    );
    let hub = hub(&definition, &[], &[("token", "tok-s3cret")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let error = account
        .request(Method::POST, "/x")
        .body("x")
        .send()
        .await
        .expect_err("refused connection");
    assert_eq!(error.kind(), ErrorKind::Transport);
    assert!(error.is_temporary());
    assert_eq!(
        error.to_string(),
        format!(
            "cannot connect to 127.0.0.1:{port}: connection refused (after 3 attempts) \
             (account `acct`, integration `crm`)"
        )
    );
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(&error);
    while let Some(cause) = source {
        chain.push_str(&format!("{cause:?} "));
        source = cause.source();
    }
    assert!(!chain.contains("s3cret"), "{chain}");
}
