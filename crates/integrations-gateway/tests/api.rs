//! Every route over HTTP against a running gateway: success, each error
//! status, and a missing or wrong API key.

use std::sync::Arc;

use integrations::auth::oauth2::RedirectUri;
use integrations::definition::Format;
use integrations::secrecy::ExposeSecret;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountStore, Cipher, Definitions, EncryptionKey, Integrations};
use integrations_gateway::AppState;
use integrations_gateway::keys::ApiKeys;
use reqwest::StatusCode;
use serde_json::{Value, json};

const DEFINITIONS: &str = r#"
    [[integration]]
    key = "weather"
    name = "Weather"
    base_url = "https://api.weather.example/v1"
    parameters = [{ name = "units", default = "metric" }, { name = "station_secret", secret = true, default = "x" }]
    auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }
    request_parameters = [{ type = "header", name = "X-Literal-Key", value = "literal-s3cret" }]

    [[integration]]
    key = "crm"
    name = "CRM"
    [integration.auth]
    type = "oauth2"
    grant_type = "client_credentials"
    access_token_endpoint = "https://crm.example/token"
    access_token_verb = "POST"
    scope = "read"
    client_id = "id"
    client_secret = "client-s3cret"
    token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
"#;

struct Gateway {
    base: String,
    key: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start() -> Self {
        Self::with_definitions(DEFINITIONS).await
    }

    async fn with_definitions(definitions: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = ApiKeys::in_data_dir(dir.path()).expect("keys");
        let (_, key) = keys.create("tests").expect("key");
        let definitions = Definitions::from_str(definitions, Format::Toml).expect("valid");
        let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(AppState {
            integrations: Integrations::new(definitions, store).expect("integrations"),
            keys,
            redirect_uri: RedirectUri::from_public_base_url(&base).expect("redirect"),
        });
        tokio::spawn(integrations_gateway::serve(listener, state, std::future::pending()));
        Self {
            base,
            key: key.expose_secret().to_owned(),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("response");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

#[tokio::test]
async fn health_needs_no_key_and_everything_else_does() {
    let gateway = Gateway::start().await;
    let health = reqwest::get(format!("{}/healthz", gateway.base)).await.expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.expect("json"), json!({ "status": "ok" }));

    for path in [
        "/v1/integrations",
        "/v1/integrations/weather",
        "/v1/accounts",
        "/v1/accounts/a1",
        "/v1/openapi.json",
        // The proxy checks the key on its own path, past the router.
        "/v1/accounts/a1/proxy/forecast",
        "/v1/accounts/a1/sftp/entries?path=/",
    ] {
        let missing = reqwest::get(format!("{}{path}", gateway.base)).await.expect("response");
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED, "{path} without a key");
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        let body: Value = missing.json().await.expect("json");
        assert_eq!(body["error"]["kind"], "unauthorized");

        let wrong = gateway
            .http
            .get(format!("{}{path}", gateway.base))
            .bearer_auth(format!("{}x", gateway.key))
            .send()
            .await
            .expect("response");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path} with a wrong key");
    }
}

#[tokio::test]
async fn integrations_are_listed_without_secrets() {
    let gateway = Gateway::start().await;
    let (status, list) = gateway.call(reqwest::Method::GET, "/v1/integrations", None).await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["crm", "weather"]);
    let text = list.to_string();
    assert!(!text.contains("s3cret"), "{text}");

    let (status, weather) = gateway
        .call(reqwest::Method::GET, "/v1/integrations/weather", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(weather["auth_type"], "api_token");
    assert_eq!(weather["credentials"][0]["name"], "token");
    assert_eq!(
        weather["parameters"][0],
        json!({ "name": "units", "secret": false, "optional": true })
    );
    let (status, crm) = gateway.call(reqwest::Method::GET, "/v1/integrations/crm", None).await;
    assert_eq!(
        (status, crm["grant_type"].as_str()),
        (StatusCode::OK, Some("client_credentials"))
    );

    let (status, missing) = gateway.call(reqwest::Method::GET, "/v1/integrations/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["kind"], "not_found");
}

#[tokio::test]
async fn accounts_are_created_read_listed_and_deleted() {
    let gateway = Gateway::start().await;
    let new = json!({
        "id": "w1",
        "integration": "weather",
        "parameters": { "station_secret": "station-s3cret" },
        "credentials": { "token": "token-s3cret" },
    });
    let (status, created) = gateway
        .call(reqwest::Method::POST, "/v1/accounts", Some(new.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], "w1");
    assert_eq!(created["status"], "connected");
    assert_eq!(
        created["parameters"],
        json!({ "units": "metric", "station_secret": "********" })
    );
    assert_eq!(created["credentials"], json!(["token"]));

    let (status, duplicate) = gateway.call(reqwest::Method::POST, "/v1/accounts", Some(new)).await;
    assert_eq!(
        (status, duplicate["error"]["kind"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists"))
    );

    let (status, read) = gateway.call(reqwest::Method::GET, "/v1/accounts/w1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["credentials"], json!(["token"]));
    let (status, list) = gateway.call(reqwest::Method::GET, "/v1/accounts", None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    for body in [&created, &read, &list] {
        assert!(!body.to_string().contains("s3cret"), "{body}");
    }

    let (status, removed) = gateway.call(reqwest::Method::DELETE, "/v1/accounts/w1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(removed, json!({ "revoked": [], "revoke_failures": [] }));
    let (status, _) = gateway.call(reqwest::Method::DELETE, "/v1/accounts/w1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gateway.call(reqwest::Method::GET, "/v1/accounts/w1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_get_a_clear_error() {
    let gateway = Gateway::start().await;
    let cases = [
        (
            json!({ "id": "bad id", "integration": "weather" }),
            StatusCode::BAD_REQUEST,
            "invalid account id",
        ),
        (
            json!({ "id": "w2", "integration": "nope" }),
            StatusCode::NOT_FOUND,
            "no such integration",
        ),
        (
            json!({ "id": "w3", "integration": "weather" }),
            StatusCode::BAD_REQUEST,
            "missing credential `token`",
        ),
        (
            json!({ "id": "w4", "integration": "weather", "credentials": { "token": "t", "password": "p" } }),
            StatusCode::BAD_REQUEST,
            "unknown credential `password`",
        ),
    ];
    for (body, expected, message) in cases {
        let (status, error) = gateway
            .call(reqwest::Method::POST, "/v1/accounts", Some(body.clone()))
            .await;
        assert_eq!(status, expected, "{body}: {error}");
        assert!(
            error["error"]["message"].as_str().is_some_and(|m| m.contains(message)),
            "{body}: {error}"
        );
    }
    // Not JSON, or unknown fields: refused by the JSON extractor with 4xx.
    let response = gateway
        .http
        .post(format!("{}/v1/accounts", gateway.base))
        .bearer_auth(&gateway.key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("response");
    assert!(response.status().is_client_error());
    let (status, _) = gateway.call(reqwest::Method::GET, "/v1/accounts/bad%20id", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let gateway = Gateway::start().await;
    let (status, document) = gateway.call(reqwest::Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/healthz",
        "/v1/integrations",
        "/v1/integrations/{key}",
        "/v1/accounts",
        "/v1/accounts/{id}",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the document");
    }
    assert!(document["components"]["securitySchemes"]["api_key"].is_object());
    assert!(document["components"]["schemas"]["AccountView"].is_object());
}

#[tokio::test]
async fn oauth2_accounts_connect_refresh_and_revoke_through_the_api() {
    use integration_oauth2_test_server::{Config, TestServer};

    let server = TestServer::start(Config::default()).await;
    let definitions = server.definition(r#""test-secret""#);
    let gateway = Gateway::with_definitions(&definitions).await;
    let (status, _) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "p1", "integration": "provider" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, connect) = gateway
        .call(reqwest::Method::POST, "/v1/accounts/p1/connect", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{connect}");
    assert_eq!(
        connect["redirect_uri"],
        format!("{}/internal/sessions/v1/auth/callback", gateway.base)
    );
    // The browser follows the provider's redirect back to the gateway.
    let landing = reqwest::get(connect["authorization_url"].as_str().expect("url"))
        .await
        .expect("browser");
    assert_eq!(landing.status(), StatusCode::OK);
    assert!(landing.text().await.expect("page").contains("Account p1 is connected."));
    let (_, account) = gateway.call(reqwest::Method::GET, "/v1/accounts/p1", None).await;
    assert_eq!(account["status"], "connected");

    // A replayed callback is refused with a page that says why.
    let replay = reqwest::get(format!(
        "{}/internal/sessions/v1/auth/callback?state=forged&code=x",
        gateway.base
    ))
    .await
    .expect("replay");
    assert_eq!(replay.status(), StatusCode::FORBIDDEN);
    assert!(
        replay
            .text()
            .await
            .expect("page")
            .contains("unknown or already used state")
    );

    let (status, refreshed) = gateway
        .call(reqwest::Method::POST, "/v1/accounts/p1/refresh", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(server.token_calls("refresh_token"), 1);

    let (status, revoked) = gateway
        .call(reqwest::Method::POST, "/v1/accounts/p1/revoke", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        revoked,
        json!({ "revoked": ["refresh_token", "access_token"], "revoke_failures": [] })
    );
    let (_, account) = gateway.call(reqwest::Method::GET, "/v1/accounts/p1", None).await;
    assert_eq!(account["status"], "pending");

    // Not an OAuth 2.0 account.
    let weather = Gateway::start().await;
    weather
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "w1", "integration": "weather", "credentials": { "token": "t" } })),
        )
        .await;
    let (status, error) = weather
        .call(reqwest::Method::POST, "/v1/accounts/w1/connect", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, _) = weather
        .call(reqwest::Method::POST, "/v1/accounts/nobody/refresh", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

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
async fn the_connect_page_is_public_and_holds_no_data() {
    let gateway = Gateway::start().await;
    let page = reqwest::get(format!("{}/connect", gateway.base)).await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    let headers = page.headers().clone();
    let html = page.text().await.expect("html");
    // Only the page's own inline script and style may run, matched by hash.
    let policy = headers["content-security-policy"].to_str().expect("policy");
    for (open, close, directive) in [
        ("<script>", "</script>", "script-src"),
        ("<style>", "</style>", "style-src"),
    ] {
        use base64::Engine as _;
        use sha2::Digest as _;
        let body = html
            .split_once(open)
            .and_then(|(_, rest)| rest.split_once(close))
            .expect("inline element")
            .0;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()));
        assert!(
            policy.contains(&format!("{directive} 'sha256-{hash}'")),
            "{directive}: {policy}"
        );
    }
    assert_eq!(html.matches("<script").count(), 1, "one inline script, the one hashed");
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(directive), "{directive}: {policy}");
    }
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    for part in [
        "id=\"api-key\"",
        "id=\"accounts\"",
        "id=\"account-form\"",
        "/v1/accounts",
        "/connect\"",
    ] {
        assert!(html.contains(part), "{part} missing");
    }
    assert!(
        !html.contains("weather"),
        "the page is static: data comes through the API with a key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_routes_work_through_an_account() {
    let Some(sshd) = integration_sftp_test_server::start_or_skip() else {
        return;
    };
    let gateway = Gateway::with_definitions(
        r#"
        [[integration]]
        key = "files"
        name = "Files"
        auth = { type = "sftp", host = "127.0.0.1" }
        "#,
    )
    .await;
    let key = sshd.user_key(integration_sftp_test_server::UserKey::Ed25519);
    let account = |id: &str, host_key: String| {
        json!({
            "id": id,
            "integration": "files",
            "credentials": {
                "username": sshd.user(),
                "port": sshd.port().to_string(),
                "private_key": key,
                "host_key": host_key,
            },
        })
    };
    let (status, created) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(account("f1", sshd.host_public_key())),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(!created.to_string().contains("PRIVATE KEY"), "{created}");

    let root = sshd.files().display().to_string();
    let q = |path: &str| format!("path={}", url_encode(path));
    let (status, body) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts/f1/sftp/directories",
            Some(json!({ "path": format!("{root}/a/b"), "parents": true })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Upload streamed (3 MiB, in chunks), then download streamed.
    let content: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = content.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = gateway
        .http
        .put(format!(
            "{}/v1/accounts/f1/sftp/files?{}",
            gateway.base,
            q(&format!("{root}/a/b/data.bin"))
        ))
        .bearer_auth(&gateway.key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "bytes": content.len() })
    );

    let response = gateway
        .http
        .get(format!(
            "{}/v1/accounts/f1/sftp/files?{}",
            gateway.base,
            q(&format!("{root}/a/b/data.bin"))
        ))
        .bearer_auth(&gateway.key)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/octet-stream");
    assert_eq!(response.headers()["content-length"], content.len().to_string().as_str());
    assert!(response.bytes().await.unwrap() == content);

    let (status, info) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f1/sftp/stat?{}", q(&format!("{root}/a/b/data.bin"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (info["kind"].as_str(), info["size"].as_u64()),
        (Some("file"), Some(content.len() as u64))
    );

    let (status, _) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts/f1/sftp/rename",
            Some(json!({ "from": format!("{root}/a/b/data.bin"), "to": format!("{root}/a/data.bin") })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, entries) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f1/sftp/entries?{}", q(&format!("{root}/a"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<(&str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["name"].as_str().unwrap(), entry["info"]["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("b", "directory"), ("data.bin", "file")]);

    // Error statuses.
    let missing = format!("/v1/accounts/f1/sftp/stat?{}", q(&format!("{root}/nothing")));
    let (status, body) = gateway.call(reqwest::Method::GET, &missing, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["kind"], "not_found");
    let (status, body) = gateway
        .call(reqwest::Method::GET, "/v1/accounts/f1/sftp/stat", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("path"), "{body}");
    let (status, body) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f1/sftp/files?{}", q(&format!("{root}/a"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a directory is not downloaded: {body}");
    let (status, body) = gateway
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/accounts/f1/sftp/directories?{}", q(&format!("{root}/a"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not empty: {body}");
    assert_eq!(body["error"]["kind"], "conflict");
    let (status, body) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/ghost/sftp/entries?{}", q(&root)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts/f1/sftp/rename",
            Some(json!({"from": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let unauthenticated = gateway
        .http
        .get(format!("{}/v1/accounts/f1/sftp/entries?{}", gateway.base, q(&root)))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    // A wrong host key: refused, with both fingerprints.
    let other = integration_sftp_test_server::start_or_skip().expect("second sshd");
    let (status, _) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(account("f2", other.host_public_key())),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f2/sftp/entries?{}", q(&root)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&sshd.host_key_fingerprint()),
        "{body}"
    );
    // An HTTP account has no SFTP.
    let (status, body) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "f3", "integration": "files", "credentials": { "username": "u", "password": "p" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing credential `host_key`"),
        "{body}"
    );

    // Cleanup through the API.
    for (method, path) in [
        (
            reqwest::Method::DELETE,
            format!("/v1/accounts/f1/sftp/files?{}", q(&format!("{root}/a/data.bin"))),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/accounts/f1/sftp/directories?{}", q(&format!("{root}/a/b"))),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/accounts/f1/sftp/directories?{}", q(&format!("{root}/a"))),
        ),
    ] {
        let (status, body) = gateway.call(method, &path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {body}");
    }
    assert_eq!(std::fs::read_dir(sshd.files()).unwrap().count(), 0);
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_answer_every_connection_and_finish_requests_in_flight_at_shutdown() {
    use std::num::NonZeroUsize;

    use integrations::http::HttpClient;
    use integrations_gateway::server::{ConnectionSettings, Listeners, serve_on_workers};
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let upstream = MockServer::start().await;
    Mock::given(path("/v1/fast"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fast"))
        .mount(&upstream)
        .await;
    Mock::given(path("/v1/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("slow")
                .set_delay(std::time::Duration::from_millis(800)),
        )
        .mount(&upstream)
        .await;
    let (integrations, keys, key, _dir) = weather_account(
        &upstream.uri(),
        HttpClient::with_pool_per_thread().expect("http client"),
    )
    .await;

    let listeners = Listeners::bind(
        "127.0.0.1:0".parse().expect("address"),
        NonZeroUsize::new(3).expect("3"),
    )
    .expect("bind");
    assert_eq!(listeners.workers(), 3);
    let base = format!("http://{}", listeners.local_addr());
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&base).expect("redirect"),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = ConnectionSettings {
        header_read_timeout: std::time::Duration::from_millis(300),
        ..ConnectionSettings::default()
    };
    let server = std::thread::spawn(move || {
        serve_on_workers(listeners, state, settings, async {
            let _ = stopped.await;
        })
    });

    // Many connections, each answered, whichever worker took it.
    let mut calls = Vec::new();
    for _ in 0..24 {
        let (base, key) = (base.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            // A client per call: a connection of its own.
            let response = reqwest::Client::new()
                .get(format!("{base}/v1/accounts/w1/proxy/fast"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("response");
            (response.status(), response.text().await.expect("body"))
        }));
    }
    for call in calls {
        assert_eq!(call.await.expect("join"), (StatusCode::OK, "fast".to_owned()));
    }

    // A client that trickles its request head is cut off.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut trickling = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
            .await
            .expect("connect");
        trickling
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), trickling.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a connection without a whole request head is closed after the header read timeout"
        );
    }

    let slow = tokio::spawn({
        let (base, key) = (base.clone(), key.clone());
        async move {
            let response = reqwest::Client::new()
                .get(format!("{base}/v1/accounts/w1/proxy/slow"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("the request in flight is answered");
            (response.status(), response.text().await.expect("body"))
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.send(()).expect("stop");
    assert_eq!(slow.await.expect("join"), (StatusCode::OK, "slow".to_owned()));
    tokio::task::spawn_blocking(move || server.join())
        .await
        .expect("join")
        .expect("no worker panicked")
        .expect("the server stopped cleanly");
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "nothing listens after shutdown"
    );
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

/// Integrations with account `w1` of `weather` (base URL on `upstream`), the
/// API keys and one key of them.
async fn weather_account(
    upstream: &str,
    http: integrations::http::HttpClient,
) -> (Integrations, ApiKeys, String, tempfile::TempDir) {
    let definitions = DEFINITIONS.replace("https://api.weather.example/v1", &format!("{upstream}/v1"));
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = ApiKeys::in_data_dir(dir.path()).expect("keys");
    let (_, key) = keys.create("tests").expect("key");
    let definitions = Definitions::from_str(&definitions, Format::Toml).expect("valid");
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    store
        .create(
            definitions.get("weather").expect("weather"),
            integrations::NewAccount {
                id: integrations::AccountId::new("w1").expect("id"),
                parameters: integrations::Secrets::default(),
                credentials: [("token", integrations::secrecy::SecretString::from("token-s3cret"))]
                    .into_iter()
                    .collect(),
            },
        )
        .await
        .expect("account");
    let integrations = Integrations::with_http_client(definitions, store, http);
    (integrations, keys, key.expose_secret().to_owned(), dir)
}

/// An upstream answering each request on a connection with its own request
/// line: chunked when the path has `chunked` in it, with a length otherwise.
async fn echoing_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                loop {
                    let request = loop {
                        let mut slots = [httparse::EMPTY_HEADER; 32];
                        let mut request = httparse::Request::new(&mut slots);
                        if let Ok(httparse::Status::Complete(head)) = request.parse(&received) {
                            let mut line =
                                format!("{} {}", request.method.expect("method"), request.path.expect("path"));
                            // Told back, so a test sees whether it was forwarded.
                            if request
                                .headers
                                .iter()
                                .any(|slot| slot.name.eq_ignore_ascii_case("x-client-hop"))
                            {
                                line.push_str(" +x-client-hop");
                            }
                            let chunked = request
                                .headers
                                .iter()
                                .any(|slot| slot.name.eq_ignore_ascii_case("transfer-encoding"));
                            if chunked && let Some((end, body)) = dechunk(&received[head..]) {
                                received.drain(..head + end);
                                break (line, body);
                            }
                            let length: usize = request
                                .headers
                                .iter()
                                .find(|slot| slot.name.eq_ignore_ascii_case("content-length"))
                                .map_or(0, |slot| {
                                    std::str::from_utf8(slot.value).expect("utf-8").parse().expect("length")
                                });
                            if !chunked && received.len() >= head + length {
                                let body = String::from_utf8_lossy(&received[head..head + length]).into_owned();
                                received.drain(..head + length);
                                break (line, body);
                            }
                        }
                        let mut chunk = [0; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => received.extend_from_slice(&chunk[..read]),
                        }
                    };
                    let (line, body) = request;
                    let echo = format!("{line} [{body}]");
                    let response = if line.contains("chunked") {
                        format!(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{echo}\r\n0\r\n\r\n",
                            echo.len()
                        )
                    } else if line.starts_with("HEAD") {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", echo.len())
                    } else if line.contains("listed") {
                        // A header made hop-by-hop by naming it in `Connection`.
                        format!(
                            "HTTP/1.1 200 OK\r\nConnection: X-Listed, keep-alive\r\nX-Listed: upstream-hop\r\n\
                             X-Kept: 1\r\nContent-Length: {}\r\n\r\n{echo}",
                            echo.len()
                        )
                    } else if line.contains("hop") {
                        // Hop-by-hop headers, which a proxy does not pass on.
                        format!(
                            "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: Keep-Alive\r\nX-Echo-Case: Kept\r\n\
                             Proxy-Authenticate: Basic\r\nContent-Length: {}\r\n\r\n{echo}",
                            echo.len()
                        )
                    } else {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{echo}", echo.len())
                    };
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

/// A whole chunked body (without trailers) at the front of `bytes`: where
/// it ends and what it holds.
fn dechunk(bytes: &[u8]) -> Option<(usize, String)> {
    let mut at = 0;
    let mut body = String::new();
    loop {
        match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete((used, 0))) if bytes.len() >= at + used + 2 => {
                return Some((at + used + 2, body));
            }
            Ok(httparse::Status::Complete((used, size))) if bytes.len() >= at + used + size as usize + 2 => {
                body.push_str(&String::from_utf8_lossy(&bytes[at + used..at + used + size as usize]));
                at += used + size as usize + 2;
            }
            _ => return None,
        }
    }
}

/// One response read off `stream`: status, head and body (de-chunked).
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
    head_only: bool,
) -> (u16, String, String) {
    use tokio::io::AsyncReadExt;
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut slots);
        if let Ok(httparse::Status::Complete(head)) = response.parse(buffer) {
            let status = response.code.expect("status");
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|slot| slot.name.eq_ignore_ascii_case(name))
                    .map(|slot| String::from_utf8_lossy(slot.value).into_owned())
            };
            let head_text = String::from_utf8_lossy(&buffer[..head]).to_lowercase();
            let body = if head_only {
                Some((head, String::new()))
            } else if header("transfer-encoding").as_deref() == Some("chunked") {
                dechunk(&buffer[head..]).map(|(end, body)| (head + end, body))
            } else {
                let length: usize = header("content-length").map_or(0, |value| value.parse().expect("length"));
                (buffer.len() >= head + length).then(|| {
                    (
                        head + length,
                        String::from_utf8_lossy(&buffer[head..head + length]).into_owned(),
                    )
                })
            };
            if let Some((end, body)) = body {
                buffer.drain(..end);
                return (status, head_text, body);
            }
        }
        let mut chunk = [0; 4096];
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(
            read > 0,
            "the connection closed before a whole response: {:?}",
            String::from_utf8_lossy(buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
    }
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
    let other_keys = ApiKeys::in_data_dir(dir.path()).expect("keys");
    let (revocable, revocable_key) = other_keys.create("revocable").expect("key");
    let with =
        |key: &str| format!("GET /v1/accounts/w1/proxy/r HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\r\n");
    tokio::time::sleep(integrations_gateway::keys::RELOAD_INTERVAL * 2).await;
    stream
        .write_all(with(revocable_key.expose_secret()).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream, &mut buffer, false).await.0, 200);
    other_keys.revoke(&revocable.id).expect("revoke");
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

/// A gateway, on the front and hyper as `serve` runs them, with account
/// `w1` of `weather` on an [`echoing_upstream`]: its address, an API key,
/// and the data directory to keep alive.
async fn gateway_over_echoing_upstream() -> (std::net::SocketAddr, String, tempfile::TempDir) {
    use integrations::http::HttpClient;
    let upstream = echoing_upstream().await;
    let (integrations, keys, key, dir) =
        weather_account(&upstream, HttpClient::with_pool_per_thread().expect("http client")).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&format!("http://{address}")).expect("redirect"),
    });
    tokio::spawn(integrations_gateway::serve(listener, state, std::future::pending()));
    (address, key, dir)
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

/// The OAuth 2.0 callback page, whose URL holds the authorization code: no
/// script, no framing, no Referer, not cached; whatever the outcome.
#[tokio::test]
async fn the_callback_page_is_locked_down() {
    let gateway = Gateway::start().await;
    let response = reqwest::get(format!(
        "{}/internal/sessions/v1/auth/callback?code=secret-code&state=unknown",
        gateway.base
    ))
    .await
    .expect("callback");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let headers = response.headers();
    let policy = headers["content-security-policy"].to_str().expect("policy");
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-type"].to_str().expect("type").starts_with("text/html"));
    let body = response.text().await.expect("body");
    assert!(!body.contains("secret-code"), "{body}");
}

/// The proxy's front against hostile or slow clients: a keyless request's
/// body is never waited for, a stalled body times out, a worker serves at
/// most `max_connections`, and shutdown ends after its grace period even
/// with a request still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_refuses_early_times_out_bodies_caps_connections_and_stops_in_time() {
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use integrations::http::HttpClient;
    use integrations_gateway::server::{ConnectionSettings, Listeners, serve_on_workers};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let upstream = MockServer::start().await;
    Mock::given(path("/v1/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .mount(&upstream)
        .await;
    let (integrations, keys, key, _dir) = weather_account(
        &upstream.uri(),
        HttpClient::with_pool_per_thread().expect("http client"),
    )
    .await;
    let listeners = Listeners::bind("127.0.0.1:0".parse().expect("address"), NonZeroUsize::MIN).expect("bind");
    let address = listeners.local_addr();
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&format!("http://{address}")).expect("redirect"),
    });
    let settings = ConnectionSettings {
        header_read_timeout: Duration::from_secs(3),
        body_read_timeout: Duration::from_millis(300),
        max_connections: 2,
        shutdown_grace: Duration::from_millis(500),
        ..ConnectionSettings::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        serve_on_workers(listeners, state, settings, async {
            let _ = stopped.await;
        })
    });
    let within = |seconds| Duration::from_secs(seconds);

    // No key, 1 MiB announced, nothing sent: 401 at once, then closed.
    let mut keyless = tokio::net::TcpStream::connect(address).await.expect("connect");
    keyless
        .write_all(b"POST /v1/accounts/w1/proxy/x HTTP/1.1\r\nHost: g\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = Vec::new();
    let (status, head, _) = tokio::time::timeout(within(5), read_response(&mut keyless, &mut buffer, false))
        .await
        .expect("answered without the body");
    assert_eq!(status, 401);
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = [0; 16];
    assert_eq!(keyless.read(&mut rest).await.expect("read"), 0, "closed");

    // No key, and part of the body already on its way: still a clean 401,
    // not a reset that would lose it.
    let mut sending = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut request = b"POST /v1/accounts/w1/proxy/x HTTP/1.1\r\nHost: g\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 200 * 1024]);
    let (mut reading, mut writing) = sending.split();
    let write = async {
        // The gateway stops reading, so part of this may never be taken.
        let _ = tokio::time::timeout(within(3), writing.write_all(&request)).await;
    };
    let read = async {
        let mut buffer = Vec::new();
        let mut chunk = [0; 4096];
        while let Ok(read) = reading.read(&mut chunk).await {
            if read == 0 {
                break;
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        buffer
    };
    let ((), answer) = tokio::join!(write, read);
    assert!(
        answer.starts_with(b"HTTP/1.1 401"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // A key, but the body stalls: 408 after the body read timeout.
    let mut stalled = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /v1/accounts/w1/proxy/x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 10\r\n\r\nabc"
    );
    stalled.write_all(head.as_bytes()).await.expect("write");
    let mut buffer = Vec::new();
    let (status, _, _) = tokio::time::timeout(within(5), read_response(&mut stalled, &mut buffer, false))
        .await
        .expect("timed out, not held");
    assert_eq!(status, 408);
    drop((keyless, stalled));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Two idle connections fill the worker: a third waits for one of them.
    let first = tokio::net::TcpStream::connect(address).await.expect("connect");
    let _second = tokio::net::TcpStream::connect(address).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(address)
        .await
        .expect("queued in the backlog");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = Vec::new();
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            read_response(&mut third, &mut buffer, false)
        )
        .await
        .is_err(),
        "a third connection is not served while two are open"
    );
    drop(first);
    let (status, _, _) = tokio::time::timeout(within(5), read_response(&mut third, &mut buffer, false))
        .await
        .expect("served once a connection closed");
    assert_eq!(status, 200);
    drop(third);

    // A request in flight for 20 s does not hold shutdown past its grace.
    let slow = tokio::spawn({
        let key = key.clone();
        async move {
            reqwest::Client::new()
                .get(format!("http://{address}/v1/accounts/w1/proxy/slow"))
                .bearer_auth(&key)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    let stopped = tokio::time::timeout(within(10), tokio::task::spawn_blocking(move || server.join()))
        .await
        .expect("stopped within the grace period, not after the slow request")
        .expect("join");
    stopped.expect("no panic").expect("served");
    assert!(
        slow.await.expect("join").is_err(),
        "the request cut off at the end of the grace period gets no response"
    );
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
