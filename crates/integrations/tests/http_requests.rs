//! Requests through accounts of each HTTP auth method, checked as they
//! arrive at a real HTTP server on loopback.

use std::sync::Arc;
use std::time::Duration;

use integrations::definition::Format;
use integrations::http::{HttpClient, Method, StatusCode};
use integrations::secrecy::SecretString;
use integrations::storage::memory::MemoryStorage;
use integrations::time::OffsetDateTime;
use integrations::time::format_description::well_known::Rfc3339;
use integrations::{
    AccountId, AccountStore, Cipher, Definitions, EncryptionKey, ErrorKind, Integrations, NewAccount, Secrets,
};
use wiremock::matchers::{body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    pairs
        .iter()
        .map(|(name, value)| (*name, SecretString::from((*value).to_owned())))
        .collect()
}

/// Integrations over `definitions` with one account `acct`.
async fn hub(definitions: &str, parameters: &[(&str, &str)], credentials: &[(&str, &str)]) -> Integrations {
    let definitions = Definitions::from_str(definitions, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let key = definitions.iter().next().expect("one integration").key.clone();
    store
        .create(
            definitions.get(&key).expect("integration"),
            NewAccount {
                id: acct(),
                parameters: secrets(parameters),
                credentials: secrets(credentials),
            },
        )
        .await
        .expect("create account");
    Integrations::new(definitions, store).expect("integrations")
}

fn acct() -> AccountId {
    AccountId::new("acct").expect("valid id")
}

async fn only_request(server: &MockServer) -> Request {
    let mut requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 1, "expected exactly one request");
    requests.remove(0)
}

fn header_values(request: &Request, name: &str) -> Vec<String> {
    request
        .headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect()
}

#[tokio::test]
async fn api_token_in_a_header_with_request_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"contacts": ["ada"]}"#))
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{uri}/api/{{version}}"
        parameters = [{{ name = "version" }}, {{ name = "company" }}]
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
        request_parameters = [
          {{ type = "header", name = "Accept", value = "application/json" }},
          {{ type = "header", name = "X-Company", value = "{{company}}" }},
          {{ type = "url_parameter", name = "company", value = "{{company}}" }},
        ]
        "#,
        uri = server.uri()
    );
    let hub = hub(
        &definitions,
        &[("version", "v2"), ("company", "Acme & Co/ü")],
        &[("token", "tok-123")],
    )
    .await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account
        .request(Method::GET, "contacts")
        .query(&[("page", "2")])
        .header("X-Trace", "t1")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    // The response is reqwest's, JSON included.
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["contacts"][0], "ada");

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/api/v2/contacts");
    assert_eq!(request.url.query(), Some("company=Acme+%26+Co%2F%C3%BC&page=2"));
    assert_eq!(header_values(&request, "authorization"), ["Bearer tok-123"]);
    assert_eq!(header_values(&request, "accept"), ["application/json"]);
    assert_eq!(header_values(&request, "x-company"), ["Acme & Co/ü"]);
    assert_eq!(header_values(&request, "x-trace"), ["t1"]);

    let error = account
        .request(Method::GET, "contacts")
        .header("authorization", "Bearer mine")
        .send()
        .await
        .expect_err("the credential's header cannot be set");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(
        error.to_string(),
        "request refused: header `authorization` carries the account's credential and cannot be set (account `acct`, integration `crm`)"
    );
}

/// Each thread keeps its own copy of a compiled account; `forget` reaches
/// every thread's copy, so all of them send the credential stored since.
#[tokio::test]
async fn a_forgotten_account_is_read_again_on_every_thread() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let definitions = retrying_definition(&server.uri(), "max_attempts = 1");
    // Three threads, each with a runtime of its own (and so a connection
    // pool of its own), send a request before and after the change.
    let http = HttpClient::with_pool_per_thread().expect("client");
    let hub = Arc::new(hub_with(http, &definitions, &[("token", "tok-old")]).await);
    let changed = Arc::new(std::sync::Barrier::new(4));
    let sent_once = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (hub, sent_once, changed) = (Arc::clone(&hub), Arc::clone(&sent_once), Arc::clone(&changed));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let send = || {
                    runtime.block_on(async {
                        let account = hub.client(&acct()).await.expect("account");
                        account.request(Method::GET, "x").send().await.expect("sent").status()
                    })
                };
                let before = send();
                sent_once.wait();
                changed.wait();
                (before, send())
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || sent_once.wait())
        .await
        .expect("first requests");
    let account = hub.store().get(&acct()).await.expect("account");
    hub.store()
        .update_credentials(&account, secrets(&[("token", "tok-new")]), account.status(), None)
        .await
        .expect("update");
    hub.forget(&acct());
    let statuses = tokio::task::spawn_blocking(move || {
        changed.wait();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("thread"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("threads");
    assert_eq!(statuses, [(StatusCode::OK, StatusCode::OK); 3]);

    let sent: Vec<_> = server
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|request| header_values(request, "authorization"))
        .collect();
    assert_eq!(sent[..3], [["Bearer tok-old"], ["Bearer tok-old"], ["Bearer tok-old"]]);
    assert_eq!(sent[3..], [["Bearer tok-new"], ["Bearer tok-new"], ["Bearer tok-new"]]);
}

#[tokio::test]
async fn api_token_in_a_url_parameter_is_encoded() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/weather"))
        .and(query_param("appid", "key:a b&c=d"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "weather"
        name = "Weather"
        base_url = "{}/v1"
        auth = {{ type = "api_token", token = {{ parameter_type = "url_parameter", parameter_name = "appid", value_template = "key:{{token}}" }} }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("token", "a b&c=d")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "/weather").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let request = only_request(&server).await;
    assert_eq!(request.url.query(), Some("appid=key%3Aa+b%26c%3Dd"));
    assert!(request.headers.get("authorization").is_none());

    // The credential's query parameter cannot be set by the caller, nor
    // smuggled past a `;` (a separator to some servers) or an escape.
    for url in [
        "/weather?appid=mine",
        "/weather?a=1;appid=mine",
        "/weather?a=1&%61ppid=mine",
        "/weather?a=1;%61ppid=mine&b=2",
    ] {
        let error = account.request(Method::GET, url).send().await.expect_err(url);
        assert_eq!(error.kind(), ErrorKind::Refused, "{url}: {error}");
    }
    assert_eq!(server.received_requests().await.expect("recording").len(), 1);
}

#[tokio::test]
async fn basic_auth_is_rfc_7617_in_utf_8() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/erp/orders"))
        .and(header("authorization", "Basic dXNlcjpww6Rzc3fDtnJk"))
        .and(body_string("{\"id\":1}"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "erp"
        name = "ERP"
        base_url = "{}/erp"
        auth = {{ type = "basic" }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("username", "user"), ("password", "pässwörd")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account
        .request(Method::POST, "orders")
        .header("content-type", "application/json")
        .body("{\"id\":1}")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);

    // The credential's header cannot be replaced by the caller.
    let error = account
        .request(Method::GET, "orders")
        .header("Authorization", "Basic other")
        .send()
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(
        only_request(&server).await.url.path(),
        "/erp/orders",
        "the refused request was not sent"
    );
}

#[tokio::test]
async fn values_in_the_base_url_path_are_escaped() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{}/tenants/{{tenant}}"
        parameters = [{{ name = "tenant" }}]
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[("tenant", "a/b c?d")], &[("token", "k")]).await;
    let account = hub.client(&acct()).await.expect("account");
    account.request(Method::GET, "items").send().await.expect("sent");
    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/tenants/a%2Fb%20c%3Fd/items");
    assert_eq!(header_values(&request, "x-key"), ["k"]);
}

#[tokio::test]
async fn dot_segments_cannot_leave_the_base_url_path() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{}/v2/tenant/t1"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("token", "t1-token")]).await;
    let account = hub.client(&acct()).await.expect("account");
    for path in [
        "../../other-tenant/x",
        "/../../other-tenant/x",
        "%2e%2e/%2E%2E/other-tenant/x",
        ".%2e/x",
        "..\\..\\other-tenant\\x",
        "a/./b",
        "a/%2e/b",
        "a/..%2f..%2fother-tenant",
        "..",
    ] {
        let error = account
            .request(Method::GET, path)
            .send()
            .await
            .expect_err(&format!("{path} must be refused"));
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{path}: {error}");
        assert!(error.to_string().contains(path), "the error names the path: {error}");
    }
    assert!(
        server.received_requests().await.expect("recording").is_empty(),
        "nothing may be sent for a path with dot segments"
    );
    // Dots inside a segment are names, not segments.
    for path in ["report.v2.csv", "a/.well-known/b", "a/...", "v1.2/x"] {
        let sent = account.request(Method::GET, path).send().await.expect("sent");
        assert_eq!(sent.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn credentials_go_to_no_other_host() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    for target in [&server, &elsewhere] {
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(target)
            .await;
    }
    let elsewhere_port = elsewhere.address().port();
    let definitions = format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{}/api"
        allowed_hosts = ["localhost"]
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("token", "tok")]).await;
    let account = hub.client(&acct()).await.expect("account");

    for url in [
        format!("{}/steal", elsewhere.uri()),
        "https://attacker.example/steal".to_owned(),
        "http://example.com/plain".to_owned(),
        "ftp://127.0.0.1/x".to_owned(),
    ] {
        let error = account.request(Method::GET, &url).send().await.expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::Refused, "{url}: {error}");
        assert!(!error.to_string().contains("tok"), "{error}");
    }
    let message = account
        .request(Method::GET, &format!("{}/steal", elsewhere.uri()))
        .send()
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        message.starts_with(&format!(
            "request refused: 127.0.0.1:{elsewhere_port} is not a host this integration sends credentials to"
        )),
        "{message}"
    );
    assert!(
        elsewhere.received_requests().await.expect("recording").is_empty(),
        "nothing may reach another host"
    );

    // allowed_hosts lets `localhost` through, on any port.
    let allowed = account
        .request(Method::GET, &format!("http://localhost:{elsewhere_port}/ok"))
        .send()
        .await
        .expect("allowed host");
    assert_eq!(allowed.status(), StatusCode::OK);
}

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

fn retrying_definition(uri: &str, policy: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{uri}"
        timeout_seconds = 0.5
        retry = {{ {policy} }}
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
        "#
    )
}

async fn hits(server: &MockServer) -> usize {
    server.received_requests().await.expect("recording").len()
}

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

/// Both transports `forward` may use: hyper, and reqwest (a caller's own
/// client, or an outbound proxy configured).
fn forwarding_clients() -> [(&'static str, HttpClient); 2] {
    let own = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client");
    [
        ("relay", HttpClient::new().expect("http client")),
        ("reqwest", HttpClient::from_reqwest(own)),
    ]
}

async fn hub_with(http: HttpClient, definitions: &str, credentials: &[(&str, &str)]) -> Integrations {
    let hub = hub(definitions, &[], credentials).await;
    Integrations::with_http_client(hub.definitions().clone(), hub.store().clone(), http)
}

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

/// Requests on `o1` from several tasks while its removal waits on a slow
/// revoke endpoint; once the removal is acknowledged no thread holds the old
/// account, and `o1` created again under another integration goes only to
/// that integration's host with its own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_then_recreated_account_never_sends_the_old_credential() {
    let old_upstream = MockServer::start().await;
    let new_upstream = MockServer::start().await;
    for server in [&old_upstream, &new_upstream] {
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(500)))
        .mount(&old_upstream)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "acme"
        name = "Acme"
        base_url = "{old}/tenant/t1"
        [integration.auth]
        type = "oauth2"
        grant_type = "authorization_code"
        authorization_endpoint = "{old}/authorize"
        access_token_endpoint = "{old}/token"
        access_token_verb = "POST"
        revoke_token_endpoint = "{old}/revoke"
        scope = "read"
        client_id = "client"
        client_secret = "client-secret"
        token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}

        [[integration]]
        key = "billing"
        name = "Billing"
        base_url = "{new}/tenant/t2"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
        "#,
        old = old_upstream.uri(),
        new = new_upstream.uri(),
    );
    let hub = Arc::new(hub(&definitions, &[], &[("access_token", "old-token")]).await);
    let o1 = acct();
    let sent = hub
        .client(&o1)
        .await
        .expect("account")
        .request(Method::GET, "x")
        .send()
        .await
        .expect("sent");
    assert_eq!(sent.status(), StatusCode::OK);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let requesters: Vec<_> = (0..8)
        .map(|_| {
            let (hub, stop, id) = (Arc::clone(&hub), Arc::clone(&stop), o1.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(account) = hub.client(&id).await {
                        let _ = account.request(Method::GET, "x").send().await;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let removal = hub.remove_account(&o1).await.expect("remove");
    assert!(removal.existed);

    // Acknowledged: every thread must now find no account.
    let lookups: Vec<_> = (0..32)
        .map(|_| {
            let (hub, id) = (Arc::clone(&hub), o1.clone());
            tokio::spawn(async move { hub.client(&id).await.map(drop) })
        })
        .collect();
    for lookup in lookups {
        let error = lookup
            .await
            .expect("lookup")
            .expect_err("a removed account must not be found");
        assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for requester in requesters {
        requester.await.expect("requester");
    }
    let sent_to_old = old_upstream.received_requests().await.expect("recording").len();

    // The same id, another integration: its host, its token, nothing else.
    hub.create_account(
        hub.integration("billing").expect("billing"),
        NewAccount {
            id: o1.clone(),
            parameters: Secrets::new(),
            credentials: secrets(&[("token", "new-token")]),
        },
    )
    .await
    .expect("re-create");
    for _ in 0..8 {
        let account = hub.client(&o1).await.expect("re-created account");
        let status = account.request(Method::GET, "x").send().await.expect("sent").status();
        assert_eq!(status, StatusCode::OK);
    }
    let received = new_upstream.received_requests().await.expect("recording");
    assert_eq!(received.len(), 8);
    for request in &received {
        assert_eq!(request.url.path(), "/tenant/t2/x");
        assert_eq!(header_values(request, "authorization"), ["Bearer new-token"]);
    }
    assert_eq!(
        old_upstream.received_requests().await.expect("recording").len(),
        sent_to_old,
        "nothing may reach the old account's host after its removal"
    );
}

/// The shortcuts and a JSON body, as reqwest users write them; a header
/// value that cannot be sent is named by its header, not quoted.
#[tokio::test]
async fn shortcuts_and_json_bodies_read_like_reqwest() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/contacts"))
        .and(header("content-type", "application/json"))
        .and(body_string(r#"{"name":"Ada"}"#))
        .respond_with(ResponseTemplate::new(201).set_body_string(r#"{"id":7}"#))
        .expect(1)
        .mount(&server)
        .await;
    for verb in ["GET", "PUT", "PATCH", "DELETE"] {
        Mock::given(method(verb))
            .and(path("/v1/contacts/7"))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
    }
    let definitions = format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{}/v1"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("token", "k")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let created: serde_json::Value = account
        .post("contacts")
        .json(&serde_json::json!({ "name": "Ada" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(created["id"], 7);
    for request in [
        account.get("contacts/7"),
        account.put("contacts/7"),
        account.patch("contacts/7"),
        account.delete("contacts/7"),
    ] {
        assert_eq!(request.send().await.expect("sent").status(), StatusCode::OK);
    }
    let error = account
        .get("contacts/7")
        .header("X-Note", "line\nbreak s3cret")
        .send()
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("header `x-note`"), "{error}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[tokio::test]
async fn forms_and_serde_queries_read_like_reqwest() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(query_param("page", "2"))
        .and(query_param("q", "Ada & Charles"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("amount=2000&currency=eur&note=caf%C3%A9+%26+cr%C3%A8me"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "pay"
        name = "Pay"
        base_url = "{}/v1"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("token", "k")]).await;
    let account = hub.client(&acct()).await.expect("account");
    #[derive(serde::Serialize)]
    struct Search<'a> {
        page: u32,
        q: &'a str,
    }
    let response = account
        .post("charges")
        .query(&Search {
            page: 2,
            q: "Ada & Charles",
        })
        .form(&[("amount", "2000"), ("currency", "eur"), ("note", "café & crème")])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    // What serde cannot put in a query is refused, naming the query.
    let error = account
        .get("charges")
        .query(&serde_json::json!({ "nested": { "a": 1 } }))
        .send()
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("cannot encode the query"), "{error}");
}

#[tokio::test]
async fn clones_share_accounts_and_caches() {
    let server = MockServer::start().await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{}/v1"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("token", "k")]).await;
    let clone = hub.clone();
    clone.client(&acct()).await.expect("compiled through the clone");
    hub.remove_account(&acct()).await.expect("removed through the original");
    let error = clone.client(&acct()).await.expect_err("gone for the clone too");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
}
