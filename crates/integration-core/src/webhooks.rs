//! Webhook endpoints and their deliveries, as a backend stores them.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Result;
use crate::crypto::SealedSecret;
use crate::events::{Event, EventType};

/// A webhook endpoint: where events are sent, and the secret they are
/// signed with (sealed).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWebhook {
    /// `wh_` and 16 hex digits.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The types sent; empty for every type.
    #[serde(default)]
    pub events: Vec<EventType>,
    /// The signing secret, sealed.
    pub secret: SealedSecret,
    /// The secret before the last rotation, still signed with until
    /// `previous_secret_expires_at`, so receivers can switch without a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<SealedSecret>,
    /// When the previous secret stops being used.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set when the endpoint is disabled (it answered 410 Gone); nothing is
    /// sent to it then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<WebhookDisabled>,
}

impl StoredWebhook {
    /// Whether events of `kind` go to this endpoint.
    pub fn wants(&self, kind: EventType) -> bool {
        self.disabled.is_none() && (self.events.is_empty() || self.events.contains(&kind))
    }
}

impl fmt::Debug for StoredWebhook {
    /// Without the sealed secrets, of no use to a reader of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredWebhook")
            .field("id", &self.id)
            // Without the query, where some receivers put a token.
            .field("url", &self.url.split(['?', '#']).next().unwrap_or_default())
            .field("events", &self.events)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// Why and since when an endpoint is disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDisabled {
    /// Why, such as `the endpoint answered 410 Gone`.
    pub reason: String,
    /// Since when.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// To be attempted at `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up: every attempt of the schedule failed, or the endpoint was
    /// disabled. A retry makes it pending again.
    Failed,
}

impl DeliveryState {
    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One attempt to deliver an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The endpoint's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong, when it did (no answer, a timeout, a status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// An event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDelivery {
    /// `dlv_`, then the event id's digits and the endpoint id's: one
    /// delivery per event and endpoint, however often the event is handed on.
    pub id: String,
    /// The endpoint's id.
    pub webhook: String,
    /// The event sent.
    pub event: Event,
    /// Where it stands.
    pub state: DeliveryState,
    /// Every attempt, oldest first.
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
    /// When the next attempt is due, while pending.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Until when a gateway is attempting it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub claimed_until: Option<OffsetDateTime>,
    /// When the event was handed to this endpoint.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl StoredDelivery {
    /// The id of the delivery of `event` to `webhook`.
    pub fn id_for(event: &Event, webhook: &str) -> String {
        let event_digits = event.id.as_str().trim_start_matches("evt_");
        let webhook_digits = webhook.trim_start_matches("wh_");
        format!("dlv_{event_digits}{webhook_digits}")
    }

    /// Whether it may be claimed at `now`.
    pub fn due(&self, now: OffsetDateTime) -> bool {
        self.state == DeliveryState::Pending
            && self.next_attempt_at.is_some_and(|at| at <= now)
            && self.claimed_until.is_none_or(|until| until <= now)
    }
}

/// Where webhook endpoints and deliveries live: beside the accounts, in the
/// same database when several gateways share one.
///
/// # Behavior
///
/// - `insert_webhook` fails with [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists)
///   for an id that exists; `webhooks` lists every endpoint, oldest first;
///   `update_webhook` replaces one if it is still stored as `expected`
///   (compare and swap, so that of two concurrent changes neither reverts
///   the other) and returns whether it did; `delete_webhook` removes it
///   with its deliveries.
/// - `insert_deliveries` stores each delivery whose id is not stored yet
///   and leaves the stored ones as they are (handing an event on twice
///   sends it once).
/// - `claim_deliveries` returns at most `limit` deliveries that are
///   [due](StoredDelivery::due) at `now`, the earliest due first, and sets
///   their `claimed_until` to `until`: of concurrent claims (through any
///   handle), each delivery goes to one.
/// - `update_delivery` replaces a delivery if it is still stored as
///   `expected` and returns whether it did: an attempt's outcome is not
///   written over a retry, nor over another gateway's claim.
/// - `deliveries` lists the deliveries of one endpoint, newest first, those
///   with an id before `before` when given, at most `limit`.
/// - `delete_deliveries_before` removes the deliveries created before a
///   time that are no longer pending, and returns how many.
#[async_trait]
pub trait WebhookStorage: Send + Sync + fmt::Debug + 'static {
    /// Stores a new endpoint.
    async fn insert_webhook(&self, webhook: &StoredWebhook) -> Result<()>;

    /// Every endpoint, oldest first.
    async fn webhooks(&self) -> Result<Vec<StoredWebhook>>;

    /// Replaces endpoint `expected` with `webhook` if it is still stored as
    /// `expected`; returns whether it did.
    async fn update_webhook(&self, expected: &StoredWebhook, webhook: &StoredWebhook) -> Result<bool>;

    /// Deletes an endpoint and its deliveries; returns whether it existed.
    async fn delete_webhook(&self, id: &str) -> Result<bool>;

    /// Stores the deliveries not stored yet.
    async fn insert_deliveries(&self, deliveries: &[StoredDelivery]) -> Result<()>;

    /// Claims the deliveries due at `now` until `until`.
    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<StoredDelivery>>;

    /// Replaces delivery `expected` with `delivery` if it is still stored as
    /// `expected`; returns whether it did.
    async fn update_delivery(&self, expected: &StoredDelivery, delivery: &StoredDelivery) -> Result<bool>;

    /// The delivery with `id`.
    async fn delivery(&self, id: &str) -> Result<Option<StoredDelivery>>;

    /// The deliveries of endpoint `webhook`, newest first.
    async fn deliveries(&self, webhook: &str, before: Option<&str>, limit: usize) -> Result<Vec<StoredDelivery>>;

    /// Removes the finished deliveries created before `before`.
    async fn delete_deliveries_before(&self, before: OffsetDateTime) -> Result<usize>;
}
