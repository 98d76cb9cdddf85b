//! Webhook endpoints: added, listed, rotated and removed, with their
//! signing secrets sealed in the store.

use std::time::Duration;

use integrations::destination::{is_link_local_or_metadata, is_metadata_name};
use integrations::events::EventType;
use integrations::time::OffsetDateTime;
use integrations::webhooks::{DeliveryState, StoredDelivery, StoredWebhook, WebhookStorage};
use integrations::{AccountStore, Error, ErrorKind, Result};

use super::signature::WebhookSecret;

/// How long the secret before a rotation is still signed with, unless told.
pub const DEFAULT_ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// The longest endpoint URL accepted.
const MAX_URL_LENGTH: usize = 2048;
/// What an endpoint's secret is sealed as.
const SECRET_FIELD: &str = "webhook:secret";
const PREVIOUS_SECRET_FIELD: &str = "webhook:previous_secret";
/// The most endpoints a store keeps: each event is a delivery per endpoint.
const MAX_WEBHOOKS: usize = 100;
/// How often a change is tried again over a copy that changed meanwhile.
const MAX_CHANGE_ATTEMPTS: usize = 8;

/// The webhook endpoints of a store, their secrets sealed with the store's
/// keyring (bound to the endpoint's id and URL).
#[derive(Debug, Clone)]
pub struct Webhooks {
    store: AccountStore,
}

impl Webhooks {
    /// The endpoints kept beside `store`'s accounts.
    pub fn new(store: AccountStore) -> Self {
        Self { store }
    }

    /// The backend, or an error saying this store keeps no webhooks.
    pub fn backend(&self) -> Result<&dyn WebhookStorage> {
        self.store.storage().webhook_storage().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "this storage backend keeps no webhooks: use memory, sled or PostgreSQL",
            )
        })
    }

    /// The store of the accounts.
    pub fn store(&self) -> &AccountStore {
        &self.store
    }

    /// Adds an endpoint for `events` (every type when empty); returns it
    /// and its secret, shown this once.
    pub async fn add(&self, url: &str, events: Vec<EventType>) -> Result<(StoredWebhook, WebhookSecret)> {
        let url = check_url(url)?;
        if self.list().await?.len() >= MAX_WEBHOOKS {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a store keeps at most {MAX_WEBHOOKS} webhook endpoints: remove one first"),
            ));
        }
        let mut events = events;
        events.sort();
        events.dedup();
        let id = format!("wh_{}", hex(&integrations::crypto::random_bytes::<8>()));
        let secret = WebhookSecret::generate();
        let webhook = StoredWebhook {
            secret: self.seal(&id, &url, SECRET_FIELD, &secret),
            id,
            url,
            events,
            previous_secret: None,
            previous_secret_expires_at: None,
            created_at: OffsetDateTime::now_utc(),
            disabled: None,
        };
        self.backend()?.insert_webhook(&webhook).await?;
        Ok((webhook, secret))
    }

    /// Every endpoint, oldest first.
    pub async fn list(&self) -> Result<Vec<StoredWebhook>> {
        self.backend()?.webhooks().await
    }

    /// The endpoint `id`.
    pub async fn get(&self, id: &str) -> Result<StoredWebhook> {
        self.list()
            .await?
            .into_iter()
            .find(|webhook| webhook.id == id)
            .ok_or_else(|| no_such_webhook(id))
    }

    /// Removes the endpoint `id` and its deliveries.
    pub async fn remove(&self, id: &str) -> Result<()> {
        if self.backend()?.delete_webhook(id).await? {
            Ok(())
        } else {
            Err(no_such_webhook(id))
        }
    }

    /// Gives endpoint `id` a new secret; the old one is still signed with
    /// for `overlap`, so receivers can switch without refusing a delivery.
    pub async fn rotate_secret(&self, id: &str, overlap: Duration) -> Result<(StoredWebhook, WebhookSecret)> {
        let secret = WebhookSecret::generate();
        let webhook = self
            .change(id, |webhook| {
                let current = self.open(webhook, SECRET_FIELD, &webhook.secret)?;
                webhook.previous_secret = Some(self.seal(&webhook.id, &webhook.url, PREVIOUS_SECRET_FIELD, &current));
                webhook.previous_secret_expires_at = Some(OffsetDateTime::now_utc() + overlap);
                webhook.secret = self.seal(&webhook.id, &webhook.url, SECRET_FIELD, &secret);
                Ok(())
            })
            .await?;
        Ok((webhook, secret))
    }

    /// Sends to endpoint `id` again after it was disabled.
    pub async fn enable(&self, id: &str) -> Result<StoredWebhook> {
        self.change(id, |webhook| {
            webhook.disabled = None;
            Ok(())
        })
        .await
    }

    /// Disables endpoint `id` for `reason`, unless it is disabled already.
    pub(crate) async fn disable(&self, id: &str, reason: &str) -> Result<StoredWebhook> {
        self.change(id, |webhook| {
            webhook
                .disabled
                .get_or_insert_with(|| integrations::webhooks::WebhookDisabled {
                    reason: reason.to_owned(),
                    at: OffsetDateTime::now_utc(),
                });
            Ok(())
        })
        .await
    }

    /// Applies `change` to endpoint `id` as stored now, and stores it over
    /// that copy only: a change made meanwhile (a rotation on another
    /// gateway, a 410) is read again and never reverted.
    async fn change(
        &self,
        id: &str,
        mut change: impl FnMut(&mut StoredWebhook) -> Result<()>,
    ) -> Result<StoredWebhook> {
        let backend = self.backend()?;
        for _ in 0..MAX_CHANGE_ATTEMPTS {
            let current = self.get(id).await?;
            let mut changed = current.clone();
            change(&mut changed)?;
            if changed == current || backend.update_webhook(&current, &changed).await? {
                return Ok(changed);
            }
        }
        Err(
            Error::new(ErrorKind::Conflict, "the endpoint kept changing meanwhile: try again")
                .with_context("webhook", truncated(id)),
        )
    }

    /// The deliveries of endpoint `id`, newest first.
    pub async fn deliveries(&self, id: &str, before: Option<&str>, limit: usize) -> Result<Vec<StoredDelivery>> {
        self.get(id).await?;
        self.backend()?.deliveries(id, before, limit.clamp(1, 100)).await
    }

    /// Makes delivery `delivery` of endpoint `id` due now, whatever its
    /// state (its attempts are kept).
    pub async fn retry(&self, id: &str, delivery: &str) -> Result<StoredDelivery> {
        let webhook = self.get(id).await?;
        if let Some(disabled) = &webhook.disabled {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("the endpoint is disabled ({}): enable it first", disabled.reason),
            )
            .with_context("webhook", id));
        }
        let backend = self.backend()?;
        let stored = backend
            .delivery(delivery)
            .await?
            .filter(|stored| stored.webhook == id)
            .ok_or_else(|| {
                Error::new(ErrorKind::NotFound, "no such delivery of this endpoint")
                    .with_context("delivery", truncated(delivery))
            })?;
        let now = OffsetDateTime::now_utc();
        let in_flight = || {
            Error::new(
                ErrorKind::Conflict,
                "the delivery is being attempted now: look at its attempts in a moment",
            )
            .with_context("delivery", truncated(delivery))
        };
        if stored.claimed_until.is_some_and(|until| until > now) {
            return Err(in_flight());
        }
        let mut retried = stored.clone();
        retried.state = DeliveryState::Pending;
        retried.next_attempt_at = Some(now);
        retried.claimed_until = None;
        if !backend.update_delivery(&stored, &retried).await? {
            return Err(in_flight());
        }
        Ok(retried)
    }

    /// The secrets `webhook` is signed with now: its secret, and the one
    /// before while the rotation's overlap lasts.
    pub fn signing_secrets(&self, webhook: &StoredWebhook, now: OffsetDateTime) -> Result<Vec<WebhookSecret>> {
        let mut secrets = vec![self.open(webhook, SECRET_FIELD, &webhook.secret)?];
        if let (Some(previous), Some(until)) = (&webhook.previous_secret, webhook.previous_secret_expires_at)
            && now < until
        {
            secrets.push(self.open(webhook, PREVIOUS_SECRET_FIELD, previous)?);
        }
        Ok(secrets)
    }

    /// Seals every endpoint's secrets again with the active key, where
    /// another key of the keyring sealed them; returns how many endpoints
    /// were re-sealed.
    pub async fn rewrap(&self) -> Result<usize> {
        let active = Some(self.store.cipher().key_id());
        let sealed_with_active = |webhook: &StoredWebhook| {
            std::iter::once(&webhook.secret)
                .chain(webhook.previous_secret.as_ref())
                .all(|secret| secret.key_id() == active)
        };
        let mut rewrapped = 0;
        for webhook in self.list().await? {
            if sealed_with_active(&webhook) {
                continue;
            }
            let rewrapping = self.change(&webhook.id, |webhook| {
                if sealed_with_active(webhook) {
                    return Ok(());
                }
                let secret = self.open(webhook, SECRET_FIELD, &webhook.secret)?;
                webhook.secret = self.seal(&webhook.id, &webhook.url, SECRET_FIELD, &secret);
                if let Some(previous) = &webhook.previous_secret {
                    let previous = self.open(webhook, PREVIOUS_SECRET_FIELD, previous)?;
                    webhook.previous_secret =
                        Some(self.seal(&webhook.id, &webhook.url, PREVIOUS_SECRET_FIELD, &previous));
                }
                Ok(())
            });
            match rewrapping.await {
                Ok(_) => rewrapped += 1,
                // Removed meanwhile: nothing left to re-seal.
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(rewrapped)
    }

    fn seal(&self, id: &str, url: &str, field: &str, secret: &WebhookSecret) -> integrations::crypto::SealedSecret {
        self.store
            .cipher()
            .seal_in_context(id, field, url.as_bytes(), secret.expose().as_bytes())
    }

    fn open(
        &self,
        webhook: &StoredWebhook,
        field: &str,
        sealed: &integrations::crypto::SealedSecret,
    ) -> Result<WebhookSecret> {
        let unreadable =
            |message: String| Error::new(ErrorKind::Unreadable, message).with_context("webhook", &webhook.id);
        let plaintext = self
            .store
            .cipher()
            .open_in_context(&webhook.id, field, webhook.url.as_bytes(), sealed)
            .map_err(|error| unreadable(format!("cannot decrypt the endpoint's secret: {error}")))?;
        let text =
            std::str::from_utf8(&plaintext).map_err(|_| unreadable("the endpoint's secret is not text".into()))?;
        WebhookSecret::parse(text).map_err(|_| unreadable("the endpoint's secret is not a `whsec_` secret".into()))
    }
}

/// Checks an endpoint URL (errors name the field, never quote the value):
/// absolute `http` or `https`, with a host, without
/// a username or password (they would be shown wherever the URL is).
pub fn check_url(url: &str) -> Result<String> {
    // The value is not quoted back: it may hold a password.
    let invalid = |message: &str| Error::new(ErrorKind::InvalidInput, format!("`url`: {message}"));
    if url.len() > MAX_URL_LENGTH {
        return Err(invalid(&format!(
            "a webhook URL is at most {MAX_URL_LENGTH} characters"
        )));
    }
    let parsed = url::Url::parse(url).map_err(|error| invalid(&format!("not an absolute URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("a webhook URL is `https://…` (or `http://…`)"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("a webhook URL names a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "a webhook URL holds no username or password: events are signed instead",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(invalid("a webhook URL has no `#fragment`"));
    }
    let never_reached = match parsed.host() {
        Some(url::Host::Domain(name)) => is_metadata_name(name),
        Some(url::Host::Ipv4(ip)) => is_link_local_or_metadata(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_link_local_or_metadata(ip.into()),
        None => false,
    };
    if never_reached {
        return Err(invalid(
            "the host is a link-local or cloud metadata address, where events are never sent",
        ));
    }
    Ok(parsed.to_string())
}

fn no_such_webhook(id: &str) -> Error {
    Error::new(ErrorKind::NotFound, "no such webhook").with_context("webhook", truncated(id))
}

/// At most 64 characters of a value quoted in an error.
fn truncated(value: &str) -> String {
    value.chars().take(64).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_checked_by_name() {
        assert_eq!(
            check_url("https://hooks.example/in").unwrap(),
            "https://hooks.example/in"
        );
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        for (bad, says) in [
            ("hooks.example/in", "absolute"),
            ("ftp://hooks.example/in", "https://"),
            ("file:///etc/passwd", "https://"),
            ("https://user:pw@hooks.example/in", "no username or password"),
            ("https://hooks.example/in#x", "fragment"),
            ("http://169.254.169.254/latest/meta-data", "metadata"),
            ("http://[fe80::1]/hook", "link-local"),
            ("http://[::ffff:169.254.169.254]/hook", "metadata"),
            ("http://metadata.google.internal./computeMetadata", "metadata"),
            ("http://100.100.100.200/", "metadata"),
        ] {
            let error = check_url(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let long = format!("https://hooks.example/{}", "a".repeat(3000));
        assert!(check_url(&long).unwrap_err().to_string().contains("at most"));
    }
}
