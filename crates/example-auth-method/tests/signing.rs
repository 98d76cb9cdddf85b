//! Signatures checked by an independent implementation, on requests made
//! through the runtime and through the gateway's proxy.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use example_auth_method::HmacSigned;
use hmac::{Hmac, KeyInit, Mac};
use integrations::definition::Format;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, ErrorKind, Integrations, NewAccount};
use sha2::Sha256;

const SECRET: &str = "signing-s3cret";

/// Checks a request's signature as the provider would, with the
/// provider's own reading of the scheme.
fn verify(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if header("x-key-id") != Some("key-1") {
        return Err("key id");
    }
    let timestamp: u64 = header("x-timestamp").and_then(|t| t.parse().ok()).ok_or("timestamp")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now.abs_diff(timestamp) > 300 {
        return Err("stale timestamp");
    }
    let signature = header("x-signature").ok_or("signature")?;
    let bytes: Vec<u8> = (0..signature.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(signature.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "signature is not hex")?;
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).map_err(|_| "key")?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(method.as_str().as_bytes());
    mac.update(b"\n");
    mac.update(path_and_query.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    mac.verify_slice(&bytes).map_err(|_| "signature does not match")
}

/// An upstream that answers 200 with what it saw when the signature holds,
/// 401 with the reason otherwise.
async fn upstream() -> String {
    async fn check(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
        match verify(&method, &uri, &headers, &body) {
            Ok(()) => (
                StatusCode::OK,
                format!("{method} {uri} {}", String::from_utf8_lossy(&body)),
            ),
            Err(reason) => (StatusCode::UNAUTHORIZED, reason.to_owned()),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new().fallback(check);
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn definitions(upstream: &str) -> Definitions {
    integrations::register_methods();
    integrations::method::register::<HmacSigned>();
    let text = format!(
        r#"
        [[integration]]
        key = "exchange"
        name = "Exchange"
        base_url = "{upstream}/api"
        auth = {{ type = "hmac" }}
        "#
    );
    Definitions::from_str(&text, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"))
}

async fn integrations_with_account(upstream: &str, secret: &str) -> Integrations {
    let definitions = definitions(upstream);
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let integrations = Integrations::new(definitions, store).expect("integrations");
    let exchange = Arc::clone(integrations.integration("exchange").expect("defined"));
    integrations
        .create_account(
            &exchange,
            NewAccount::new(AccountId::new("acct").expect("id"))
                .credential("key_id", "key-1")
                .credential("secret", secret),
        )
        .await
        .expect("account");
    integrations
}

#[tokio::test]
async fn requests_through_the_runtime_are_signed() {
    let upstream = upstream().await;
    let integrations = integrations_with_account(&upstream, SECRET).await;
    let client = integrations
        .client(&AccountId::new("acct").expect("id"))
        .await
        .expect("client");

    let response = client
        .post("/orders?market=eur")
        .json(&serde_json::json!({ "size": 2 }))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.expect("body"),
        r#"POST /api/orders?market=eur {"size":2}"#
    );
    let response = client.get("/balance").send().await.expect("response");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());

    // A signature header cannot be set by the caller.
    let refused = client
        .get("/balance")
        .header("X-Signature", "forged")
        .send()
        .await
        .expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::Refused);
    assert!(
        refused.to_string().contains("carries the request's signature"),
        "{refused}"
    );

    // A body that streams cannot be signed.
    let streamed = client
        .post("/orders")
        .streaming_body(reqwest::Body::from("late"))
        .send()
        .await
        .expect_err("refused");
    assert!(streamed.to_string().contains("needs its whole body"), "{streamed}");
}

#[tokio::test]
async fn a_wrong_secret_gets_the_providers_401() {
    let upstream = upstream().await;
    let integrations = integrations_with_account(&upstream, "another-secret").await;
    let client = integrations
        .client(&AccountId::new("acct").expect("id"))
        .await
        .expect("client");
    let response = client.get("/balance").send().await.expect("response");
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.expect("body"), "signature does not match");
}

#[tokio::test]
async fn the_gateway_accepts_the_method_and_its_proxy_signs() {
    use integrations::auth::oauth2::RedirectUri;
    use integrations::secrecy::ExposeSecret;
    use integrations_gateway::AppState;
    use integrations_gateway::keys::ApiKeys;

    let upstream = upstream().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = ApiKeys::in_data_dir(dir.path()).await.expect("keys");
    let (_, key) = keys.create("tests").await.expect("key");
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let state = Arc::new(AppState {
        integrations: Integrations::new(definitions(&upstream), store).expect("integrations"),
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&base).expect("redirect"),
        openapi_requires_key: false,
    });
    tokio::spawn(integrations_gateway::serve(listener, state, std::future::pending()));
    let http = reqwest::Client::new();
    let key = key.expose_secret().to_owned();

    let integration: serde_json::Value = http
        .get(format!("{base}/v1/integrations/exchange"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("json");
    assert_eq!(integration["auth_type"], "hmac");
    assert_eq!(integration["credentials"][0]["name"], "key_id");
    assert_eq!(integration["credentials"][0]["secret"], false);
    assert_eq!(integration["credentials"][1]["secret"], true);

    let created = http
        .post(format!("{base}/v1/accounts"))
        .bearer_auth(&key)
        .json(&serde_json::json!({
            "id": "acct",
            "integration": "exchange",
            "credentials": { "key_id": "key-1", "secret": SECRET },
        }))
        .send()
        .await
        .expect("response");
    assert_eq!(created.status(), 201);
    let created = created.text().await.expect("body");
    assert!(!created.contains(SECRET), "the API echoes a secret: {created}");

    let proxied = http
        .post(format!("{base}/v1/accounts/acct/proxy/orders?market=eur"))
        .bearer_auth(&key)
        .body("size=2")
        .send()
        .await
        .expect("response");
    assert_eq!(proxied.status(), 200);
    assert_eq!(
        proxied.text().await.expect("body"),
        "POST /api/orders?market=eur size=2"
    );
}
