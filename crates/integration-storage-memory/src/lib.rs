#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use integration_core::events::{Event, EventId, OutboxBacklog};
use integration_core::storage::{
    AccountPage, AccountQuery, ConnectSession, KeyStorage, PendingAuthorization, Storage, StoredAccount, StoredApiKey,
    Swap, page_of_sorted,
};
use integration_core::time::OffsetDateTime;
use integration_core::webhooks::{DeliveryState, StoredDelivery, StoredWebhook, WebhookStorage};
use integration_core::{AccountId, Error, ErrorKind, Result, async_trait};

/// Accounts, pending authorizations, connect sessions, the outbox of
/// events, API keys and webhooks in memory, gone when the process ends.
/// For tests, and for services that keep accounts elsewhere.
#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    accounts: BTreeMap<AccountId, StoredAccount>,
    pending: BTreeMap<String, PendingAuthorization>,
    /// By token hash.
    connect_sessions: BTreeMap<String, ConnectSession>,
    /// In creation order.
    keys: Vec<StoredApiKey>,
    /// Each event with the end of its claim.
    outbox: BTreeMap<EventId, (Event, Option<OffsetDateTime>)>,
    /// In creation order.
    webhooks: Vec<StoredWebhook>,
    deliveries: BTreeMap<String, StoredDelivery>,
}

impl State {
    fn add_events(&mut self, events: &[Event]) {
        for event in events {
            self.outbox.insert(event.id.clone(), (event.clone(), None));
        }
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a map half-written:
        // every change below is a single insert or remove.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for MemoryStorage {
    /// Counts only: records are not shown, sealed or not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryStorage")
            .field("accounts", &state.accounts.len())
            .field("pending_authorizations", &state.pending.len())
            .field("connect_sessions", &state.connect_sessions.len())
            .field("api_keys", &state.keys.len())
            .field("outbox", &state.outbox.len())
            .field("webhooks", &state.webhooks.len())
            .field("deliveries", &state.deliveries.len())
            .finish()
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn insert_account(&self, account: &StoredAccount, events: &[Event]) -> Result<()> {
        let mut state = self.state();
        if state.accounts.contains_key(&account.id) {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "account exists already").with_context("account", &account.id)
            );
        }
        state.accounts.insert(account.id.clone(), account.clone());
        state.add_events(events);
        Ok(())
    }

    async fn account(&self, id: &AccountId) -> Result<Option<StoredAccount>> {
        Ok(self.state().accounts.get(id).cloned())
    }

    async fn accounts(&self) -> Result<Vec<Result<StoredAccount>>> {
        Ok(self.state().accounts.values().cloned().map(Ok).collect())
    }

    async fn accounts_page(&self, query: &AccountQuery) -> Result<AccountPage> {
        use std::ops::Bound;
        let state = self.state();
        let start = query.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let records = state
            .accounts
            .range((start, Bound::Unbounded))
            .map(|(id, account)| (id.clone(), Ok(account.clone())));
        Ok(page_of_sorted(records, query))
    }

    async fn compare_and_swap_account(
        &self,
        expected_revision: u64,
        account: &StoredAccount,
        events: &[Event],
    ) -> Result<Swap> {
        let mut state = self.state();
        let Some(stored) = state.accounts.get_mut(&account.id) else {
            return Err(Error::new(ErrorKind::NotFound, "no such account").with_context("account", &account.id));
        };
        if stored.revision != expected_revision {
            return Ok(Swap::Conflict(stored.clone()));
        }
        *stored = StoredAccount {
            revision: expected_revision + 1,
            ..account.clone()
        };
        let swapped = stored.clone();
        state.add_events(events);
        Ok(Swap::Swapped(swapped))
    }

    async fn delete_account(&self, id: &AccountId, events: &[Event]) -> Result<bool> {
        let mut state = self.state();
        let existed = state.accounts.remove(id).is_some();
        if existed {
            state.add_events(events);
        }
        Ok(existed)
    }

    async fn claim_events(&self, now: OffsetDateTime, until: OffsetDateTime, limit: usize) -> Result<Vec<Event>> {
        let mut state = self.state();
        let mut claimed = Vec::new();
        for (event, claim) in state.outbox.values_mut() {
            if claimed.len() == limit {
                break;
            }
            if claim.is_none_or(|end| end <= now) {
                *claim = Some(until);
                claimed.push(event.clone());
            }
        }
        Ok(claimed)
    }

    async fn complete_event(&self, id: &EventId) -> Result<bool> {
        Ok(self.state().outbox.remove(id).is_some())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog> {
        let state = self.state();
        Ok(OutboxBacklog {
            events: state.outbox.len() as u64,
            oldest: state.outbox.values().map(|(event, _)| event.timestamp).min(),
        })
    }

    async fn insert_pending_authorization(&self, pending: &PendingAuthorization) -> Result<()> {
        let mut state = self.state();
        if state.pending.contains_key(&pending.state) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "pending authorization exists already",
            ));
        }
        state.pending.insert(pending.state.clone(), pending.clone());
        Ok(())
    }

    async fn take_pending_authorization(&self, state: &str) -> Result<Option<PendingAuthorization>> {
        Ok(self.state().pending.remove(state))
    }

    async fn delete_expired_pending_authorizations(&self, now: OffsetDateTime) -> Result<usize> {
        let mut state = self.state();
        let before = state.pending.len();
        state.pending.retain(|_, pending| pending.expires_at > now);
        Ok(before - state.pending.len())
    }

    async fn pending_authorizations(&self) -> Result<Vec<PendingAuthorization>> {
        Ok(self.state().pending.values().cloned().collect())
    }

    async fn insert_connect_session(&self, session: &ConnectSession) -> Result<()> {
        let mut state = self.state();
        if state.connect_sessions.contains_key(&session.token_hash) {
            return Err(Error::new(ErrorKind::AlreadyExists, "connect session exists already"));
        }
        state
            .connect_sessions
            .insert(session.token_hash.clone(), session.clone());
        Ok(())
    }

    async fn connect_session(&self, token_hash: &str) -> Result<Option<ConnectSession>> {
        Ok(self.state().connect_sessions.get(token_hash).cloned())
    }

    async fn update_connect_session(&self, expected: &ConnectSession, session: &ConnectSession) -> Result<bool> {
        let mut state = self.state();
        let Some(stored) = state
            .connect_sessions
            .get_mut(&session.token_hash)
            .filter(|stored| **stored == *expected)
        else {
            return Ok(false);
        };
        *stored = session.clone();
        Ok(true)
    }

    async fn delete_expired_connect_sessions(&self, now: OffsetDateTime) -> Result<usize> {
        let mut state = self.state();
        let before = state.connect_sessions.len();
        state.connect_sessions.retain(|_, session| session.expires_at > now);
        Ok(before - state.connect_sessions.len())
    }

    fn webhook_storage(&self) -> Option<&dyn WebhookStorage> {
        Some(self)
    }
}

#[async_trait]
impl KeyStorage for MemoryStorage {
    async fn insert_key(&self, key: &StoredApiKey) -> Result<()> {
        let mut state = self.state();
        if state.keys.iter().any(|stored| stored.id == key.id) {
            return Err(Error::new(ErrorKind::AlreadyExists, "API key exists already").with_context("key", &key.id));
        }
        state.keys.push(key.clone());
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<StoredApiKey>> {
        let mut keys = self.state().keys.clone();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn delete_key(&self, id: &str) -> Result<bool> {
        let mut state = self.state();
        let before = state.keys.len();
        state.keys.retain(|key| key.id != id);
        Ok(state.keys.len() != before)
    }
}

#[async_trait]
impl WebhookStorage for MemoryStorage {
    async fn insert_webhook(&self, webhook: &StoredWebhook) -> Result<()> {
        let mut state = self.state();
        if state.webhooks.iter().any(|stored| stored.id == webhook.id) {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "webhook exists already").with_context("webhook", &webhook.id)
            );
        }
        state.webhooks.push(webhook.clone());
        Ok(())
    }

    async fn webhooks(&self) -> Result<Vec<StoredWebhook>> {
        Ok(self.state().webhooks.clone())
    }

    async fn update_webhook(&self, expected: &StoredWebhook, webhook: &StoredWebhook) -> Result<bool> {
        let mut state = self.state();
        let Some(stored) = state
            .webhooks
            .iter_mut()
            .find(|stored| stored.id == webhook.id && *stored == expected)
        else {
            return Ok(false);
        };
        *stored = webhook.clone();
        Ok(true)
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let mut state = self.state();
        let before = state.webhooks.len();
        state.webhooks.retain(|webhook| webhook.id != id);
        state.deliveries.retain(|_, delivery| delivery.webhook != id);
        Ok(state.webhooks.len() != before)
    }

    async fn insert_deliveries(&self, deliveries: &[StoredDelivery]) -> Result<()> {
        let mut state = self.state();
        for delivery in deliveries {
            state
                .deliveries
                .entry(delivery.id.clone())
                .or_insert_with(|| delivery.clone());
        }
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<StoredDelivery>> {
        let mut state = self.state();
        let mut due: Vec<_> = state
            .deliveries
            .values_mut()
            .filter(|delivery| delivery.due(now))
            .collect();
        due.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|delivery| {
                delivery.claimed_until = Some(until);
                delivery.clone()
            })
            .collect())
    }

    async fn update_delivery(&self, expected: &StoredDelivery, delivery: &StoredDelivery) -> Result<bool> {
        let mut state = self.state();
        let Some(stored) = state
            .deliveries
            .get_mut(&delivery.id)
            .filter(|stored| **stored == *expected)
        else {
            return Ok(false);
        };
        *stored = delivery.clone();
        Ok(true)
    }

    async fn delivery(&self, id: &str) -> Result<Option<StoredDelivery>> {
        Ok(self.state().deliveries.get(id).cloned())
    }

    async fn deliveries(&self, webhook: &str, before: Option<&str>, limit: usize) -> Result<Vec<StoredDelivery>> {
        let state = self.state();
        Ok(state
            .deliveries
            .values()
            .rev()
            .filter(|delivery| delivery.webhook == webhook && before.is_none_or(|before| delivery.id.as_str() < before))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn delete_deliveries_before(&self, before: OffsetDateTime) -> Result<usize> {
        let mut state = self.state();
        let count = state.deliveries.len();
        state
            .deliveries
            .retain(|_, delivery| delivery.state == DeliveryState::Pending || delivery.created_at >= before);
        Ok(count - state.deliveries.len())
    }
}
