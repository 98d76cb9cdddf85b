#![doc = include_str!("../README.md")]

mod group_commit;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_core::storage::{
    AccountPage, AccountQuery, PendingAuthorization, Storage, StoredAccount, Swap, page_of_sorted,
};
use integration_core::time::OffsetDateTime;
use integration_core::{AccountId, Error, ErrorKind, Result, async_trait};
use serde_json::Error as JsonError;

use crate::group_commit::{FlushError, GroupCommit};

const ACCOUNTS_TREE: &str = "accounts.v1";
const PENDING_TREE: &str = "pending_authorizations.v1";

/// How long [`SledStorage::open`] waits for another handle to release the directory.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Accounts and pending authorizations in a sled database.
#[derive(Clone)]
pub struct SledStorage {
    accounts: sled::Tree,
    pending: sled::Tree,
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
        let group_commit =
            GroupCommit::start(db).map_err(|error| storage_error("cannot start the sled flusher thread", error))?;
        Ok(Self {
            accounts,
            pending,
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
    async fn insert_account(&self, account: &StoredAccount) -> Result<()> {
        let bytes = encode(account)?;
        let key = account.id.as_str().as_bytes();
        let outcome = self
            .accounts
            .compare_and_swap(key, None as Option<&[u8]>, Some(bytes))
            .map_err(|error| storage_error("cannot insert the account", error))?;
        if outcome.is_err() {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "account exists already").with_context("account", &account.id)
            );
        }
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

    async fn compare_and_swap_account(&self, expected_revision: u64, account: &StoredAccount) -> Result<Swap> {
        let key = account.id.as_str().as_bytes();
        let next = StoredAccount {
            revision: expected_revision + 1,
            ..account.clone()
        };
        let next_bytes = encode(&next)?;
        loop {
            let Some(current_bytes) = self
                .accounts
                .get(key)
                .map_err(|error| storage_error("cannot read the account", error))?
            else {
                return Err(Error::new(ErrorKind::NotFound, "no such account").with_context("account", &account.id));
            };
            let current = decode_account(key, &current_bytes)?;
            if current.revision != expected_revision {
                return Ok(Swap::Conflict(current));
            }
            let outcome = self
                .accounts
                .compare_and_swap(key, Some(current_bytes), Some(next_bytes.as_slice()))
                .map_err(|error| storage_error("cannot update the account", error))?;
            // Lost a race at the byte level: read again and decide anew.
            if outcome.is_ok() {
                self.flush().await?;
                return Ok(Swap::Swapped(next));
            }
        }
    }

    async fn delete_account(&self, id: &AccountId) -> Result<bool> {
        let removed = self
            .accounts
            .remove(id.as_str().as_bytes())
            .map_err(|error| storage_error("cannot delete the account", error))?;
        self.flush().await?;
        Ok(removed.is_some())
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

fn is_lock_held(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}
