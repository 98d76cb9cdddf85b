//! The cache of compiled accounts: bounded, and dropped on the changes the
//! store hears from other processes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use integrations::definition::Format;
use integrations::events::{Event, EventId, OutboxBacklog};
use integrations::secrecy::SecretString;
use integrations::storage::memory::MemoryStorage;
use integrations::storage::{
    AccountPage, AccountQuery, ChangeListener, PendingAuthorization, Storage, StoreChange, StoredAccount, Swap,
};
use integrations::time::OffsetDateTime;
use integrations::{
    AccountId, AccountStore, Cipher, Definitions, EncryptionKey, Integrations, NewAccount, async_trait,
};

/// Memory, counting reads of one account, and a listener the test can call
/// as another process's change would.
#[derive(Default)]
struct Watched {
    inner: MemoryStorage,
    reads: AtomicUsize,
    listener: Mutex<Option<ChangeListener>>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

impl Watched {
    fn tell(&self, change: &StoreChange) {
        let listener = self.listener.lock().expect("lock").clone().expect("listening");
        listener(change);
    }
}

#[async_trait]
impl Storage for Watched {
    async fn insert_account(&self, account: &StoredAccount, events: &[Event]) -> integrations::Result<()> {
        self.inner.insert_account(account, events).await
    }
    async fn account(&self, id: &AccountId) -> integrations::Result<Option<StoredAccount>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.account(id).await
    }
    async fn accounts(&self) -> integrations::Result<Vec<integrations::Result<StoredAccount>>> {
        self.inner.accounts().await
    }
    async fn accounts_page(&self, query: &AccountQuery) -> integrations::Result<AccountPage> {
        self.inner.accounts_page(query).await
    }
    async fn compare_and_swap_account(
        &self,
        expected: u64,
        account: &StoredAccount,
        events: &[Event],
    ) -> integrations::Result<Swap> {
        self.inner.compare_and_swap_account(expected, account, events).await
    }
    async fn delete_account(&self, id: &AccountId, events: &[Event]) -> integrations::Result<bool> {
        self.inner.delete_account(id, events).await
    }
    async fn claim_events(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> integrations::Result<Vec<Event>> {
        self.inner.claim_events(now, until, limit).await
    }
    async fn complete_event(&self, id: &EventId) -> integrations::Result<bool> {
        self.inner.complete_event(id).await
    }
    async fn outbox_backlog(&self) -> integrations::Result<OutboxBacklog> {
        self.inner.outbox_backlog().await
    }
    async fn insert_pending_authorization(&self, pending: &PendingAuthorization) -> integrations::Result<()> {
        self.inner.insert_pending_authorization(pending).await
    }
    async fn take_pending_authorization(&self, state: &str) -> integrations::Result<Option<PendingAuthorization>> {
        self.inner.take_pending_authorization(state).await
    }
    async fn delete_expired_pending_authorizations(&self, now: OffsetDateTime) -> integrations::Result<usize> {
        self.inner.delete_expired_pending_authorizations(now).await
    }
    fn listen(&self, listener: ChangeListener) {
        *self.listener.lock().expect("lock") = Some(listener);
    }
}

async fn with_accounts(ids: &[&str]) -> (Integrations, Arc<Watched>) {
    integrations::register_methods();
    let definitions = Definitions::from_str(
        r#"
        [[integration]]
        key = "echo"
        name = "Echo"
        base_url = "https://echo.example"
        [integration.auth]
        type = "api_token"
        token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
        "#,
        Format::Toml,
    )
    .expect("valid");
    let storage = Arc::new(Watched::default());
    let store = AccountStore::new(storage.clone(), Cipher::new(&EncryptionKey::generate()));
    let integrations = Integrations::new(definitions, store).expect("integrations");
    for id in ids {
        integrations
            .create_account(
                integrations.integration("echo").expect("echo"),
                NewAccount {
                    id: AccountId::new(*id).expect("id"),
                    parameters: Default::default(),
                    credentials: [("token", SecretString::from("t"))].into_iter().collect(),
                },
            )
            .await
            .expect("create");
    }
    storage.reads.store(0, Ordering::SeqCst);
    (integrations, storage)
}

fn id(id: &str) -> AccountId {
    AccountId::new(id).expect("id")
}

#[tokio::test(flavor = "current_thread")]
async fn compiled_accounts_are_bounded_least_recently_used_first() {
    let (integrations, storage) = with_accounts(&["a", "b", "c"]).await;
    let integrations = integrations.with_compiled_accounts(std::num::NonZeroUsize::new(2).expect("two"));
    for account in ["a", "b", "c"] {
        integrations.client(&id(account)).await.expect("client");
    }
    assert_eq!(storage.reads.load(Ordering::SeqCst), 3);
    integrations.client(&id("c")).await.expect("client");
    integrations.client(&id("b")).await.expect("client");
    assert_eq!(storage.reads.load(Ordering::SeqCst), 3, "b and c are kept");
    integrations.client(&id("a")).await.expect("client");
    assert_eq!(
        storage.reads.load(Ordering::SeqCst),
        4,
        "a went first, and is read again"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn changes_heard_from_the_store_drop_what_was_compiled() {
    let (integrations, storage) = with_accounts(&["a", "b"]).await;
    for account in ["a", "b"] {
        integrations.client(&id(account)).await.expect("client");
    }
    assert_eq!(storage.reads.load(Ordering::SeqCst), 2);

    // Another gateway changed `a`: only `a` is read again.
    storage.tell(&StoreChange::Account(id("a")));
    integrations.client(&id("a")).await.expect("client");
    integrations.client(&id("b")).await.expect("client");
    assert_eq!(storage.reads.load(Ordering::SeqCst), 3);

    // Changes may have been missed: everything is read again.
    storage.tell(&StoreChange::Unknown);
    integrations.client(&id("a")).await.expect("client");
    integrations.client(&id("b")).await.expect("client");
    assert_eq!(storage.reads.load(Ordering::SeqCst), 5);

    // Removed elsewhere: not served once heard.
    storage.inner.delete_account(&id("b"), &[]).await.expect("delete");
    storage.tell(&StoreChange::Account(id("b")));
    let error = integrations.client(&id("b")).await.expect_err("removed");
    assert_eq!(error.kind(), integrations::ErrorKind::NotFound);

    // Dropped with the last handle: the listener outlives it harmlessly.
    drop(integrations);
    storage.tell(&StoreChange::Unknown);
}
