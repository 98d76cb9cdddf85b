//! Delivering events to the endpoints: each event of the outbox becomes a
//! delivery per endpoint that wants it, sent signed and retried on a
//! schedule, with every attempt kept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use integrations::destination::{is_link_local_or_metadata, is_metadata_name};
use integrations::events::Event;
use integrations::time::OffsetDateTime;
use integrations::webhooks::{DeliveryAttempt, DeliveryState, StoredDelivery, StoredWebhook};
use integrations::{Error, ErrorKind, EventHandler, EventRelay, RelayHandle, RelaySettings, Result, async_trait};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::Notify;

use super::Webhooks;
use super::signature::signature_header;
use crate::metrics;

/// How often finished deliveries past the retention are removed.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How much later a delivery is handed back when its endpoint already has
/// its share of the attempts in flight.
const HAND_BACK_DELAY: Duration = Duration::from_secs(1);
/// The attempts a delivery keeps, the latest (manual retries add more).
const MAX_ATTEMPTS_KEPT: usize = 100;

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

/// The longest single wait of a schedule, and the most waits.
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_SCHEDULE_LENGTH: usize = 50;

/// Parses a schedule such as `5s,5m,30m,2h`: waits in `ms`, `s`, `m` or `h`,
/// each at most 7 days, at most 50 of them.
pub fn parse_schedule(text: &str) -> std::result::Result<Vec<Duration>, String> {
    let schedule = text
        .split(',')
        .map(|part| {
            let wait = parse_duration(part)?;
            if wait > MAX_WAIT {
                return Err(format!("`{}`: a wait is at most 7 days (168h)", part.trim()));
            }
            Ok(wait)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if schedule.len() > MAX_SCHEDULE_LENGTH {
        return Err(format!(
            "a schedule has at most {MAX_SCHEDULE_LENGTH} waits, not {}",
            schedule.len()
        ));
    }
    Ok(schedule)
}

/// Parses one wait such as `500ms`, `5s`, `30m` or `24h`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a wait such as `5s`, `30m` or `2h`"))?;
    let unit_millis: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{text}`: the unit is `ms`, `s`, `m` or `h`")),
    };
    value
        .checked_mul(unit_millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a wait"))
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

/// Starts `deliverer` on the current tokio runtime: events of the outbox
/// become deliveries, due deliveries are sent.
pub fn spawn(deliverer: Deliverer) -> WebhookWorkers {
    let wake = Arc::new(Notify::new());
    let webhooks = deliverer.webhooks.clone();
    let relay = EventRelay::new(Arc::clone(webhooks.store().storage()), RelaySettings::default());
    let relay = relay.spawn(FanOut {
        webhooks,
        wake: Arc::clone(&wake),
    });
    let worker = tokio::spawn(async move { deliverer.run(&wake).await });
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
    /// A deliverer of `webhooks`' deliveries; fails when no HTTP client
    /// can be made (no TLS roots), so a gateway says so when it starts.
    pub fn new(webhooks: Webhooks, settings: DeliverySettings) -> Result<Self> {
        let client = reqwest::Client::builder()
            // A redirect is a failure: the signed body goes only where the
            // operator said.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver))
            .timeout(settings.timeout)
            .user_agent(concat!("integrations/", env!("CARGO_PKG_VERSION"), " (webhooks)"))
            .build()
            .map_err(|error| {
                Error::new(ErrorKind::Config, "cannot make the HTTP client for webhooks").with_source(error)
            })?;
        Ok(Self {
            webhooks,
            client,
            settings,
        })
    }

    /// Delivers until dropped: keeps up to `concurrency` attempts in
    /// flight, claiming more as each ends, so that a slow endpoint holds its
    /// own slots and not a whole batch.
    async fn run(&self, wake: &Notify) {
        let mut in_flight = FuturesUnordered::new();
        let mut busy: HashMap<String, usize> = HashMap::new();
        let mut pruned_at: Option<Instant> = None;
        loop {
            let free = self.settings.concurrency.max(1).saturating_sub(in_flight.len());
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free, &busy).await {
                    Ok(ready) => {
                        claimed = ready.len();
                        for (delivery, webhook) in ready {
                            *busy.entry(delivery.webhook.clone()).or_default() += 1;
                            in_flight.push(self.attempt(delivery, webhook));
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the due webhook deliveries; trying again"),
                }
            }
            if pruned_at.is_none_or(|at| at.elapsed() > PRUNE_INTERVAL) {
                pruned_at = Some(Instant::now());
                self.prune().await;
            }
            if claimed == free && free > 0 {
                // A full claim: more may be due at once.
                continue;
            }
            tokio::select! {
                Some(done) = in_flight.next() => {
                    let webhook: String = done;
                    if let Some(count) = busy.get_mut(&webhook) {
                        *count -= 1;
                        if *count == 0 {
                            busy.remove(&webhook);
                        }
                    }
                }
                _ = tokio::time::timeout(self.settings.poll_interval, wake.notified()) => {}
            }
        }
    }

    /// Claims up to `limit` due deliveries, each with its endpoint as
    /// stored now. A delivery whose endpoint already has its share of the
    /// attempts in flight (`busy`) is handed back a moment later, so that
    /// one slow endpoint cannot take every slot.
    async fn claim(
        &self,
        limit: usize,
        busy: &HashMap<String, usize>,
    ) -> Result<Vec<(StoredDelivery, Option<StoredWebhook>)>> {
        let now = OffsetDateTime::now_utc();
        // Long enough for the attempt, started at once.
        let claim = self.settings.timeout * 2 + Duration::from_secs(30);
        let backend = self.webhooks.backend()?;
        let due = backend.claim_deliveries(now, now + claim, limit).await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let webhooks = self.webhooks.list().await?;
        let share = (self.settings.concurrency / 4).max(1);
        let mut taken: HashMap<String, usize> = HashMap::new();
        let mut ready = Vec::with_capacity(due.len());
        for delivery in due {
            let count = taken
                .entry(delivery.webhook.clone())
                .or_insert_with(|| busy.get(&delivery.webhook).copied().unwrap_or(0));
            if *count >= share {
                let mut later = delivery.clone();
                later.claimed_until = None;
                later.next_attempt_at = Some(now + HAND_BACK_DELAY);
                backend.update_delivery(&delivery, &later).await?;
                continue;
            }
            *count += 1;
            let webhook = webhooks.iter().find(|webhook| webhook.id == delivery.webhook).cloned();
            ready.push((delivery, webhook));
        }
        Ok(ready)
    }

    /// Sends `delivery` once and records the outcome over the claimed copy
    /// (not over a retry, nor another gateway's later claim); returns the
    /// endpoint's id.
    async fn attempt(&self, claimed: StoredDelivery, webhook: Option<StoredWebhook>) -> String {
        let endpoint = claimed.webhook.clone();
        if let Err(error) = self.attempt_and_record(claimed, webhook).await {
            tracing::warn!(%error, webhook = %endpoint, "cannot record a webhook delivery attempt");
        }
        endpoint
    }

    async fn attempt_and_record(&self, claimed: StoredDelivery, webhook: Option<StoredWebhook>) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let mut delivery = claimed.clone();
        delivery.claimed_until = None;
        let Some(webhook) = webhook.filter(|webhook| webhook.disabled.is_none()) else {
            // Removed or disabled meanwhile: nothing is sent.
            delivery.state = DeliveryState::Failed;
            delivery.next_attempt_at = None;
            record_attempt(
                &mut delivery,
                DeliveryAttempt {
                    at: now,
                    status: None,
                    error: Some("the endpoint is disabled".to_owned()),
                    duration_ms: 0,
                },
            );
            self.record(&claimed, &delivery).await?;
            metrics::webhook_delivery("disabled");
            return Ok(());
        };
        let started = Instant::now();
        let outcome = self.send(&webhook, &delivery.event, now).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match &outcome {
            Ok(status) if (200..300).contains(status) => (Some(*status), None),
            Ok(status) => (Some(*status), Some(format!("the endpoint answered {status}"))),
            Err(error) => (None, Some(error.clone())),
        };
        // Counted before the cap on kept attempts: the schedule goes by it.
        let failed = delivery.attempts.len() + 1;
        record_attempt(
            &mut delivery,
            DeliveryAttempt {
                at: now,
                status,
                error,
                duration_ms,
            },
        );
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
                self.webhooks
                    .disable(&webhook.id, "the endpoint answered 410 Gone")
                    .await?;
            }
            _ => {
                // The wait after the n-th failed attempt, until they are spent.
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
        self.record(&claimed, &delivery).await
    }

    /// Stores `delivery` over the `claimed` copy; when that copy changed
    /// meanwhile (its claim ran out and another gateway took it), the other
    /// attempt's record stands.
    async fn record(&self, claimed: &StoredDelivery, delivery: &StoredDelivery) -> Result<()> {
        if !self.webhooks.backend()?.update_delivery(claimed, delivery).await? {
            tracing::warn!(delivery = %delivery.id, "the delivery changed during the attempt; its outcome is not recorded");
        }
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
    let refused = std::iter::successors(Some(error as &dyn std::error::Error), |error| error.source())
        .any(|error| error.is::<RefusedAddress>());
    if refused {
        REFUSED_ADDRESS.to_owned()
    } else if error.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f64())
    } else if error.is_connect() {
        "cannot connect to the endpoint".to_owned()
    } else if error.is_redirect() {
        "the endpoint redirected".to_owned()
    } else {
        "the request failed before an answer".to_owned()
    }
}

/// Adds `attempt`, keeping the latest [`MAX_ATTEMPTS_KEPT`].
fn record_attempt(delivery: &mut StoredDelivery, attempt: DeliveryAttempt) {
    delivery.attempts.push(attempt);
    let excess = delivery.attempts.len().saturating_sub(MAX_ATTEMPTS_KEPT);
    delivery.attempts.drain(..excess);
}

const REFUSED_ADDRESS: &str =
    "the endpoint's host resolves to a link-local or cloud metadata address, where events are never sent";

/// Why a name's addresses were refused.
#[derive(Debug)]
struct RefusedAddress;

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REFUSED_ADDRESS)
    }
}

impl std::error::Error for RefusedAddress {}

/// Resolves endpoint host names as the system does, without link-local
/// and cloud metadata addresses: checked where the connection is made, so
/// a name that resolves there later (DNS rebinding) is refused as well.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if is_metadata_name(&host) {
                return Err(Box::new(RefusedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|address| !is_link_local_or_metadata(address.ip()))
                .collect();
            if allowed.is_empty() && !resolved.is_empty() {
                return Err(Box::new(RefusedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
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
        assert!(
            parse_duration("18446744073709551615h")
                .unwrap_err()
                .contains("too long"),
            "no overflow"
        );
        assert_eq!(parse_duration("720h").unwrap(), Duration::from_secs(720 * 3600));
        assert!(parse_schedule("169h").unwrap_err().contains("at most 7 days"));
        assert_eq!(parse_schedule("168h").unwrap(), [MAX_WAIT]);
        let long = vec!["1s"; 51].join(",");
        assert!(parse_schedule(&long).unwrap_err().contains("at most 50 waits"));
        assert!(parse_schedule("soon").unwrap_err().contains("`soon`"));
    }

    #[tokio::test]
    async fn metadata_names_are_refused_where_the_connection_is_made() {
        let refused = GuardedResolver
            .resolve("metadata.google.internal".parse().expect("name"))
            .await
            .err()
            .expect("refused");
        assert!(refused.is::<RefusedAddress>(), "{refused}");
        let allowed: Vec<_> = GuardedResolver
            .resolve("localhost".parse().expect("name"))
            .await
            .expect("resolved")
            .collect();
        assert!(allowed.iter().all(|address| address.ip().is_loopback()), "{allowed:?}");
        assert!(!allowed.is_empty());
    }

    #[test]
    fn a_delivery_keeps_its_latest_attempts() {
        let event = Event::new(
            integrations::events::EventType::AccountCreated,
            &"acct".parse().expect("id"),
            "crm",
        );
        let now = OffsetDateTime::now_utc();
        let mut delivery = StoredDelivery {
            id: StoredDelivery::id_for(&event, "wh_1"),
            webhook: "wh_1".to_owned(),
            event,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
            next_attempt_at: Some(now),
            claimed_until: None,
            created_at: now,
        };
        for n in 0..150 {
            record_attempt(
                &mut delivery,
                DeliveryAttempt {
                    at: now,
                    status: Some(500),
                    error: None,
                    duration_ms: n,
                },
            );
        }
        assert_eq!(delivery.attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(delivery.attempts.last().map(|attempt| attempt.duration_ms), Some(149));
    }

    #[test]
    fn the_default_schedule_spans_more_than_a_day() {
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert!(total > Duration::from_secs(24 * 3600), "{total:?}");
    }
}
