#![doc = include_str!("../README.md")]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The one registered client.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Issue a new refresh token on every refresh and refuse the old one.
    pub rotate_refresh_tokens: bool,
    /// Include a refresh token in authorization code responses.
    pub issue_refresh_tokens: bool,
    /// Access token lifetime; `None` leaves `expires_in` out.
    pub access_token_lifetime: Option<Duration>,
    /// Send `expires_in` as a string, as some providers do.
    pub expires_in_as_string: bool,
    /// Nest the tokens under `data`, off the standard.
    pub nest_tokens: bool,
    /// Refuse authorization requests without a PKCE challenge.
    pub require_pkce: bool,
    /// Show a login page instead of approving at once.
    pub interactive_login: bool,
    /// Delay every token response, to widen races in tests.
    pub token_delay: Duration,
    /// Answer every token request with this status (a provider outage).
    pub fail_token_requests: Option<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            client_id: "test-client".to_owned(),
            client_secret: "test-secret".to_owned(),
            rotate_refresh_tokens: true,
            issue_refresh_tokens: true,
            access_token_lifetime: Some(Duration::from_secs(3600)),
            expires_in_as_string: false,
            nest_tokens: false,
            require_pkce: false,
            interactive_login: false,
            token_delay: Duration::ZERO,
            fail_token_requests: None,
        }
    }
}

/// A running server; it stops when the runtime that started it ends.
#[derive(Clone)]
pub struct TestServer {
    address: SocketAddr,
    state: Arc<Shared>,
}

struct Shared {
    config: Mutex<Config>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    codes: HashMap<String, Grant>,
    access_tokens: HashMap<String, Instant>,
    refresh_tokens: HashSet<String>,
    spent_refresh_tokens: HashSet<String>,
    revoked: HashSet<String>,
    token_calls: HashMap<String, usize>,
    revoke_calls: usize,
    last_authorization: Option<HashMap<String, String>>,
}

struct Grant {
    redirect_uri: String,
    challenge: Option<String>,
}

impl TestServer {
    /// Starts a server on a free loopback port.
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(Shared {
            config: Mutex::new(config),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/authorize/approve", post(approve))
            .route("/token", get(token).post(token))
            .route("/revoke", post(revoke))
            .route("/api/me", get(me))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, state }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A TOML definition of integration `provider` on this server:
    /// authorization code grant, revoke endpoint, scope `profile`, client
    /// `test-client`, `base_url` its `/api`. `client_secret` is the TOML
    /// value, e.g. `"test-secret"` or `{ env = "VAR" }`.
    pub fn definition(&self, client_secret: &str) -> String {
        format!(
            r#"
            [[integration]]
            key = "provider"
            name = "Provider"
            base_url = "{api}"
            [integration.auth]
            type = "oauth2"
            grant_type = "authorization_code"
            authorization_endpoint = "{authorize}"
            access_token_endpoint = "{token}"
            access_token_verb = "POST"
            revoke_token_endpoint = "{revoke}"
            scope = "profile"
            client_id = "test-client"
            client_secret = {client_secret}
            token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
            "#,
            api = self.url("/api"),
            authorize = self.url("/authorize"),
            token = self.url("/token"),
            revoke = self.url("/revoke"),
        )
    }

    /// How many token requests came with `grant_type`.
    pub fn token_calls(&self, grant_type: &str) -> usize {
        self.inner().token_calls.get(grant_type).copied().unwrap_or(0)
    }

    /// How many revocation requests came.
    pub fn revoke_calls(&self) -> usize {
        self.inner().revoke_calls
    }

    /// Revokes every refresh token issued so far, as a provider does when a
    /// user removes the app's access: the next refresh gets `invalid_grant`.
    pub fn revoke_refresh_tokens(&self) {
        let mut inner = self.inner();
        let tokens: Vec<String> = inner.refresh_tokens.iter().cloned().collect();
        inner.revoked.extend(tokens);
    }

    /// Whether `token` was revoked.
    pub fn is_revoked(&self, token: &str) -> bool {
        self.inner().revoked.contains(token)
    }

    /// Whether `token` is a refresh token that was used up by rotation.
    pub fn is_spent(&self, token: &str) -> bool {
        self.inner().spent_refresh_tokens.contains(token)
    }

    /// The parameters of the last authorization request.
    pub fn last_authorization(&self) -> Option<HashMap<String, String>> {
        self.inner().last_authorization.clone()
    }

    /// Changes the configuration of the running server.
    pub fn configure(&self, change: impl FnOnce(&mut Config)) {
        change(&mut self.state.config.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.state.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Shared {
    fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn random_token(prefix: &str) -> String {
    let body: String = std::iter::repeat_with(fastrand::alphanumeric).take(32).collect();
    format!("{prefix}_{body}")
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "error_description": format!("test server: {code}") })),
    )
        .into_response()
}

async fn authorize(State(state): State<Arc<Shared>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let config = state.config();
    state.inner().last_authorization = Some(params.clone());
    if params.get("client_id") != Some(&config.client_id) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return (StatusCode::BAD_REQUEST, "missing redirect_uri").into_response();
    };
    let state_param = params.get("state").cloned().unwrap_or_default();
    if params.get("response_type").map(String::as_str) != Some("code") {
        return Redirect::to(&format!(
            "{redirect_uri}?error=unsupported_response_type&state={state_param}"
        ))
        .into_response();
    }
    let challenge = params.get("code_challenge").cloned();
    if challenge.is_some() && params.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return Redirect::to(&format!("{redirect_uri}?error=invalid_request&state={state_param}")).into_response();
    }
    if challenge.is_none() && config.require_pkce {
        return Redirect::to(&format!("{redirect_uri}?error=invalid_request&state={state_param}")).into_response();
    }
    if params.contains_key("deny") {
        return Redirect::to(&format!("{redirect_uri}?error=access_denied&state={state_param}")).into_response();
    }
    if config.interactive_login {
        let hidden: String = params
            .iter()
            .map(|(k, v)| format!(r#"<input type="hidden" name="{}" value="{}">"#, escape(k), escape(v)))
            .collect();
        return Html(format!(
            r#"<!doctype html><title>Test login</title><form method="post" action="/authorize/approve">{hidden}
            <label>User <input name="user" value="tester"></label>
            <button type="submit" id="login">Log in</button></form>"#
        ))
        .into_response();
    }
    issue_code(&state, redirect_uri, &state_param, challenge)
}

async fn approve(
    State(state): State<Arc<Shared>>,
    axum::Form(params): axum::Form<HashMap<String, String>>,
) -> Response {
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return (StatusCode::BAD_REQUEST, "missing redirect_uri").into_response();
    };
    let state_param = params.get("state").cloned().unwrap_or_default();
    issue_code(
        &state,
        redirect_uri,
        &state_param,
        params.get("code_challenge").cloned(),
    )
}

fn issue_code(state: &Shared, redirect_uri: &str, state_param: &str, challenge: Option<String>) -> Response {
    let code = random_token("code");
    state.inner().codes.insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.to_owned(),
            challenge,
        },
    );
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let state_param: String = url_encode(state_param);
    Redirect::to(&format!("{redirect_uri}{separator}code={code}&state={state_param}")).into_response()
}

async fn token(
    State(state): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let config = state.config();
    if !config.token_delay.is_zero() {
        tokio::time::sleep(config.token_delay).await;
    }
    let params: HashMap<String, String> = if method == Method::GET {
        query
    } else {
        form_decode(&body)
    };
    let grant_type = params.get("grant_type").cloned().unwrap_or_default();
    *state.inner().token_calls.entry(grant_type.clone()).or_default() += 1;
    if let Some(status) = config.fail_token_requests {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "temporarily_unavailable");
    }
    if !client_authenticated(&config, &headers, &params) {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let mut inner = state.inner();
    match grant_type.as_str() {
        "authorization_code" => {
            let Some(code) = params.get("code") else {
                return error(StatusCode::BAD_REQUEST, "invalid_request");
            };
            let Some(grant) = inner.codes.remove(code) else {
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            if params.get("redirect_uri") != Some(&grant.redirect_uri) {
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            if let Some(challenge) = &grant.challenge {
                let verified = params
                    .get("code_verifier")
                    .is_some_and(|verifier| URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == *challenge);
                if !verified {
                    return error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
            }
            let refresh = config.issue_refresh_tokens.then(|| random_token("refresh"));
            tokens(&config, &mut inner, refresh)
        }
        "refresh_token" => {
            let Some(refresh) = params.get("refresh_token") else {
                return error(StatusCode::BAD_REQUEST, "invalid_request");
            };
            if !inner.refresh_tokens.contains(refresh) || inner.revoked.contains(refresh) {
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let next = if config.rotate_refresh_tokens {
                inner.refresh_tokens.remove(refresh);
                inner.spent_refresh_tokens.insert(refresh.clone());
                Some(random_token("refresh"))
            } else {
                None
            };
            tokens(&config, &mut inner, next)
        }
        "client_credentials" => tokens(&config, &mut inner, None),
        _ => error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

fn tokens(config: &Config, inner: &mut Inner, refresh: Option<String>) -> Response {
    let access = random_token("access");
    let expires = config
        .access_token_lifetime
        .unwrap_or(Duration::from_secs(86_400 * 365));
    inner.access_tokens.insert(access.clone(), Instant::now() + expires);
    if let Some(refresh) = &refresh {
        inner.refresh_tokens.insert(refresh.clone());
    }
    let mut body = json!({ "access_token": access, "token_type": "Bearer" });
    if let Some(lifetime) = config.access_token_lifetime {
        body["expires_in"] = if config.expires_in_as_string {
            Value::String(lifetime.as_secs().to_string())
        } else {
            Value::from(lifetime.as_secs())
        };
    }
    if let Some(refresh) = refresh {
        body["refresh_token"] = Value::String(refresh);
    }
    if config.nest_tokens {
        body = json!({ "data": body });
    }
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

fn client_authenticated(config: &Config, headers: &HeaderMap, params: &HashMap<String, String>) -> bool {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok());
    match from_header {
        Some(pair) => {
            // RFC 6749 2.3.1: both parts are form-encoded before joining.
            let (id, secret) = pair.split_once(':').unwrap_or((&pair, ""));
            url_decode(id) == config.client_id && url_decode(secret) == config.client_secret
        }
        None => {
            params.get("client_id") == Some(&config.client_id)
                && params.get("client_secret") == Some(&config.client_secret)
        }
    }
}

async fn revoke(State(state): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let config = state.config();
    let params = form_decode(&body);
    let mut inner = state.inner();
    inner.revoke_calls += 1;
    if !client_authenticated(&config, &headers, &params) {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if let Some(token) = params.get("token") {
        inner.revoked.insert(token.clone());
        inner.refresh_tokens.remove(token);
        inner.access_tokens.remove(token);
    }
    // RFC 7009: 200 whether or not the token was known.
    StatusCode::OK.into_response()
}

async fn me(State(state): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let inner = state.inner();
    let live = token
        .and_then(|token| inner.access_tokens.get(token))
        .is_some_and(|expires| Instant::now() < *expires);
    if live {
        axum::Json(json!({ "user": "tester" })).into_response()
    } else {
        error(StatusCode::UNAUTHORIZED, "invalid_token")
    }
}

fn form_decode(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

fn url_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
