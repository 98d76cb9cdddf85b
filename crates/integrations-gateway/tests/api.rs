//! Every route but the proxy and SFTP over HTTP against a running gateway:
//! success, each error status, and a missing or wrong API key.

use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;
use common::*;

#[tokio::test]
async fn health_needs_no_key_and_everything_else_does() {
    let gateway = Gateway::start().await;
    let health = reqwest::get(format!("{}/healthz", gateway.base)).await.expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<Value>().await.expect("json"),
        json!({ "status": "ok", "store": "ok" })
    );

    for path in [
        "/v1/integrations",
        "/v1/integrations/weather",
        "/v1/accounts",
        "/v1/accounts/a1",
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
    assert_eq!(
        (status, list["accounts"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    assert_eq!(list["next"], json!(null), "one page holds it all");
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

    // Public by default, as API discovery tools expect: it holds no secret.
    let public = reqwest::get(format!("{}/v1/openapi.json", gateway.base))
        .await
        .expect("response");
    assert_eq!(public.status(), StatusCode::OK);
    assert_eq!(public.json::<Value>().await.expect("json"), document);

    let behind_the_key = Gateway::with_openapi_behind_the_key().await;
    let refused = reqwest::get(format!("{}/v1/openapi.json", behind_the_key.base))
        .await
        .expect("response");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = behind_the_key
        .call(reqwest::Method::GET, "/v1/openapi.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
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

#[tokio::test]
async fn accounts_are_listed_in_pages_with_filters() {
    let gateway = Gateway::start().await;
    for n in 0..5 {
        let (status, _) = gateway
            .call(
                reqwest::Method::POST,
                "/v1/accounts",
                Some(
                    json!({ "id": format!("w{n}"), "integration": "weather", "credentials": { "token": "t-s3cret" } }),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .map(|account| account["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (status, first) = gateway.call(reqwest::Method::GET, "/v1/accounts?limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (ids(&first), &first["next"]),
        (vec!["w0".to_owned(), "w1".to_owned()], &json!("w1"))
    );
    let (_, second) = gateway
        .call(reqwest::Method::GET, "/v1/accounts?limit=2&after=w1", None)
        .await;
    assert_eq!(ids(&second), ["w2", "w3"]);
    let (_, last) = gateway
        .call(reqwest::Method::GET, "/v1/accounts?limit=2&after=w3", None)
        .await;
    assert_eq!((ids(&last), &last["next"]), (vec!["w4".to_owned()], &json!(null)));

    let (_, connected) = gateway
        .call(
            reqwest::Method::GET,
            "/v1/accounts?integration=weather&status=connected",
            None,
        )
        .await;
    assert_eq!(ids(&connected).len(), 5);
    let (_, none) = gateway
        .call(reqwest::Method::GET, "/v1/accounts?integration=nosuch", None)
        .await;
    assert_eq!(ids(&none), Vec::<String>::new());
    let (_, pending) = gateway
        .call(reqwest::Method::GET, "/v1/accounts?status=pending", None)
        .await;
    assert_eq!(ids(&pending), Vec::<String>::new());

    for (query, field) in [
        ("limit=0", "`limit`"),
        ("limit=1001", "`limit`"),
        ("limit=ten", "`limit`"),
        ("after=%20bad", "`after`"),
        ("status=broken", "`status`"),
    ] {
        let (status, body) = gateway
            .call(reqwest::Method::GET, &format!("/v1/accounts?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{query}: {message}");
    }
}

#[tokio::test]
async fn the_catalog_is_listed_with_a_key() {
    let gateway = Gateway::start().await;
    let anonymous = reqwest::get(format!("{}/v1/catalog", gateway.base))
        .await
        .expect("response");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let (status, catalog) = gateway.call(reqwest::Method::GET, "/v1/catalog", None).await;
    assert_eq!(status, StatusCode::OK, "{catalog}");
    let stripe = catalog
        .as_array()
        .expect("a list")
        .iter()
        .find(|entry| entry["key"] == "stripe")
        .expect("stripe");
    assert_eq!(stripe["name"], "Stripe");
    assert_eq!(stripe["auth_type"], "api_token");
    assert!(stripe["setup"].as_str().expect("setup").starts_with("# Stripe"));

    // An integration of its own name names the provider it extends, for the
    // connect page's "Continue to GitHub".
    let gateway = Gateway::with_definitions(
        "[[integration]]\nextends = \"github\"\nkey = \"acmesync\"\nname = \"Acme sync\"\n\
         [[integration]]\nkey = \"own\"\nname = \"Own API\"\nauth = { type = \"basic\" }\n\
         [[integration]]\nextends = \"docusign\"",
    )
    .await;
    let (status, listed) = gateway.call(reqwest::Method::GET, "/v1/integrations", None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let items = listed
        .as_array()
        .or_else(|| listed["items"].as_array())
        .expect("a list");
    let by_key = |key: &str| items.iter().find(|item| item["key"] == key).expect(key).clone();
    let sync = by_key("acmesync");
    assert_eq!(
        (sync["name"].as_str(), sync["provider"].as_str()),
        (Some("Acme sync"), Some("GitHub"))
    );
    assert_eq!(sync["extends"], "github");
    assert_eq!(by_key("own")["provider"], "Own API");
    // A parameter's choices and default, for the connect page's list.
    let server = &by_key("docusign")["parameters"][0];
    assert_eq!(server["name"], "account_server");
    assert_eq!(server["choices"], serde_json::json!(["account", "account-d"]));
    assert_eq!(server["default"], "account");
}
