//! The routes of connect sessions: one behind the API key that makes them,
//! and the public ones a session's token alone opens, for its connect page.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use integrations::auth::oauth2::{Callback, VerifiedCallback};
use integrations::definition::Integration;
use integrations::method::TableJson;
use integrations::secrecy::SecretString;
use integrations::storage::ConnectSession;
use integrations::time::format_description::well_known::Rfc3339;
use integrations::{AccountStatus, AccountStore, EndUser, Error, ErrorKind, NewAccount, Secrets, Update};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Refusal, SessionRequest};
use crate::AppState;
use crate::api::IntegrationView;
use crate::error::{ApiError, ErrorBody};

/// A connect session to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSessionBody {
    /// The integration to connect. Give it or `integrations`; a reconnect
    /// may leave both out (its account's is used).
    pub integration: Option<String>,
    /// Integrations for the end user to choose from.
    pub integrations: Option<Vec<String>>,
    /// The account to create, or to reconnect when it exists (its id,
    /// parameters and history are kept; only its credentials change). A
    /// new id when left out.
    pub account: Option<String>,
    /// The product's end user, kept on the account.
    pub end_user: Option<EndUserBody>,
    /// Origins of the product's pages (`https://app.example.com`) that may
    /// open the session and hear its outcome.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Where a full-page flow sends the browser back with `status` and
    /// `account` in its query; on one of `allowed_origins`.
    pub return_url: Option<String>,
    /// How long the session lasts, in seconds: 60 to 604800 [default: 1800].
    pub ttl_seconds: Option<u64>,
}

/// The product's end user.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndUserBody {
    /// The product's id for the user.
    pub id: String,
    /// A name to show.
    pub display_name: Option<String>,
}

/// A connect session just made. Its token is shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedSessionView {
    /// The session token: single use, short-lived. Only its hash is stored.
    pub token: String,
    /// The connect page for the end user, the token in its fragment: open
    /// it with `/connect.js`, in a popup, or as a page.
    pub connect_url: String,
    /// The account the session creates or reconnects.
    pub account: String,
    /// The integrations offered.
    pub integrations: Vec<String>,
    /// Whether the account exists and is reconnected.
    pub reconnect: bool,
    /// RFC 3339.
    pub expires_at: String,
}

impl std::fmt::Debug for CreatedSessionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedSessionView")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Makes a connect session for one end user to create or reconnect one
/// account through the public connect page.
#[utoipa::path(
    post, path = "/v1/connect-sessions", tag = "connect",
    request_body = NewSessionBody,
    responses(
        (status = 201, body = CreatedSessionView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such integration"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json`"),
    ),
    security(("api_key" = []))
)]
pub async fn create_connect_session(
    State(state): State<Arc<AppState>>,
    body: Result<Json<NewSessionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedSessionView>), ApiError> {
    let Json(body) = body.map_err(ApiError::from)?;
    let mut integrations: Vec<String> = body.integration.into_iter().collect();
    integrations.extend(body.integrations.unwrap_or_default());
    let end_user = body
        .end_user
        .map(|user| EndUser::new(user.id, user.display_name))
        .transpose()?;
    let created = super::create_session(
        &state.integrations,
        &state.redirect_uri,
        SessionRequest {
            integrations,
            account: body.account,
            end_user,
            allowed_origins: body.allowed_origins,
            return_url: body.return_url,
            ttl: body.ttl_seconds.map(Duration::from_secs),
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedSessionView {
            token: created.token,
            connect_url: created.connect_url,
            account: created.session.account.to_string(),
            integrations: created.session.integrations,
            reconnect: created.session.reconnect,
            expires_at: rfc3339(created.session.expires_at),
        }),
    ))
}

fn rfc3339(at: integrations::time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// A session as its connect page sees it: never a secret, nor anything of
/// another account.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The account the session creates or reconnects.
    pub account: String,
    /// `open`, or `completed` once an account was connected with it.
    pub status: &'static str,
    /// Once completed: the account's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_status: Option<&'static str>,
    /// Whether the account exists and is reconnected (its parameters kept).
    pub reconnect: bool,
    /// The end user's display name, to greet them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_user_name: Option<String>,
    /// The integrations offered.
    pub integrations: Vec<IntegrationView>,
    /// Where the outcome may be posted.
    pub allowed_origins: Vec<String>,
    /// Where a full-page flow returns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// RFC 3339.
    pub expires_at: String,
}

/// The connect session of the token sent, for its page: what to show.
/// Answers once it is completed too (for `/connect.js` to learn the
/// outcome of a popup closed early).
#[utoipa::path(
    get, path = "/v1/connect/session", tag = "connect",
    responses(
        (status = 200, body = SessionView),
        (status = 401, body = ErrorBody, description = "No session has this token"),
        (status = 403, body = ErrorBody, description = "The request's origin is not allowed"),
        (status = 410, body = ErrorBody, description = "The session expired"),
    ),
    security(("session_token" = []))
)]
pub async fn get_session(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let answer = async {
        let session = session_of(&state, &headers).await?;
        if let Err(Refusal::Expired) = super::check_open(session.clone()) {
            return Err(refused(Refusal::Expired));
        }
        let account_status = match session.completed_at {
            Some(_) => Some(
                match state.integrations.store().storage().account(&session.account).await? {
                    Some(account) => account.status.as_str(),
                    None => "removed",
                },
            ),
            None => None,
        };
        let integrations = session
            .integrations
            .iter()
            .filter_map(|key| state.integrations.integration(key).ok())
            .map(|integration| {
                let mut view = IntegrationView::from(integration.as_ref());
                if session.reconnect {
                    // Kept as they are: nothing to fill.
                    view.parameters.clear();
                }
                view
            })
            .collect();
        Ok::<_, ApiError>(Json(SessionView {
            account: session.account.to_string(),
            status: if session.completed_at.is_some() {
                "completed"
            } else {
                "open"
            },
            account_status,
            reconnect: session.reconnect,
            end_user_name: session.end_user.as_ref().and_then(|user| user.display_name.clone()),
            integrations,
            allowed_origins: session.allowed_origins.clone(),
            return_url: session.return_url.clone(),
            expires_at: rfc3339(session.expires_at),
        }))
    };
    with_cors(&headers, answer.await)
}

/// Parameters and credentials an end user typed. Write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// One of the session's integrations.
    pub integration: String,
    /// Parameter values (none for a reconnect).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Credentials, by name.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
}

impl std::fmt::Debug for SubmitBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitBody")
            .field("integration", &self.integration)
            .finish_non_exhaustive()
    }
}

/// What connecting an account did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Outcome {
    /// The account's id.
    pub account: String,
    /// `connected`, or `pending` for an account that needs nothing more
    /// but has no credentials yet.
    pub status: &'static str,
}

/// Creates (or reconnects) the session's account with the credentials an
/// end user typed, once they are checked with the provider: nothing is
/// saved when they do not work. Completes the session.
#[utoipa::path(
    post, path = "/v1/connect/session/account", tag = "connect",
    request_body = SubmitBody,
    responses(
        (status = 200, body = Outcome, description = "Reconnected"),
        (status = 201, body = Outcome, description = "Created"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "No session has this token"),
        (status = 403, body = ErrorBody, description = "The credentials do not work, or the origin is not allowed"),
        (status = 409, body = ErrorBody, description = "The account changed meanwhile"),
        (status = 410, body = ErrorBody, description = "The session expired or was used"),
        (status = 502, body = ErrorBody, description = "The provider cannot check the credentials now"),
        (status = 504, body = ErrorBody, description = "The provider did not answer in time"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json`"),
    ),
    security(("session_token" = []))
)]
pub async fn submit_account(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<SubmitBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let answer = async {
        let session = open_session_of(&state, &headers).await?;
        let Json(body) = body.map_err(ApiError::from)?;
        let integration = offered(&state, &session, &body.integration)?;
        if is_authorization_code(integration) {
            return Err(ApiError::invalid(
                "this integration connects through its provider: start its authorization instead",
            ));
        }
        let credentials = secrets(body.credentials);
        let store = state.integrations.store();
        if session.reconnect {
            if !body.parameters.is_empty() {
                return Err(ApiError::invalid(
                    "a reconnect keeps the account's parameters: send none",
                ));
            }
            let account = store.get(&session.account).await.map_err(account_gone)?;
            let mut parameters = account.secret_parameters().clone();
            for (name, value) in account.parameters() {
                parameters.insert(name, SecretString::from(value.clone()));
            }
            let checked = AccountStore::prepare(
                integration,
                NewAccount {
                    id: session.account.clone(),
                    parameters,
                    credentials: credentials.clone(),
                },
            )?;
            check(&state, &checked).await?;
            let claimed = claim(&state, &session).await?;
            let reconnected = reconnect(store, account, credentials, checked.status(), session.end_user.clone()).await;
            state.integrations.forget(&session.account);
            match reconnected {
                Ok(status) => Ok((StatusCode::OK, Json(outcome(&session, status)))),
                Err(error) => {
                    super::reopen(&state.integrations, &claimed).await;
                    Err(error)
                }
            }
        } else {
            let account = AccountStore::prepare(
                integration,
                NewAccount {
                    id: session.account.clone(),
                    parameters: secrets(body.parameters),
                    credentials,
                },
            )?
            .with_end_user(session.end_user.clone());
            check(&state, &account).await?;
            let claimed = claim(&state, &session).await?;
            let inserted = store.insert(&account).await;
            state.integrations.forget(&session.account);
            match inserted {
                Ok(()) => Ok((StatusCode::CREATED, Json(outcome(&session, account.status())))),
                Err(error) => {
                    super::reopen(&state.integrations, &claimed).await;
                    Err(error.into())
                }
            }
        }
    };
    with_cors(&headers, answer.await)
}

/// Replaces the credentials of `account`, read again when it changed
/// meanwhile.
async fn reconnect(
    store: &AccountStore,
    mut account: integrations::ConnectedAccount,
    credentials: Secrets,
    status: AccountStatus,
    end_user: Option<EndUser>,
) -> Result<AccountStatus, ApiError> {
    for _ in 0..5 {
        match store
            .reconnect(&account, credentials.clone(), status, end_user.clone())
            .await?
        {
            Update::Updated(updated) => return Ok(updated.status()),
            Update::Conflict(current) => account = current,
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        "the account kept changing while it was reconnected: try again",
    ))
}

/// The parameters of an OAuth 2.0 account to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationBody {
    /// One of the session's integrations, an OAuth 2.0 one.
    pub integration: String,
    /// Parameter values (none for a reconnect).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

impl std::fmt::Debug for AuthorizationBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationBody")
            .field("integration", &self.integration)
            .finish_non_exhaustive()
    }
}

/// Where to send the end user to sign in.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizationView {
    /// The provider's authorization URL.
    pub authorization_url: String,
}

/// Starts the OAuth 2.0 authorization of the session's account (made,
/// pending, with the parameters given when it is new). The provider sends
/// the end user back to the gateway's callback, which completes the
/// session.
#[utoipa::path(
    post, path = "/v1/connect/session/authorization", tag = "connect",
    request_body = AuthorizationBody,
    responses(
        (status = 200, body = AuthorizationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "No session has this token"),
        (status = 403, body = ErrorBody, description = "The origin is not allowed"),
        (status = 409, body = ErrorBody, description = "Another account has the session's account id"),
        (status = 410, body = ErrorBody, description = "The session expired or was used"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json`"),
    ),
    security(("session_token" = []))
)]
pub async fn start_authorization(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<AuthorizationBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let answer = async {
        let session = open_session_of(&state, &headers).await?;
        let Json(body) = body.map_err(ApiError::from)?;
        let integration = offered(&state, &session, &body.integration)?;
        if !is_authorization_code(integration) {
            return Err(ApiError::invalid(
                "this integration takes credentials: submit them instead",
            ));
        }
        if session.reconnect && !body.parameters.is_empty() {
            return Err(ApiError::invalid(
                "a reconnect keeps the account's parameters: send none",
            ));
        }
        if !session.reconnect {
            prepare_pending(&state, &session, integration, body.parameters).await?;
        }
        let start = state
            .integrations
            .start_tagged_authorization(&session.account, &state.redirect_uri, &session.token_hash)
            .await?;
        Ok(Json(AuthorizationView {
            authorization_url: start.url.to_string(),
        }))
    };
    with_cors(&headers, answer.await)
}

/// Stores the session's new account, pending, for its authorization; a
/// pending account this session made before is reused, or made again
/// when the parameters changed (no half-finished flow resumes with old
/// values).
async fn prepare_pending(
    state: &AppState,
    session: &ConnectSession,
    integration: &Integration,
    parameters: BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let store = state.integrations.store();
    let account = AccountStore::prepare(
        integration,
        NewAccount {
            id: session.account.clone(),
            parameters: secrets(parameters),
            credentials: Secrets::new(),
        },
    )?
    .with_end_user(session.end_user.clone());
    if let Some(existing) = store.storage().account(&session.account).await? {
        let ours =
            session.created_pending && existing.status == AccountStatus::Pending && existing.credentials.is_empty();
        if !ours {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                "an account with this session's id was made meanwhile: ask for a new link",
            ));
        }
        let current = store.get(&session.account).await?;
        if current.integration() == account.integration()
            && current.parameters() == account.parameters()
            && same_secrets(current.secret_parameters(), account.secret_parameters())
        {
            return Ok(());
        }
        store.remove(&session.account).await?;
    }
    store.insert(&account).await?;
    state.integrations.forget(&session.account);
    if !session.created_pending {
        let mut marked = session.clone();
        marked.created_pending = true;
        // Lost to a concurrent change of the session: the account is
        // still this session's, found by id.
        let _ = store.storage().update_connect_session(session, &marked).await?;
    }
    Ok(())
}

fn same_secrets(a: &Secrets, b: &Secrets) -> bool {
    use integrations::secrecy::ExposeSecret as _;
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((name_a, a), (name_b, b))| name_a == name_b && a.expose_secret() == b.expose_secret())
}

/// Where an SFTP server is, to read its host key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostKeyBody {
    /// One of the session's integrations, an SFTP one.
    pub integration: String,
    /// Parameter values (its host may be made of them).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The host, when the definition leaves it to the account.
    pub host: Option<String>,
    /// The port, when not the definition's.
    pub port: Option<String>,
}

/// The key an SFTP server presents.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostKeyView {
    /// The host connected to.
    pub host: String,
    /// The port connected to.
    pub port: u16,
    /// The SHA256 fingerprint of its host key, as `ssh-keygen -l` prints it,
    /// for the end user to compare with the one their provider gives.
    pub fingerprint: String,
}

/// How long reading a server's host key may take.
const HOST_KEY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the SFTP server of the session's integration (without
/// logging in) and returns the fingerprint of the host key it presents,
/// for the end user to confirm.
#[utoipa::path(
    post, path = "/v1/connect/session/host-key", tag = "connect",
    request_body = HostKeyBody,
    responses(
        (status = 200, body = HostKeyView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "No session has this token"),
        (status = 403, body = ErrorBody, description = "The host is not allowed, or the origin is not"),
        (status = 410, body = ErrorBody, description = "The session expired or was used"),
        (status = 502, body = ErrorBody, description = "The server cannot be reached"),
        (status = 504, body = ErrorBody, description = "The provider did not answer in time"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json`"),
    ),
    security(("session_token" = []))
)]
pub async fn host_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<HostKeyBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let answer = async {
        let session = open_session_of(&state, &headers).await?;
        let Json(body) = body.map_err(ApiError::from)?;
        let integration = offered(&state, &session, &body.integration)?;
        if integration.auth_type() != "sftp" {
            return Err(ApiError::invalid("only SFTP integrations have host keys"));
        }
        let mut parameters = secrets(body.parameters);
        if session.reconnect {
            let account = state
                .integrations
                .store()
                .get(&session.account)
                .await
                .map_err(account_gone)?;
            parameters = account.secret_parameters().clone();
            for (name, value) in account.parameters() {
                parameters.insert(name, SecretString::from(value.clone()));
            }
        }
        // Placeholders for the login: only the address is read.
        let mut probe = NewAccount::new(session.account.clone())
            .credential("username", "probe")
            .credential("password", "probe")
            .credential("host_key", integrations::sftp::ACCEPT_ANY);
        probe.parameters = parameters;
        for (name, value) in [("host", body.host), ("port", body.port)] {
            if let Some(value) = value.filter(|value| !value.is_empty()) {
                probe = probe.credential(name, value);
            }
        }
        let account = AccountStore::prepare(integration, probe)?;
        let (host, port) = integrations::sftp::server_address(integration, &account)?;
        check_sftp_host(integration, &host)?;
        let fingerprint = integrations::sftp::presented_host_key(&host, port, HOST_KEY_TIMEOUT).await?;
        Ok(Json(HostKeyView {
            host,
            port,
            fingerprint,
        }))
    };
    with_cors(&headers, answer.await)
}

/// The SFTP hosts an end user may point the gateway at: never a cloud
/// metadata or link-local address, and an IP address only where the
/// integration allows IP hosts.
fn check_sftp_host(integration: &Integration, host: &str) -> Result<(), ApiError> {
    let refused = |message: &str| ApiError::new(StatusCode::FORBIDDEN, "refused", message);
    if integrations::destination::is_metadata_name(host) {
        return Err(refused("this host is not allowed"));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        if integrations::destination::is_link_local_or_metadata(ip) {
            return Err(refused("this host is not allowed"));
        }
        if !integration.allow_ip_hosts {
            return Err(refused(
                "the host must be a name, not an IP address (the integration does not set `allow_ip_hosts`)",
            ));
        }
    }
    Ok(())
}

/// Answers a CORS preflight of the public session routes. The browser
/// sends no token with it, so it cannot be checked against the session's
/// origins: every origin may send the request, and the request itself is
/// refused, without CORS headers, when its origin is not allowed.
pub async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let answer = response.headers_mut();
        answer.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        answer.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        answer.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        answer.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        answer.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// The session the request's token opens, whatever its state, if the
/// request's origin (when it has one) is the gateway's or one the session
/// allows.
async fn session_of(state: &AppState, headers: &HeaderMap) -> Result<ConnectSession, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a connect session token is required: send `Authorization: Bearer <token>`",
            )
        })?;
    let session = match super::open_session(&state.integrations, token.trim()).await? {
        Ok(session) => session,
        Err(Refusal::Unknown) => return Err(refused(Refusal::Unknown)),
        // Read again whole: the page shows used sessions' outcome.
        Err(_) => state
            .integrations
            .store()
            .storage()
            .connect_session(&super::token_hash(token.trim()))
            .await?
            .ok_or_else(|| refused(Refusal::Unknown))?,
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let own = super::public_origin(&state.redirect_uri);
        if origin != own && !session.allowed_origins.iter().any(|allowed| allowed == origin) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_refused",
                "this page's origin is not one the connect session allows",
            ));
        }
    }
    Ok(session)
}

/// [`session_of`], refused unless it is open.
async fn open_session_of(state: &AppState, headers: &HeaderMap) -> Result<ConnectSession, ApiError> {
    super::check_open(session_of(state, headers).await?).map_err(refused)
}

fn refused(refusal: Refusal) -> ApiError {
    let status = match refusal {
        Refusal::Unknown => StatusCode::UNAUTHORIZED,
        Refusal::Expired | Refusal::Used => StatusCode::GONE,
    };
    ApiError::new(status, refusal.kind(), refusal.message())
}

/// Completes `session` for what is about to be written, or refuses when
/// another request completed it first.
async fn claim(state: &AppState, session: &ConnectSession) -> Result<ConnectSession, ApiError> {
    super::claim(&state.integrations, session)
        .await?
        .ok_or_else(|| refused(Refusal::Used))
}

/// The integration `key`, if the session offers it.
fn offered<'a>(state: &'a AppState, session: &ConnectSession, key: &str) -> Result<&'a Integration, ApiError> {
    if !session.integrations.iter().any(|offered| offered == key) {
        return Err(ApiError::invalid(format!(
            "`integration`: the connect session does not offer `{}`",
            key.chars().take(64).collect::<String>()
        )));
    }
    Ok(state.integrations.integration(key)?.as_ref())
}

fn is_authorization_code(integration: &Integration) -> bool {
    integration.auth_type() == "oauth2"
        && integration
            .auth
            .table_json()
            .get("grant_type")
            .and_then(|grant| grant.as_str())
            != Some("client_credentials")
}

fn secrets(values: BTreeMap<String, String>) -> Secrets {
    values
        .into_iter()
        .map(|(name, value)| (name, SecretString::from(value)))
        .collect()
}

/// Checks the credentials with the provider, naming what failed without
/// the context an operator's error carries.
async fn check(state: &AppState, account: &integrations::ConnectedAccount) -> Result<(), ApiError> {
    match state.integrations.check_credentials(account).await {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::info!(account = %account.id(), %error, "connect session: the credentials were refused");
            Err(public_error(&error))
        }
    }
}

/// An error for the end user: its message, without the context (account,
/// integration) that is for operators.
fn public_error(error: &Error) -> ApiError {
    let status = ApiError::from(Error::new(error.kind(), "")).status();
    let kind = match error.kind() {
        ErrorKind::Refused => "credentials_refused",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Provider | ErrorKind::Transport => "provider",
        _ => "internal",
    };
    ApiError::new(status, kind, error.message())
}

fn account_gone(error: Error) -> ApiError {
    if error.kind() == ErrorKind::NotFound {
        ApiError::new(
            StatusCode::GONE,
            "account_removed",
            "the account was removed: ask for a new link",
        )
    } else {
        error.into()
    }
}

fn outcome(session: &ConnectSession, status: AccountStatus) -> Outcome {
    Outcome {
        account: session.account.to_string(),
        status: status.as_str(),
    }
}

/// The answer, with CORS headers when the request came from another
/// origin (one the session allows: others were refused without them).
fn with_cors<T: IntoResponse>(headers: &HeaderMap, answer: Result<T, ApiError>) -> Response {
    let refused_origin = matches!(&answer, Err(error) if error.kind() == "origin_refused");
    let mut response = answer.into_response();
    let answer = response.headers_mut();
    answer.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer.insert(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = headers.get(header::ORIGIN)
        && !refused_origin
    {
        answer.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    response
}

/// What the OAuth 2.0 callback does for an authorization a connect
/// session started (`tag` is its token hash): completes the session with
/// the account, or says why not, on the session's page.
pub(crate) async fn complete_callback(
    state: &AppState,
    verified: Result<VerifiedCallback, Error>,
    tag: &str,
) -> (StatusCode, PageOutcome) {
    let storage = state.integrations.store().storage();
    let session = match storage.connect_session(tag).await {
        Ok(Some(session)) => session,
        Ok(None) => return (StatusCode::GONE, PageOutcome::failed(Refusal::Unknown.message(), None)),
        Err(error) => {
            tracing::error!(%error, "connect session: cannot read the session");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                PageOutcome::failed("The gateway cannot complete the connection now. Try again.", None),
            );
        }
    };
    let verified = match verified {
        Ok(verified) => verified,
        Err(error) => {
            tracing::warn!(%error, "connect session: OAuth 2.0 callback refused");
            let status = callback_status(&error);
            return (status, PageOutcome::failed(error.message(), Some(&session)));
        }
    };
    // An authorization started while the session was open completes within
    // its own lifetime; a session completes once.
    if session.completed_at.is_some() {
        return (StatusCode::GONE, PageOutcome::failed(Refusal::Used.message(), None));
    }
    let Ok(Some(claimed)) = super::claim(&state.integrations, &session).await else {
        return (StatusCode::GONE, PageOutcome::failed(Refusal::Used.message(), None));
    };
    match state.integrations.complete_verified_authorization(verified).await {
        Ok(account) => {
            if let Some(end_user) = &session.end_user
                && account.end_user() != Some(end_user)
            {
                set_end_user(state.integrations.store(), account.clone(), end_user.clone()).await;
                state.integrations.forget(account.id());
            }
            (
                StatusCode::OK,
                PageOutcome::connected(&session, account.status().as_str()),
            )
        }
        Err(error) => {
            super::reopen(&state.integrations, &claimed).await;
            tracing::warn!(%error, "connect session: the authorization did not complete");
            let message = if error.kind() == ErrorKind::NotFound {
                "The account was removed while it was being connected. Ask for a new link."
            } else {
                error.message()
            };
            (callback_status(&error), PageOutcome::failed(message, Some(&session)))
        }
    }
}

fn callback_status(error: &Error) -> StatusCode {
    match error.kind() {
        ErrorKind::Provider | ErrorKind::Transport | ErrorKind::Timeout => StatusCode::BAD_GATEWAY,
        ErrorKind::Refused => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::GONE,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn set_end_user(store: &AccountStore, mut account: integrations::ConnectedAccount, end_user: EndUser) {
    for _ in 0..5 {
        match store.set_end_user(&account, end_user.clone()).await {
            Ok(Update::Updated(_)) => return,
            Ok(Update::Conflict(current)) => account = current,
            Err(error) => {
                tracing::warn!(%error, account = %account.id(), "cannot keep the end user on the account");
                return;
            }
        }
    }
}

/// What the connect page shows when it is the callback's answer.
#[derive(Debug, Serialize)]
pub(crate) struct PageOutcome {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    allowed_origins: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_url: Option<String>,
    /// Whether the session is still open, for the page to offer another try.
    retry: bool,
}

impl PageOutcome {
    fn connected(session: &ConnectSession, account_status: &str) -> Self {
        Self {
            status: "connected",
            account: Some(session.account.to_string()),
            account_status: Some(account_status.to_owned()),
            message: None,
            allowed_origins: session.allowed_origins.clone(),
            return_url: session.return_url.clone(),
            retry: false,
        }
    }

    fn failed(message: &str, session: Option<&ConnectSession>) -> Self {
        let open = session.is_some_and(|session| super::check_open(session.clone()).is_ok());
        Self {
            status: "failed",
            account: None,
            account_status: None,
            message: Some(message.to_owned()),
            allowed_origins: Vec::new(),
            return_url: session.and_then(|session| session.return_url.clone()),
            retry: open,
        }
    }
}

/// The OAuth 2.0 callback: for an authorization a connect session started,
/// the session's page with the outcome; for others, the operator's page.
pub(crate) async fn callback(state: &AppState, callback: &Callback) -> Response {
    let verified = integrations::auth::oauth2::verify_callback(state.integrations.store(), callback).await;
    let tag = match &verified {
        Ok(verified) => verified.tag().map(str::to_owned),
        Err(error) => error.context("authorization_tag").map(str::to_owned),
    };
    let Some(tag) = tag else {
        return crate::api::callback_page(state, verified).await;
    };
    let (status, outcome) = complete_callback(state, verified, &tag).await;
    session_page(status, Some(&outcome))
}

/// The connect page of sessions, built into the binary.
const SESSION_PAGE: &str = include_str!("../../assets/connect-session.html");

/// Its policy: its own inline script and style (by hash), calls to this
/// gateway only, never framed. No `Cross-Origin-Opener-Policy`: the page
/// must keep its opener to tell it the outcome.
static SESSION_PAGE_POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
        crate::inline_hash(SESSION_PAGE, "<script>", "</script>"),
        crate::inline_hash(SESSION_PAGE, "<style>", "</style>"),
    )
});

/// The connect page, with the callback's `outcome` when it has one.
pub(crate) fn session_page(status: StatusCode, outcome: Option<&PageOutcome>) -> Response {
    let body = match outcome {
        None => SESSION_PAGE.to_owned(),
        Some(outcome) => {
            let json = serde_json::to_string(outcome).unwrap_or_default();
            SESSION_PAGE.replacen(
                "data-outcome=\"\"",
                &format!("data-outcome=\"{}\"", escape_attribute(&json)),
                1,
            )
        }
    };
    (status, crate::page_headers(&SESSION_PAGE_POLICY), body).into_response()
}

fn escape_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `GET /connect/session`: the page; the token is in its fragment.
pub async fn page() -> Response {
    session_page(StatusCode::OK, None)
}

/// `/connect.js`, for product pages: `Integrations.connect({ sessionUrl })`.
const SCRIPT: &str = include_str!("../../assets/connect.js");

/// `GET /connect.js`: served to any site, cached for an hour.
pub async fn script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("cross-origin"),
            ),
        ],
        SCRIPT,
    )
        .into_response()
}
