//! Connect sessions: made with an API key, used by an end user with the
//! session token alone, and every way a token may be misused.

mod common;

use common::Gateway;
use integrations::time::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An upstream whose `/v1/me` accepts the token `right-token` only.
async fn checking_upstream() -> String {
    let app = axum::Router::new().route(
        "/v1/me",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            if headers.get("x-key").is_some_and(|key| key == "right-token") {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// A browser signing in at `authorization_url`: the provider redirects it
/// to the gateway's callback, where it presents `cookie` (when it has it).
async fn sign_in(authorization_url: &str, cookie: Option<&str>) -> reqwest::Response {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = browser.get(authorization_url).send().await.expect("provider");
    assert!(redirect.status().is_redirection(), "{}", redirect.status());
    let callback = redirect.headers()["location"].to_str().expect("location").to_owned();
    let mut request = browser.get(callback);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.expect("callback")
}

/// `ticket`: an API token integration checked at the upstream's `/v1/me`.
fn ticket_definition(upstream: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "ticket"
        name = "Ticket Desk"
        base_url = "{upstream}/v1"
        parameters = [{{ name = "team", description = "your team's name" }}]
        health_check = {{ path = "/me" }}
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
        "#
    )
}

impl Gateway {
    /// A session from `body`, its token and connect URL.
    async fn session(&self, body: Value) -> (String, String) {
        let (status, created) = self.call(Method::POST, "/v1/connect-sessions", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (
            created["token"].as_str().expect("token").to_owned(),
            created["connect_url"].as_str().expect("url").to_owned(),
        )
    }

    /// A public session route called with `token`, from `origin` when given.
    async fn as_end_user(
        &self,
        token: &str,
        method: Method,
        route: &str,
        body: Option<Value>,
        origin: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/v1/connect/session{route}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.expect("response");
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.expect("body");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Starts the OAuth 2.0 authorization of the session of `token`: the
    /// provider's URL, and the cookie the browser got with it.
    async fn start_authorization(&self, token: &str, integration: &str) -> (String, String) {
        let (status, headers, start) = self
            .as_end_user(
                token,
                Method::POST,
                "/authorization",
                Some(json!({ "integration": integration })),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{start}");
        let cookie = headers["set-cookie"].to_str().expect("cookie").to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().expect("name=value").to_owned();
        (start["authorization_url"].as_str().expect("url").to_owned(), pair)
    }

    /// Moves the session of `token` `by` in time (negative: into the past).
    async fn age_session(&self, token: &str, by: Duration) {
        let storage = self.state.integrations.store().storage();
        let hash = integrations_gateway::connect::token_hash(token);
        let session = storage.connect_session(&hash).await.expect("read").expect("session");
        let mut aged = session.clone();
        aged.expires_at += by;
        assert!(storage.update_connect_session(&session, &aged).await.expect("update"));
    }
}

#[tokio::test]
async fn sessions_are_made_with_an_api_key_and_checked() {
    let upstream = checking_upstream().await;
    let gateway = Gateway::with_definitions(&ticket_definition(&upstream)).await;
    let anonymous = gateway
        .http
        .post(format!("{}/v1/connect-sessions", gateway.base))
        .json(&json!({ "integration": "ticket" }))
        .send()
        .await
        .expect("response");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let (status, created) = gateway
        .call(
            Method::POST,
            "/v1/connect-sessions",
            Some(json!({
                "integration": "ticket",
                "account": "acme-tickets",
                "end_user": { "id": "user-7", "display_name": "Ada at Acme" },
                "allowed_origins": ["http://127.0.0.1:9"],
                "return_url": "http://127.0.0.1:9/settings?tab=integrations",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().expect("token");
    assert!(token.starts_with("ics_") && token.len() > 40, "{token}");
    assert_eq!(
        created["connect_url"],
        format!("{}/connect/session#{token}", gateway.base)
    );
    assert_eq!(created["account"], "acme-tickets");
    assert_eq!(created["reconnect"], false);
    // Only the token's hash is stored.
    let stored = gateway
        .state
        .integrations
        .store()
        .storage()
        .connect_session(&integrations_gateway::connect::token_hash(token))
        .await
        .expect("read")
        .expect("stored");
    assert!(!format!("{stored:?}").contains(token));

    // A new id when none is given.
    let (_, generated) = gateway
        .call(
            Method::POST,
            "/v1/connect-sessions",
            Some(json!({ "integration": "ticket" })),
        )
        .await;
    assert!(generated["account"].as_str().expect("id").starts_with("acct-"));

    for (body, names) in [
        (json!({}), "`integration` is required"),
        (json!({ "integration": "nope" }), "nope"),
        (
            json!({ "integration": "ticket", "allowed_origins": ["*"] }),
            "allowed_origins",
        ),
        (
            json!({ "integration": "ticket", "allowed_origins": ["https://app.example.com/path"] }),
            "allowed_origins",
        ),
        (
            json!({ "integration": "ticket", "return_url": "https://evil.example/steal" }),
            "return_url",
        ),
        (
            json!({ "integration": "ticket", "return_url": "javascript:alert(1)" }),
            "return_url",
        ),
        (json!({ "integration": "ticket", "ttl_seconds": 5 }), "ttl"),
        (json!({ "integration": "ticket", "ttl_seconds": 99_999_999 }), "ttl"),
        (json!({ "integration": "ticket", "account": "../etc" }), "account"),
        (
            json!({ "integration": "ticket", "end_user": { "id": "" } }),
            "end_user.id",
        ),
        (json!({ "integration": "ticket", "scopes": ["admin"] }), "scopes"),
    ] {
        let (status, error) = gateway
            .call(Method::POST, "/v1/connect-sessions", Some(body.clone()))
            .await;
        assert!(status.is_client_error(), "{body}: {status} {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{body}: {message}");
    }
}

#[tokio::test]
async fn an_end_user_connects_an_api_token_account_checked_before_it_is_saved() {
    let upstream = checking_upstream().await;
    let gateway = Gateway::with_definitions(&ticket_definition(&upstream)).await;
    let (token, _) = gateway
        .session(json!({
            "integration": "ticket",
            "account": "acme-tickets",
            "end_user": { "id": "user-7", "display_name": "Ada at Acme" },
        }))
        .await;

    let (status, _, session) = gateway.as_end_user(&token, Method::GET, "", None, None).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["status"], "open");
    assert_eq!(session["account"], "acme-tickets");
    assert_eq!(session["end_user_name"], "Ada at Acme");
    assert_eq!(session["integrations"][0]["name"], "Ticket Desk");
    assert_eq!(session["integrations"][0]["parameters"][0]["name"], "team");
    assert_eq!(session["integrations"][0]["credentials"][0]["name"], "token");
    assert_eq!(session["integrations"][0]["credentials"][0]["secret"], true);

    // A wrong token: refused by the health check, nothing saved.
    let (status, _, refused) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "parameters": { "team": "blue" }, "credentials": { "token": "wrong-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["kind"], "credentials_refused");
    assert!(
        refused["error"]["message"]
            .as_str()
            .expect("message")
            .contains("the credentials do not work: the health check GET /me answered 401"),
        "{refused}"
    );
    assert!(!refused.to_string().contains("wrong-token"));
    let (status, _) = gateway.call(Method::GET, "/v1/accounts/acme-tickets", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a refused account is not saved");

    // A missing parameter is named.
    let (status, _, missing) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{missing}");
    assert!(missing["error"]["message"].as_str().expect("message").contains("team"));

    let (status, _, connected) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "parameters": { "team": "blue" }, "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connected}");
    assert_eq!(connected, json!({ "account": "acme-tickets", "status": "connected" }));
    let (_, account) = gateway.call(Method::GET, "/v1/accounts/acme-tickets", None).await;
    assert_eq!(account["status"], "connected");
    assert_eq!(account["parameters"]["team"], "blue");
    assert_eq!(
        account["end_user"],
        json!({ "id": "user-7", "display_name": "Ada at Acme" })
    );

    // Single use: the session is done, and says so; nothing reads back the
    // credentials.
    let (status, _, reused) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "parameters": { "team": "red" }, "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::GONE, "{reused}");
    assert_eq!(reused["error"]["kind"], "session_used");
    let (status, _, done) = gateway.as_end_user(&token, Method::GET, "", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["account_status"], "connected");
    assert!(!done.to_string().contains("right-token"), "{done}");
    let (_, account) = gateway.call(Method::GET, "/v1/accounts/acme-tickets", None).await;
    assert_eq!(
        account["parameters"]["team"], "blue",
        "the used session changed nothing"
    );
}

#[tokio::test]
async fn a_reconnect_keeps_the_account_and_changes_only_its_credentials() {
    let upstream = checking_upstream().await;
    let definitions = format!("{}{}", ticket_definition(&upstream), common::DEFINITIONS);
    let gateway = Gateway::with_definitions(&definitions).await;
    let (status, created) = gateway
        .call(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "t1", "integration": "ticket", "parameters": { "team": "blue" }, "credentials": { "token": "old-token" } })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, mismatched) = gateway
        .call(
            Method::POST,
            "/v1/connect-sessions",
            Some(json!({ "account": "t1", "integration": "weather" })),
        )
        .await;
    assert!(
        mismatched.to_string().contains("exists with integration `ticket`"),
        "{mismatched}"
    );

    let (status, session) = gateway
        .call(
            Method::POST,
            "/v1/connect-sessions",
            Some(json!({ "account": "t1", "end_user": { "id": "user-9" } })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["reconnect"], true);
    assert_eq!(session["integrations"], json!(["ticket"]));
    let token = session["token"].as_str().expect("token");
    let (_, _, view) = gateway.as_end_user(token, Method::GET, "", None, None).await;
    assert_eq!(view["reconnect"], true);
    assert_eq!(
        view["integrations"][0]["parameters"],
        json!([]),
        "parameters are kept, not asked"
    );

    let (status, _, error) = gateway
        .as_end_user(
            token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "parameters": { "team": "red" }, "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, _, reconnected) = gateway
        .as_end_user(
            token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reconnected}");
    let (_, account) = gateway.call(Method::GET, "/v1/accounts/t1", None).await;
    assert_eq!(account["parameters"]["team"], "blue");
    assert_eq!(account["created_at"], created["created_at"]);
    assert_eq!(account["end_user"]["id"], "user-9");
    // The new token is what requests now carry.
    let client = gateway
        .state
        .integrations
        .client(&integrations::AccountId::new("t1").expect("id"))
        .await
        .expect("client");
    let status = client.request(Method::GET, "/me").send().await.expect("call").status();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_session_opens_its_own_account_only() {
    let upstream = checking_upstream().await;
    let gateway = Gateway::with_definitions(&ticket_definition(&upstream)).await;
    gateway
        .call(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "victim", "integration": "ticket", "parameters": { "team": "blue" }, "credentials": { "token": "victim-s3cret" } })),
        )
        .await;
    let (token, _) = gateway
        .session(json!({ "integration": "ticket", "account": "mine" }))
        .await;
    // Naming another account in the body is refused, not obeyed.
    for field in ["account", "id"] {
        let mut body = json!({ "integration": "ticket", "parameters": { "team": "x" }, "credentials": { "token": "right-token" } });
        body[field] = json!("victim");
        let (status, _, error) = gateway
            .as_end_user(&token, Method::POST, "/account", Some(body), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {error}");
        assert!(error.to_string().contains(field), "{error}");
    }
    // The session token is no API key, and an API key no session token.
    let (status, _) = {
        let response = gateway
            .http
            .get(format!("{}/v1/accounts/victim", gateway.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("response");
        (response.status(), ())
    };
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = gateway.as_end_user(&gateway.key, Method::GET, "", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = gateway.as_end_user("ics_forged", Method::GET, "", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nothing of the other account is shown.
    let (_, _, view) = gateway.as_end_user(&token, Method::GET, "", None, None).await;
    assert!(!view.to_string().contains("victim"), "{view}");
    // An integration the session does not offer.
    let (status, _, error) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "other", "credentials": {} })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (_, victim) = gateway.call(Method::GET, "/v1/accounts/victim", None).await;
    assert_eq!(victim["parameters"]["team"], "blue");
}

#[tokio::test]
async fn expired_sessions_are_refused() {
    let upstream = checking_upstream().await;
    let gateway = Gateway::with_definitions(&ticket_definition(&upstream)).await;
    let (token, _) = gateway.session(json!({ "integration": "ticket" })).await;
    gateway.age_session(&token, -Duration::hours(1)).await;
    let (status, _, expired) = gateway.as_end_user(&token, Method::GET, "", None, None).await;
    assert_eq!(status, StatusCode::GONE, "{expired}");
    assert_eq!(expired["error"]["kind"], "session_expired");
    let (status, _, _) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "parameters": { "team": "x" }, "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::GONE);
    // Expired sessions are pruned when new ones are made.
    gateway.session(json!({ "integration": "ticket" })).await;
    let storage = gateway.state.integrations.store().storage();
    let hash = integrations_gateway::connect::token_hash(&token);
    assert!(storage.connect_session(&hash).await.expect("read").is_none());
}

#[tokio::test]
async fn other_origins_and_cross_site_forms_are_refused() {
    let upstream = checking_upstream().await;
    let gateway = Gateway::with_definitions(&ticket_definition(&upstream)).await;
    let (token, _) = gateway
        .session(json!({ "integration": "ticket", "allowed_origins": ["http://app.localhost:3000"] }))
        .await;
    let submit =
        json!({ "integration": "ticket", "parameters": { "team": "x" }, "credentials": { "token": "right-token" } });

    let (status, headers, error) = gateway
        .as_end_user(&token, Method::GET, "", None, Some("http://evil.localhost"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["error"]["kind"], "origin_refused");
    assert!(headers.get("access-control-allow-origin").is_none());
    let (status, _, _) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(submit.clone()),
            Some("http://evil.localhost"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = gateway.call(Method::GET, "/v1/accounts", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = gateway.call(Method::GET, "/v1/accounts", None).await;
    assert_eq!(page["accounts"], json!([]), "nothing was saved");

    // A form posted from another site carries no token.
    let form = gateway
        .http
        .post(format!("{}/v1/connect/session/account", gateway.base))
        .header("origin", "http://evil.localhost")
        .form(&[("integration", "ticket"), ("credentials", "x")])
        .send()
        .await
        .expect("response");
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED);
    // Nor is a form body read, token or not.
    let form = gateway
        .http
        .post(format!("{}/v1/connect/session/account", gateway.base))
        .bearer_auth(&token)
        .form(&[("integration", "ticket")])
        .send()
        .await
        .expect("response");
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The allowed origin and the gateway's own are answered, CORS headers
    // for the first.
    let (status, headers, _) = gateway
        .as_end_user(&token, Method::GET, "", None, Some("http://app.localhost:3000"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], "http://app.localhost:3000");
    let (status, _, _) = gateway
        .as_end_user(&token, Method::GET, "", None, Some(&gateway.base))
        .await;
    assert_eq!(status, StatusCode::OK);
    let preflight = gateway
        .http
        .request(Method::OPTIONS, format!("{}/v1/connect/session", gateway.base))
        .header("origin", "http://app.localhost:3000")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "authorization, content-type"
    );
    let (status, _, connected) = gateway
        .as_end_user(&token, Method::POST, "/account", Some(submit), Some(&gateway.base))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connected}");
}

#[tokio::test]
async fn an_oauth2_session_completes_on_the_callback() {
    use integration_oauth2_test_server::{Config, TestServer};

    let server = TestServer::start(Config::default()).await;
    let gateway = Gateway::with_definitions(&server.definition(r#""test-secret""#)).await;
    let (token, _) = gateway
        .session(json!({
            "integration": "provider",
            "account": "gh-ada",
            "end_user": { "id": "user-7" },
            "allowed_origins": ["http://app.localhost:3000"],
        }))
        .await;
    let (status, _, error) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "provider", "credentials": { "access_token": "planted" } })),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "OAuth 2.0 tokens come from the provider: {error}"
    );

    gateway.start_authorization(&token, "provider").await;
    // Starting again reuses the pending account rather than failing.
    let (url, cookie) = gateway.start_authorization(&token, "provider").await;
    // The link to the provider, sent to someone else: their browser lacks
    // the cookie, and their sign-in connects nothing.
    let elsewhere = sign_in(&url, None).await;
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    assert!(
        elsewhere
            .text()
            .await
            .expect("page")
            .contains("started in another browser")
    );
    let (_, account) = gateway.call(Method::GET, "/v1/accounts/gh-ada", None).await;
    assert_eq!(account["status"], "pending");
    // A callback an authorization started before the session expired still
    // completes, even after expired sessions were pruned.
    let (url, cookie) = {
        drop((url, cookie));
        gateway.start_authorization(&token, "provider").await
    };
    gateway.age_session(&token, -Duration::minutes(31)).await;
    gateway.session(json!({ "integration": "provider" })).await;
    let landing = sign_in(&url, Some(&cookie)).await;
    let cleared = landing.headers()["set-cookie"]
        .to_str()
        .is_ok_and(|cleared| cleared.contains("Max-Age=0"));
    assert_eq!(landing.status(), StatusCode::OK);
    let policy = landing.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(policy.contains("script-src 'sha256-") && policy.contains("frame-ancestors 'none'"));
    let page = landing.text().await.expect("page");
    assert!(
        page.contains("&quot;status&quot;:&quot;connected&quot;")
            && page.contains("&quot;account&quot;:&quot;gh-ada&quot;"),
        "{page}"
    );
    assert!(
        page.contains("http://app.localhost:3000"),
        "the page posts to the allowed origins"
    );
    assert!(!page.contains("access_token"), "{page}");
    let (_, account) = gateway.call(Method::GET, "/v1/accounts/gh-ada", None).await;
    assert_eq!(account["status"], "connected");
    assert_eq!(account["end_user"]["id"], "user-7");
    let (status, _, _) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/authorization",
            Some(json!({ "integration": "provider" })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::GONE, "a used session starts nothing");
    assert!(cleared, "the callback drops its binding cookie");
}

#[tokio::test]
async fn a_callback_for_a_removed_account_or_a_refusal_leaves_the_session_open() {
    use integration_oauth2_test_server::{Config, TestServer};

    let server = TestServer::start(Config::default()).await;
    let gateway = Gateway::with_definitions(&server.definition(r#""test-secret""#)).await;
    let (token, _) = gateway
        .session(json!({ "integration": "provider", "account": "gone" }))
        .await;
    let (url, cookie) = gateway.start_authorization(&token, "provider").await;
    let (status, _) = gateway.call(Method::DELETE, "/v1/accounts/gone", None).await;
    assert_eq!(status, StatusCode::OK);
    let landing = sign_in(&url, Some(&cookie)).await;
    assert_eq!(landing.status(), StatusCode::GONE);
    let page = landing.text().await.expect("page");
    assert!(
        page.contains("The account was removed while it was being connected"),
        "{page}"
    );
    let (status, _) = gateway.call(Method::GET, "/v1/accounts/gone", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the callback made no account");
    let (_, _, session) = gateway.as_end_user(&token, Method::GET, "", None, None).await;
    assert_eq!(session["status"], "open", "{session}");

    // The provider refusing the code exchange.
    let refusing = TestServer::start(Config {
        fail_token_requests: Some(400),
        ..Config::default()
    })
    .await;
    let gateway = Gateway::with_definitions(&refusing.definition(r#""test-secret""#)).await;
    let (token, _) = gateway.session(json!({ "integration": "provider" })).await;
    let (url, cookie) = gateway.start_authorization(&token, "provider").await;
    let landing = sign_in(&url, Some(&cookie)).await;
    assert_eq!(landing.status(), StatusCode::BAD_GATEWAY);
    let page = landing.text().await.expect("page");
    assert!(page.contains("&quot;retry&quot;:true"), "{page}");
    let (_, _, session) = gateway.as_end_user(&token, Method::GET, "", None, None).await;
    assert_eq!(session["status"], "open");
}

#[tokio::test]
async fn the_connect_page_and_script_are_public() {
    let gateway = Gateway::start().await;
    let page = reqwest::get(format!("{}/connect/session", gateway.base))
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert!(
        headers.get("cross-origin-opener-policy").is_none(),
        "the popup keeps its opener"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("connect-src 'self'")
    );
    assert!(page.text().await.expect("body").contains("data-outcome=\"\""));
    let script = reqwest::get(format!("{}/connect.js", gateway.base))
        .await
        .expect("script");
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/javascript")
    );
    assert!(script.text().await.expect("body").contains("Integrations"));
}

#[tokio::test]
async fn an_sftp_session_shows_the_host_key_and_checks_the_login() {
    use integration_sftp_test_server::UserKey;

    let Some(sshd) = integration_sftp_test_server::start_or_skip() else {
        return;
    };
    let definitions = format!(
        r#"
        [[integration]]
        key = "files"
        name = "Partner Files"
        allow_ip_hosts = true
        auth = {{ type = "sftp", host = "127.0.0.1", port = {port} }}

        [[integration]]
        key = "named"
        name = "Named Files"
        auth = {{ type = "sftp" }}
        "#,
        port = sshd.port()
    );
    let gateway = Gateway::with_definitions(&definitions).await;
    let (token, _) = gateway
        .session(json!({ "integration": "files", "account": "drop" }))
        .await;
    let (status, _, key) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/host-key",
            Some(json!({ "integration": "files" })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{key}");
    assert_eq!(key["fingerprint"], sshd.host_key_fingerprint());
    assert_eq!(key["port"], sshd.port());

    let credentials = |user: &str| {
        json!({
            "integration": "files",
            "credentials": {
                "username": user,
                "private_key": sshd.user_key(UserKey::Ed25519),
                "host_key": key["fingerprint"],
            }
        })
    };
    let (status, _, refused) = gateway
        .as_end_user(&token, Method::POST, "/account", Some(credentials("nobody-here")), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["kind"], "credentials_refused");
    let (status, _) = gateway.call(Method::GET, "/v1/accounts/drop", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, connected) = gateway
        .as_end_user(&token, Method::POST, "/account", Some(credentials(sshd.user())), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connected}");

    // Where the end user names the host: never metadata or link-local
    // addresses, and no IP address unless the integration allows them.
    let (token, _) = gateway.session(json!({ "integration": "named" })).await;
    for (host, kind) in [
        ("169.254.169.254", "refused"),
        ("metadata.google.internal", "refused"),
        ("127.0.0.1", "refused"),
        ("not a host", "invalid_input"),
    ] {
        let (status, _, error) = gateway
            .as_end_user(
                &token,
                Method::POST,
                "/host-key",
                Some(json!({ "integration": "named", "host": host })),
                None,
            )
            .await;
        assert!(status.is_client_error(), "{host}: {status} {error}");
        assert_eq!(error["error"]["kind"], kind, "{host}: {error}");
    }
}

#[tokio::test]
async fn a_session_counts_its_attempts_and_fixes_the_product_s_parameters() {
    let upstream = checking_upstream().await;
    let gateway = Gateway::with_definitions(&ticket_definition(&upstream)).await;
    for (body, names) in [
        (
            json!({ "integration": "ticket", "parameters": { "nope": "x" } }),
            "`parameters.nope`",
        ),
        (
            json!({ "integration": "ticket", "parameters": { "team": "x" }, "account": "fixed", "ttl_seconds": 60 }),
            "",
        ),
    ] {
        let (status, answer) = gateway.call(Method::POST, "/v1/connect-sessions", Some(body)).await;
        if names.is_empty() {
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
            assert!(answer.to_string().contains(names), "{answer}");
        }
    }
    // The product fixes the team: the end user is not asked, cannot change
    // it, and the account has it.
    let (token, _) = gateway
        .session(json!({ "integration": "ticket", "account": "fixed-team", "parameters": { "team": "blue" } }))
        .await;
    let (_, _, view) = gateway.as_end_user(&token, Method::GET, "", None, None).await;
    assert_eq!(view["integrations"][0]["parameters"], json!([]), "{view}");
    let (status, _, error) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "parameters": { "team": "red" }, "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, _, _) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, account) = gateway.call(Method::GET, "/v1/accounts/fixed-team", None).await;
    assert_eq!(account["parameters"]["team"], "blue");

    // Ten checks, then the session is spent: no password spraying through
    // the gateway.
    let (token, _) = gateway.session(json!({ "integration": "ticket" })).await;
    let wrong = json!({ "integration": "ticket", "parameters": { "team": "x" }, "credentials": { "token": "guess" } });
    for _ in 0..integrations_gateway::connect::MAX_ATTEMPTS {
        let (status, _, _) = gateway
            .as_end_user(&token, Method::POST, "/account", Some(wrong.clone()), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _, spent) = gateway
        .as_end_user(&token, Method::POST, "/account", Some(wrong), None)
        .await;
    assert_eq!(status, StatusCode::GONE, "{spent}");
    assert_eq!(spent["error"]["kind"], "session_exhausted");
}

#[tokio::test]
async fn end_user_hosts_are_resolved_and_private_ones_refused() {
    let definitions = r#"
        [[integration]]
        key = "selfhosted"
        name = "Self-hosted Tracker"
        base_url = "https://{host}/api"
        parameters = [{ name = "host", description = "your tracker's host name" }]
        health_check = { path = "/me" }
        auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }

        [[integration]]
        key = "named"
        name = "Named Files"
        auth = { type = "sftp" }

        [[integration]]
        key = "selfsignin"
        name = "Self-hosted Sign-in"
        base_url = "https://{host}/api"
        parameters = [{ name = "host" }, { name = "client_secret", secret = true }]
        [integration.auth]
        type = "oauth2"
        grant_type = "authorization_code"
        authorization_endpoint = "https://{host}/oauth/authorize"
        access_token_endpoint = "https://{host}/oauth/token"
        access_token_verb = "POST"
        scope = "api"
        client_id = "app"
        client_secret = "{client_secret}"
        token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
    "#;
    let gateway = Gateway::with_definitions(definitions).await;

    // An OAuth 2.0 sign-in sends the code and the client secret to the
    // end user's host: resolved and refused before the authorization starts.
    let (token, _) = gateway.session(json!({ "integration": "selfsignin" })).await;
    for host in ["localhost", "127.1", "metadata.google.internal"] {
        let (status, _, error) = gateway
            .as_end_user(
                &token,
                Method::POST,
                "/authorization",
                Some(json!({ "integration": "selfsignin", "parameters": { "host": host, "client_secret": "s" } })),
                None,
            )
            .await;
        assert!(status.is_client_error(), "{host}: {status} {error}");
    }
    let (_, page) = gateway.call(Method::GET, "/v1/accounts", None).await;
    assert_eq!(page["accounts"], json!([]), "no pending account is left");

    let (token, _) = gateway.session(json!({ "integration": "selfhosted" })).await;
    for host in [
        "localhost",
        "127.1",
        "2130706433",
        "0x7f000001",
        "169.254.169.254",
        "metadata.google.internal",
    ] {
        let (status, _, error) = gateway
            .as_end_user(
                &token,
                Method::POST,
                "/account",
                Some(json!({ "integration": "selfhosted", "parameters": { "host": host }, "credentials": { "token": "t" } })),
                None,
            )
            .await;
        assert!(status.is_client_error(), "{host}: {status} {error}");
        assert_ne!(status, StatusCode::GONE, "{host}: refused before an attempt is counted");
    }
    let (_, page) = gateway.call(Method::GET, "/v1/accounts", None).await;
    assert_eq!(page["accounts"], json!([]));

    // SFTP: the same on the credential route, not only on the host key's;
    // and neither a passphrase nor a policy that trusts any server.
    let (token, _) = gateway.session(json!({ "integration": "named" })).await;
    for (credentials, names) in [
        (
            json!({ "username": "u", "password": "p", "host_key": "SHA256:x", "host": "127.0.0.1" }),
            "IP address",
        ),
        (
            json!({ "username": "u", "password": "p", "host_key": "SHA256:x", "host": "localhost" }),
            "private network",
        ),
        (
            json!({ "username": "u", "private_key": "k", "passphrase": "p", "host_key": "SHA256:x", "host": "sftp.example.com" }),
            "passphrase",
        ),
        (
            json!({ "username": "u", "password": "p", "host_key": "insecure-accept-any", "host": "sftp.example.com" }),
            "host_key",
        ),
    ] {
        let (status, _, error) = gateway
            .as_end_user(
                &token,
                Method::POST,
                "/account",
                Some(json!({ "integration": "named", "credentials": credentials })),
                None,
            )
            .await;
        assert!(status.is_client_error(), "{credentials}: {status} {error}");
        assert!(error.to_string().contains(names), "{credentials}: {error}");
    }
}

#[tokio::test]
async fn an_end_user_may_switch_from_a_sign_in_to_a_token() {
    use integration_oauth2_test_server::{Config, TestServer};

    let server = TestServer::start(Config::default()).await;
    let upstream = checking_upstream().await;
    let definitions = format!(
        "{}{}",
        server.definition(r#""test-secret""#),
        ticket_definition(&upstream)
    );
    let gateway = Gateway::with_definitions(&definitions).await;
    let (token, _) = gateway
        .session(json!({ "integrations": ["provider", "ticket"], "account": "either" }))
        .await;
    // A sign-in started, then abandoned for a token.
    gateway.start_authorization(&token, "provider").await;
    let (_, pending) = gateway.call(Method::GET, "/v1/accounts/either", None).await;
    assert_eq!(pending["status"], "pending");
    let (status, _, connected) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/account",
            Some(json!({ "integration": "ticket", "parameters": { "team": "blue" }, "credentials": { "token": "right-token" } })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connected}");
    let (_, account) = gateway.call(Method::GET, "/v1/accounts/either", None).await;
    assert_eq!(account["integration"], "ticket");
    assert_eq!(account["status"], "connected");

    // An account of the session's id made by someone else is never taken
    // for the session's own pending one.
    let (token, _) = gateway
        .session(json!({ "integration": "provider", "account": "taken" }))
        .await;
    gateway
        .call(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "taken", "integration": "provider" })),
        )
        .await;
    let (status, _, error) = gateway
        .as_end_user(
            &token,
            Method::POST,
            "/authorization",
            Some(json!({ "integration": "provider" })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
}
