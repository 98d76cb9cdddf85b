//! Accounts ready to make requests, each compiled once and reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use integration_core::definition::{Auth, Integration};
use integration_core::{AccountId, AccountStore, ConnectedAccount, Definitions, Error, ErrorKind, Result};
use integration_http::{AccountClient, Authenticator, HttpClient};

/// Definitions, accounts and one shared HTTP client: the entry point for
/// making requests through connected accounts.
///
/// `account` reads an account from storage once, compiles its request
/// settings and builds its auth method, then hands out the same client
/// until the account is changed through [`Integrations::forget`] or
/// [`Integrations::remove_account`].
#[derive(Debug)]
pub struct Integrations {
    definitions: Arc<Definitions>,
    store: AccountStore,
    http: HttpClient,
    clients: Mutex<HashMap<AccountId, AccountClient>>,
}

impl Integrations {
    /// Accounts in `store`, of the integrations in `definitions`.
    pub fn new(definitions: Definitions, store: AccountStore) -> Result<Self> {
        Ok(Self::with_http_client(definitions, store, HttpClient::new()?))
    }

    /// The same, with an HTTP client of your own.
    pub fn with_http_client(definitions: Definitions, store: AccountStore, http: HttpClient) -> Self {
        Self {
            definitions: Arc::new(definitions),
            store,
            http,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The definitions.
    pub fn definitions(&self) -> &Definitions {
        &self.definitions
    }

    /// The account store.
    pub fn store(&self) -> &AccountStore {
        &self.store
    }

    /// The integration with `key`.
    pub fn integration(&self, key: &str) -> Result<&Arc<Integration>> {
        self.definitions.get(key).ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "no such integration in the definitions").with_context("integration", key)
        })
    }

    /// The account `id`, ready for [`AccountClient::request`].
    pub async fn account(&self, id: &AccountId) -> Result<AccountClient> {
        if let Some(client) = self.cached(id) {
            return Ok(client);
        }
        let account = self.store.get(id).await?;
        let client = self.compile(&account)?;
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another task may have compiled it meanwhile: keep one, so that its
        // token cache is shared.
        Ok(clients.entry(id.clone()).or_insert(client).clone())
    }

    /// Drops the compiled account, so the next `account` call reads it
    /// again. Call it after changing an account behind this value's back.
    pub fn forget(&self, id: &AccountId) {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
    }

    /// Deletes an account; returns whether it existed.
    pub async fn remove_account(&self, id: &AccountId) -> Result<bool> {
        self.forget(id);
        self.store.remove(id).await
    }

    fn cached(&self, id: &AccountId) -> Option<AccountClient> {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
    }

    fn compile(&self, account: &ConnectedAccount) -> Result<AccountClient> {
        let integration = self
            .integration(account.integration())
            .map_err(|error| error.with_context("account", account.id()))?;
        let authenticator = self.authenticator(account, integration)?;
        AccountClient::new(account, integration, self.http.clone(), authenticator)
    }

    fn authenticator(&self, account: &ConnectedAccount, integration: &Integration) -> Result<Arc<dyn Authenticator>> {
        let unavailable = |message: String| {
            Error::new(ErrorKind::Config, message)
                .with_context("account", account.id())
                .with_context("integration", &integration.key)
        };
        let _ = &unavailable;
        match &integration.auth {
            #[cfg(feature = "auth-api-token")]
            Auth::ApiToken(_) => Ok(Arc::new(integration_auth_api_token::ApiTokenAuthenticator::new(
                account,
                integration,
            )?)),
            #[cfg(feature = "auth-basic")]
            Auth::Basic(_) => Ok(Arc::new(integration_auth_basic::BasicAuthenticator::new(
                account,
                integration,
            )?)),
            #[cfg(feature = "auth-custom-token")]
            Auth::CustomToken(_) => Ok(Arc::new(integration_auth_custom_token::CustomTokenAuthenticator::new(
                account,
                integration,
                self.store.clone(),
                self.http.clone(),
            )?)),
            Auth::Sftp(_) => Err(unavailable("SFTP accounts make no HTTP requests".to_owned())),
            #[allow(unreachable_patterns, reason = "reachable when an auth feature is off")]
            other => Err(unavailable(format!(
                "requests through {} accounts are not available in this build",
                other.type_name()
            ))),
        }
    }
}
