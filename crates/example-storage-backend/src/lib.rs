#![doc = include_str!("../README.md")]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use integrations::events::{Event, EventId, OutboxBacklog};
use integrations::storage::{
    AccountPage, AccountQuery, ConnectSession, PendingAuthorization, Storage, StoredAccount, Swap, page_of_sorted,
};
use integrations::time::OffsetDateTime;
use integrations::{AccountId, Error, ErrorKind, Result, async_trait};

/// Accounts, pending authorizations, connect sessions and the outbox of
/// events as JSON files under one directory: `accounts/{id}.json`,
/// `pending/{hex of the state}.json`, `sessions/{hex of the token
/// hash}.json` and `outbox/{event id}.json`.
///
/// A database writes a change and its events in one transaction. Files
/// cannot: the events are written first and removed if the record's write
/// fails, so a crash between the two may leave an event of a change that
/// did not land (delivered at least once, never lost).
#[derive(Clone)]
pub struct FileStorage {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Makes each compare-and-swap, take and session update atomic within
    /// this process.
    writes: Mutex<()>,
    /// A temporary store's directory goes with its last handle.
    temporary: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for FileStorage {
    /// The directory only: records hold sealed secrets, never shown.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FileStorage")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl FileStorage {
    /// The store in `dir`, created if need be.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_in(dir.as_ref().to_owned(), false)
    }

    /// An empty store in a new directory of the system's temporary one,
    /// removed when the last handle is dropped: for tests.
    pub fn temporary() -> Result<Self> {
        static STORES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("example-storage-{}-{n}", std::process::id()));
        Self::open_in(dir, true)
    }

    fn open_in(dir: PathBuf, temporary: bool) -> Result<Self> {
        for sub in ["accounts", "pending", "sessions", "outbox"] {
            fs::create_dir_all(dir.join(sub)).map_err(|error| storage_error("cannot create the store", error))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                writes: Mutex::new(()),
                temporary,
            }),
        })
    }

    fn account_path(&self, id: &AccountId) -> PathBuf {
        // An id is `[A-Za-z0-9_-][A-Za-z0-9._-]*`: a safe file name.
        self.inner.dir.join("accounts").join(format!("{id}.json"))
    }

    fn pending_path(&self, state: &str) -> PathBuf {
        let hex: String = state.bytes().map(|byte| format!("{byte:02x}")).collect();
        self.inner.dir.join("pending").join(format!("{hex}.json"))
    }

    fn session_path(&self, token_hash: &str) -> PathBuf {
        // Hex again: the hash comes from the caller, and must not name a
        // path of its own.
        let hex: String = token_hash.bytes().map(|byte| format!("{byte:02x}")).collect();
        self.inner.dir.join("sessions").join(format!("{hex}.json"))
    }

    fn outbox_path(&self, id: &EventId) -> PathBuf {
        // `evt_` and hex digits: a safe file name.
        self.inner.dir.join("outbox").join(format!("{id}.json"))
    }

    /// Writes `events` to the outbox, then does `change`; the events are
    /// removed again when `change` says they stand for nothing (`false`)
    /// or fails.
    fn with_events<T>(&self, events: &[Event], change: impl FnOnce() -> Result<(T, bool)>) -> Result<T> {
        let mut written = Vec::new();
        let outcome = events
            .iter()
            .try_for_each(|event| {
                let path = self.outbox_path(&event.id);
                let record = OutboxRecord {
                    event: event.clone(),
                    claimed_until: None,
                };
                write_atomically(&path, &to_json(&record)?)?;
                written.push(path);
                Ok(())
            })
            .and_then(|()| change());
        match outcome {
            Ok((value, true)) => Ok(value),
            Ok((value, false)) => {
                written.iter().try_for_each(|path| remove(path).map(drop))?;
                Ok(value)
            }
            Err(error) => {
                for path in &written {
                    let _ = remove(path);
                }
                Err(error)
            }
        }
    }

    /// The outbox's records, oldest first, with their files.
    fn outbox(&self) -> Result<Vec<(PathBuf, OutboxRecord)>> {
        let cannot = |error: std::io::Error| storage_error("cannot list the outbox", error);
        let mut records = Vec::new();
        for entry in fs::read_dir(self.inner.dir.join("outbox")).map_err(cannot)? {
            let path = entry.map_err(cannot)?.path();
            if path.extension().is_some_and(|extension| extension == "json")
                && let Some(bytes) = read(&path)?
            {
                let record: OutboxRecord = serde_json::from_slice(&bytes).map_err(|error| {
                    Error::new(ErrorKind::Unreadable, "cannot parse an event of the outbox").with_source(error)
                })?;
                records.push((path, record));
            }
        }
        records.sort_by(|(_, a), (_, b)| a.event.id.cmp(&b.event.id));
        Ok(records)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.inner
            .writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs blocking file work off the async runtime's threads.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce(&Self) -> Result<T> + Send + 'static) -> Result<T> {
        let storage = self.clone();
        tokio::task::spawn_blocking(move || work(&storage))
            .await
            .map_err(|error| storage_error("a storage task failed", error))?
    }
}

impl FileStorage {
    /// The files of the pending authorizations (not those of writes in
    /// flight, which end in `.tmp`).
    fn pending_files(&self) -> Result<Vec<PathBuf>> {
        let cannot = |error: std::io::Error| storage_error("cannot list the pending authorizations", error);
        let mut files = Vec::new();
        for entry in fs::read_dir(self.inner.dir.join("pending")).map_err(cannot)? {
            let path = entry.map_err(cannot)?.path();
            if path.extension().is_some_and(|extension| extension == "json") {
                files.push(path);
            }
        }
        Ok(files)
    }

    /// The files of the connect sessions (not those of writes in flight).
    fn session_files(&self) -> Result<Vec<PathBuf>> {
        let cannot = |error: std::io::Error| storage_error("cannot list the connect sessions", error);
        let mut files = Vec::new();
        for entry in fs::read_dir(self.inner.dir.join("sessions")).map_err(cannot)? {
            let path = entry.map_err(cannot)?.path();
            if path.extension().is_some_and(|extension| extension == "json") {
                files.push(path);
            }
        }
        Ok(files)
    }

    /// The ids of the stored accounts, sorted.
    fn account_ids(&self) -> Result<Vec<AccountId>> {
        let entries = fs::read_dir(self.inner.dir.join("accounts"))
            .map_err(|error| storage_error("cannot list the accounts", error))?;
        let mut ids = Vec::new();
        for entry in entries {
            let name = entry
                .map_err(|error| storage_error("cannot list the accounts", error))?
                .file_name();
            // Temporary files of writes in flight end in `.tmp`.
            if let Some(id) = name.to_str().and_then(|name| name.strip_suffix(".json"))
                && let Ok(id) = AccountId::new(id)
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[async_trait]
impl Storage for FileStorage {
    /// Must refuse an id that exists with `AlreadyExists`, keeping the
    /// stored record: a database's unique key does it.
    async fn insert_account(&self, account: &StoredAccount, events: &[Event]) -> Result<()> {
        let account = account.clone();
        let events = events.to_vec();
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let path = storage.account_path(&account.id);
            if path.exists() {
                return Err(
                    Error::new(ErrorKind::AlreadyExists, "account exists already").with_context("account", &account.id)
                );
            }
            storage.with_events(&events, || {
                write_atomically(&path, &to_json(&account)?).map(|()| ((), true))
            })
        })
        .await
    }

    /// `None` when there is no such record; an error when there is one that
    /// cannot be read.
    async fn account(&self, id: &AccountId) -> Result<Option<StoredAccount>> {
        let id = id.clone();
        self.blocking(move |storage| read_account(&storage.account_path(&id), &id))
            .await
    }

    /// Every account sorted by id; a record that cannot be read is an
    /// error in its place, naming its account.
    async fn accounts(&self) -> Result<Vec<Result<StoredAccount>>> {
        self.blocking(|storage| {
            Ok(storage
                .account_ids()?
                .into_iter()
                .filter_map(|id| read_account(&storage.account_path(&id), &id).transpose())
                .collect())
        })
        .await
    }

    async fn accounts_page(&self, query: &AccountQuery) -> Result<AccountPage> {
        let query = query.clone();
        self.blocking(move |storage| {
            // A directory listing is cheap beside reading files: only the
            // page's records are read.
            let records = storage.account_ids()?.into_iter().filter_map(|id| {
                let record = read_account(&storage.account_path(&id), &id).transpose()?;
                Some((id, record))
            });
            Ok(page_of_sorted(records, &query))
        })
        .await
    }

    /// Atomic: replaces the record only if its revision is still
    /// `expected_revision`, storing revision + 1. A database does it with
    /// `UPDATE … SET …, revision = revision + 1 WHERE id = $1 AND revision = $2`.
    async fn compare_and_swap_account(
        &self,
        expected_revision: u64,
        account: &StoredAccount,
        events: &[Event],
    ) -> Result<Swap> {
        let account = account.clone();
        let events = events.to_vec();
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let path = storage.account_path(&account.id);
            let Some(stored) = read_account(&path, &account.id)? else {
                return Err(Error::new(ErrorKind::NotFound, "no such account").with_context("account", &account.id));
            };
            if stored.revision != expected_revision {
                return Ok(Swap::Conflict(stored));
            }
            let swapped = StoredAccount {
                revision: expected_revision + 1,
                ..account
            };
            storage.with_events(&events, || {
                write_atomically(&path, &to_json(&swapped)?)?;
                Ok((Swap::Swapped(swapped), true))
            })
        })
        .await
    }

    /// Whether the account existed; deleting a missing one succeeds.
    async fn delete_account(&self, id: &AccountId, events: &[Event]) -> Result<bool> {
        let id = id.clone();
        let events = events.to_vec();
        self.blocking(move |storage| {
            let _writes = storage.lock();
            storage.with_events(&events, || {
                let existed = remove(&storage.account_path(&id))?;
                Ok((existed, existed))
            })
        })
        .await
    }

    /// Oldest first; a claim is the time written into the event's file.
    async fn claim_events(&self, now: OffsetDateTime, until: OffsetDateTime, limit: usize) -> Result<Vec<Event>> {
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let mut claimed = Vec::new();
            for (path, mut record) in storage.outbox()? {
                if claimed.len() == limit {
                    break;
                }
                if record.claimed_until.is_some_and(|end| end > now) {
                    continue;
                }
                record.claimed_until = Some(until);
                write_atomically(&path, &to_json(&record)?)?;
                claimed.push(record.event);
            }
            Ok(claimed)
        })
        .await
    }

    async fn complete_event(&self, id: &EventId) -> Result<bool> {
        let id = id.clone();
        self.blocking(move |storage| {
            let _writes = storage.lock();
            remove(&storage.outbox_path(&id))
        })
        .await
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog> {
        self.blocking(|storage| {
            let records = storage.outbox()?;
            Ok(OutboxBacklog {
                events: records.len() as u64,
                oldest: records.iter().map(|(_, record)| record.event.timestamp).min(),
            })
        })
        .await
    }

    /// A state already pending is refused with `AlreadyExists`.
    async fn insert_pending_authorization(&self, pending: &PendingAuthorization) -> Result<()> {
        let pending = pending.clone();
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let path = storage.pending_path(&pending.state);
            if path.exists() {
                return Err(Error::new(ErrorKind::AlreadyExists, "this state is pending already"));
            }
            write_atomically(&path, &to_json(&pending)?)
        })
        .await
    }

    /// Single use: removes and returns it atomically, so two callbacks with
    /// one state cannot both get it (`DELETE … RETURNING`).
    async fn take_pending_authorization(&self, state: &str) -> Result<Option<PendingAuthorization>> {
        let state = state.to_owned();
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let path = storage.pending_path(&state);
            let Some(bytes) = read(&path)? else {
                return Ok(None);
            };
            let pending = serde_json::from_slice(&bytes).map_err(|error| {
                Error::new(ErrorKind::Unreadable, "cannot parse a pending authorization").with_source(error)
            })?;
            remove(&path)?;
            Ok(Some(pending))
        })
        .await
    }

    /// Deletes those that expired at or before `now`; returns how many.
    async fn delete_expired_pending_authorizations(&self, now: OffsetDateTime) -> Result<usize> {
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let mut deleted = 0;
            for path in storage.pending_files()? {
                let expired = read(&path)?
                    .and_then(|bytes| serde_json::from_slice::<PendingAuthorization>(&bytes).ok())
                    .is_some_and(|pending| pending.expires_at <= now);
                if expired && remove(&path)? {
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// Every pending authorization, sorted by state.
    async fn pending_authorizations(&self) -> Result<Vec<PendingAuthorization>> {
        self.blocking(move |storage| {
            let mut listed = Vec::new();
            for path in storage.pending_files()? {
                if let Some(bytes) = read(&path)? {
                    listed.push(serde_json::from_slice::<PendingAuthorization>(&bytes).map_err(|error| {
                        Error::new(ErrorKind::Unreadable, "cannot parse a pending authorization").with_source(error)
                    })?);
                }
            }
            listed.sort_by(|a, b| a.state.cmp(&b.state));
            Ok(listed)
        })
        .await
    }

    /// A token hash that is stored is refused with `AlreadyExists`.
    async fn insert_connect_session(&self, session: &ConnectSession) -> Result<()> {
        let session = session.clone();
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let path = storage.session_path(&session.token_hash);
            if path.exists() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "this connect session exists already",
                ));
            }
            write_atomically(&path, &to_json(&session)?)
        })
        .await
    }

    /// The session, expired or not: the caller tells.
    async fn connect_session(&self, token_hash: &str) -> Result<Option<ConnectSession>> {
        let token_hash = token_hash.to_owned();
        self.blocking(move |storage| read_session(&storage.session_path(&token_hash)))
            .await
    }

    /// Atomic: replaces the session only if the stored one equals
    /// `expected`, so of two requests completing one session only one
    /// succeeds. A database does it with `UPDATE … WHERE token_hash = $1
    /// AND record = $2`.
    async fn update_connect_session(&self, expected: &ConnectSession, session: &ConnectSession) -> Result<bool> {
        let (expected, session) = (expected.clone(), session.clone());
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let path = storage.session_path(&session.token_hash);
            if read_session(&path)?.as_ref() != Some(&expected) {
                return Ok(false);
            }
            write_atomically(&path, &to_json(&session)?)?;
            Ok(true)
        })
        .await
    }

    /// Deletes those that expired at or before `now`; returns how many.
    async fn delete_expired_connect_sessions(&self, now: OffsetDateTime) -> Result<usize> {
        self.blocking(move |storage| {
            let _writes = storage.lock();
            let mut deleted = 0;
            for path in storage.session_files()? {
                let expired = read(&path)?
                    .and_then(|bytes| serde_json::from_slice::<ConnectSession>(&bytes).ok())
                    .is_some_and(|session| session.expires_at <= now);
                if expired && remove(&path)? {
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }
}

fn read_session(path: &Path) -> Result<Option<ConnectSession>> {
    let Some(bytes) = read(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| Error::new(ErrorKind::Unreadable, "cannot parse a connect session").with_source(error))
}

/// An event in the outbox, with the end of its claim.
#[derive(serde::Serialize, serde::Deserialize)]
struct OutboxRecord {
    event: Event,
    #[serde(default, with = "integrations::time::serde::rfc3339::option")]
    claimed_until: Option<OffsetDateTime>,
}

fn read_account(path: &Path, id: &AccountId) -> Result<Option<StoredAccount>> {
    let Some(bytes) = read(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|error| {
        Error::new(ErrorKind::Unreadable, "cannot parse the stored record")
            .with_context("account", id)
            .with_source(error)
    })
}

fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(storage_error("cannot read a record", error)),
    }
}

fn remove(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path).map(|()| true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(storage_error("cannot remove a record", error)),
    }
}

fn to_json(record: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|error| storage_error("cannot encode a record", error))
}

/// Durable once it returns: a temporary file, fsynced, renamed over the
/// record, then the directory fsynced so that the rename is kept too.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    };
    write().map_err(|error| storage_error("cannot write a record", error))?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| storage_error("cannot sync the store's directory", error))
}

fn storage_error(message: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Storage, message.to_owned()).with_source(error)
}
