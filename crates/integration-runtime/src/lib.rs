#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod check;
#[cfg(feature = "http")]
pub mod events;
#[cfg(feature = "auth-oauth2")]
pub mod scheduler;

#[cfg(feature = "http")]
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[cfg(any(feature = "http", feature = "sftp"))]
use integration_core::ErrorKind;
use integration_core::definition::Integration;
use integration_core::method::{self, AccountContext, Services};
use integration_core::{
    AccountId, AccountStore, ConnectedAccount, Definitions, Error, NewAccount, Result, Secrets, StoreChange, secrecy,
};
#[cfg(feature = "http")]
use integration_http::{AccountClient, HttpClient};
#[cfg(feature = "http")]
use rustc_hash::FxHashMap;
#[cfg(feature = "http")]
use thread_local::ThreadLocal;

pub use check::CredentialCheck;

/// The most accounts a thread keeps copies of; past it, its copies are
/// dropped and made again as they are used.
#[cfg(feature = "http")]
const THREAD_CACHE: usize = 4096;

/// How many compiled accounts are kept, unless
/// [`Integrations::with_compiled_accounts`] says otherwise.
#[cfg(feature = "http")]
pub const DEFAULT_COMPILED_ACCOUNTS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(10_000).unwrap();

/// Registers the auth methods of this build, one per enabled feature, with
/// [`method::register`]; the methods left out are recorded with the
/// feature of the `integrations` crate that brings them, for the error a
/// definition using one gets. Idempotent. [`Integrations::new`] calls it;
/// call it yourself before loading definitions without one.
pub fn register_methods() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        macro_rules! method {
            ($feature:literal, $name:literal, $table:ty) => {
                #[cfg(feature = $feature)]
                method::register::<$table>();
                #[cfg(not(feature = $feature))]
                method::register_unavailable(
                    $name,
                    concat!("enable the `", $feature, "` feature of the `integrations` crate"),
                );
            };
        }
        method!("auth-oauth2", "oauth2", integration_auth_oauth2::OAuth2);
        method!("auth-api-token", "api_token", integration_auth_api_token::ApiToken);
        method!("auth-basic", "basic", integration_auth_basic::Basic);
        method!(
            "auth-custom-token",
            "custom_token",
            integration_auth_custom_token::CustomToken
        );
        method!("auth-jwt", "jwt", integration_auth_jwt::Jwt);
        method!("sftp", "sftp", integration_sftp::Sftp);
        #[cfg(feature = "catalog")]
        integration_core::definition::register_catalog(integration_core::definition::CatalogResolver {
            resolve: integration_catalog::resolve,
            keys: integration_catalog::keys,
        });
    });
}

/// What removing an account did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Removal {
    /// Whether the account existed.
    pub existed: bool,
    /// The OAuth 2.0 tokens the provider revoked, refresh token first.
    pub revoked: Vec<&'static str>,
    /// Revocation failures, reported without blocking the removal.
    pub revoke_failures: Vec<Error>,
}

/// Definitions, accounts and one shared HTTP client: the entry point for
/// making requests through connected accounts.
///
/// `account` reads an account from storage once, compiles its request
/// settings and builds its auth method, then hands out the same client
/// until the account is changed. Each thread keeps its own copies
/// ([`AccountClient::detached`]), so threads making requests through the
/// same account share no lock and no reference count.
///
/// Cloning is cheap: clones share the definitions, the store, the HTTP
/// client and every cache, as `Arc<Integrations>` would.
///
/// # Behavior
///
/// The cache of compiled accounts:
///
/// - holds at most [`with_compiled_accounts`](Self::with_compiled_accounts)
///   accounts ([`DEFAULT_COMPILED_ACCOUNTS`]), the least recently used
///   going first, and each thread at most as many copies (4096 at most):
///   memory is bounded whatever the number of accounts;
/// - drops an account changed or removed through this value
///   ([`forget`](Self::forget), [`remove_account`](Self::remove_account))
///   before the call returns;
/// - drops an account another process changes or removes (another gateway
///   on the same database) as soon as the store tells
///   ([`Storage::listen`](integration_core::Storage::listen): within a
///   second; PostgreSQL tells at once, by `LISTEN`/`NOTIFY`);
/// - drops every account whenever the store says changes may have been
///   missed (its channel dropped), and keeps doing so while the channel is
///   down: each use then reads the record, its revision with it, from the
///   store, and a store that cannot be reached is an error rather than a
///   stale copy served. A removed account is never served from the cache
///   once its removal is heard.
#[derive(Debug, Clone)]
pub struct Integrations {
    definitions: Arc<Definitions>,
    store: AccountStore,
    #[cfg(feature = "http")]
    http: HttpClient,
    /// The HTTP clients of integrations with a `ca_bundle`, made when first
    /// used: their connections trust the bundle, others' do not.
    #[cfg(feature = "http")]
    bundled: Arc<Mutex<HashMap<String, HttpClient>>>,
    clients: Arc<Mutex<SharedClients>>,
    /// Moves on whenever an account leaves `clients`: threads drop copies
    /// made before, and a compilation that began before is not kept.
    generation: Arc<AtomicU64>,
    #[cfg(feature = "http")]
    per_thread: Arc<ThreadLocal<RefCell<ThreadClients>>>,
    /// The most copies each thread keeps: [`THREAD_CACHE`], or fewer when
    /// fewer accounts are kept compiled.
    #[cfg(feature = "http")]
    thread_cache: usize,
    #[cfg(feature = "sftp")]
    sftp: Arc<sftp::SftpClients>,
}

impl Integrations {
    /// Accounts in `store`, of the integrations in `definitions`.
    pub fn new(definitions: Definitions, store: AccountStore) -> Result<Self> {
        #[cfg(feature = "http")]
        return Ok(Self::with_http_client(definitions, store, HttpClient::new()?));
        #[cfg(not(feature = "http"))]
        return Ok(Self::build(definitions, store));
    }

    /// The same, with an HTTP client of your own.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn with_http_client(definitions: Definitions, store: AccountStore, http: HttpClient) -> Self {
        Self::build(definitions, store, http)
    }

    fn build(definitions: Definitions, store: AccountStore, #[cfg(feature = "http")] http: HttpClient) -> Self {
        register_methods();
        let integrations = Self {
            definitions: Arc::new(definitions),
            store,
            #[cfg(feature = "http")]
            http,
            #[cfg(feature = "http")]
            bundled: Arc::default(),
            clients: Arc::default(),
            generation: Arc::default(),
            #[cfg(feature = "http")]
            per_thread: Arc::default(),
            #[cfg(feature = "http")]
            thread_cache: THREAD_CACHE.min(DEFAULT_COMPILED_ACCOUNTS.get()),
            #[cfg(feature = "sftp")]
            sftp: Arc::default(),
        };
        integrations.listen_to_the_store();
        integrations
    }

    /// Keeps at most `capacity` compiled accounts (each with its token
    /// cache and connection settings), the least recently used going
    /// first: [`DEFAULT_COMPILED_ACCOUNTS`] unless told.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn with_compiled_accounts(mut self, capacity: std::num::NonZeroUsize) -> Self {
        self.lock_clients().compiled.resize(capacity);
        self.thread_cache = THREAD_CACHE.min(capacity.get());
        self
    }

    /// The definitions.
    pub fn definitions(&self) -> &Definitions {
        &self.definitions
    }

    /// The account store.
    pub fn store(&self) -> &AccountStore {
        &self.store
    }

    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    /// Hands every event of the store's outbox to `handler`, at least once,
    /// on the current tokio runtime, until the handle is dropped (see
    /// [`EventRelay`](events::EventRelay) for the guarantees).
    ///
    /// ```no_run
    /// # async fn run(integrations: integration_runtime::Integrations) {
    /// let _relay = integrations.on_event(|event: integration_core::Event| async move {
    ///     println!("{} {}", event.kind, event.data.account);
    ///     Ok(())
    /// });
    /// # }
    /// ```
    pub fn on_event(&self, handler: impl events::EventHandler) -> events::RelayHandle {
        events::EventRelay::new(Arc::clone(self.store.storage()), events::RelaySettings::default()).spawn(handler)
    }

    /// The integration with `key`, or a `NotFound` error naming it, as
    /// [`Definitions::integration`] gives it.
    pub fn integration(&self, key: &str) -> Result<&Arc<Integration>> {
        self.definitions.integration(key)
    }

    /// The client of the account `id`: renamed [`client`](Self::client).
    #[cfg(feature = "http")]
    #[deprecated(
        since = "0.1.1",
        note = "renamed `client`: it returns an `AccountClient`, where `AccountStore::get` returns the account"
    )]
    pub async fn account(&self, id: &AccountId) -> Result<AccountClient> {
        self.client(id).await
    }

    /// Creates an account of `integration`: checks it as
    /// [`AccountStore::create`] does, then runs its auth method's own checks
    /// (SFTP reads the private key and host keys, so that a key that cannot
    /// be used is refused now rather than at the first connection).
    pub async fn create_account(&self, integration: &Integration, new: NewAccount) -> Result<ConnectedAccount> {
        // Checked whole before it is stored: a refused account is never
        // created, nor announced.
        let account = AccountStore::prepare(integration, new)?;
        let services = self.services(integration)?;
        let context = self.context(&account, integration, &services);
        integration.auth.check_account(&context).await?;
        self.store.insert(&account).await?;
        // A re-created id never sees what was compiled for the old account.
        self.forget(account.id());
        Ok(account)
    }

    /// Replaces the credentials of account `id` with ones someone gave (a
    /// new API token, password or private key), checked as they would be
    /// for a new account with its parameters; its status follows from them
    /// and an `account.credentials_updated` event is written. OAuth 2.0
    /// accounts are refused: their tokens come from the provider (connect
    /// them again).
    pub async fn replace_credentials(&self, id: &AccountId, credentials: Secrets) -> Result<ConnectedAccount> {
        let mut account = self.store.get(id).await?;
        let integration = self.integration(account.integration())?;
        if integration.auth.type_name() == "oauth2" {
            return Err(Error::new(
                integration_core::ErrorKind::InvalidInput,
                "OAuth 2.0 credentials come from the provider: connect the account again",
            )
            .with_context("account", id));
        }
        for _ in 0..5 {
            let mut parameters = account.secret_parameters().clone();
            for (name, value) in account.parameters() {
                parameters.insert(name, secrecy::SecretString::from(value.clone()));
            }
            let checked = AccountStore::prepare(
                integration,
                NewAccount {
                    id: id.clone(),
                    parameters,
                    credentials: credentials.clone(),
                },
            )?;
            let services = self.services(integration)?;
            integration
                .auth
                .check_account(&self.context(&checked, integration, &services))
                .await?;
            match self
                .store
                .replace_credentials(&account, credentials.clone(), checked.status())
                .await?
            {
                integration_core::Update::Updated(updated) => {
                    self.forget(id);
                    return Ok(updated);
                }
                integration_core::Update::Conflict(current) => account = current,
            }
        }
        Err(Error::new(
            integration_core::ErrorKind::Conflict,
            "the account kept changing while its credentials were replaced",
        )
        .with_context("account", id))
    }

    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    /// The client of the account `id`, ready for [`AccountClient::request`]
    /// (where [`AccountStore::get`] gives the account's record).
    ///
    /// An account being removed ([`Integrations::remove_account`]) is not
    /// found from the moment its removal starts.
    pub async fn client(&self, id: &AccountId) -> Result<AccountClient> {
        loop {
            // Read before the shared map and the store: a client made from
            // what they held is then tagged with a generation that a later
            // `forget` has moved past.
            let generation = self.generation.load(Ordering::Acquire);
            if let Some(client) = self.per_thread.get_or_default().borrow_mut().get(id, generation) {
                return Ok(client);
            }
            let Some(shared) = self.shared_client(id, generation).await? else {
                // Forgotten while it was being read: read it again.
                continue;
            };
            let client = shared.detached();
            // This thread's, which after an await may not be the one above.
            self.per_thread
                .get_or_default()
                .borrow_mut()
                .insert(id, client.clone(), generation, self.thread_cache);
            return Ok(client);
        }
    }

    /// The shared compiled account, read and compiled if need be; `None`
    /// when an account was forgotten since `generation` was read, since what
    /// was read may then be what the change replaced.
    #[cfg(feature = "http")]
    async fn shared_client(&self, id: &AccountId, generation: u64) -> Result<Option<AccountClient>> {
        {
            let mut clients = self.lock_clients();
            if clients.removing.contains_key(id) {
                return Err(being_removed(id));
            }
            if let Some(client) = clients.compiled.get(id) {
                return Ok(Some(client.clone()));
            }
        }
        // Boxed: the store's read is the rare path, and its future would
        // make every caller's future (and each copy of it) larger.
        let account = Box::pin(self.store.get(id)).await?;
        let client = self.compile(&account)?;
        let mut clients = self.lock_clients();
        // `forget` moves the generation on while holding this lock.
        if self.generation.load(Ordering::Acquire) != generation {
            return Ok(None);
        }
        // Another task may have compiled it meanwhile: keep one, so that its
        // token cache is shared.
        Ok(Some(clients.compiled.get_or_insert(id.clone(), || client).clone()))
    }

    /// Drops the compiled account, so the next `account` call reads it
    /// again. Call it after changing an account behind this value's back.
    pub fn forget(&self, id: &AccountId) {
        self.caches().forget(Some(id));
    }

    fn caches(&self) -> Caches<'_> {
        Caches {
            clients: &self.clients,
            generation: &self.generation,
            #[cfg(feature = "sftp")]
            sftp: &self.sftp,
        }
    }

    /// Forgets what other processes sharing the store change (see
    /// [`Storage::listen`](integration_core::Storage::listen)), for as long
    /// as this value lives.
    fn listen_to_the_store(&self) {
        let clients = Arc::downgrade(&self.clients);
        let generation = Arc::downgrade(&self.generation);
        #[cfg(feature = "sftp")]
        let sftp = Arc::downgrade(&self.sftp);
        self.store.storage().listen(Arc::new(move |change: &StoreChange| {
            let (Some(clients), Some(generation)) = (clients.upgrade(), generation.upgrade()) else {
                return;
            };
            #[cfg(feature = "sftp")]
            let Some(sftp) = sftp.upgrade() else { return };
            let caches = Caches {
                clients: &clients,
                generation: &generation,
                #[cfg(feature = "sftp")]
                sftp: &sftp,
            };
            match change {
                StoreChange::Account(id) => caches.forget(Some(id)),
                _ => caches.forget(None),
            }
        }));
    }

    /// Deletes an account. Its auth method revokes what the provider issued
    /// first (OAuth 2.0 tokens, where the integration has a revoke
    /// endpoint); a provider failure is reported in the outcome and does not
    /// block the removal.
    ///
    /// From the moment it starts, [`Integrations::client`] no longer finds
    /// the account, so no request starts with its credentials while the
    /// tokens are revoked; once it returns, no copy of the old account is
    /// left on any thread.
    pub async fn remove_account(&self, id: &AccountId) -> Result<Removal> {
        let _removing = Removing::start(self, id);
        self.remove_account_now(id).await
    }

    async fn remove_account_now(&self, id: &AccountId) -> Result<Removal> {
        let mut removal = Removal::default();
        if let Ok(account) = self.store.get(id).await
            && let Ok(integration) = self.integration(account.integration())
        {
            let services = self.services(integration)?;
            let revocation = integration
                .auth
                .revoke(&self.context(&account, integration, &services))
                .await;
            removal.revoked = revocation.revoked;
            removal.revoke_failures = revocation.failures;
        }
        removal.existed = self.store.remove(id).await?;
        Ok(removal)
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, SharedClients> {
        self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The HTTP client of `integration`'s calls: the shared one, or one that
    /// also trusts its `ca_bundle`.
    #[cfg(feature = "http")]
    fn http_for(&self, integration: &Integration) -> Result<HttpClient> {
        let Some(bundle) = &integration.ca_bundle else {
            return Ok(self.http.clone());
        };
        let mut bundled = self.bundled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = bundled.get(&integration.key) {
            return Ok(client.clone());
        }
        let source = format!("integration `{}` ca_bundle", integration.key);
        let client = self.http.with_ca_bundle(bundle, &source)?;
        bundled.insert(integration.key.clone(), client.clone());
        Ok(client)
    }

    /// What auth methods may use for `integration`'s accounts: its HTTP client.
    fn services(&self, integration: &Integration) -> Result<Services> {
        #[allow(unused_mut, reason = "HTTP is the only service so far")]
        let mut services = Services::new();
        #[cfg(feature = "http")]
        services.insert(self.http_for(integration)?);
        #[cfg(not(feature = "http"))]
        let _ = integration;
        Ok(services)
    }

    fn context<'a>(
        &'a self,
        account: &'a ConnectedAccount,
        integration: &'a Integration,
        services: &'a Services,
    ) -> AccountContext<'a> {
        AccountContext {
            account,
            integration,
            store: &self.store,
            services,
        }
    }

    #[cfg(feature = "http")]
    fn compile(&self, account: &ConnectedAccount) -> Result<AccountClient> {
        let integration = self
            .integration(account.integration())
            .map_err(|error| error.with_context("account", account.id()))?;
        let services = self.services(integration)?;
        let authenticator = integration
            .auth
            .authenticator(&self.context(account, integration, &services))?;
        AccountClient::new(account, integration, self.http_for(integration)?, authenticator)
    }
}

/// The caches of compiled accounts, as one value to forget from.
struct Caches<'a> {
    clients: &'a Mutex<SharedClients>,
    generation: &'a AtomicU64,
    #[cfg(feature = "sftp")]
    sftp: &'a sftp::SftpClients,
}

impl Caches<'_> {
    /// Drops what is compiled of account `id`, or of every account.
    fn forget(&self, id: Option<&AccountId>) {
        #[cfg_attr(not(feature = "http"), allow(unused_mut))]
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        #[cfg(feature = "http")]
        match id {
            Some(id) => drop(clients.compiled.pop(id)),
            None => clients.compiled.clear(),
        }
        // Under the lock, so that a compilation begun before this cannot be
        // stored after it; per-thread copies go with the generation.
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(clients);
        #[cfg(feature = "sftp")]
        self.sftp.forget(id);
        #[cfg(not(feature = "sftp"))]
        let _ = id;
    }
}

/// The compiled accounts all threads share, and the ids being removed.
#[derive(Debug)]
struct SharedClients {
    /// The most recently used ones: memory stays bounded however many
    /// accounts there are.
    #[cfg(feature = "http")]
    compiled: lru::LruCache<AccountId, AccountClient>,
    /// How many removals of each id are in flight.
    removing: HashMap<AccountId, usize>,
}

impl Default for SharedClients {
    fn default() -> Self {
        Self {
            #[cfg(feature = "http")]
            compiled: lru::LruCache::new(DEFAULT_COMPILED_ACCOUNTS),
            removing: HashMap::new(),
        }
    }
}

#[cfg(any(feature = "http", feature = "sftp"))]
fn being_removed(id: &AccountId) -> Error {
    Error::new(ErrorKind::NotFound, "the account is being removed").with_context("account", id)
}

/// An id marked as being removed, and forgotten, for as long as it lives:
/// when the removal starts and again when it ends, however it ends.
struct Removing<'a> {
    integrations: &'a Integrations,
    id: &'a AccountId,
}

impl<'a> Removing<'a> {
    fn start(integrations: &'a Integrations, id: &'a AccountId) -> Self {
        *integrations.lock_clients().removing.entry(id.clone()).or_default() += 1;
        integrations.forget(id);
        Self { integrations, id }
    }
}

impl Drop for Removing<'_> {
    fn drop(&mut self) {
        // Forgotten before the mark goes, so that no request compiles the
        // account between the two.
        self.integrations.forget(self.id);
        let mut clients = self.integrations.lock_clients();
        if let Some(count) = clients.removing.get_mut(self.id) {
            *count -= 1;
            if *count == 0 {
                clients.removing.remove(self.id);
            }
        }
    }
}

/// One thread's copies of compiled accounts, and the generation of the
/// shared map they were made from.
#[cfg(feature = "http")]
#[derive(Debug, Default)]
struct ThreadClients {
    generation: u64,
    /// FxHash: only accounts that exist are in it, so a caller picking ids
    /// cannot fill it with colliding keys.
    clients: FxHashMap<AccountId, AccountClient>,
}

#[cfg(feature = "http")]
impl ThreadClients {
    fn get(&mut self, id: &AccountId, generation: u64) -> Option<AccountClient> {
        if self.generation != generation {
            self.clients.clear();
            self.generation = generation;
            return None;
        }
        self.clients.get(id).cloned()
    }

    fn insert(&mut self, id: &AccountId, client: AccountClient, generation: u64, limit: usize) {
        if self.generation != generation {
            return;
        }
        if self.clients.len() >= limit {
            self.clients.clear();
        }
        self.clients.insert(id.clone(), client);
    }
}

#[cfg(feature = "sftp")]
mod sftp {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use integration_core::{AccountId, Error, ErrorKind, Result};
    use integration_sftp::{Sftp, SftpClient};

    use super::Integrations;

    /// One client, hence one connection, per SFTP account.
    #[derive(Debug, Default)]
    pub(super) struct SftpClients(Mutex<HashMap<AccountId, SftpClient>>);

    impl SftpClients {
        /// Drops the client of account `id`, or every client.
        pub(super) fn forget(&self, id: Option<&AccountId>) {
            let mut clients = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match id {
                Some(id) => drop(clients.remove(id)),
                None => clients.clear(),
            }
        }
    }

    impl Integrations {
        /// What an SFTP client of account `id` calls when the server refuses
        /// its login or host key: the account is marked `needs_reauth` (an
        /// `account.needs_reauth` event) and its client dropped.
        fn mark_refused(&self, id: &AccountId) -> integration_sftp::RefusalHook {
            let store = self.store.clone();
            let clients = Arc::downgrade(&self.sftp);
            let id = id.clone();
            Arc::new(move |error: &Error| {
                let (store, clients, id) = (store.clone(), clients.clone(), id.clone());
                let reason = error.to_string();
                // Every host key refusal says "host key"; the rest are logins.
                let code = if reason.contains("host key") {
                    "host_key_refused"
                } else {
                    "login_refused"
                };
                tokio::spawn(async move {
                    for _ in 0..5 {
                        let Ok(account) = store.get(&id).await else { return };
                        if account.status() == integration_core::AccountStatus::NeedsReauth {
                            break;
                        }
                        let mut health = account.health().clone();
                        health.failed(code, integration_core::time::OffsetDateTime::now_utc());
                        match store
                            .update_account(
                                &account,
                                account.credentials().clone(),
                                integration_core::AccountStatus::NeedsReauth,
                                Some(reason.clone()),
                                health,
                            )
                            .await
                        {
                            Ok(integration_core::Update::Updated(_)) => {
                                tracing::warn!(account = %id, reason, "the SFTP server refused the account: it needs new credentials");
                                break;
                            }
                            Ok(integration_core::Update::Conflict(_)) => continue,
                            Err(error) => {
                                tracing::warn!(account = %id, %error, "cannot mark the account needs_reauth");
                                return;
                            }
                        }
                    }
                    if let Some(clients) = clients.upgrade() {
                        clients.forget(Some(&id));
                    }
                });
            })
        }

        /// The SFTP client of account `id` (of an `sftp` integration): made
        /// once, then shared, so that calls reuse its connection.
        pub async fn sftp(&self, id: &AccountId) -> Result<SftpClient> {
            if let Some(client) = self
                .sftp
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(id)
            {
                return Ok(client.clone());
            }
            if self.lock_clients().removing.contains_key(id) {
                return Err(super::being_removed(id));
            }
            let account = self.store.get(id).await?;
            let integration = self.integration(account.integration())?;
            if account.status() == integration_core::AccountStatus::NeedsReauth {
                let reason = account.status_reason().unwrap_or("its login was refused");
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("the account needs new credentials: {reason}"),
                )
                .with_context("account", id));
            }
            if !integration.auth.is::<Sftp>() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("not an SFTP account: its integration uses {}", integration.auth_type()),
                )
                .with_context("account", id)
                .with_context("integration", &integration.key));
            }
            let client = integration_sftp::client(Arc::clone(integration), account)
                .await?
                .on_refused(self.mark_refused(id));
            let mut clients = self.sftp.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Ok(clients.entry(id.clone()).or_insert(client).clone())
        }
    }
}

#[cfg(feature = "auth-oauth2")]
mod oauth2 {
    use integration_auth_oauth2::{
        AuthorizationStart, Callback, OAuth2, OAuth2Authenticator, OAuth2Client, RedirectUri, Revocation,
        VerifiedCallback,
    };
    use integration_core::definition::Integration;
    use integration_core::{AccountId, ConnectedAccount, Error, ErrorKind, Result};

    use super::Integrations;

    impl Integrations {
        pub(super) fn oauth2_client(
            &self,
            account: &ConnectedAccount,
            integration: &Integration,
        ) -> Result<OAuth2Client> {
            OAuth2Client::new(account, integration, self.store.clone(), self.http_for(integration)?)
        }

        async fn oauth2_account(&self, id: &AccountId) -> Result<(ConnectedAccount, OAuth2Client)> {
            let account = self.store.get(id).await?;
            let integration = self.integration(account.integration())?;
            if !integration.auth.is::<OAuth2>() {
                return Err(Error::new(ErrorKind::InvalidInput, "not an OAuth 2.0 account")
                    .with_context("account", id)
                    .with_context("integration", &integration.key));
            }
            let client = self.oauth2_client(&account, integration)?;
            Ok((account, client))
        }

        /// Starts connecting an OAuth 2.0 account: the URL to send the user
        /// to. The provider sends them back to `redirect_uri`, whose query
        /// goes to [`Integrations::complete_authorization`].
        pub async fn start_authorization(
            &self,
            id: &AccountId,
            redirect_uri: &RedirectUri,
        ) -> Result<AuthorizationStart> {
            let (_, client) = self.oauth2_account(id).await?;
            client.start_authorization(redirect_uri).await
        }

        /// [`start_authorization`](Self::start_authorization), keeping `tag`
        /// with it (see [`OAuth2Client::start_tagged_authorization`]).
        pub async fn start_tagged_authorization(
            &self,
            id: &AccountId,
            redirect_uri: &RedirectUri,
            tag: &str,
        ) -> Result<AuthorizationStart> {
            let (_, client) = self.oauth2_account(id).await?;
            client.start_tagged_authorization(redirect_uri, Some(tag)).await
        }

        /// Completes an authorization from the callback's query: checks the
        /// state, exchanges the code and stores the tokens.
        pub async fn complete_authorization(&self, callback: &Callback) -> Result<ConnectedAccount> {
            let verified = integration_auth_oauth2::verify_callback(&self.store, callback).await?;
            self.complete_verified_authorization(verified).await
        }

        /// Completes an authorization whose callback
        /// [`verify_callback`](integration_auth_oauth2::verify_callback)
        /// checked: exchanges the code and stores the tokens.
        pub async fn complete_verified_authorization(&self, verified: VerifiedCallback) -> Result<ConnectedAccount> {
            let (_, client) = self.oauth2_account(verified.account()).await?;
            let id = verified.account().clone();
            let account = client.complete_authorization(verified).await?;
            self.forget(&id);
            Ok(account)
        }

        /// Gets new tokens for an OAuth 2.0 account now.
        pub async fn refresh(&self, id: &AccountId) -> Result<ConnectedAccount> {
            let (account, client) = self.oauth2_account(id).await?;
            let authenticator = OAuth2Authenticator::new(client, &account);
            let refreshed = authenticator.refresh().await;
            self.forget(id);
            refreshed
        }

        /// Revokes an OAuth 2.0 account's tokens and forgets them.
        pub async fn disconnect(&self, id: &AccountId) -> Result<Revocation> {
            let (_, client) = self.oauth2_account(id).await?;
            let revocation = client.disconnect().await;
            self.forget(id);
            revocation
        }
    }
}
