//! The public routes of connect sessions, which a session's token alone
//! opens, for its connect page: the session's view, credentials to check
//! and store, an OAuth 2.0 authorization to start, an SFTP host key to read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use integrations::crypto::random_bytes;
use integrations::definition::Integration;
use integrations::method::TableJson;
use integrations::secrecy::SecretString;
use integrations::storage::ConnectSession;
use integrations::{
    AccountStatus, AccountStore, ConnectedAccount, EndUser, Error, ErrorKind, NewAccount, Secrets, Update,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::destinations::{check_destinations, check_slot};
use super::{Refusal, rfc3339};
use crate::AppState;
use crate::api::IntegrationView;
use crate::error::{ApiError, ErrorBody};

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
                // Set by the product: not the end user's to fill.
                view.parameters
                    .retain(|parameter| !session.parameters.contains_key(&parameter.name));
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
        refuse_end_user_credentials(integration, &body.credentials)?;
        let mut credentials = secrets(body.credentials);
        let store = state.integrations.store();
        let (account, existing) = if session.reconnect {
            if !body.parameters.is_empty() {
                return Err(ApiError::invalid(
                    "a reconnect keeps the account's parameters: send none",
                ));
            }
            let existing = store.get(&session.account).await.map_err(account_gone)?;
            if existing.integration() != integration.key {
                return Err(account_gone(Error::new(ErrorKind::NotFound, "")));
            }
            // The server stays where it is: a reconnect changes the login only.
            for name in ["host", "port"] {
                if credentials.contains(name) {
                    return Err(ApiError::invalid(format!(
                        "`credentials.{name}`: a reconnect keeps the account's server; send none"
                    )));
                }
                if let Some(value) = existing.credentials().get(name) {
                    credentials.insert(name, value.clone());
                }
            }
            let account = AccountStore::prepare(
                integration,
                NewAccount {
                    id: session.account.clone(),
                    parameters: given_parameters(integration, &existing),
                    credentials,
                },
            )?;
            (account, Some(existing))
        } else {
            let parameters = with_fixed_parameters(&session, body.parameters)?;
            let account = AccountStore::prepare(
                integration,
                NewAccount {
                    id: session.account.clone(),
                    parameters,
                    credentials,
                },
            )?
            .with_end_user(session.end_user.clone());
            (account, None)
        };
        check_destinations(integration, &account).await?;
        let session = count_attempt(&state, &session).await?;
        check(&state, &account, existing.is_some()).await?;
        let claimed = claim(&state, &session).await?;
        // Detached: a client that goes away now does not leave the session
        // claimed with nothing written.
        let task_state = Arc::clone(&state);
        let written = tokio::spawn(async move { write_account(&task_state, &claimed, account, existing).await })
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the account could not be written",
                ))
            });
        written.map(|(status, outcome)| (status, Json(outcome)))
    };
    with_cors(&headers, answer.await)
}

/// Writes what a claimed session checked: the new account, or the
/// reconnected one's credentials; the session is opened again when that
/// fails.
async fn write_account(
    state: &AppState,
    claimed: &ConnectSession,
    account: ConnectedAccount,
    existing: Option<ConnectedAccount>,
) -> Result<(StatusCode, Outcome), ApiError> {
    let store = state.integrations.store();
    let written = match existing {
        Some(existing) => reconnect(store, existing, &account, claimed.end_user.clone())
            .await
            .map(|status| (StatusCode::OK, status)),
        None => insert_new(state, claimed, &account)
            .await
            .map(|()| (StatusCode::CREATED, account.status())),
    };
    state.integrations.forget(&claimed.account);
    match written {
        Ok((code, status)) => Ok((code, outcome(claimed, status))),
        Err(error) => {
            super::reopen(&state.integrations, claimed).await;
            Err(error)
        }
    }
}

/// Stores the session's new account, in place of the pending one this
/// session made for an OAuth 2.0 integration it offered first, if any.
async fn insert_new(state: &AppState, session: &ConnectSession, account: &ConnectedAccount) -> Result<(), ApiError> {
    let store = state.integrations.store();
    if let Some(stored) = store.storage().account(&session.account).await?
        && made_by(session, &stored)
    {
        store.remove(&session.account).await?;
    }
    store.insert(account).await.map_err(insert_error)
}

/// An account of the session's id that someone else made.
fn taken() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_exists",
        "an account with this session's id was made meanwhile: ask for a new link",
    )
}

/// A refused insert, as the end user hears it.
fn insert_error(error: Error) -> ApiError {
    if error.kind() == ErrorKind::AlreadyExists {
        taken()
    } else {
        error.into()
    }
}

/// Whether `stored` is the pending account `session` made, and nobody's
/// since: made at the time the session noted, still pending.
fn made_by(session: &ConnectSession, stored: &integrations::StoredAccount) -> bool {
    session.pending_created_at == Some(stored.created_at) && stored.status == AccountStatus::Pending
}

/// Every parameter of `account`, plain and secret, as a new account takes
/// them: not those the provider gave while it connected.
fn given_parameters(integration: &Integration, account: &ConnectedAccount) -> Secrets {
    let provided = integration.auth.provided_parameters();
    let mut parameters = account.secret_parameters().clone();
    for (name, value) in account.parameters() {
        if !provided.iter().any(|(_, provided)| provided == name) {
            parameters.insert(name, SecretString::from(value.clone()));
        }
    }
    parameters
}

/// The end user's parameters, with those the product fixed on the session;
/// the end user cannot change those.
fn with_fixed_parameters(session: &ConnectSession, typed: BTreeMap<String, String>) -> Result<Secrets, ApiError> {
    if let Some(name) = typed.keys().find(|name| session.parameters.contains_key(*name)) {
        return Err(ApiError::invalid(format!(
            "`parameters.{name}` is set by the app that sent you here; send none"
        )));
    }
    Ok(secrets(typed.into_iter().chain(session.parameters.clone()).collect()))
}

/// What an end user may not give, whatever the page says: a private key
/// with a passphrase (its key derivation may be made to run for hours, on
/// the gateway's cores), or a host key policy that trusts any server.
fn refuse_end_user_credentials(
    integration: &Integration,
    credentials: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if integration.auth_type() != "sftp" {
        return Ok(());
    }
    if credentials.get("passphrase").is_some_and(|value| !value.is_empty()) {
        return Err(ApiError::invalid(
            "`credentials.passphrase`: the connect page takes private keys without a passphrase; \
             remove it with `ssh-keygen -p -f KEY_FILE` and paste the key again",
        ));
    }
    if credentials
        .get("host_key")
        .is_some_and(|value| value.trim() == integrations::sftp::ACCEPT_ANY)
    {
        return Err(ApiError::invalid(
            "`credentials.host_key`: give the server's fingerprint; a connect page cannot trust any server",
        ));
    }
    Ok(())
}

/// Replaces the credentials of `existing` with the checked ones, read again
/// when the account changed meanwhile, unless what the check relied on
/// changed (its integration or parameters).
async fn reconnect(
    store: &AccountStore,
    existing: ConnectedAccount,
    checked: &ConnectedAccount,
    end_user: Option<EndUser>,
) -> Result<AccountStatus, ApiError> {
    let mut account = existing.clone();
    for _ in 0..5 {
        let same = account.integration() == existing.integration()
            && account.parameters() == existing.parameters()
            && same_secrets(account.secret_parameters(), existing.secret_parameters());
        if !same {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the account changed while it was reconnected: ask for a new link",
            ));
        }
        match store
            .reconnect(
                &account,
                checked.credentials().clone(),
                checked.status(),
                end_user.clone(),
            )
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
        let mut session = count_attempt(&state, &session).await?;
        if !session.reconnect {
            let parameters = with_fixed_parameters(&session, body.parameters)?;
            session = prepare_pending(&state, &session, integration, parameters).await?;
        }
        // The callback completes the session only in the browser that
        // started it: the one holding this cookie.
        let binding = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let tag = format!("{}.{}", session.token_hash, super::token_hash(&binding));
        let start = state
            .integrations
            .start_tagged_authorization(&session.account, &state.redirect_uri, &tag)
            .await?;
        let cookie = binding_cookie(&state, &session.token_hash, Some(&binding));
        Ok((
            [(header::SET_COOKIE, cookie)],
            Json(AuthorizationView {
                authorization_url: start.url.to_string(),
            }),
        ))
    };
    with_cors(&headers, answer.await)
}

/// The cookie that binds an authorization to the browser that started it:
/// `value`, or its removal. `Secure` when the gateway's public URL is
/// https; `SameSite=Lax`, so that the provider's redirect back carries it.
pub(super) fn binding_cookie(state: &AppState, session_hash: &str, value: Option<&str>) -> HeaderValue {
    let secure = if state.redirect_uri.url().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let (value, max_age) = match value {
        Some(value) => (value, integrations::auth::oauth2::STATE_LIFETIME.as_secs()),
        None => ("", 0),
    };
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        binding_cookie_name(session_hash)
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("integrations_connect=; Max-Age=0"))
}

/// One cookie per session, so that two sessions in one browser keep theirs.
pub(super) fn binding_cookie_name(session_hash: &str) -> String {
    format!(
        "integrations_connect_{}",
        session_hash.get(..16).unwrap_or(session_hash)
    )
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Stores the session's new account, pending, for its authorization; a
/// pending account this session made before is reused, or made again
/// when the parameters changed (no half-finished flow resumes with old
/// values). Returns the session as it now is.
async fn prepare_pending(
    state: &AppState,
    session: &ConnectSession,
    integration: &Integration,
    parameters: Secrets,
) -> Result<ConnectSession, ApiError> {
    let store = state.integrations.store();
    let account = AccountStore::prepare(
        integration,
        NewAccount {
            id: session.account.clone(),
            parameters,
            credentials: Secrets::new(),
        },
    )?
    .with_end_user(session.end_user.clone());
    // The hosts the end user chose get the authorization code and the
    // client secret: resolved and checked first.
    check_destinations(integration, &account).await?;
    if let Some(existing) = store.storage().account(&session.account).await? {
        if !made_by(session, &existing) {
            return Err(taken());
        }
        let current = store.get(&session.account).await?;
        if current.integration() == account.integration()
            && current.parameters() == account.parameters()
            && same_secrets(current.secret_parameters(), account.secret_parameters())
        {
            return Ok(session.clone());
        }
        store.remove(&session.account).await?;
    }
    store.insert(&account).await.map_err(insert_error)?;
    state.integrations.forget(&session.account);
    let created_at = account.created_at();
    super::change(&state.integrations, session, |session| {
        session.created_pending = true;
        session.pending_created_at = Some(created_at);
        true
    })
    .await?
    .ok_or_else(|| refused(Refusal::Unknown))
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
    /// The host connected to; left out for a reconnect (its host may come
    /// from a secret parameter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
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
        // Placeholders for the login: only the address is read.
        let mut probe = NewAccount::new(session.account.clone())
            .credential("username", "probe")
            .credential("password", "probe")
            .credential("host_key", integrations::sftp::ACCEPT_ANY);
        if session.reconnect {
            if body.host.is_some() || body.port.is_some() || !body.parameters.is_empty() {
                return Err(ApiError::invalid(
                    "a reconnect keeps the account's server and parameters: send none",
                ));
            }
            let account = state
                .integrations
                .store()
                .get(&session.account)
                .await
                .map_err(account_gone)?;
            probe.parameters = given_parameters(integration, &account);
            for name in ["host", "port"] {
                if let Some(value) = account.credentials().get(name) {
                    probe.credentials.insert(name, value.clone());
                }
            }
        } else {
            probe.parameters = with_fixed_parameters(&session, body.parameters)?;
            for (name, value) in [("host", body.host), ("port", body.port)] {
                if let Some(value) = value.filter(|value| !value.is_empty()) {
                    probe = probe.credential(name, value);
                }
            }
        }
        let account = AccountStore::prepare(integration, probe)?;
        let (host, port) = integrations::sftp::server_address(integration, &account)?;
        check_destinations(integration, &account).await?;
        count_attempt(&state, &session).await?;
        let _slot = check_slot().await?;
        let fingerprint = integrations::sftp::presented_host_key(&host, port, HOST_KEY_TIMEOUT)
            .await
            // A reconnect's server may come from a secret parameter.
            .map_err(|error| public_error(&error, session.reconnect))?;
        Ok(Json(HostKeyView {
            host: (!session.reconnect).then_some(host),
            port,
            fingerprint,
        }))
    };
    with_cors(&headers, answer.await)
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
        Refusal::Expired | Refusal::Used | Refusal::Exhausted => StatusCode::GONE,
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

/// Counts an attempt against the session, or refuses when none is left.
async fn count_attempt(state: &AppState, session: &ConnectSession) -> Result<ConnectSession, ApiError> {
    super::count_attempt(&state.integrations, session)
        .await?
        .map_err(refused)
}

/// Checks the credentials with the provider, naming what failed without
/// the context an operator's error carries.
async fn check(state: &AppState, account: &ConnectedAccount, reconnect: bool) -> Result<(), ApiError> {
    let _slot = check_slot().await?;
    match state.integrations.check_credentials(account).await {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::info!(account = %account.id(), %error, "connect session: the credentials were refused");
            // A reconnect's server may come from a secret parameter, which
            // the end user is never shown.
            let server_named = reconnect && !matches!(error.kind(), ErrorKind::InvalidInput);
            let sftp = state
                .integrations
                .integration(account.integration())
                .is_ok_and(|integration| integration.auth_type() == "sftp");
            Err(public_error(
                &error,
                server_named && (sftp || error.kind() != ErrorKind::Refused),
            ))
        }
    }
}

/// An error for the end user: its message, without the context (account,
/// integration) that is for operators; with `generic`, a message that names
/// no server.
fn public_error(error: &Error, generic: bool) -> ApiError {
    let status = ApiError::from(Error::new(error.kind(), "")).status();
    let (kind, generic_message) = match error.kind() {
        ErrorKind::Refused => (
            "credentials_refused",
            "the server refused the login, or its key is not the one given",
        ),
        ErrorKind::InvalidInput => ("invalid_input", "the values given are not valid"),
        ErrorKind::Timeout => ("timeout", "the server did not answer in time"),
        ErrorKind::Provider | ErrorKind::Transport => ("provider", "the server cannot be reached"),
        _ => ("internal", "the account could not be checked"),
    };
    ApiError::new(status, kind, if generic { generic_message } else { error.message() })
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
