//! Custom Token: obtained, cached, renewed once for many requests, and
//! refused tokens reported without secrets.

use std::time::Duration;

use integrations::http::{Method, StatusCode};
use integrations::secrecy::SecretString;
use integrations::time::OffsetDateTime;
use integrations::time::format_description::well_known::Rfc3339;
use integrations::{ErrorKind, Integrations, Secrets};
use wiremock::matchers::{body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::*;

fn custom_token_definition(uri: &str, extra: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "partner"
        name = "Partner"
        base_url = "{uri}/api"
        parameters = [{{ name = "username" }}, {{ name = "password", secret = true }}]
        [integration.auth]
        type = "custom_token"
        access_token_endpoint = "{uri}/session"
        access_token_verb = "POST"
        access_token_parameters = {{ username = "{{username}}", password = "{{password}}", scope = "all read" }}
        token = {{ parameter_type = "header", parameter_name = "X-Session", value_template = "{{token}}" }}
        {extra}
        "#
    )
}

async fn custom_hub(server: &MockServer, extra: &str) -> Integrations {
    hub(
        &custom_token_definition(&server.uri(), extra),
        &[("username", "ann"), ("password", "pw-s3cret&=")],
        &[],
    )
    .await
}

#[tokio::test]
async fn custom_token_is_fetched_once_and_reused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("password=pw-s3cret%26%3D&scope=all+read&username=ann"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({ "access_token": "t1", "expires_in": "3600" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/data"))
        .and(header("x-session", "t1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(3)
        .mount(&server)
        .await;
    let hub = custom_hub(&server, "").await;
    let account = hub.client(&acct()).await.expect("account");
    for _ in 0..3 {
        let response = account.request(Method::GET, "data").send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The token is kept with the account in storage, sealed.
    let stored = hub.store().get(&acct()).await.expect("stored");
    assert!(stored.credentials().contains("access_token"));
    assert!(stored.credentials().contains("access_token_expires_at"));
}

#[tokio::test]
async fn custom_token_by_get_json_pointer_and_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/session"))
        .and(query_param("username", "ann"))
        .and(query_param("password", "pw-s3cret&="))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({ "data": { "session": "nested", "expiry": "2999-01-01T00:00:00Z" } }),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("x-session", "nested"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let definition = custom_token_definition(
        &server.uri(),
        r#"token_response = { token = "/data/session", expires_at = "/data/expiry" }"#,
    )
    .replace(r#"access_token_verb = "POST""#, r#"access_token_verb = "GET""#);
    let hub = hub(&definition, &[("username", "ann"), ("password", "pw-s3cret&=")], &[]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "x").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let stored = hub.store().get(&acct()).await.expect("stored");
    let expiry = stored.credentials().get("access_token_expires_at").expect("expiry");
    assert_eq!(
        integrations::secrecy::ExposeSecret::expose_secret(expiry),
        "2999-01-01T00:00:00Z"
    );
}

#[tokio::test]
async fn custom_token_from_a_json_post_and_a_response_header() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .and(header("content-type", "application/json"))
        .and(wiremock::matchers::body_json(
            serde_json::json!({ "username": "ann", "password": "pw-s3cret&=", "scope": "all read" }),
        ))
        .respond_with(ResponseTemplate::new(200).insert_header("X-Auth-Token", "from-header"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("x-session", "from-header"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let hub = custom_hub(
        &server,
        r#"access_token_body = "json"
        token_response = { token_header = "X-Auth-Token", lifetime_seconds = 600 }"#,
    )
    .await;
    let account = hub.client(&acct()).await.expect("account");
    assert_eq!(
        account.request(Method::GET, "x").send().await.expect("sent").status(),
        StatusCode::OK
    );
}

/// Stores an expired token, as a previous run would have left it.
async fn store_token(hub: &Integrations, token: &str, expires_at: Option<OffsetDateTime>) {
    let account = hub.store().get(&acct()).await.expect("account");
    let mut credentials = Secrets::new();
    credentials.insert("access_token", SecretString::from(token.to_owned()));
    if let Some(at) = expires_at {
        credentials.insert(
            "access_token_expires_at",
            SecretString::from(at.format(&Rfc3339).expect("time")),
        );
    }
    hub.store()
        .update_credentials(&account, credentials, account.status(), None)
        .await
        .expect("update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_requests_on_an_expired_token_make_one_token_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "token": "new", "expires_in": 3600 }))
                .set_delay(Duration::from_millis(100)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("x-session", "new"))
        .respond_with(ResponseTemplate::new(200))
        .expect(200)
        .mount(&server)
        .await;
    let hub = custom_hub(&server, "").await;
    store_token(&hub, "old", Some(OffsetDateTime::now_utc() - Duration::from_secs(10))).await;
    let account = hub.client(&acct()).await.expect("account");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let account = account.clone();
            tokio::spawn(async move { account.request(Method::GET, &format!("item/{i}")).send().await })
        })
        .collect();
    for task in tasks {
        let response = task.await.expect("task").expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
    }
    server.verify().await;
}

#[tokio::test]
async fn a_401_gets_one_new_token_and_one_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "access_token": "fresh" })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("x-session", "stale"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("x-session", "fresh"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let hub = custom_hub(&server, "").await;
    store_token(&hub, "stale", None).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "data").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    server.verify().await;
}

#[tokio::test]
async fn a_provider_that_keeps_refusing_causes_no_loop() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "access_token": "also-refused" })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let hub = custom_hub(&server, "").await;
    store_token(&hub, "stale", None).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "data").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    server.verify().await;
}

#[tokio::test]
async fn a_refused_token_request_quotes_status_and_code_only() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({ "error": "invalid_client", "error_description": "wrong password pw-s3cret&=" }),
        ))
        .mount(&server)
        .await;
    let hub = custom_hub(&server, "").await;
    let account = hub.client(&acct()).await.expect("account");
    let error = account.request(Method::GET, "data").send().await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Provider);
    assert_eq!(
        error.to_string(),
        "the token endpoint answered 400 Bad Request with error `invalid_client` (account `acct`, integration `partner`)"
    );
    assert!(!format!("{error:?}").contains("s3cret"));
}

#[tokio::test]
async fn token_calls_are_retried_only_when_the_provider_did_not_process_them() {
    // 503 with Retry-After: not processed, so sent again.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "access_token": "t1" })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/data"))
        .and(header("x-session", "t1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let hub = custom_hub(&server, "").await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "data").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);

    // A 500, or a 503 that gives no Retry-After, may have been acted on:
    // one call only, though GETs to the API would be retried.
    for (status, retry_after) in [(500, None), (503, None), (502, Some("0"))] {
        let server = MockServer::start().await;
        let mut refusal = ResponseTemplate::new(status);
        if let Some(after) = retry_after {
            refusal = refusal.insert_header("retry-after", after);
        }
        Mock::given(method("POST"))
            .and(path("/session"))
            .respond_with(refusal)
            .expect(1)
            .mount(&server)
            .await;
        let hub = custom_hub(&server, "").await;
        let account = hub.client(&acct()).await.expect("account");
        let error = account.request(Method::GET, "data").send().await.expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::Provider, "{status}: {error}");
    }
}

#[tokio::test]
async fn a_token_call_that_cannot_connect_names_where_it_went() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let hub = hub(
        &custom_token_definition(&format!("http://127.0.0.1:{port}"), "").replace(
            "[integration.auth]",
            "retry = { initial_backoff_seconds = 0.01 }\n[integration.auth]",
        ),
        &[("username", "ann"), ("password", "pw-s3cret&=")],
        &[],
    )
    .await;
    let account = hub.client(&acct()).await.expect("account");
    let error = account
        .request(Method::GET, "data")
        .send()
        .await
        .expect_err("no server");
    assert_eq!(error.kind(), ErrorKind::Transport);
    let message = error.to_string();
    // The same words as any request's: the destination, the cause, and the
    // attempts the policy allowed a connection that never opened.
    assert!(
        message.contains(&format!(
            "cannot connect to 127.0.0.1:{port}: connection refused (after 3 attempts)"
        )),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn failed_token_calls_are_counted_in_the_account_health_until_one_succeeds() {
    use integrations::events::EventType;

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({ "error": "invalid_client" })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/session"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "access_token": "t1" })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/data"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let hub = custom_hub(&server, "").await;
    let account = hub.client(&acct()).await.expect("account");

    account.request(Method::GET, "data").send().await.expect_err("refused");
    let failing = hub.store().get(&acct()).await.expect("stored");
    assert_eq!(failing.health().consecutive_failures, 1);
    assert_eq!(
        failing.health().last_error.as_ref().map(|error| error.code.as_str()),
        Some("invalid_client"),
        "the provider's code"
    );

    let response = account.request(Method::GET, "data").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let recovered = hub.store().get(&acct()).await.expect("stored");
    assert_eq!(recovered.health().consecutive_failures, 0);
    assert!(recovered.health().last_refresh_at.is_some());

    let now = OffsetDateTime::now_utc();
    let events = hub
        .store()
        .storage()
        .claim_events(now, now + Duration::from_secs(60), 100)
        .await
        .expect("events");
    let failed = events
        .iter()
        .find(|event| event.kind == EventType::RefreshFailed)
        .expect("account.refresh_failed");
    assert_eq!(failed.data.reason.as_deref(), Some("invalid_client"));
    assert_eq!(failed.data.attempt, Some(1));
    assert!(events.iter().any(|event| event.kind == EventType::Recovered));
}
