//! The OAuth 2.0 callback of sessions, the connect page it answers with,
//! and `/connect.js`.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use integrations::auth::oauth2::{Callback, VerifiedCallback};
use integrations::storage::ConnectSession;
use integrations::{AccountStore, EndUser, Error, ErrorKind, Update};
use serde::Serialize;
use subtle::ConstantTimeEq as _;

use super::Refusal;
use super::routes::{binding_cookie, binding_cookie_name, cookie};
use crate::AppState;

/// What the OAuth 2.0 callback does for an authorization a connect
/// session started (`tag` is the session's token hash and the hash of the
/// browser's binding cookie): completes the session with the account, or
/// says why not, on the session's page.
async fn complete_callback(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    verified: Result<VerifiedCallback, Error>,
    tag: &str,
    provider_error: Option<&str>,
) -> (StatusCode, PageOutcome) {
    let (session_hash, binding_hash) = tag.split_once('.').unwrap_or((tag, ""));
    let storage = state.integrations.store().storage();
    let session = match storage.connect_session(session_hash).await {
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
            // The provider's own words are not shown: anyone with a state
            // could write them.
            let message = match (error.kind(), provider_error) {
                (ErrorKind::Provider, Some(code)) => {
                    let code: String = code.chars().filter(char::is_ascii_alphanumeric).take(40).collect();
                    format!("The provider did not grant access ({code}).")
                }
                (ErrorKind::Refused, _) => "The sign-in took too long or was already used. Try again.".to_owned(),
                _ => "The provider's answer cannot be read. Try again.".to_owned(),
            };
            return (callback_status(&error), PageOutcome::failed(&message, Some(&session)));
        }
    };
    // Only the browser that started the authorization completes it: a
    // link to the provider sent to someone else connects nothing.
    let presented = cookie(headers, &binding_cookie_name(session_hash)).map(super::token_hash);
    let bound = presented.is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(binding_hash.as_bytes())));
    if !bound {
        tracing::warn!(account = %session.account, "connect session: a callback came without its browser's binding");
        return (
            StatusCode::FORBIDDEN,
            PageOutcome::failed(
                "This sign-in was started in another browser. Open the link you were given again, here.",
                Some(&session),
            ),
        );
    }
    // An authorization started while the session was open completes within
    // its own lifetime; a session completes once.
    let Ok(Some(claimed)) = super::claim(&state.integrations, &session).await else {
        return (StatusCode::GONE, PageOutcome::failed(Refusal::Used.message(), None));
    };
    // Detached: a browser that goes away now does not leave the session
    // claimed with nothing stored.
    let task_state = Arc::clone(state);
    let completed = tokio::spawn(async move {
        let completed = task_state.integrations.complete_verified_authorization(verified).await;
        match completed {
            Ok(account) => {
                if let Some(end_user) = &claimed.end_user
                    && account.end_user() != Some(end_user)
                {
                    set_end_user(task_state.integrations.store(), account.clone(), end_user.clone()).await;
                    task_state.integrations.forget(account.id());
                }
                Ok((claimed, account.status().as_str()))
            }
            Err(error) => {
                super::reopen(&task_state.integrations, &claimed).await;
                Err(error)
            }
        }
    })
    .await;
    match completed {
        Ok(Ok((claimed, status))) => (StatusCode::OK, PageOutcome::connected(&claimed, status)),
        Ok(Err(error)) => {
            tracing::warn!(%error, "connect session: the authorization did not complete");
            let message = match error.kind() {
                ErrorKind::NotFound => "The account was removed while it was being connected. Ask for a new link.",
                ErrorKind::Provider | ErrorKind::Transport | ErrorKind::Timeout => {
                    "The provider did not give the account's tokens. Try again."
                }
                _ => "The account could not be connected. Try again.",
            };
            (callback_status(&error), PageOutcome::failed(message, Some(&session)))
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            PageOutcome::failed("The account could not be connected. Try again.", Some(&session)),
        ),
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
pub(crate) async fn callback(state: &Arc<AppState>, headers: &HeaderMap, callback: &Callback) -> Response {
    let verified = integrations::auth::oauth2::verify_callback(state.integrations.store(), callback).await;
    let tag = match &verified {
        Ok(verified) => verified.tag().map(str::to_owned),
        Err(error) => error.context("authorization_tag").map(str::to_owned),
    };
    let Some(tag) = tag else {
        return crate::api::callback_page(state, verified).await;
    };
    let (status, outcome) = complete_callback(state, headers, verified, &tag, callback.error.as_deref()).await;
    let mut response = session_page(status, Some(&outcome));
    let session_hash = tag.split_once('.').map_or(tag.as_str(), |(hash, _)| hash);
    response
        .headers_mut()
        .append(header::SET_COOKIE, binding_cookie(state, session_hash, None));
    response
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
