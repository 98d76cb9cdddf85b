#![doc = include_str!("../README.md")]

mod group_commit;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_core::events::{Event, EventId, OutboxBacklog};
use integration_core::storage::{
    AccountPage, AccountQuery, ConnectSession, PendingAuthorization, Storage, StoredAccount, Swap, page_of_sorted,
};
use integration_core::time::OffsetDateTime;
use integration_core::webhooks::{StoredDelivery, StoredWebhook, WebhookStorage};
use integration_core::{AccountId, Error, ErrorKind, Result, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::Error as JsonError;
use sled::Transactional as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::group_commit::{FlushError, GroupCommit};

const ACCOUNTS_TREE: &str = "accounts.v1";
const PENDING_TREE: &str = "pending_authorizations.v1";
/// Connect sessions by token hash.
const CONNECT_SESSIONS_TREE: &str = "connect_sessions.v1";
const OUTBOX_TREE: &str = "outbox.v1";
const WEBHOOKS_TREE: &str = "webhooks.v1";
const DELIVERIES_TREE: &str = "webhook_deliveries.v1";
/// The ids of the pending deliveries, so that claiming scans only those.
const PENDING_DELIVERIES_TREE: &str = "webhook_deliveries_pending.v1";

/// How long [`SledStorage::open`] waits for another handle to release the directory.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Accounts, pending authorizations, connect sessions, the outbox of events
/// and webhooks in a sled database.
#[derive(Clone)]
pub struct SledStorage {
    accounts: sled::Tree,
    pending: sled::Tree,
    connect_sessions: sled::Tree,
    outbox: sled::Tree,
    webhooks: sled::Tree,
    deliveries: sled::Tree,
    pending_deliveries: sled::Tree,
    group_commit: Arc<GroupCommit>,
    /// The directory's place in [`OPEN_HERE`], given back with the last clone.
    _opened: Option<Arc<OpenHere>>,
}

/// The directories this process has open: sled locks a directory per
/// process, so a second open here would wait for a lock that only this
/// process can release.
static OPEN_HERE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A directory in [`OPEN_HERE`], removed when dropped.
struct OpenHere(PathBuf);

impl OpenHere {
    /// Claims `directory` for this process, or says it is open here already.
    fn claim(directory: PathBuf) -> Option<Self> {
        let claimed = OPEN_HERE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(directory.clone());
        // Made after the lock is let go: a refused claim's drop takes it.
        claimed.then(|| Self(directory))
    }
}

impl Drop for OpenHere {
    fn drop(&mut self) {
        OPEN_HERE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.0);
    }
}

impl SledStorage {
    /// Opens, or creates, the database in directory `path`.
    ///
    /// sled locks the directory for one process. A lock still held is waited
    /// for up to [`LOCK_WAIT`]: sled's background threads let go of it a moment
    /// after the previous handle, or a process that just exited, is gone.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let cannot_open = || format!("cannot open the sled database at {}", path.display());
        std::fs::create_dir_all(path)
            .map_err(|error| Error::new(ErrorKind::Storage, cannot_open()).with_source(error))?;
        let directory = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        let Some(opened) = OpenHere::claim(directory) else {
            return Err(Error::new(
                ErrorKind::Storage,
                format!(
                    "{}: this process has it open already; share that `SledStorage` (it is `Clone`) or drop it first",
                    cannot_open()
                ),
            ));
        };
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(error) if is_lock_held(&error) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => {
                    let hint = if is_lock_held(&error) {
                        " (is another `integrations` process using this data directory?)"
                    } else {
                        ""
                    };
                    return Err(Error::new(ErrorKind::Storage, format!("{}{hint}", cannot_open())).with_source(error));
                }
            }
        };
        let mut storage = Self::from_db(db)?;
        storage._opened = Some(Arc::new(opened));
        Ok(storage)
    }

    /// A database in a temporary directory, deleted when dropped.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|error| storage_error("cannot open a temporary sled database", error))?;
        Self::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Self> {
        let accounts = db
            .open_tree(ACCOUNTS_TREE)
            .map_err(|error| storage_error("cannot open the accounts tree", error))?;
        let pending = db
            .open_tree(PENDING_TREE)
            .map_err(|error| storage_error("cannot open the pending authorizations tree", error))?;
        let open = |name: &str| {
            db.open_tree(name).map_err(|error| {
                storage_error("cannot open a tree of the sled database", error).with_context("tree", name)
            })
        };
        let connect_sessions = open(CONNECT_SESSIONS_TREE)?;
        let outbox = open(OUTBOX_TREE)?;
        let webhooks = open(WEBHOOKS_TREE)?;
        let deliveries = open(DELIVERIES_TREE)?;
        let pending_deliveries = open(PENDING_DELIVERIES_TREE)?;
        let group_commit =
            GroupCommit::start(db).map_err(|error| storage_error("cannot start the sled flusher thread", error))?;
        Ok(Self {
            accounts,
            pending,
            connect_sessions,
            outbox,
            webhooks,
            deliveries,
            pending_deliveries,
            group_commit: Arc::new(group_commit),
            _opened: None,
        })
    }

    /// Makes every write this task made durable before returning, batched
    /// with the concurrent writers' into one flush.
    async fn flush(&self) -> Result<()> {
        self.group_commit.flush().await.map_err(|error| match error {
            FlushError::Sled(error) => storage_error("cannot flush the sled database", error),
            FlushError::Stopped => Error::new(ErrorKind::Storage, "the sled flusher thread has stopped"),
        })
    }
}

impl std::fmt::Debug for SledStorage {
    /// Counts only: records are not shown, sealed or not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage")
            .field("accounts", &self.accounts.len())
            .field("pending_authorizations", &self.pending.len())
            .field("connect_sessions", &self.connect_sessions.len())
            .field("outbox", &self.outbox.len())
            .field("webhooks", &self.webhooks.len())
            .field("deliveries", &self.deliveries.len())
            .finish()
    }
}

fn storage_error(message: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Storage, message).with_source(error)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|error| storage_error("cannot encode a record", error))
}

fn decode_account(key: &[u8], bytes: &[u8]) -> Result<StoredAccount> {
    serde_json::from_slice(bytes).map_err(|error: JsonError| {
        Error::new(
            ErrorKind::Unreadable,
            format!("cannot parse the stored record: {error}"),
        )
        .with_context("account", String::from_utf8_lossy(key))
    })
}

/// An event in the outbox, with the end of its claim.
#[derive(Serialize, Deserialize)]
struct OutboxRecord {
    event: Event,
    #[serde(default, with = "integration_core::time::serde::rfc3339::option")]
    claimed_until: Option<OffsetDateTime>,
}

fn outbox_records(events: &[Event]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    events
        .iter()
        .map(|event| {
            let record = OutboxRecord {
                event: event.clone(),
                claimed_until: None,
            };
            Ok((event.id.as_str().as_bytes().to_vec(), encode(&record)?))
        })
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|error: JsonError| Error::new(ErrorKind::Unreadable, format!("cannot parse a stored {what}: {error}")))
}

/// A transaction's failure: the error it aborted with, or sled's.
fn transaction_failed(message: &'static str, error: TransactionError<Error>) -> Error {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => storage_error(message, error),
    }
}

fn decode_pending(bytes: &[u8]) -> Result<PendingAuthorization> {
    serde_json::from_slice(bytes).map_err(|error: JsonError| {
        Error::new(
            ErrorKind::Unreadable,
            format!("cannot parse a stored pending authorization: {error}"),
        )
    })
}

#[async_trait]
impl Storage for SledStorage {
    async fn insert_account(&self, account: &StoredAccount, events: &[Event]) -> Result<()> {
        let bytes = encode(account)?;
        let records = outbox_records(events)?;
        let key = account.id.as_str().as_bytes();
        (&self.accounts, &self.outbox)
            .transaction(|(accounts, outbox)| {
                if accounts.get(key)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(
                        Error::new(ErrorKind::AlreadyExists, "account exists already")
                            .with_context("account", &account.id),
                    ));
                }
                accounts.insert(key, bytes.as_slice())?;
                for (id, record) in &records {
                    outbox.insert(id.as_slice(), record.as_slice())?;
                }
                Ok(())
            })
            .map_err(|error| transaction_failed("cannot insert the account", error))?;
        self.flush().await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<StoredAccount>> {
        let key = id.as_str().as_bytes();
        match self
            .accounts
            .get(key)
            .map_err(|error| storage_error("cannot read the account", error))?
        {
            Some(bytes) => decode_account(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn accounts(&self) -> Result<Vec<Result<StoredAccount>>> {
        self.accounts
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(|error| storage_error("cannot read the accounts", error))?;
                Ok(decode_account(&key, &bytes))
            })
            .collect()
    }

    async fn accounts_page(&self, query: &AccountQuery) -> Result<AccountPage> {
        let start: &[u8] = query.after.as_ref().map_or(b"", |after| after.as_str().as_bytes());
        let mut failure = None;
        let records = self
            .accounts
            .range(start..)
            .map_while(|entry| match entry {
                Ok(entry) => Some(entry),
                Err(error) => {
                    failure = Some(storage_error("cannot read the accounts", error));
                    None
                }
            })
            .filter_map(|(key, bytes)| {
                // Keys are account ids; one that is not is unreadable in place.
                let record = decode_account(&key, &bytes);
                let id = std::str::from_utf8(&key).ok().and_then(|id| AccountId::new(id).ok())?;
                Some((id, record))
            });
        let page = page_of_sorted(records, query);
        match failure {
            Some(error) => Err(error),
            None => Ok(page),
        }
    }

    async fn compare_and_swap_account(
        &self,
        expected_revision: u64,
        account: &StoredAccount,
        events: &[Event],
    ) -> Result<Swap> {
        let key = account.id.as_str().as_bytes();
        let next = StoredAccount {
            revision: expected_revision + 1,
            ..account.clone()
        };
        let next_bytes = encode(&next)?;
        let records = outbox_records(events)?;
        let swap = (&self.accounts, &self.outbox)
            .transaction(|(accounts, outbox)| {
                let Some(current_bytes) = accounts.get(key)? else {
                    return Err(ConflictableTransactionError::Abort(
                        Error::new(ErrorKind::NotFound, "no such account").with_context("account", &account.id),
                    ));
                };
                let current = decode_account(key, &current_bytes).map_err(ConflictableTransactionError::Abort)?;
                if current.revision != expected_revision {
                    return Ok(Swap::Conflict(current));
                }
                accounts.insert(key, next_bytes.as_slice())?;
                for (id, record) in &records {
                    outbox.insert(id.as_slice(), record.as_slice())?;
                }
                Ok(Swap::Swapped(next.clone()))
            })
            .map_err(|error| transaction_failed("cannot update the account", error))?;
        if matches!(swap, Swap::Swapped(_)) {
            self.flush().await?;
        }
        Ok(swap)
    }

    async fn delete_account(&self, id: &AccountId, events: &[Event]) -> Result<bool> {
        let key = id.as_str().as_bytes();
        let records = outbox_records(events)?;
        let existed = (&self.accounts, &self.outbox)
            .transaction(|(accounts, outbox)| {
                let existed = accounts.remove(key)?.is_some();
                if existed {
                    for (id, record) in &records {
                        outbox.insert(id.as_slice(), record.as_slice())?;
                    }
                }
                Ok(existed)
            })
            .map_err(|error| transaction_failed("cannot delete the account", error))?;
        self.flush().await?;
        Ok(existed)
    }

    async fn claim_events(&self, now: OffsetDateTime, until: OffsetDateTime, limit: usize) -> Result<Vec<Event>> {
        let mut claimed = Vec::new();
        // Keys are event ids: the scan is oldest first.
        for entry in self.outbox.iter() {
            if claimed.len() == limit {
                break;
            }
            let (key, bytes) = entry.map_err(|error| storage_error("cannot read the outbox", error))?;
            // One unreadable record must not stop every event behind it.
            let mut record: OutboxRecord = match decode("event", &bytes) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(%error, "skipping an unreadable event of the outbox");
                    continue;
                }
            };
            if record.claimed_until.is_some_and(|end| end > now) {
                continue;
            }
            record.claimed_until = Some(until);
            let outcome = self
                .outbox
                .compare_and_swap(&key, Some(bytes), Some(encode(&record)?))
                .map_err(|error| storage_error("cannot claim an event", error))?;
            // Lost to a concurrent claim or completion: it is theirs.
            if outcome.is_ok() {
                claimed.push(record.event);
            }
        }
        if !claimed.is_empty() {
            self.flush().await?;
        }
        Ok(claimed)
    }

    async fn complete_event(&self, id: &EventId) -> Result<bool> {
        let removed = self
            .outbox
            .remove(id.as_str().as_bytes())
            .map_err(|error| storage_error("cannot complete the event", error))?;
        self.flush().await?;
        Ok(removed.is_some())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog> {
        let oldest = match self
            .outbox
            .first()
            .map_err(|error| storage_error("cannot read the outbox", error))?
        {
            Some((_, bytes)) => Some(decode::<OutboxRecord>("event", &bytes)?.event.timestamp),
            None => None,
        };
        Ok(OutboxBacklog {
            events: self.outbox.len() as u64,
            oldest,
        })
    }

    async fn insert_pending_authorization(&self, pending: &PendingAuthorization) -> Result<()> {
        let bytes = encode(pending)?;
        let outcome = self
            .pending
            .compare_and_swap(pending.state.as_bytes(), None as Option<&[u8]>, Some(bytes))
            .map_err(|error| storage_error("cannot insert the pending authorization", error))?;
        if outcome.is_err() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "pending authorization exists already",
            ));
        }
        self.flush().await
    }

    async fn take_pending_authorization(&self, state: &str) -> Result<Option<PendingAuthorization>> {
        let removed = self
            .pending
            .remove(state.as_bytes())
            .map_err(|error| storage_error("cannot take the pending authorization", error))?;
        let Some(bytes) = removed else {
            return Ok(None);
        };
        self.flush().await?;
        decode_pending(&bytes).map(Some)
    }

    async fn delete_expired_pending_authorizations(&self, now: OffsetDateTime) -> Result<usize> {
        let mut deleted = 0;
        for entry in self.pending.iter() {
            let (key, bytes) = entry.map_err(|error| storage_error("cannot read pending authorizations", error))?;
            // An unreadable record can never be used: it goes too.
            let expired = decode_pending(&bytes).map_or(true, |pending| pending.expires_at <= now);
            if expired {
                let outcome = self
                    .pending
                    .compare_and_swap(&key, Some(bytes), None as Option<&[u8]>)
                    .map_err(|error| storage_error("cannot delete a pending authorization", error))?;
                deleted += usize::from(outcome.is_ok());
            }
        }
        if deleted > 0 {
            self.flush().await?;
        }
        Ok(deleted)
    }

    async fn insert_connect_session(&self, session: &ConnectSession) -> Result<()> {
        let bytes = encode(session)?;
        let outcome = self
            .connect_sessions
            .compare_and_swap(session.token_hash.as_bytes(), None as Option<&[u8]>, Some(bytes))
            .map_err(|error| storage_error("cannot insert the connect session", error))?;
        if outcome.is_err() {
            return Err(Error::new(ErrorKind::AlreadyExists, "connect session exists already"));
        }
        self.flush().await
    }

    async fn connect_session(&self, token_hash: &str) -> Result<Option<ConnectSession>> {
        match self
            .connect_sessions
            .get(token_hash.as_bytes())
            .map_err(|error| storage_error("cannot read the connect session", error))?
        {
            Some(bytes) => decode("connect session", &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn update_connect_session(&self, expected: &ConnectSession, session: &ConnectSession) -> Result<bool> {
        let key = session.token_hash.as_bytes();
        let bytes = encode(session)?;
        // Compared as records, not bytes: a record written by another
        // build may encode the same session differently.
        let replaced = self
            .connect_sessions
            .transaction(|sessions| {
                let unchanged = sessions.get(key)?.is_some_and(|stored| {
                    decode::<ConnectSession>("connect session", &stored).is_ok_and(|stored| stored == *expected)
                });
                if unchanged {
                    sessions.insert(key, bytes.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<Error>>(unchanged)
            })
            .map_err(|error| transaction_failed("cannot update the connect session", error))?;
        if replaced {
            self.flush().await?;
        }
        Ok(replaced)
    }

    async fn delete_expired_connect_sessions(&self, now: OffsetDateTime) -> Result<usize> {
        let mut deleted = 0;
        for entry in self.connect_sessions.iter() {
            let (key, bytes) = entry.map_err(|error| storage_error("cannot read connect sessions", error))?;
            // An unreadable record can never be used: it goes too.
            let expired =
                decode::<ConnectSession>("connect session", &bytes).map_or(true, |session| session.expires_at <= now);
            if expired {
                let outcome = self
                    .connect_sessions
                    .compare_and_swap(&key, Some(bytes), None as Option<&[u8]>)
                    .map_err(|error| storage_error("cannot delete a connect session", error))?;
                deleted += usize::from(outcome.is_ok());
            }
        }
        if deleted > 0 {
            self.flush().await?;
        }
        Ok(deleted)
    }

    fn webhook_storage(&self) -> Option<&dyn WebhookStorage> {
        Some(self)
    }

    async fn pending_authorizations(&self) -> Result<Vec<PendingAuthorization>> {
        // Keys are the states' bytes: the scan is in state order.
        self.pending
            .iter()
            .map(|entry| {
                let (_, bytes) = entry.map_err(|error| storage_error("cannot read pending authorizations", error))?;
                decode_pending(&bytes)
            })
            .collect()
    }
}

#[async_trait]
impl WebhookStorage for SledStorage {
    async fn insert_webhook(&self, webhook: &StoredWebhook) -> Result<()> {
        let outcome = self
            .webhooks
            .compare_and_swap(webhook.id.as_bytes(), None as Option<&[u8]>, Some(encode(webhook)?))
            .map_err(|error| storage_error("cannot insert the webhook", error))?;
        if outcome.is_err() {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "webhook exists already").with_context("webhook", &webhook.id)
            );
        }
        self.flush().await
    }

    async fn webhooks(&self) -> Result<Vec<StoredWebhook>> {
        let mut webhooks = self
            .webhooks
            .iter()
            .map(|entry| {
                let (_, bytes) = entry.map_err(|error| storage_error("cannot read the webhooks", error))?;
                decode::<StoredWebhook>("webhook", &bytes)
            })
            .collect::<Result<Vec<_>>>()?;
        webhooks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(webhooks)
    }

    async fn update_webhook(&self, expected: &StoredWebhook, webhook: &StoredWebhook) -> Result<bool> {
        let key = webhook.id.as_bytes();
        let bytes = encode(webhook)?;
        let replaced = self
            .webhooks
            .transaction(|webhooks| {
                let unchanged = webhooks.get(key)?.is_some_and(|stored| {
                    decode::<StoredWebhook>("webhook", &stored).is_ok_and(|stored| stored == *expected)
                });
                if unchanged {
                    webhooks.insert(key, bytes.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<Error>>(unchanged)
            })
            .map_err(|error| transaction_failed("cannot update the webhook", error))?;
        self.flush().await?;
        Ok(replaced)
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let existed = self
            .webhooks
            .remove(id.as_bytes())
            .map_err(|error| storage_error("cannot delete the webhook", error))?
            .is_some();
        for entry in self.deliveries.iter() {
            let (key, bytes) = entry.map_err(|error| storage_error("cannot read the deliveries", error))?;
            if decode::<StoredDelivery>("delivery", &bytes).is_ok_and(|delivery| delivery.webhook == id) {
                self.remove_delivery(&key)?;
            }
        }
        self.flush().await?;
        Ok(existed)
    }

    async fn insert_deliveries(&self, deliveries: &[StoredDelivery]) -> Result<()> {
        for delivery in deliveries {
            let key = delivery.id.as_bytes();
            let bytes = encode(delivery)?;
            let pending = delivery.state == integration_core::webhooks::DeliveryState::Pending;
            (&self.deliveries, &self.pending_deliveries)
                .transaction(|(deliveries, pending_deliveries)| {
                    if deliveries.get(key)?.is_none() {
                        deliveries.insert(key, bytes.as_slice())?;
                        if pending {
                            pending_deliveries.insert(key, &[])?;
                        }
                    }
                    Ok::<_, ConflictableTransactionError<Error>>(())
                })
                .map_err(|error| transaction_failed("cannot insert a delivery", error))?;
        }
        self.flush().await
    }

    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<StoredDelivery>> {
        let mut due = Vec::new();
        for entry in self.pending_deliveries.iter() {
            let (key, _) = entry.map_err(|error| storage_error("cannot read the deliveries", error))?;
            let Some(bytes) = self
                .deliveries
                .get(&key)
                .map_err(|error| storage_error("cannot read a delivery", error))?
            else {
                continue;
            };
            // One unreadable record must not stop every delivery behind it.
            match decode::<StoredDelivery>("delivery", &bytes) {
                Ok(delivery) if delivery.due(now) => due.push((bytes, delivery)),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "skipping an unreadable webhook delivery"),
            }
        }
        due.sort_by(|(_, a), (_, b)| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
        let mut claimed = Vec::new();
        for (bytes, mut delivery) in due {
            if claimed.len() == limit {
                break;
            }
            delivery.claimed_until = Some(until);
            let outcome = self
                .deliveries
                .compare_and_swap(delivery.id.as_bytes(), Some(bytes), Some(encode(&delivery)?))
                .map_err(|error| storage_error("cannot claim a delivery", error))?;
            if outcome.is_ok() {
                claimed.push(delivery);
            }
        }
        if !claimed.is_empty() {
            self.flush().await?;
        }
        Ok(claimed)
    }

    async fn update_delivery(&self, expected: &StoredDelivery, delivery: &StoredDelivery) -> Result<bool> {
        let key = delivery.id.as_bytes();
        let bytes = encode(delivery)?;
        let pending = delivery.state == integration_core::webhooks::DeliveryState::Pending;
        let replaced = (&self.deliveries, &self.pending_deliveries)
            .transaction(|(deliveries, pending_deliveries)| {
                let unchanged = deliveries.get(key)?.is_some_and(|stored| {
                    decode::<StoredDelivery>("delivery", &stored).is_ok_and(|stored| stored == *expected)
                });
                if !unchanged {
                    return Ok(false);
                }
                deliveries.insert(key, bytes.as_slice())?;
                if pending {
                    pending_deliveries.insert(key, &[])?;
                } else {
                    pending_deliveries.remove(key)?;
                }
                Ok::<_, ConflictableTransactionError<Error>>(true)
            })
            .map_err(|error| transaction_failed("cannot update the delivery", error))?;
        self.flush().await?;
        Ok(replaced)
    }

    async fn delivery(&self, id: &str) -> Result<Option<StoredDelivery>> {
        match self
            .deliveries
            .get(id.as_bytes())
            .map_err(|error| storage_error("cannot read the delivery", error))?
        {
            Some(bytes) => decode("delivery", &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn deliveries(&self, webhook: &str, before: Option<&str>, limit: usize) -> Result<Vec<StoredDelivery>> {
        let end: &[u8] = before.map_or(b"\xff", str::as_bytes);
        let mut found = Vec::new();
        // Keys sort as the events were made: newest first is the scan backwards.
        for entry in self.deliveries.range(..end).rev() {
            if found.len() == limit {
                break;
            }
            let (_, bytes) = entry.map_err(|error| storage_error("cannot read the deliveries", error))?;
            let delivery: StoredDelivery = decode("delivery", &bytes)?;
            if delivery.webhook == webhook {
                found.push(delivery);
            }
        }
        Ok(found)
    }

    async fn delete_deliveries_before(&self, before: OffsetDateTime) -> Result<usize> {
        let mut deleted = 0;
        for entry in self.deliveries.iter() {
            let (key, bytes) = entry.map_err(|error| storage_error("cannot read the deliveries", error))?;
            let old = decode::<StoredDelivery>("delivery", &bytes).map_or(true, |delivery| {
                delivery.state != integration_core::webhooks::DeliveryState::Pending && delivery.created_at < before
            });
            if old {
                self.remove_delivery(&key)?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            self.flush().await?;
        }
        Ok(deleted)
    }
}

impl SledStorage {
    fn remove_delivery(&self, key: &[u8]) -> Result<()> {
        (&self.deliveries, &self.pending_deliveries)
            .transaction(|(deliveries, pending_deliveries)| {
                deliveries.remove(key)?;
                pending_deliveries.remove(key)?;
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(|error| transaction_failed("cannot delete a delivery", error))
    }
}

fn is_lock_held(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}
