//! `/v1/webhooks`: the endpoints events are sent to, and their deliveries.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use integrations::events::EventType;
use integrations::time::OffsetDateTime;
use integrations::time::format_description::well_known::Rfc3339;
use integrations::webhooks::{DeliveryAttempt, StoredDelivery, StoredWebhook};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{DEFAULT_ROTATION_OVERLAP, WebhookSecret, Webhooks};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// The longest rotation overlap accepted: a week.
const MAX_ROTATION_OVERLAP: u64 = 7 * 24 * 3600;

fn webhooks(state: &AppState) -> Webhooks {
    Webhooks::new(state.integrations.store().clone())
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

/// A webhook endpoint; its secret is never shown again after it is made.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// `wh_` and 16 hex digits.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types sent; empty for every type.
    pub events: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Set when nothing is sent to it (it answered 410 Gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<DisabledView>,
    /// Until when the secret before the last rotation is still signed
    /// with, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
}

/// Why and since when an endpoint is disabled.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledView {
    /// Why.
    pub reason: String,
    /// Since when, RFC 3339.
    pub at: String,
}

impl From<&StoredWebhook> for WebhookView {
    fn from(webhook: &StoredWebhook) -> Self {
        Self {
            id: webhook.id.clone(),
            url: webhook.url.clone(),
            events: webhook.events.iter().map(|kind| kind.as_str().to_owned()).collect(),
            created_at: rfc3339(webhook.created_at),
            disabled: webhook.disabled.as_ref().map(|disabled| DisabledView {
                reason: disabled.reason.clone(),
                at: rfc3339(disabled.at),
            }),
            previous_secret_expires_at: webhook.previous_secret_expires_at.map(rfc3339),
        }
    }
}

/// An endpoint with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecretView {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_…`: verify each delivery's `webhook-signature` with it.
    pub secret: String,
}

impl WebhookWithSecretView {
    fn new(webhook: &StoredWebhook, secret: &WebhookSecret) -> Self {
        Self {
            webhook: WebhookView::from(webhook),
            secret: secret.expose().to_owned(),
        }
    }
}

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookRequest {
    /// `https://…` (or `http://…`), without a username or password.
    pub url: String,
    /// The event types to send, such as `account.needs_reauth`; every type
    /// when left out or empty.
    #[serde(default)]
    pub events: Vec<String>,
}

/// Parses event type names; an unknown one is a 400 naming it.
pub fn event_types(names: &[String]) -> Result<Vec<EventType>, integrations::Error> {
    names.iter().map(|name| name.parse()).collect()
}

/// Every webhook endpoint, oldest first.
#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<WebhookView>), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_webhooks(State(state): State<Arc<AppState>>) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let webhooks = webhooks(&state).list().await?;
    Ok(Json(webhooks.iter().map(WebhookView::from).collect()))
}

/// Adds an endpoint; the answer holds its signing secret, shown this once.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body = NewWebhookRequest,
    responses(
        (status = 201, body = WebhookWithSecretView),
        (status = 400, body = ErrorBody, description = "A bad URL or an unknown event type"),
        (status = 401, body = ErrorBody),
        (status = 415, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_webhook(
    State(state): State<Arc<AppState>>,
    request: Result<Json<NewWebhookRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<WebhookWithSecretView>), ApiError> {
    let Json(request) = request.map_err(ApiError::from)?;
    let events = event_types(&request.events)?;
    let (webhook, secret) = webhooks(&state).add(&request.url, events).await?;
    Ok((StatusCode::CREATED, Json(WebhookWithSecretView::new(&webhook, &secret))))
}

/// One endpoint.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_webhook(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(WebhookView::from(&webhooks(&state).get(&id).await?)))
}

/// Removes an endpoint and its deliveries.
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_webhook(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    webhooks(&state).remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How long the old secret stays in use after a rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Seconds the old secret is still signed with, beside the new one
    /// (default a day, at most a week; 0 stops it at once).
    pub overlap_seconds: Option<u64>,
}

/// Gives an endpoint a new signing secret, shown this once; deliveries are
/// signed with the old one too for the overlap.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body(content = Option<RotateRequest>),
    responses((status = 200, body = WebhookWithSecretView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn rotate_webhook_secret(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<WebhookWithSecretView>, ApiError> {
    let request: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| ApiError::invalid(format!("invalid JSON body: {error}")))?
    };
    let overlap = match request.overlap_seconds {
        None => DEFAULT_ROTATION_OVERLAP,
        Some(seconds) if seconds <= MAX_ROTATION_OVERLAP => Duration::from_secs(seconds),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "`overlap_seconds` is at most {MAX_ROTATION_OVERLAP} (a week)"
            )));
        }
    };
    let (webhook, secret) = webhooks(&state).rotate_secret(&id, overlap).await?;
    Ok(Json(WebhookWithSecretView::new(&webhook, &secret)))
}

/// Sends to a disabled endpoint again.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/enable", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn enable_webhook(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(WebhookView::from(&webhooks(&state).enable(&id).await?)))
}

/// One attempt to deliver an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// RFC 3339.
    pub at: String,
    /// The endpoint's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

impl From<&DeliveryAttempt> for AttemptView {
    fn from(attempt: &DeliveryAttempt) -> Self {
        Self {
            at: rfc3339(attempt.at),
            status: attempt.status,
            error: attempt.error.clone(),
            duration_ms: attempt.duration_ms,
        }
    }
}

/// An event on its way to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// `dlv_…`.
    pub id: String,
    /// The event sent, as the endpoint gets it.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// `pending`, `delivered` or `failed`.
    pub state: &'static str,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
    /// When the next attempt is due, RFC 3339, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&StoredDelivery> for DeliveryView {
    fn from(delivery: &StoredDelivery) -> Self {
        Self {
            id: delivery.id.clone(),
            event: serde_json::to_value(&delivery.event).unwrap_or_default(),
            state: delivery.state.as_str(),
            attempts: delivery.attempts.iter().map(AttemptView::from).collect(),
            next_attempt_at: delivery.next_attempt_at.map(rfc3339),
            created_at: rfc3339(delivery.created_at),
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPageView {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// Pass it as `before` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// Which deliveries to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries before this id (the `next` of the previous page).
    pub before: Option<String>,
    /// At most this many, 1 to 100 (default 50).
    pub limit: Option<usize>,
}

/// The deliveries of an endpoint, newest first, with every attempt.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id"), DeliveriesQuery),
    responses((status = 200, body = DeliveryPageView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryPageView>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::invalid("the query string cannot be read"))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("`limit` is from 1 to 100"));
    }
    let deliveries = webhooks(&state).deliveries(&id, query.before.as_deref(), limit).await?;
    let next = (deliveries.len() == limit)
        .then(|| deliveries.last().map(|delivery| delivery.id.clone()))
        .flatten();
    Ok(Json(DeliveryPageView {
        deliveries: deliveries.iter().map(DeliveryView::from).collect(),
        next,
    }))
}

/// Sends a delivery again now, whatever its state.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/deliveries/{delivery}/retry", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id"), ("delivery" = String, Path, description = "The delivery's id")),
    responses(
        (status = 202, body = DeliveryView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The endpoint is disabled"),
    ),
    security(("api_key" = []))
)]
pub async fn retry_delivery(
    State(state): State<Arc<AppState>>,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let delivery = webhooks(&state).retry(&id, &delivery).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(&delivery))))
}
