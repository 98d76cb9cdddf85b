//! The README's first success, on loopback: `examples/httpbin.toml` with
//! its base URL pointed at a stand-in for httpbin.org's `/bearer`, an
//! account added over the REST API, and a proxied call that succeeds.

mod common;

use std::path::Path;

use common::{Gateway, api_key};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn the_readme_s_first_proxied_call_succeeds() {
    // httpbin.org's `/bearer`: 200 with the token for any bearer token.
    let httpbin = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/bearer"))
        .and(header("authorization", "Bearer my-first-token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "authenticated": true, "token": "my-first-token" })),
        )
        .mount(&httpbin)
        .await;

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/httpbin.toml");
    let definition = std::fs::read_to_string(&example).expect("examples/httpbin.toml");
    assert!(definition.contains("base_url = \"https://httpbin.org\""));
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = dir.path().join("httpbin.toml");
    std::fs::write(&definitions, definition.replace("https://httpbin.org", &httpbin.uri())).expect("write");
    let data = dir.path().join("data");
    let key = api_key(&data);
    let gateway = Gateway::start(definitions.to_str().expect("utf-8"), &data).await;
    let http = reqwest::Client::new();

    let created = http
        .post(format!("{}/v1/accounts", gateway.base))
        .bearer_auth(&key)
        .json(&json!({ "id": "customer-1", "integration": "httpbin", "credentials": { "token": "my-first-token" } }))
        .send()
        .await
        .expect("response");
    assert_eq!(created.status(), StatusCode::CREATED);

    let answer = http
        .get(format!("{}/v1/accounts/customer-1/proxy/bearer", gateway.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("response");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.json::<Value>().await.expect("json"),
        json!({ "authenticated": true, "token": "my-first-token" })
    );
}
