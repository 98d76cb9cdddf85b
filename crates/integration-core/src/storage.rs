//! The storage trait that backends implement, and the records they keep.
//!
//! Backends only ever see sealed secrets: every credential and secret
//! parameter is encrypted by [`AccountStore`](crate::AccountStore) before it
//! is handed to them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::account::EndUser;
use crate::crypto::SealedSecret;
use crate::events::{Event, EventId, OutboxBacklog};
use crate::{AccountHealth, AccountId, AccountStatus, Result};

/// An account as a backend stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAccount {
    /// The account id.
    pub id: AccountId,
    /// The key of its integration.
    pub integration: String,
    /// Values of the parameters that are not secret.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Values of the secret parameters, sealed.
    #[serde(default)]
    pub secret_parameters: BTreeMap<String, SealedSecret>,
    /// Credentials, sealed.
    #[serde(default)]
    pub credentials: BTreeMap<String, SealedSecret>,
    /// Where the account stands.
    pub status: AccountStatus,
    /// Why, when worth telling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// How renewing its credentials has gone.
    #[serde(default)]
    pub health: AccountHealth,
    /// The product's end user who connected it through a connect session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<EndUser>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Bumped by one on every successful compare-and-swap; 1 when created.
    pub revision: u64,
}

impl StoredAccount {
    /// Every sealed value: secret parameters, then credentials.
    pub fn sealed_values(&self) -> impl Iterator<Item = &SealedSecret> {
        self.secret_parameters.values().chain(self.credentials.values())
    }
}

/// An OAuth 2.0 authorization in progress, kept from the authorization URL
/// until its callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    /// The lookup key derived from the `state` parameter.
    pub state: String,
    /// The account being connected.
    pub account: AccountId,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Values that are not secret, such as the redirect URI.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Sealed values, such as the PKCE verifier.
    #[serde(default)]
    pub secrets: BTreeMap<String, SealedSecret>,
}

/// A connect session: what one end user may do through the gateway's
/// public connect routes (create or reconnect one account), until it
/// expires or is completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSession {
    /// Lowercase hex SHA-256 of the session token; the token itself is
    /// never kept.
    pub token_hash: String,
    /// The account to create or reconnect.
    pub account: AccountId,
    /// The integrations the end user may choose from (one or more); a
    /// reconnect has its account's.
    pub integrations: Vec<String>,
    /// Whether the account existed when the session was made.
    pub reconnect: bool,
    /// Kept on the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<EndUser>,
    /// The origins (`https://app.example.com`) the outcome may be posted to.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Where a full-page flow sends the browser back, with the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was completed: an account was connected, and the session
    /// allows nothing more.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub completed_at: Option<OffsetDateTime>,
    /// Whether a new account was stored, pending, by this session (an
    /// OAuth 2.0 authorization started for it), so that starting again
    /// reuses it.
    #[serde(default)]
    pub created_pending: bool,
    /// The creation time of that pending account: an account of the same
    /// id made by anyone else is never taken for it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub pending_created_at: Option<OffsetDateTime>,
    /// Parameter values the product's backend set; the end user cannot
    /// change them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Credential checks and server probes made with this session so far;
    /// past a limit it is refused.
    #[serde(default)]
    pub attempts: u32,
}

/// The outcome of [`Storage::compare_and_swap_account`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The record was replaced; this is what is stored now.
    Swapped(StoredAccount),
    /// The stored revision was not the expected one; this is what is stored.
    Conflict(StoredAccount),
}

/// Which accounts a page of [`Storage::accounts_page`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountQuery {
    /// Only ids after this one; the first page has none.
    pub after: Option<AccountId>,
    /// At most this many; at least one is listed.
    pub limit: usize,
    /// Only accounts of this integration.
    pub integration: Option<String>,
    /// Only accounts with this status.
    pub status: Option<AccountStatus>,
    /// Only accounts whose last renewals failed at least this many times
    /// in a row (`Some(1)`: every failing account).
    pub min_consecutive_failures: Option<u32>,
}

impl AccountQuery {
    /// The first page of at most `limit` accounts, unfiltered.
    pub fn first(limit: usize) -> Self {
        Self {
            after: None,
            limit,
            integration: None,
            status: None,
            min_consecutive_failures: None,
        }
    }

    /// Whether `account` passes the filters.
    pub fn matches(&self, account: &StoredAccount) -> bool {
        self.integration.as_ref().is_none_or(|key| *key == account.integration)
            && self.status.is_none_or(|status| status == account.status)
            && self
                .min_consecutive_failures
                .is_none_or(|least| account.health.consecutive_failures >= least)
    }
}

/// One page of accounts.
#[derive(Debug)]
pub struct AccountPage {
    /// Sorted by id. A record the backend cannot read is an error in its
    /// place, unless the backend could tell that it fails a filter.
    pub accounts: Vec<Result<StoredAccount>>,
    /// The `after` of the next page, when this one is full.
    pub next: Option<AccountId>,
}

/// The page `query` asks for out of records sorted by id, each with its id
/// (for a backend that scans its keys in order; ids at or before
/// `query.after` are skipped, so the scan may start anywhere before).
pub fn page_of_sorted(
    records: impl IntoIterator<Item = (AccountId, Result<StoredAccount>)>,
    query: &AccountQuery,
) -> AccountPage {
    let limit = query.limit.max(1);
    let mut accounts = Vec::new();
    for (id, record) in records {
        if query.after.as_ref().is_some_and(|after| id <= *after) {
            continue;
        }
        if record.as_ref().is_ok_and(|account| !query.matches(account)) {
            continue;
        }
        accounts.push(record);
        if accounts.len() == limit {
            return AccountPage {
                accounts,
                next: Some(id),
            };
        }
    }
    AccountPage { accounts, next: None }
}

/// A change made to a shared store through another handle (another gateway
/// on the same database), heard by [`Storage::listen`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreChange {
    /// The account was changed (credentials, parameters, status, a refresh)
    /// or removed.
    Account(AccountId),
    /// Changes may have been missed (the channel that carries them dropped):
    /// every copy of a record kept from before is stale.
    Unknown,
}

/// Called with each [`StoreChange`]; it runs on the backend's own thread
/// and should return quickly.
pub type ChangeListener = Arc<dyn Fn(&StoreChange) + Send + Sync>;

/// A storage backend for accounts, pending authorizations and the outbox
/// of [events](crate::events).
///
/// Used as `Arc<dyn Storage>`. Run `integration-storage-tests` against an
/// implementation to check it keeps this contract.
///
/// # Behavior
///
/// - `account` of an id never inserted returns `Ok(None)`.
/// - `insert_account` stores the record as given; inserting an id that exists
///   fails with [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists)
///   and leaves the stored record untouched.
/// - Every write of an account takes the events it causes, and stores them
///   in the outbox in the same step: both are stored or neither is (an
///   insert refused as `AlreadyExists`, a swap that conflicts and a delete
///   of a missing account store no event).
/// - `claim_events` returns, oldest id first, at most `limit` events of the
///   outbox that are not claimed or whose claim ended at or before `now`,
///   and claims them until `until`: of concurrent claims (through any
///   handle), each event goes to one. `complete_event` removes an event
///   from the outbox for good; a claimed event not completed is claimed
///   again once its claim ends (delivery is at least once).
/// - `outbox_backlog` counts the events in the outbox and the time of the
///   oldest.
/// - `accounts` returns every account sorted by id; a record the backend
///   cannot read is returned as an error in its place (naming its id) and the
///   others are still returned.
/// - `accounts_page` returns the accounts after `query.after` (sorted by
///   id) that pass its filters, at most `query.limit` (at least one), and
///   the cursor of the next page when the page is full; paging from the
///   first page to a page without a cursor lists each matching account
///   once. An unreadable record is an error in its place on the page that
///   reaches its id. It never reads every account to give one page.
/// - `compare_and_swap_account` replaces the record only if its stored
///   revision equals `expected_revision`, storing the new record with
///   revision `expected_revision + 1` and returning
///   [`Swap::Swapped`]; otherwise it changes nothing and returns
///   [`Swap::Conflict`] with the stored record. It is atomic: of many
///   concurrent swaps from the same revision, exactly one succeeds. Swapping
///   a missing account fails with [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
/// - `delete_account` returns whether the account existed; deleting a
///   missing account succeeds with `false`.
/// - `insert_pending_authorization` fails with `AlreadyExists` for a state
///   that is already pending.
/// - `take_pending_authorization` removes and returns the pending
///   authorization atomically: of concurrent takes of one state, exactly one
///   gets it, and every later take gets `None`.
/// - `delete_expired_pending_authorizations` removes those whose
///   `expires_at` is at or before `now`, returns how many, and keeps the
///   others.
/// - `pending_authorizations` lists every pending authorization, sorted by
///   state (a backend may leave it out: the default is an error).
/// - `insert_connect_session` fails with `AlreadyExists` for a token hash
///   that is stored, and keeps the stored session; `connect_session`
///   returns the session with that token hash, expired or not;
///   `update_connect_session` replaces the stored session only if it
///   equals `expected` (whole record), atomically (of concurrent updates
///   from the same record, exactly one succeeds), and returns whether it
///   did (a missing session is `false`); `delete_expired_connect_sessions`
///   removes those whose `expires_at` is at or before `now` and returns how
///   many. A backend may leave sessions out: the defaults are errors.
/// - Sealed secrets come back byte for byte as they were stored.
/// - An acknowledged write survives the process being killed right after
///   (for backends that persist at all).
/// - Many concurrent writers of every kind (inserts, swaps on one account or
///   on many, pending authorizations), on one multi-threaded runtime or on a
///   single-threaded runtime per thread, all finish: no write waits forever.
/// - `listen` (for a store that several processes share) calls the
///   listener with the id of every account another handle changes or
///   removes, within a second of the change being committed, and with
///   [`StoreChange::Unknown`] whenever changes may have been missed. A
///   store only one process can open hears nothing: the default does
///   nothing.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Stores a new account, and `events` in the outbox.
    async fn insert_account(&self, account: &StoredAccount, events: &[Event]) -> Result<()>;

    /// The account with `id`.
    async fn account(&self, id: &AccountId) -> Result<Option<StoredAccount>>;

    /// Every account, sorted by id; unreadable records as errors in place.
    async fn accounts(&self) -> Result<Vec<Result<StoredAccount>>>;

    /// One page of accounts, sorted by id.
    async fn accounts_page(&self, query: &AccountQuery) -> Result<AccountPage>;

    /// Replaces an account if its stored revision is `expected_revision`,
    /// and then stores `events` in the outbox.
    async fn compare_and_swap_account(
        &self,
        expected_revision: u64,
        account: &StoredAccount,
        events: &[Event],
    ) -> Result<Swap>;

    /// Deletes an account, and if it existed stores `events` in the
    /// outbox; returns whether it existed.
    async fn delete_account(&self, id: &AccountId, events: &[Event]) -> Result<bool>;

    /// Claims at most `limit` events of the outbox until `until`, oldest
    /// first: those never claimed, or whose claim ended at or before `now`.
    async fn claim_events(&self, now: OffsetDateTime, until: OffsetDateTime, limit: usize) -> Result<Vec<Event>>;

    /// Removes a handled event from the outbox; returns whether it was there.
    async fn complete_event(&self, id: &EventId) -> Result<bool>;

    /// How many events wait in the outbox, and since when.
    async fn outbox_backlog(&self) -> Result<OutboxBacklog>;

    /// Stores a pending authorization.
    async fn insert_pending_authorization(&self, pending: &PendingAuthorization) -> Result<()>;

    /// Removes and returns the pending authorization for `state`.
    async fn take_pending_authorization(&self, state: &str) -> Result<Option<PendingAuthorization>>;

    /// Removes pending authorizations that expired at or before `now`.
    async fn delete_expired_pending_authorizations(&self, now: OffsetDateTime) -> Result<usize>;

    /// Every pending authorization, sorted by state (to copy or re-seal
    /// them; they are few and short-lived). The default says the backend
    /// cannot list them.
    async fn pending_authorizations(&self) -> Result<Vec<PendingAuthorization>> {
        Err(crate::Error::new(
            crate::ErrorKind::Storage,
            "this storage backend cannot list its pending authorizations",
        ))
    }

    /// Stores a new connect session.
    async fn insert_connect_session(&self, session: &ConnectSession) -> Result<()> {
        let _ = session;
        Err(no_connect_sessions())
    }

    /// The connect session whose token has the SHA-256 `token_hash`.
    async fn connect_session(&self, token_hash: &str) -> Result<Option<ConnectSession>> {
        let _ = token_hash;
        Err(no_connect_sessions())
    }

    /// Replaces `expected` with `session` if it is what is stored.
    async fn update_connect_session(&self, expected: &ConnectSession, session: &ConnectSession) -> Result<bool> {
        let _ = (expected, session);
        Err(no_connect_sessions())
    }

    /// Removes connect sessions that expired at or before `now`.
    async fn delete_expired_connect_sessions(&self, now: OffsetDateTime) -> Result<usize> {
        let _ = now;
        Err(no_connect_sessions())
    }

    /// Whether the store can be reached now (a database may be down while
    /// the process runs); for health checks. The default says yes.
    async fn check(&self) -> Result<()> {
        Ok(())
    }

    /// The same store as a [`WebhookStorage`](crate::WebhookStorage), when
    /// it keeps webhook endpoints and deliveries too (the gateway's
    /// webhooks need one). The default keeps none.
    fn webhook_storage(&self) -> Option<&dyn crate::WebhookStorage> {
        None
    }

    /// Calls `listener` with the changes other processes make to the
    /// records, for as long as the store lives.
    fn listen(&self, listener: ChangeListener) {
        let _ = listener;
    }
}

fn no_connect_sessions() -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Storage,
        "this storage backend cannot keep connect sessions",
    )
}

/// An API key of a gateway as stored: the key itself is never kept, only
/// its SHA-256.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredApiKey {
    /// A short public id, used to revoke the key.
    pub id: String,
    /// What the key is for.
    pub name: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Lowercase hex SHA-256 of the key.
    pub hash: String,
}

impl fmt::Debug for StoredApiKey {
    /// Without the hash: it is of no use to a reader of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Where a gateway's API keys live, beside its accounts: in the same
/// database when several gateways share one.
///
/// # Behavior
///
/// - `keys` returns every key, oldest first (by creation time, then id).
/// - `insert_key` fails with [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists)
///   for an id that exists, and keeps the stored key.
/// - `delete_key` returns whether the key existed; once it returns, no
///   later `keys` call, through any handle, lists the key.
/// - Concurrent inserts through several handles all land.
#[async_trait]
pub trait KeyStorage: Send + Sync + fmt::Debug + 'static {
    /// Stores a new key.
    async fn insert_key(&self, key: &StoredApiKey) -> Result<()>;

    /// Every key, oldest first.
    async fn keys(&self) -> Result<Vec<StoredApiKey>>;

    /// Deletes the key with `id`; returns whether it existed.
    async fn delete_key(&self, id: &str) -> Result<bool>;
}
