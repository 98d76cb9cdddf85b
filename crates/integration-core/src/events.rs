//! What happens to connected accounts, as events.
//!
//! An event is written to the store's outbox in the same step as the change
//! that causes it (see [`Storage`](crate::Storage)), then handed on, at least
//! once, to whoever listens: the gateway's webhooks, or a library user's
//! handler.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{AccountId, Error, ErrorKind, Result};

/// The prefix of every event id.
const PREFIX: &str = "evt_";

/// An event's id: `evt_` then 32 lowercase hex digits, the first 12 the
/// millisecond of its creation, so that ids sort in the order events were
/// made (within a process; across processes, up to their clocks' skew).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    /// A new id for an event made at `at`: later than every id this
    /// process made before (the random part counts up within a millisecond,
    /// and a clock that steps back does not reorder them).
    pub fn generate(at: OffsetDateTime) -> Self {
        static LAST: std::sync::Mutex<(u64, u128)> = std::sync::Mutex::new((0, 0));
        let millis = (at.unix_timestamp_nanos() / 1_000_000).clamp(0, (1 << 48) - 1) as u64;
        let (millis, random) = {
            let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let next = if millis > last.0 {
                let bytes: [u8; 10] = crate::crypto::random_bytes();
                let mut random = 0u128;
                for byte in bytes {
                    random = (random << 8) | u128::from(byte);
                }
                // The top bit stays clear: room to count up within a millisecond.
                (millis, random >> 1)
            } else {
                (last.0, (last.1 + 1) & ((1 << 80) - 1))
            };
            *last = next;
            next
        };
        Self(format!("{PREFIX}{millis:012x}{random:020x}"))
    }

    /// Checks `id` is an event id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let valid = id.strip_prefix(PREFIX).is_some_and(|hex| {
            hex.len() == 32
                && hex
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        });
        if !valid {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "an event id is `evt_` followed by 32 lowercase hex digits",
            )
            .with_context("event", truncated(&id)));
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// At most 64 characters of a value quoted in an error.
fn truncated(value: &str) -> String {
    value.chars().take(64).collect()
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for EventId {
    type Error = Error;
    fn try_from(id: String) -> Result<Self> {
        Self::new(id)
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> Self {
        id.0
    }
}

impl FromStr for EventId {
    type Err = Error;
    fn from_str(id: &str) -> Result<Self> {
        Self::new(id)
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventType {
    /// The account was created.
    #[serde(rename = "account.created")]
    AccountCreated,
    /// Its OAuth 2.0 authorization completed (first time, or reconnected).
    #[serde(rename = "account.connected")]
    AccountConnected,
    /// Someone replaced its credentials.
    #[serde(rename = "account.credentials_updated")]
    CredentialsUpdated,
    /// Renewing its credentials failed for a reason that may pass (the
    /// provider was down); the event says the attempt count.
    #[serde(rename = "account.refresh_failed")]
    RefreshFailed,
    /// The provider refused its grant, or an SFTP login or host key was
    /// refused: someone must connect it again.
    #[serde(rename = "account.needs_reauth")]
    NeedsReauth,
    /// Healthy again after failed refreshes.
    #[serde(rename = "account.recovered")]
    Recovered,
    /// The account was removed.
    #[serde(rename = "account.removed")]
    AccountRemoved,
}

impl EventType {
    /// Every type, in the order of the catalogue.
    pub const ALL: [Self; 7] = [
        Self::AccountCreated,
        Self::AccountConnected,
        Self::CredentialsUpdated,
        Self::RefreshFailed,
        Self::NeedsReauth,
        Self::Recovered,
        Self::AccountRemoved,
    ];

    /// The name in payloads and filters, such as `account.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccountCreated => "account.created",
            Self::AccountConnected => "account.connected",
            Self::CredentialsUpdated => "account.credentials_updated",
            Self::RefreshFailed => "account.refresh_failed",
            Self::NeedsReauth => "account.needs_reauth",
            Self::Recovered => "account.recovered",
            Self::AccountRemoved => "account.removed",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = Error;
    fn from_str(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name).ok_or_else(|| {
            let known: Vec<_> = Self::ALL.iter().map(|kind| kind.as_str()).collect();
            Error::new(
                ErrorKind::InvalidInput,
                format!("unknown event type; the types are {}", known.join(", ")),
            )
            .with_context("event type", truncated(name))
        })
    }
}

/// An event, as stored in the outbox and sent in webhooks' bodies:
/// `{"id", "type", "timestamp", "data": {"account", "integration",
/// "reason"?, "attempt"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique; webhooks send it as `webhook-id`, for deduplication.
    pub id: EventId,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// To which account, and why.
    pub data: EventData,
}

/// The account an [`Event`] is about, and for failures their reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// The account id.
    pub account: AccountId,
    /// Its integration's key.
    pub integration: String,
    /// For failures: the provider's error code or what was refused (never a
    /// secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `account.refresh_failed`: how many attempts in a row failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl Event {
    /// A new event of `kind` about `account` of `integration`, now.
    pub fn new(kind: EventType, account: &AccountId, integration: &str) -> Self {
        let timestamp = OffsetDateTime::now_utc();
        Self {
            id: EventId::generate(timestamp),
            kind,
            timestamp,
            data: EventData {
                account: account.clone(),
                integration: integration.to_owned(),
                reason: None,
                attempt: None,
            },
        }
    }

    /// With the failure's reason.
    pub fn with_reason(mut self, reason: Option<&str>) -> Self {
        self.data.reason = reason.map(str::to_owned);
        self
    }

    /// With the attempt count.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.data.attempt = Some(attempt);
        self
    }
}

/// How many events wait in the outbox, and since when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Events not yet handed on.
    pub events: u64,
    /// The time of the oldest of them.
    pub oldest: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let earlier = EventId::generate(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(10));
        let later = EventId::generate(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(11));
        assert!(earlier < later);
        assert_eq!(EventId::new(later.as_str()).unwrap(), later);
        assert_ne!(
            EventId::generate(OffsetDateTime::now_utc()),
            EventId::generate(OffsetDateTime::now_utc())
        );
    }

    #[test]
    fn malformed_ids_are_refused_by_name() {
        for bad in [
            "",
            "evt_",
            "evt_XYZ",
            "msg_0123456789abcdef0123456789abcdef",
            "evt_0123456789ABCDEF0123456789abcdef",
        ] {
            let error = EventId::new(bad).unwrap_err();
            assert!(error.to_string().contains("event id"), "{error}");
        }
    }

    #[test]
    fn types_round_trip_and_unknown_ones_are_named() {
        for kind in EventType::ALL {
            assert_eq!(kind.as_str().parse::<EventType>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let error = "account.exploded".parse::<EventType>().unwrap_err().to_string();
        assert!(
            error.contains("account.exploded") && error.contains("account.needs_reauth"),
            "{error}"
        );
    }

    #[test]
    fn the_payload_has_the_documented_shape() {
        let account = AccountId::new("customer-42").unwrap();
        let event = Event::new(EventType::RefreshFailed, &account, "crm")
            .with_reason(Some("temporarily_unavailable"))
            .with_attempt(2);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "account.refresh_failed");
        assert_eq!(json["data"]["account"], "customer-42");
        assert_eq!(json["data"]["integration"], "crm");
        assert_eq!(json["data"]["reason"], "temporarily_unavailable");
        assert_eq!(json["data"]["attempt"], 2);
        assert!(json["timestamp"].as_str().unwrap().ends_with('Z'));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        let created = serde_json::to_value(Event::new(EventType::AccountCreated, &account, "crm")).unwrap();
        assert!(created["data"].get("reason").is_none() && created["data"].get("attempt").is_none());
    }
}
