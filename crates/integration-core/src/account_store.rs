//! Accounts with their secrets encrypted on the way to storage and
//! decrypted on the way back.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::account::check_new_account;
use crate::crypto::{Cipher, SealedSecret};
use crate::definition::Integration;
use crate::events::{Event, EventType};
use crate::storage::{AccountQuery, StoredAccount, Swap};
use crate::{
    AccountHealth, AccountId, AccountStatus, ConnectedAccount, Error, ErrorKind, NewAccount, Result, Secrets, Storage,
};

/// Associated-data prefix of credentials.
const CREDENTIAL_FIELD: &str = "credential:";
/// Associated-data prefix of secret parameters.
const PARAMETER_FIELD: &str = "parameter:";

/// Connected accounts over any [`Storage`], with every secret sealed by a
/// [`Cipher`] before the backend sees it.
#[derive(Debug, Clone)]
pub struct AccountStore {
    storage: Arc<dyn Storage>,
    cipher: Arc<Cipher>,
    /// Whether changes write their events to the outbox.
    events: bool,
}

/// The outcome of [`AccountStore::update`].
#[derive(Debug, Clone)]
pub enum Update {
    /// Stored; this is the account now.
    Updated(ConnectedAccount),
    /// Someone else changed the account first; this is the account now, and
    /// nothing was written.
    Conflict(ConnectedAccount),
}

/// Every readable account (of a page, for [`AccountStore::page`]), and an
/// error for each one that is not.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct AccountList {
    /// Readable accounts, sorted by id.
    pub accounts: Vec<ConnectedAccount>,
    /// One error per unreadable record, naming its account.
    pub unreadable: Vec<Error>,
    /// Where the next page starts (its `after`), when this page is full.
    pub next: Option<AccountId>,
}

impl AccountStore {
    /// Accounts in `storage`, sealed with `cipher`.
    pub fn new(storage: Arc<dyn Storage>, cipher: Cipher) -> Self {
        Self {
            storage,
            cipher: Arc::new(cipher),
            events: true,
        }
    }

    /// Writes no events: for a store whose events nobody hands on (no
    /// gateway delivers webhooks from it, no `on_event` handler runs), so
    /// that its outbox does not grow for ever.
    pub fn without_events(mut self) -> Self {
        self.events = false;
        self
    }

    /// The events to write with a change: `events`, or none.
    fn outbox(&self, events: Vec<Event>) -> Vec<Event> {
        if self.events { events } else { Vec::new() }
    }

    /// The backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The cipher.
    pub fn cipher(&self) -> &Cipher {
        &self.cipher
    }

    /// Checks `new` against `integration` and stores it, with an
    /// `account.created` event.
    pub async fn create(&self, integration: &Integration, new: NewAccount) -> Result<ConnectedAccount> {
        let account = Self::prepare(integration, new)?;
        self.insert(&account).await?;
        Ok(account)
    }

    /// Checks `new` against `integration` and makes the account to store,
    /// without storing it (to check more before [`insert`](Self::insert)).
    pub fn prepare(integration: &Integration, new: NewAccount) -> Result<ConnectedAccount> {
        let (parameters, secret_parameters, status) = check_new_account(integration, &new)?;
        let now = OffsetDateTime::now_utc();
        Ok(ConnectedAccount {
            id: new.id,
            integration: integration.key.clone(),
            parameters,
            secret_parameters,
            credentials: new.credentials,
            status,
            status_reason: None,
            health: AccountHealth::default(),
            end_user: None,
            created_at: now,
            updated_at: now,
            revision: 1,
        })
    }

    /// Stores an account [`prepare`](Self::prepare) made, with an
    /// `account.created` event.
    pub async fn insert(&self, account: &ConnectedAccount) -> Result<()> {
        let created = Event::new(EventType::AccountCreated, &account.id, &account.integration);
        self.storage
            .insert_account(&self.seal(account), &self.outbox(vec![created]))
            .await
    }

    /// The account with `id`.
    pub async fn get(&self, id: &AccountId) -> Result<ConnectedAccount> {
        match self.storage.account(id).await? {
            Some(stored) => self.open(stored),
            None => Err(Error::new(ErrorKind::NotFound, "no such account").with_context("account", id)),
        }
    }

    /// Every account; one that cannot be read is reported in
    /// [`AccountList::unreadable`] and the others are still returned.
    pub async fn list(&self) -> Result<AccountList> {
        let mut list = AccountList::default();
        for entry in self.storage.accounts().await? {
            match entry.and_then(|stored| self.open(stored)) {
                Ok(account) => list.accounts.push(account),
                Err(error) => list.unreadable.push(error),
            }
        }
        Ok(list)
    }

    /// One page of the accounts `query` asks for, sorted by id (see
    /// [`Storage::accounts_page`]); follow [`AccountList::next`] for the
    /// next. Unreadable records are in [`AccountList::unreadable`].
    pub async fn page(&self, query: &AccountQuery) -> Result<AccountList> {
        let page = self.storage.accounts_page(query).await?;
        let mut list = AccountList {
            next: page.next,
            ..AccountList::default()
        };
        for entry in page.accounts {
            match entry.and_then(|stored| self.open(stored)) {
                Ok(account) => list.accounts.push(account),
                Err(error) => list.unreadable.push(error),
            }
        }
        Ok(list)
    }

    /// Deletes the account, with an `account.removed` event; returns
    /// whether it existed.
    pub async fn remove(&self, id: &AccountId) -> Result<bool> {
        // The event names the integration: read it from the record, which
        // need not be readable (its secrets are not opened).
        let Some(stored) = self.storage.account(id).await? else {
            return Ok(false);
        };
        let removed = Event::new(EventType::AccountRemoved, id, &stored.integration);
        self.storage.delete_account(id, &self.outbox(vec![removed])).await
    }

    /// Stores `account` as it is if the stored one is still at
    /// `account.revision()` (to seal it again with the active key). No
    /// event: nothing about the account changed.
    pub async fn update(&self, account: &ConnectedAccount) -> Result<Update> {
        self.swap(account, account.clone(), Vec::new()).await
    }

    /// Stores `next` in place of `before` if the stored one is still at
    /// `before.revision()`, with the events the change causes.
    async fn swap(&self, before: &ConnectedAccount, mut next: ConnectedAccount, events: Vec<Event>) -> Result<Update> {
        next.updated_at = OffsetDateTime::now_utc();
        next.revision = before.revision + 1;
        match self
            .storage
            .compare_and_swap_account(before.revision, &self.seal(&next), &self.outbox(events))
            .await?
        {
            Swap::Swapped(stored) => self.open(stored).map(Update::Updated),
            Swap::Conflict(stored) => self.open(stored).map(Update::Conflict),
        }
    }

    /// Seals every secret of account `id` again with the active key, if any
    /// was sealed with another key of the keyring, by compare-and-swap (a
    /// change made meanwhile is kept, and re-sealed in turn). Returns
    /// whether the record was re-sealed; a missing account is `false`.
    pub async fn rewrap(&self, id: &AccountId) -> Result<bool> {
        loop {
            let Some(stored) = self.storage.account(id).await? else {
                return Ok(false);
            };
            let active = Some(self.cipher.key_id());
            if stored.sealed_values().all(|sealed| sealed.key_id() == active) {
                return Ok(false);
            }
            let account = self.open(stored)?;
            match self.update(&account).await? {
                Update::Updated(_) => return Ok(true),
                Update::Conflict(_) => continue,
            }
        }
    }

    /// Replaces the credentials and status of `account` with a
    /// compare-and-swap on its revision (see [`update_account`](Self::update_account)
    /// for the events).
    pub async fn update_credentials(
        &self,
        account: &ConnectedAccount,
        credentials: Secrets,
        status: AccountStatus,
        status_reason: Option<String>,
    ) -> Result<Update> {
        self.update_account(account, credentials, status, status_reason, account.health.clone())
            .await
    }

    /// Replaces the credentials, status and health of `account` with a
    /// compare-and-swap on its revision, with the events the change
    /// causes: `account.needs_reauth` when it comes to need a new
    /// authorization, `account.connected` when it leaves `pending` or
    /// `needs_reauth` for `connected`, `account.refresh_failed` when a
    /// failure is counted, `account.recovered` when a connected account's
    /// failures end.
    pub async fn update_account(
        &self,
        account: &ConnectedAccount,
        credentials: Secrets,
        status: AccountStatus,
        status_reason: Option<String>,
        health: AccountHealth,
    ) -> Result<Update> {
        self.update_account_with_parameters(account, credentials, status, status_reason, health, &BTreeMap::new())
            .await
    }

    /// [`update_account`](Self::update_account), also setting the values
    /// of parameters the provider gave while the account connected
    /// ([`AuthDefinition::provided_parameters`](crate::method::AuthDefinition::provided_parameters)):
    /// plain parameters, not secret.
    pub async fn update_account_with_parameters(
        &self,
        account: &ConnectedAccount,
        credentials: Secrets,
        status: AccountStatus,
        status_reason: Option<String>,
        health: AccountHealth,
        provided: &BTreeMap<String, String>,
    ) -> Result<Update> {
        let mut next = account.clone();
        next.parameters
            .extend(provided.iter().map(|(name, value)| (name.clone(), value.clone())));
        next.credentials = credentials;
        next.status = status;
        next.status_reason = status_reason;
        next.health = health;
        let events = transition_events(account, &next);
        self.swap(account, next, events).await
    }

    /// Replaces the credentials someone gave `account` (a new API token, a
    /// new password) and sets its status, with an
    /// `account.credentials_updated` event; a failure count ends.
    pub async fn replace_credentials(
        &self,
        account: &ConnectedAccount,
        credentials: Secrets,
        status: AccountStatus,
    ) -> Result<Update> {
        let mut next = account.clone();
        next.credentials = credentials;
        next.status = status;
        next.status_reason = None;
        next.health.consecutive_failures = 0;
        let updated = Event::new(EventType::CredentialsUpdated, &account.id, &account.integration);
        self.swap(account, next, vec![updated]).await
    }

    /// Replaces the credentials of `account` with ones its end user gave
    /// through a connect session, sets its status and end user: an
    /// `account.credentials_updated` event, and `account.connected` when
    /// it becomes connected. Its parameters and history are kept.
    pub async fn reconnect(
        &self,
        account: &ConnectedAccount,
        credentials: Secrets,
        status: AccountStatus,
        end_user: Option<crate::account::EndUser>,
    ) -> Result<Update> {
        let mut next = account.clone();
        next.credentials = credentials;
        next.status = status;
        next.status_reason = None;
        next.health.consecutive_failures = 0;
        if end_user.is_some() {
            next.end_user = end_user;
        }
        let mut events = vec![Event::new(
            EventType::CredentialsUpdated,
            &account.id,
            &account.integration,
        )];
        events.extend(transition_events(account, &next));
        self.swap(account, next, events).await
    }

    /// Sets the end user of `account` (after an OAuth 2.0 reconnect), with
    /// no event.
    pub async fn set_end_user(&self, account: &ConnectedAccount, end_user: crate::account::EndUser) -> Result<Update> {
        let mut next = account.clone();
        next.end_user = Some(end_user);
        self.swap(account, next, Vec::new()).await
    }

    fn seal(&self, account: &ConnectedAccount) -> StoredAccount {
        let owner = account.id.as_str();
        let context = routing_context(&account.integration, &account.parameters);
        let seal_all = |prefix: &str, secrets: &Secrets| -> BTreeMap<String, SealedSecret> {
            secrets
                .iter()
                .map(|(name, value)| {
                    let field = format!("{prefix}{name}");
                    (
                        name.to_owned(),
                        self.cipher
                            .seal_in_context(owner, &field, &context, value.expose_secret().as_bytes()),
                    )
                })
                .collect()
        };
        StoredAccount {
            id: account.id.clone(),
            integration: account.integration.clone(),
            parameters: account.parameters.clone(),
            secret_parameters: seal_all(PARAMETER_FIELD, &account.secret_parameters),
            credentials: seal_all(CREDENTIAL_FIELD, &account.credentials),
            status: account.status,
            status_reason: account.status_reason.clone(),
            health: account.health.clone(),
            end_user: account.end_user.clone(),
            created_at: account.created_at,
            updated_at: account.updated_at,
            revision: account.revision,
        }
    }

    fn open(&self, stored: StoredAccount) -> Result<ConnectedAccount> {
        let owner = stored.id.as_str();
        let context = routing_context(&stored.integration, &stored.parameters);
        let open_all = |prefix: &str, kind: &str, sealed: &BTreeMap<String, SealedSecret>| -> Result<Secrets> {
            sealed
                .iter()
                .map(|(name, value)| {
                    let field = format!("{prefix}{name}");
                    let unreadable = |message: String| {
                        Error::new(ErrorKind::Unreadable, message).with_context("account", &stored.id)
                    };
                    let plaintext = self
                        .cipher
                        .open_in_context(owner, &field, &context, value)
                        .map_err(|error| unreadable(format!("cannot decrypt {kind} `{name}`: {error}")))?;
                    let text = String::from_utf8(plaintext.to_vec())
                        .map_err(|_| unreadable(format!("{kind} `{name}` is not valid UTF-8")))?;
                    Ok((name.clone(), SecretString::from(text)))
                })
                .collect()
        };
        let secret_parameters = open_all(PARAMETER_FIELD, "parameter", &stored.secret_parameters)?;
        let credentials = open_all(CREDENTIAL_FIELD, "credential", &stored.credentials)?;
        Ok(ConnectedAccount {
            id: stored.id,
            integration: stored.integration,
            parameters: stored.parameters,
            secret_parameters,
            credentials,
            status: stored.status,
            status_reason: stored.status_reason,
            health: stored.health,
            end_user: stored.end_user,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
            revision: stored.revision,
        })
    }
}

/// The events of the change from `before` to `after`.
fn transition_events(before: &ConnectedAccount, after: &ConnectedAccount) -> Vec<Event> {
    let event = |kind| Event::new(kind, &after.id, &after.integration);
    let failures = (before.health.consecutive_failures, after.health.consecutive_failures);
    if after.status == AccountStatus::NeedsReauth {
        return if before.status == AccountStatus::NeedsReauth {
            Vec::new()
        } else {
            // The code of the failure, never the status's sentence (which
            // may name a host or a path).
            let code = after.health.last_error.as_ref().map(|error| error.code.as_str());
            vec![event(EventType::NeedsReauth).with_reason(code)]
        };
    }
    let mut events = Vec::new();
    if after.status == AccountStatus::Connected && before.status != AccountStatus::Connected {
        events.push(event(EventType::AccountConnected));
    } else if failures.1 == 0 && failures.0 > 0 && after.status == AccountStatus::Connected {
        events.push(event(EventType::Recovered));
    }
    if failures.1 > failures.0 {
        let code = after.health.last_error.as_ref().map(|error| error.code.as_str());
        events.push(
            event(EventType::RefreshFailed)
                .with_reason(code)
                .with_attempt(failures.1),
        );
    }
    events
}

/// What an account's secrets are bound to beside its id and field: its
/// integration and the SHA-256 of its plain parameters (which may name a
/// host), so that a record moved to another integration or host in the
/// store, by someone without the key, no longer opens.
fn routing_context(integration: &str, parameters: &BTreeMap<String, String>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for (name, value) in parameters {
        // Lengths first: no two different maps hash the same bytes.
        digest.update((name.len() as u64).to_be_bytes());
        digest.update(name.as_bytes());
        digest.update((value.len() as u64).to_be_bytes());
        digest.update(value.as_bytes());
    }
    let mut context = Vec::with_capacity(integration.len() + 1 + 32);
    context.extend_from_slice(integration.as_bytes());
    context.push(0);
    context.extend_from_slice(&digest.finalize());
    context
}
