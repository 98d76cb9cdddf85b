//! Delivering events to the endpoints: each event of the outbox becomes a
//! delivery per endpoint that wants it, sent signed and retried on a
//! schedule, with every attempt kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use integrations::events::Event;
use integrations::time::OffsetDateTime;
use integrations::webhooks::{DeliveryAttempt, DeliveryState, StoredDelivery, StoredWebhook};
use integrations::{EventHandler, EventRelay, RelayHandle, RelaySettings, Result, async_trait};
use tokio::sync::Notify;

use super::Webhooks;
use super::signature::signature_header;
use crate::metrics;

/// The waits after each failed attempt: 8 attempts over about 28 hours.
pub const DEFAULT_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// How deliveries are made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeliverySettings {
    /// The wait after each failed attempt; once they are spent, the
    /// delivery fails.
    pub schedule: Vec<Duration>,
    /// How long an endpoint has to answer.
    pub timeout: Duration,
    /// How often due deliveries are looked for when nothing wakes the
    /// worker.
    pub poll_interval: Duration,
    /// Deliveries attempted at once.
    pub concurrency: usize,
    /// How long finished deliveries are kept to be looked at.
    pub retention: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            schedule: DEFAULT_SCHEDULE.to_vec(),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            concurrency: 16,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl DeliverySettings {
    /// With `schedule`.
    pub fn schedule(mut self, schedule: Vec<Duration>) -> Self {
        self.schedule = schedule;
        self
    }
}

/// Parses a schedule such as `5s,5m,30m,2h`: waits in `ms`, `s`, `m` or `h`.
pub fn parse_schedule(text: &str) -> std::result::Result<Vec<Duration>, String> {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &part[digits.len()..];
            let value: u64 = digits
                .parse()
                .map_err(|_| format!("`{part}` is not a wait such as `5s`, `30m` or `2h`"))?;
            let seconds = match unit {
                "ms" => return Ok(Duration::from_millis(value)),
                "s" => value,
                "m" => value * 60,
                "h" => value * 3600,
                _ => return Err(format!("`{part}`: the unit is `ms`, `s`, `m` or `h`")),
            };
            Ok(Duration::from_secs(seconds))
        })
        .collect()
}

/// The running delivery of webhooks: the outbox's relay and the worker;
/// dropping it stops both.
#[derive(Debug)]
pub struct WebhookWorkers {
    _relay: RelayHandle,
    worker: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookWorkers {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

/// Starts delivering on the current tokio runtime: events of the outbox
/// become deliveries, due deliveries are sent.
pub fn spawn(webhooks: Webhooks, settings: DeliverySettings) -> WebhookWorkers {
    let wake = Arc::new(Notify::new());
    let relay = EventRelay::new(Arc::clone(webhooks.store().storage()), RelaySettings::default());
    let relay = relay.spawn(FanOut {
        webhooks: webhooks.clone(),
        wake: Arc::clone(&wake),
    });
    let deliverer = Deliverer::new(webhooks, settings);
    let worker = tokio::spawn(async move {
        let mut pruned_at = Instant::now();
        loop {
            match deliverer.deliver_due().await {
                Ok(sent) if sent > 0 => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot read the due webhook deliveries; trying again"),
            }
            if pruned_at.elapsed() > Duration::from_secs(3600) {
                pruned_at = Instant::now();
                deliverer.prune().await;
            }
            let _ = tokio::time::timeout(deliverer.settings.poll_interval, wake.notified()).await;
        }
    });
    WebhookWorkers { _relay: relay, worker }
}

/// Makes each event a delivery per endpoint that wants it.
struct FanOut {
    webhooks: Webhooks,
    wake: Arc<Notify>,
}

#[async_trait]
impl EventHandler for FanOut {
    async fn handle(&self, event: &Event) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let deliveries: Vec<_> = self
            .webhooks
            .list()
            .await?
            .into_iter()
            .filter(|webhook| webhook.wants(event.kind))
            .map(|webhook| StoredDelivery {
                id: StoredDelivery::id_for(event, &webhook.id),
                webhook: webhook.id,
                event: event.clone(),
                state: DeliveryState::Pending,
                attempts: Vec::new(),
                next_attempt_at: Some(now),
                claimed_until: None,
                created_at: now,
            })
            .collect();
        if !deliveries.is_empty() {
            // Ids per event and endpoint: handing the event on twice adds nothing.
            self.webhooks.backend()?.insert_deliveries(&deliveries).await?;
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// Sends due deliveries.
#[derive(Debug)]
pub struct Deliverer {
    webhooks: Webhooks,
    client: reqwest::Client,
    settings: DeliverySettings,
}

impl Deliverer {
    /// A deliverer of `webhooks`' deliveries.
    pub fn new(webhooks: Webhooks, settings: DeliverySettings) -> Self {
        let client = reqwest::Client::builder()
            // A redirect is a failure: the signed body goes only where the
            // operator said.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .user_agent(concat!("integrations/", env!("CARGO_PKG_VERSION"), " (webhooks)"))
            .build()
            .unwrap_or_default();
        Self {
            webhooks,
            client,
            settings,
        }
    }

    /// Claims the due deliveries and attempts them; returns how many.
    pub async fn deliver_due(&self) -> Result<usize> {
        let now = OffsetDateTime::now_utc();
        // Long enough for every attempt of the batch, run at once.
        let claim = self.settings.timeout * 2 + Duration::from_secs(30);
        let due = self
            .webhooks
            .backend()?
            .claim_deliveries(now, now + claim, self.settings.concurrency.max(1))
            .await?;
        let count = due.len();
        if count == 0 {
            return Ok(0);
        }
        let webhooks = self.webhooks.list().await?;
        let attempts = due.into_iter().map(|delivery| {
            let webhook = webhooks.iter().find(|webhook| webhook.id == delivery.webhook);
            self.attempt(delivery, webhook)
        });
        for outcome in futures_util::future::join_all(attempts).await {
            if let Err(error) = outcome {
                tracing::warn!(%error, "cannot record a webhook delivery attempt");
            }
        }
        Ok(count)
    }

    /// Sends `delivery` once and records the outcome.
    async fn attempt(&self, mut delivery: StoredDelivery, webhook: Option<&StoredWebhook>) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let Some(webhook) = webhook.filter(|webhook| webhook.disabled.is_none()) else {
            // Removed or disabled meanwhile: nothing is sent.
            delivery.state = DeliveryState::Failed;
            delivery.next_attempt_at = None;
            delivery.claimed_until = None;
            delivery.attempts.push(DeliveryAttempt {
                at: now,
                status: None,
                error: Some("the endpoint is disabled".to_owned()),
                duration_ms: 0,
            });
            self.webhooks.backend()?.update_delivery(&delivery).await?;
            metrics::webhook_delivery("disabled");
            return Ok(());
        };
        let started = Instant::now();
        let outcome = self.send(webhook, &delivery.event, now).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match &outcome {
            Ok(status) if (200..300).contains(status) => (Some(*status), None),
            Ok(status) => (Some(*status), Some(format!("the endpoint answered {status}"))),
            Err(error) => (None, Some(error.clone())),
        };
        delivery.attempts.push(DeliveryAttempt {
            at: now,
            status,
            error,
            duration_ms,
        });
        delivery.claimed_until = None;
        match outcome {
            Ok(status) if (200..300).contains(&status) => {
                delivery.state = DeliveryState::Delivered;
                delivery.next_attempt_at = None;
                metrics::webhook_delivery("delivered");
                tracing::debug!(delivery = %delivery.id, webhook = %webhook.id, status, "webhook delivered");
            }
            Ok(410) => {
                delivery.state = DeliveryState::Failed;
                delivery.next_attempt_at = None;
                metrics::webhook_delivery("gone");
                tracing::warn!(webhook = %webhook.id, "the endpoint answered 410 Gone: it is disabled");
                self.webhooks.disable(webhook, "the endpoint answered 410 Gone").await?;
            }
            _ => {
                // The wait after the n-th failed attempt, until they are spent.
                let failed = delivery.attempts.len();
                match self.settings.schedule.get(failed.saturating_sub(1)) {
                    Some(wait) => {
                        delivery.next_attempt_at = Some(now + *wait);
                        metrics::webhook_delivery("retrying");
                    }
                    None => {
                        metrics::webhook_delivery("failed");
                        delivery.state = DeliveryState::Failed;
                        delivery.next_attempt_at = None;
                        tracing::warn!(delivery = %delivery.id, webhook = %webhook.id, attempts = failed, "a webhook delivery failed for good");
                    }
                }
            }
        }
        self.webhooks.backend()?.update_delivery(&delivery).await?;
        Ok(())
    }

    /// POSTs `event`, signed; the endpoint's status, or why there is none
    /// (never the URL, which may hold a token of the receiver's).
    async fn send(
        &self,
        webhook: &StoredWebhook,
        event: &Event,
        now: OffsetDateTime,
    ) -> std::result::Result<u16, String> {
        let secrets = self
            .webhooks
            .signing_secrets(webhook, now)
            .map_err(|error| error.to_string())?;
        let body = serde_json::to_vec(event).map_err(|_| "the event cannot be encoded".to_owned())?;
        let timestamp = now.unix_timestamp();
        let signature = signature_header(&secrets, event.id.as_str(), timestamp, &body);
        let response = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", event.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|error| describe(&error, self.settings.timeout))?;
        Ok(response.status().as_u16())
    }

    /// Removes finished deliveries older than the retention.
    async fn prune(&self) {
        let before = OffsetDateTime::now_utc() - self.settings.retention;
        match self.webhooks.backend() {
            Ok(backend) => match backend.delete_deliveries_before(before).await {
                Ok(deleted) if deleted > 0 => tracing::info!(deleted, "removed old webhook deliveries"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot remove old webhook deliveries"),
            },
            Err(error) => tracing::warn!(%error, "cannot remove old webhook deliveries"),
        }
    }
}

/// A failed send in words without the URL.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f64())
    } else if error.is_connect() {
        "cannot connect to the endpoint".to_owned()
    } else if error.is_redirect() {
        "the endpoint redirected".to_owned()
    } else {
        "the request failed before an answer".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_schedule("5s, 5m,2h,100ms").unwrap(),
            [
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200),
                Duration::from_millis(100)
            ]
        );
        assert!(parse_schedule("5x").unwrap_err().contains("`5x`"));
        assert!(parse_schedule("soon").unwrap_err().contains("`soon`"));
    }

    #[test]
    fn the_default_schedule_spans_more_than_a_day() {
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert!(total > Duration::from_secs(24 * 3600), "{total:?}");
    }
}
