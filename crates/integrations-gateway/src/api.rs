//! The REST API under `/v1`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use integrations::definition::Integration;
use integrations::method::TableJson;
use integrations::secrecy::SecretString;
use integrations::time::format_description::well_known::Rfc3339;
use integrations::{AccountId, AccountQuery, AccountStatus, ConnectedAccount, NewAccount, Secrets};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// What `/v1` shows of secret values.
pub const MASK: &str = "********";

/// An integration, without anything secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    /// Its key.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// `oauth2`, `api_token`, `basic`, `custom_token` or `sftp`.
    pub auth_type: &'static str,
    /// For OAuth 2.0: `authorization_code` or `client_credentials`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    /// The base URL template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The parameters an account fills in.
    pub parameters: Vec<ParameterView>,
    /// The credentials an account of this integration takes when created.
    pub credentials: Vec<CredentialView>,
    /// The catalog entry it extends (`GET /v1/catalog`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Who the end user signs in at: the name of the catalog entry it
    /// extends (`GitHub` for an integration named `Acme sync`), its own
    /// name otherwise.
    pub provider: String,
}

/// An integration parameter.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParameterView {
    /// Its name.
    pub name: String,
    /// What it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether its value is secret.
    pub secret: bool,
    /// Whether it may be left out.
    pub optional: bool,
    /// The values it may take, when only some are right.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Its default, when it has choices (never for a secret one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A credential an account takes.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    /// Its name.
    pub name: &'static str,
    /// Whether an account must have it.
    pub required: bool,
    /// Whether it is a secret, for a form to mask (a user name is not).
    pub secret: bool,
    /// What it is.
    pub description: &'static str,
}

impl From<&Integration> for IntegrationView {
    fn from(integration: &Integration) -> Self {
        Self {
            key: integration.key.clone(),
            name: integration.name.clone(),
            auth_type: integration.auth_type(),
            grant_type: integration
                .auth
                .table_json()
                .get("grant_type")
                .and_then(|value| value.as_str().map(str::to_owned)),
            base_url: integration.base_url.as_ref().map(|url| url.source().to_owned()),
            parameters: integration
                .parameters
                .iter()
                .map(|parameter| ParameterView {
                    name: parameter.name.clone(),
                    description: parameter.description.clone(),
                    secret: parameter.secret,
                    optional: parameter.default.is_some(),
                    choices: parameter.choices.clone(),
                    // Shown to preselect a choice; other defaults stay the operator's.
                    default: parameter
                        .default
                        .clone()
                        .filter(|_| !parameter.secret && !parameter.choices.is_empty()),
                })
                .collect(),
            credentials: integrations::account::credential_fields(integration)
                .into_iter()
                .map(|field| CredentialView {
                    name: field.name,
                    required: field.required,
                    secret: field.secret,
                    description: field.description,
                })
                .collect(),
            extends: integration.extends.clone(),
            provider: integration
                .extends
                .as_deref()
                .and_then(integrations::catalog::entry)
                .map_or_else(|| integration.name.clone(), |entry| entry.name()),
        }
    }
}

/// A connected account. Secret parameter values are masked; credentials
/// are never returned, only their names.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// Its id.
    pub id: String,
    /// Its integration's key.
    pub integration: String,
    /// `pending`, `connected` or `needs_reauth`.
    pub status: String,
    /// Why, when worth telling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Parameter values; secret ones as `********`.
    pub parameters: BTreeMap<String, String>,
    /// The names of the credentials it holds.
    pub credentials: Vec<String>,
    /// When its credentials were last renewed, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<String>,
    /// The last failure to renew them, kept after a recovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<AccountErrorView>,
    /// Failed renewals since the last success; 0 when healthy.
    pub consecutive_failures: u32,
    /// The product's end user who connected it through a connect session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_user: Option<EndUserView>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// The product's end user an account belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndUserView {
    /// The product's id for the user.
    pub id: String,
    /// A name to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A failure to renew an account's credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountErrorView {
    /// The provider's error code (`invalid_grant`), or what failed
    /// (`http_503`, `timeout`, `transport`).
    pub code: String,
    /// RFC 3339.
    pub at: String,
}

impl From<&ConnectedAccount> for AccountView {
    fn from(account: &ConnectedAccount) -> Self {
        let mut parameters = account.parameters().clone();
        for name in account.secret_parameters().names() {
            parameters.insert(name.to_owned(), MASK.to_owned());
        }
        Self {
            id: account.id().to_string(),
            integration: account.integration().to_owned(),
            status: account.status().as_str().to_owned(),
            status_reason: account.status_reason().map(str::to_owned),
            parameters,
            credentials: account.credentials().names().map(str::to_owned).collect(),
            last_refresh_at: account.health().last_refresh_at.and_then(|at| at.format(&Rfc3339).ok()),
            last_error: account.health().last_error.as_ref().map(|error| AccountErrorView {
                code: error.code.clone(),
                at: error.at.format(&Rfc3339).unwrap_or_default(),
            }),
            consecutive_failures: account.health().consecutive_failures,
            end_user: account.end_user().map(|user| EndUserView {
                id: user.id.clone(),
                display_name: user.display_name.clone(),
            }),
            created_at: account.created_at().format(&Rfc3339).unwrap_or_default(),
            updated_at: account.updated_at().format(&Rfc3339).unwrap_or_default(),
        }
    }
}

/// A new account. Credentials are write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccountRequest {
    /// Its id: 1 to 128 ASCII letters, digits, `-`, `_` and `.`.
    pub id: String,
    /// Its integration's key.
    pub integration: String,
    /// Parameter values.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Credentials.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
}

/// What removing an account did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemovalView {
    /// The OAuth 2.0 tokens the provider revoked.
    pub revoked: Vec<&'static str>,
    /// Revocation failures; the account is removed all the same.
    pub revoke_failures: Vec<String>,
}

/// Whether the gateway can serve.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` while the store cannot be reached.
    pub status: &'static str,
    /// `ok` or `unreachable`: the store of accounts and keys.
    pub store: &'static str,
}

/// Readiness: 200 when the gateway can serve, 503 while its store (the
/// database) cannot be reached. No API key needed, and nothing but these
/// two words is told.
#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health, description = "The store cannot be reached"))
)]
pub async fn healthz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Health>) {
    match state.integrations.store().storage().check().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                store: "ok",
            }),
        ),
        Err(error) => {
            tracing::warn!(%error, "health check: the store cannot be reached");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                    store: "unreachable",
                }),
            )
        }
    }
}

/// Every integration, sorted by key.
#[utoipa::path(
    get, path = "/v1/integrations", tag = "integrations",
    responses((status = 200, body = [IntegrationView]), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_integrations(State(state): State<Arc<AppState>>) -> Json<Vec<IntegrationView>> {
    Json(
        state
            .integrations
            .definitions()
            .iter()
            .map(|i| IntegrationView::from(i.as_ref()))
            .collect(),
    )
}

/// One integration.
#[utoipa::path(
    get, path = "/v1/integrations/{key}", tag = "integrations",
    params(("key" = String, Path, description = "The integration's key")),
    responses((status = 200, body = IntegrationView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_integration(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    let integration = state.integrations.integration(&key)?;
    Ok(Json(IntegrationView::from(integration.as_ref())))
}

/// A catalog entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogEntryView {
    /// Its key, which a definition's `extends` names.
    pub key: &'static str,
    /// The provider's name.
    pub name: String,
    /// `oauth2`, `api_token`, `basic`, `custom_token` or `sftp`.
    pub auth_type: String,
    /// Its setup page, in Markdown: where to register, what to paste, the
    /// quirks.
    pub setup: &'static str,
    /// Its definition, in TOML.
    pub definition: &'static str,
}

/// The built-in catalog of ready definitions, sorted by key.
#[utoipa::path(
    get, path = "/v1/catalog", tag = "integrations",
    responses((status = 200, body = [CatalogEntryView]), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_catalog() -> Json<Vec<CatalogEntryView>> {
    Json(
        integrations::catalog::entries()
            .iter()
            .map(|entry| CatalogEntryView {
                key: entry.key,
                name: entry.name(),
                auth_type: entry.auth_type(),
                setup: entry.setup,
                definition: entry.definition,
            })
            .collect(),
    )
}

/// The accounts listed by one `GET /v1/accounts`, unless `limit` says.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The most accounts one page lists.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Which accounts `GET /v1/accounts` lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountsQuery {
    /// At most this many, 1 to 1000 [default: 100].
    limit: Option<String>,
    /// Only accounts after this id: the `next` of the previous page.
    after: Option<String>,
    /// Only accounts of this integration.
    integration: Option<String>,
    /// Only accounts with this status: `pending`, `connected` or `needs_reauth`.
    status: Option<String>,
    /// Only accounts whose credentials failed to renew at least this many
    /// times in a row (1: every failing account).
    min_consecutive_failures: Option<String>,
}

impl AccountsQuery {
    fn to_query(&self) -> Result<AccountQuery, ApiError> {
        let limit = match &self.limit {
            None => DEFAULT_PAGE_SIZE,
            Some(limit) => limit
                .parse::<usize>()
                .ok()
                .filter(|limit| (1..=MAX_PAGE_SIZE).contains(limit))
                .ok_or_else(|| ApiError::invalid(format!("`limit` must be a number from 1 to {MAX_PAGE_SIZE}")))?,
        };
        let after = match &self.after {
            None => None,
            Some(after) => Some(
                AccountId::new(after.as_str())
                    .map_err(|_| ApiError::invalid("`after` is not an account id: pass the `next` of a page"))?,
            ),
        };
        let status = match &self.status {
            None => None,
            Some(status) => Some(
                serde_json::from_value::<AccountStatus>(serde_json::Value::String(status.clone()))
                    .map_err(|_| ApiError::invalid("`status` must be one of `pending`, `connected`, `needs_reauth`"))?,
            ),
        };
        let min_consecutive_failures = match &self.min_consecutive_failures {
            None => None,
            Some(least) => Some(
                least
                    .parse::<u32>()
                    .map_err(|_| ApiError::invalid("`min_consecutive_failures` must be a number"))?,
            ),
        };
        Ok(AccountQuery {
            after,
            limit,
            integration: self.integration.clone(),
            status,
            min_consecutive_failures,
        })
    }
}

/// One page of accounts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountPageView {
    /// Sorted by id.
    pub accounts: Vec<AccountView>,
    /// Pass it as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// A page of accounts, sorted by id: at most `limit`, after the id
/// `after`, of one integration or status. Unreadable records are left out
/// and logged.
#[utoipa::path(
    get, path = "/v1/accounts", tag = "accounts",
    params(AccountsQuery),
    responses((status = 200, body = AccountPageView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_accounts(
    State(state): State<Arc<AppState>>,
    query: Result<Query<AccountsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AccountPageView>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::invalid("the query string cannot be read"))?;
    let page = state.integrations.store().page(&query.to_query()?).await?;
    for error in &page.unreadable {
        tracing::error!(%error, "unreadable account record");
    }
    Ok(Json(AccountPageView {
        accounts: page.accounts.iter().map(AccountView::from).collect(),
        next: page.next.map(|id| id.as_str().to_owned()),
    }))
}

/// Creates an account.
#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts",
    request_body = NewAccountRequest,
    responses(
        (status = 201, body = AccountView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such integration"),
        (status = 409, body = ErrorBody, description = "An account with this id exists"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json`"),
    ),
    security(("api_key" = []))
)]
pub async fn create_account(
    State(state): State<Arc<AppState>>,
    request: Result<Json<NewAccountRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let Json(request) = request.map_err(ApiError::from)?;
    let integration = state.integrations.integration(&request.integration)?;
    let secrets = |values: BTreeMap<String, String>| -> Secrets {
        values
            .into_iter()
            .map(|(name, value)| (name, SecretString::from(value)))
            .collect()
    };
    let account = state
        .integrations
        .create_account(
            integration,
            NewAccount {
                id: AccountId::new(request.id)?,
                parameters: secrets(request.parameters),
                credentials: secrets(request.credentials),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(AccountView::from(&account))))
}

/// New credentials for an account. Write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    /// The credentials, by name, as when the account was created.
    pub credentials: BTreeMap<String, String>,
}

impl std::fmt::Debug for CredentialsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsRequest")
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Replaces an account's credentials (a new API token, password or key),
/// checked as for a new account; an `account.credentials_updated` event
/// follows. OAuth 2.0 accounts are connected again instead.
#[utoipa::path(
    put, path = "/v1/accounts/{id}/credentials", tag = "accounts",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    request_body = CredentialsRequest,
    responses(
        (status = 200, body = AccountView),
        (status = 400, body = ErrorBody, description = "Credentials the integration does not take, or an OAuth 2.0 account"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn replace_credentials(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Result<Json<CredentialsRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<AccountView>, ApiError> {
    let Json(request) = request.map_err(ApiError::from)?;
    let credentials = request
        .credentials
        .into_iter()
        .map(|(name, value)| (name, SecretString::from(value)))
        .collect();
    let account = state
        .integrations
        .replace_credentials(&AccountId::new(id)?, credentials)
        .await?;
    Ok(Json(AccountView::from(&account)))
}

/// One account.
#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = AccountView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_account(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    let account = state.integrations.store().get(&AccountId::new(id)?).await?;
    Ok(Json(AccountView::from(&account)))
}

/// Deletes an account, revoking OAuth 2.0 tokens first where the
/// integration has a revoke endpoint.
#[utoipa::path(
    delete, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = RemovalView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_account(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<RemovalView>, ApiError> {
    let id = AccountId::new(id)?;
    let removal = state.integrations.remove_account(&id).await?;
    if !removal.existed {
        return Err(ApiError::not_found(format!("no such account (account `{id}`)")));
    }
    Ok(Json(RemovalView {
        revoked: removal.revoked,
        revoke_failures: removal.revoke_failures.iter().map(ToString::to_string).collect(),
    }))
}

/// An authorization to send the user to.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectView {
    /// The provider's authorization URL.
    pub authorization_url: String,
    /// When it stops working, RFC 3339.
    pub expires_at: String,
    /// Where the provider sends the user back.
    pub redirect_uri: String,
}

/// Starts connecting an OAuth 2.0 account (authorization code grant): the
/// URL to send the user to. The provider redirects back to the gateway's
/// callback, which completes the connection.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/connect", tag = "oauth2",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses(
        (status = 200, body = ConnectView),
        (status = 400, body = ErrorBody, description = "Not an OAuth 2.0 authorization code account"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn connect_account(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ConnectView>, ApiError> {
    let id = AccountId::new(id)?;
    let start = state.integrations.start_authorization(&id, &state.redirect_uri).await?;
    Ok(Json(ConnectView {
        authorization_url: start.url.to_string(),
        expires_at: start.expires_at.format(&Rfc3339).unwrap_or_default(),
        redirect_uri: state.redirect_uri.to_string(),
    }))
}

/// The OAuth 2.0 callback: providers redirect the user's browser here. No
/// API key: the single-use state is the credential.
#[utoipa::path(
    get, path = "/internal/sessions/v1/auth/callback", tag = "oauth2",
    params(
        ("state" = String, Query, description = "The state sent with the authorization"),
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("error" = Option<String>, Query, description = "The provider's error"),
    ),
    responses(
        (status = 200, description = "Connected", content_type = "text/html", body = String),
        (status = 400, description = "The callback cannot be read", content_type = "text/html", body = String),
        (status = 403, description = "Refused: no code, or an unknown, used or expired state", content_type = "text/html", body = String),
        (status = 502, description = "The provider refused the authorization or the code exchange", content_type = "text/html", body = String),
    )
)]
pub async fn oauth_callback(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    let callback = integrations::auth::oauth2::Callback::from_query(query.as_deref().unwrap_or_default());
    crate::connect::callback::callback(&state, &headers, &callback).await
}

/// The callback page runs nothing and loads nothing.
const CALLBACK_PAGE_POLICY: &str = "default-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The callback's page for an authorization an operator started.
pub(crate) async fn callback_page(
    state: &AppState,
    verified: integrations::Result<integrations::auth::oauth2::VerifiedCallback>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let completed = match verified {
        Ok(verified) => state.integrations.complete_verified_authorization(verified).await,
        Err(error) => Err(error),
    };
    let (status, body) = match completed {
        Ok(account) => (
            StatusCode::OK,
            page(&format!("Account {} is connected.", account.id()), "connected"),
        ),
        Err(error) => {
            tracing::warn!(%error, "OAuth 2.0 callback refused");
            let status = match error.kind() {
                integrations::ErrorKind::Provider
                | integrations::ErrorKind::Transport
                | integrations::ErrorKind::Timeout => StatusCode::BAD_GATEWAY,
                integrations::ErrorKind::Refused => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, page(&error.to_string(), "failed"))
        }
    };
    (status, crate::page_headers(CALLBACK_PAGE_POLICY), body).into_response()
}

/// A minimal page for the browser that lands on the callback.
fn page(message: &str, outcome: &str) -> String {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    format!(
        "<!doctype html><meta charset=utf-8><title>integrations</title>\
         <p id=outcome data-outcome={outcome}>{escaped}</p><p><a href=\"/connect\">Back to the accounts</a></p>"
    )
}

/// Gets new OAuth 2.0 tokens for an account now.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/refresh", tag = "oauth2",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses(
        (status = 200, body = AccountView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The account has no refresh token or must be connected again"),
        (status = 502, body = ErrorBody, description = "The provider refused or failed"),
    ),
    security(("api_key" = []))
)]
pub async fn refresh_account(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    let account = state.integrations.refresh(&AccountId::new(id)?).await?;
    Ok(Json(AccountView::from(&account)))
}

/// Revokes an OAuth 2.0 account's tokens (refresh token first) and forgets
/// them; the account goes back to `pending`.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/revoke", tag = "oauth2",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses(
        (status = 200, body = RemovalView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn revoke_account(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<RemovalView>, ApiError> {
    let revocation = state.integrations.disconnect(&AccountId::new(id)?).await?;
    Ok(Json(RemovalView {
        revoked: revocation.revoked,
        revoke_failures: revocation.failures.iter().map(ToString::to_string).collect(),
    }))
}
