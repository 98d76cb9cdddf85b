#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use integration_core::storage::{
    AccountPage, AccountQuery, KeyStorage, PendingAuthorization, Storage, StoredAccount, StoredApiKey, Swap,
    page_of_sorted,
};
use integration_core::time::OffsetDateTime;
use integration_core::{AccountId, Error, ErrorKind, Result, async_trait};

/// Accounts, pending authorizations and API keys in memory, gone when the
/// process ends. For tests, and for services that keep accounts elsewhere.
#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    accounts: BTreeMap<AccountId, StoredAccount>,
    pending: BTreeMap<String, PendingAuthorization>,
    /// In creation order.
    keys: Vec<StoredApiKey>,
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
            .field("api_keys", &state.keys.len())
            .finish()
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn insert_account(&self, account: &StoredAccount) -> Result<()> {
        let mut state = self.state();
        if state.accounts.contains_key(&account.id) {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "account exists already").with_context("account", &account.id)
            );
        }
        state.accounts.insert(account.id.clone(), account.clone());
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

    async fn compare_and_swap_account(&self, expected_revision: u64, account: &StoredAccount) -> Result<Swap> {
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
        Ok(Swap::Swapped(stored.clone()))
    }

    async fn delete_account(&self, id: &AccountId) -> Result<bool> {
        Ok(self.state().accounts.remove(id).is_some())
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
