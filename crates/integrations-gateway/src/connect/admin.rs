//! `POST /v1/connect-sessions`: a product's backend, with an API key,
//! makes a session for one end user.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use integrations::EndUser;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{SessionRequest, rfc3339};
use crate::AppState;
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
    /// Parameter values of the new account that the product sets, and the
    /// end user neither sees nor changes (a self-hosted server's URL, say).
    /// Not secret ones: sessions are stored unsealed.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
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
            parameters: body.parameters,
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
