//! Handing the outbox's events on: to a library user's handler, or to the
//! gateway's webhooks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use integration_core::events::Event;
use integration_core::time::OffsetDateTime;
use integration_core::{Result, Storage, async_trait};
use tokio::sync::Notify;

/// What an [`EventRelay`] hands each event to.
///
/// `handle` returning `Ok` completes the event: it is removed from the
/// outbox. An error leaves it there, to be handed on again once its claim
/// ends ([`RelaySettings::claim`]).
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Takes one event.
    async fn handle(&self, event: &Event) -> Result<()>;
}

/// A closure as an [`EventHandler`].
#[async_trait]
impl<F, Fut> EventHandler for F
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    async fn handle(&self, event: &Event) -> Result<()> {
        self(event.clone()).await
    }
}

/// How an [`EventRelay`] works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelaySettings {
    /// How often the outbox is read when nothing wakes the relay.
    pub poll_interval: Duration,
    /// How long a claimed event is left to its handler before another
    /// relay (or this one) may take it again.
    pub claim: Duration,
    /// Events claimed at once.
    pub batch: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            claim: Duration::from_secs(30),
            batch: 100,
        }
    }
}

impl RelaySettings {
    /// With `poll_interval`.
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// With `claim`.
    pub fn claim(mut self, claim: Duration) -> Self {
        self.claim = claim;
        self
    }
}

/// Reads the store's outbox and hands each event to a handler, at least
/// once.
///
/// # Behavior
///
/// - Every event written with a change (see [`Storage`]) reaches the
///   handler, also after the process died before handing it on: it waits
///   in the store.
/// - Relays on several processes sharing a store split the events: each
///   event is handed to one of them (the outbox has one consumer, however
///   many processes run it).
/// - Within one relay, events are handed on one at a time, oldest first.
///   A handler's error stops the batch, so the events after it wait too,
///   and are handed on again, in order, once their claim ends.
/// - An event may be handed on twice (a process dies after the handler
///   took it and before it was completed): handlers deduplicate by
///   [`Event::id`].
#[derive(Clone)]
pub struct EventRelay {
    storage: Arc<dyn Storage>,
    settings: RelaySettings,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for EventRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRelay")
            .field("storage", &self.storage)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EventRelay {
    /// A relay of `storage`'s outbox.
    pub fn new(storage: Arc<dyn Storage>, settings: RelaySettings) -> Self {
        Self {
            storage,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Reads the outbox now rather than at the next poll (after a change
    /// this process made).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claims one batch and hands it to `handler`; returns how many events
    /// were completed.
    pub async fn relay_once(&self, handler: &dyn EventHandler) -> Result<usize> {
        let now = OffsetDateTime::now_utc();
        let events = self
            .storage
            .claim_events(now, now + self.settings.claim, self.settings.batch.max(1))
            .await?;
        let mut completed = 0;
        for event in &events {
            if let Err(error) = handler.handle(event).await {
                tracing::warn!(event = %event.id, kind = %event.kind, %error, "an event handler failed; the event is handed on again later");
                break;
            }
            self.storage.complete_event(&event.id).await?;
            completed += 1;
        }
        Ok(completed)
    }

    /// Relays on the current tokio runtime until the returned handle is
    /// dropped or stopped.
    pub fn spawn(self, handler: impl EventHandler) -> RelayHandle {
        let task = tokio::spawn(async move {
            loop {
                match self.relay_once(&handler).await {
                    // A full batch: there may be more at once.
                    Ok(completed) if completed >= self.settings.batch.max(1) => continue,
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot read the outbox; trying again"),
                }
                let _ = tokio::time::timeout(self.settings.poll_interval, self.wake.notified()).await;
            }
        });
        RelayHandle { task }
    }
}

/// A running relay; dropping it stops it.
#[derive(Debug)]
pub struct RelayHandle {
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Stops the relay.
    pub fn stop(self) {}
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
