//! API keys: random bearer keys, stored as SHA-256 hashes in the gateway's
//! [`KeyStorage`] (a file in the data directory, or the database several
//! gateways share), compared in constant time.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use integrations::crypto::random_bytes;
use integrations::secrecy::SecretString;
use integrations::storage::{KeyStorage, StoredApiKey};
use integrations::time::OffsetDateTime;
use integrations::{Error, ErrorKind, Result, async_trait};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The key file's name inside a data directory.
pub const KEYS_FILE_NAME: &str = "api-keys.json";

const KEY_PREFIX: &str = "ik_";

/// A stored API key: its id, name, creation time and hash. The key itself
/// is shown once, when it is created, and never kept.
pub type ApiKey = StoredApiKey;

/// How long a key created or revoked elsewhere (another gateway, or
/// `integrations keys` while the gateway runs) may take to be seen.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// The API keys a gateway accepts: the keys of its [`KeyStorage`], read
/// again every [`RELOAD_INTERVAL`] by a thread of their own, so that
/// checking a key on the request path never waits for the store.
#[derive(Debug)]
pub struct ApiKeys {
    storage: Arc<dyn KeyStorage>,
    accepted: Arc<Accepted>,
}

/// The keys as last read.
#[derive(Debug, Default)]
struct Accepted {
    keys: Mutex<Vec<ApiKey>>,
    /// Changes whenever the set of keys does: a key accepted at one
    /// generation is still valid while it lasts.
    generation: AtomicU64,
    /// Whether the last read failed (and every key is refused).
    unreadable: AtomicBool,
}

impl Accepted {
    fn keys(&self) -> std::sync::MutexGuard<'_, Vec<ApiKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn replace(&self, keys: Vec<ApiKey>) {
        self.unreadable.store(false, Ordering::Release);
        let mut accepted = self.keys();
        if *accepted != keys {
            *accepted = keys;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl ApiKeys {
    /// The keys of `storage`, read now (an error if they cannot be) and
    /// every [`RELOAD_INTERVAL`] after.
    pub async fn new(storage: Arc<dyn KeyStorage>) -> Result<Self> {
        let accepted = Arc::new(Accepted::default());
        accepted.replace(storage.keys().await?);
        spawn_reloader(Arc::clone(&storage), Arc::downgrade(&accepted))?;
        Ok(Self { storage, accepted })
    }

    /// The keys in the file of a data directory.
    pub async fn in_data_dir(dir: &Path) -> Result<Self> {
        Self::new(Arc::new(KeyFile::in_data_dir(dir))).await
    }

    /// Creates a key named `name`; returns it with the key itself, which
    /// is not stored and cannot be shown again.
    pub async fn create(&self, name: &str) -> Result<(ApiKey, SecretString)> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a key name must be 1 to 100 characters",
            ));
        }
        let id: String = random_bytes::<4>().iter().map(|b| format!("{b:02x}")).collect();
        let secret = format!("{KEY_PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
        let key = ApiKey {
            id,
            name: name.trim().to_owned(),
            created_at: OffsetDateTime::now_utc(),
            hash: hash(&secret),
        };
        self.storage.insert_key(&key).await?;
        self.reload().await?;
        Ok((key, SecretString::from(secret)))
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> Result<Vec<ApiKey>> {
        self.reload().await?;
        Ok(self.accepted.keys().clone())
    }

    /// Revokes the key with `id`; returns whether it existed. This gateway
    /// refuses it at once, others within [`RELOAD_INTERVAL`].
    pub async fn revoke(&self, id: &str) -> Result<bool> {
        let found = self.storage.delete_key(id).await?;
        self.reload().await?;
        Ok(found)
    }

    /// The key `presented` is, if it is one. Every stored hash is compared,
    /// in constant time, so timing tells nothing about near misses.
    pub fn verify(&self, presented: &str) -> Option<ApiKey> {
        self.find(presented, ApiKey::clone)
    }

    /// Whether `presented` is a key, as [`verify`](Self::verify) decides,
    /// without copying the key's record.
    pub fn accepts(&self, presented: &str) -> bool {
        self.find(presented, |_| ()).is_some()
    }

    /// The current generation of the keys (see [`accepts`](Self::accepts)):
    /// a caller that saw a key accepted may skip checking it again while the
    /// generation stays the same.
    pub fn generation(&self) -> u64 {
        self.accepted.generation.load(Ordering::Acquire)
    }

    fn find<T>(&self, presented: &str, found: impl Fn(&ApiKey) -> T) -> Option<T> {
        let presented = hash(presented);
        let mut matching = None;
        for key in self.accepted.keys().iter() {
            if bool::from(key.hash.as_bytes().ct_eq(presented.as_bytes())) {
                matching = Some(found(key));
            }
        }
        matching
    }

    /// Whether the keys could not be read the last time they were: every
    /// key is refused meanwhile, which the gateway says with a 503 rather
    /// than a 401.
    pub fn unreadable(&self) -> bool {
        self.accepted.unreadable.load(Ordering::Acquire)
    }

    /// Whether any key exists.
    pub fn is_empty(&self) -> bool {
        self.accepted.keys().is_empty()
    }

    async fn reload(&self) -> Result<()> {
        self.accepted.replace(self.storage.keys().await?);
        Ok(())
    }
}

/// Reads the keys again every [`RELOAD_INTERVAL`] until the [`ApiKeys`]
/// are dropped. Keys that cannot be read are not trusted: a revocation may
/// be what could not be read, so every key is refused until they can.
fn spawn_reloader(storage: Arc<dyn KeyStorage>, accepted: Weak<Accepted>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::new(ErrorKind::Storage, "cannot start the API key reloader").with_source(e))?;
    std::thread::Builder::new()
        .name("integrations-api-keys".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    tokio::time::sleep(RELOAD_INTERVAL).await;
                    let read = storage.keys().await;
                    let Some(accepted) = accepted.upgrade() else { return };
                    match read {
                        Ok(keys) => accepted.replace(keys),
                        Err(error) => {
                            tracing::error!(%error, "cannot read the API keys; every key is refused until they can be read");
                            accepted.replace(Vec::new());
                            accepted.unreadable.store(true, Ordering::Release);
                        }
                    }
                }
            });
        })
        .map_err(|e| Error::new(ErrorKind::Storage, "cannot start the API key reloader").with_source(e))?;
    Ok(())
}

#[derive(Default, Serialize, Deserialize)]
struct KeysInFile {
    keys: Vec<ApiKey>,
}

/// API keys in one file of the data directory (beside sled's database,
/// which only one process can open): `integrations keys` changes them
/// while the gateway runs.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// The keys in `path` (none while the file does not exist).
    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The key file of a data directory.
    pub fn in_data_dir(dir: &Path) -> Self {
        Self::open(dir.join(KEYS_FILE_NAME))
    }

    fn read(&self) -> Result<Vec<ApiKey>> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(self.error("cannot read").with_source(error)),
        };
        let mut keys = serde_json::from_slice::<KeysInFile>(&text)
            .map_err(|e| self.error("cannot parse").with_source(e))?
            .keys;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    /// Changes the keys under an exclusive lock on a file beside them, held
    /// from reading the current keys to renaming the new file in place, so
    /// that two processes changing the keys at once lose neither change.
    fn update<T>(&self, change: impl FnOnce(&mut Vec<ApiKey>) -> Result<T>) -> Result<T> {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("json.lock"))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| self.error("cannot lock").with_source(e))?;
        let mut keys = self.read()?;
        let outcome = change(&mut keys)?;
        let text = serde_json::to_string_pretty(&KeysInFile { keys })
            .map_err(|e| self.error("cannot encode").with_source(e))?;
        // Written whole to a private temporary file, then renamed over.
        let temporary = self.path.with_extension("json.tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&temporary).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        written
            .and_then(|()| fs::rename(&temporary, &self.path))
            .and_then(|()| sync_directory_of(&self.path))
            .map_err(|e| self.error("cannot write").with_source(e))?;
        drop(lock);
        Ok(outcome)
    }

    fn error(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Storage,
            format!("{what} the API key file {}", self.path.display()),
        )
    }
}

#[async_trait]
impl KeyStorage for KeyFile {
    async fn insert_key(&self, key: &ApiKey) -> Result<()> {
        self.update(|keys| {
            if keys.iter().any(|stored| stored.id == key.id) {
                return Err(Error::new(ErrorKind::AlreadyExists, "API key exists already").with_context("key", &key.id));
            }
            keys.push(key.clone());
            Ok(())
        })
    }

    async fn keys(&self) -> Result<Vec<ApiKey>> {
        self.read()
    }

    async fn delete_key(&self, id: &str) -> Result<bool> {
        self.update(|keys| {
            let before = keys.len();
            keys.retain(|key| key.id != id);
            Ok(keys.len() != before)
        })
    }
}

/// Makes a rename into `path`'s directory durable: the new key file is
/// the one found after a crash.
fn sync_directory_of(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(directory) = path.parent() {
        let directory = if directory.as_os_str().is_empty() {
            Path::new(".")
        } else {
            directory
        };
        fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

/// The lowercase hex SHA-256 of `key`, as stored.
fn hash(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(key.as_bytes()) {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use integrations::secrecy::ExposeSecret;

    use super::*;

    /// Waits until `accepted` says `expected`, for at most twice the
    /// reload interval.
    async fn settles(keys: &ApiKeys, secret: &str, expected: bool) -> bool {
        let deadline = Instant::now() + 2 * RELOAD_INTERVAL + Duration::from_millis(200);
        while keys.accepts(secret) != expected {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    #[tokio::test]
    async fn keys_are_stored_hashed_and_verified() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = ApiKeys::in_data_dir(dir.path()).await.expect("open");
        let (created, secret) = keys.create("billing service").await.expect("create");
        assert!(secret.expose_secret().starts_with(&format!("ik_{}_", created.id)));
        let file = fs::read_to_string(dir.path().join(KEYS_FILE_NAME)).expect("file");
        assert!(!file.contains(secret.expose_secret()), "only the hash is stored");
        assert_eq!(
            keys.verify(secret.expose_secret()).map(|k| k.id),
            Some(created.id.clone())
        );
        assert!(keys.accepts(secret.expose_secret()));
        assert!(keys.verify("ik_nope").is_none());
        assert!(!keys.accepts("ik_nope"));

        // Another process's view sees the same keys, and revocation.
        let other = ApiKeys::in_data_dir(dir.path()).await.expect("open");
        assert!(other.verify(secret.expose_secret()).is_some());
        assert!(other.revoke(&created.id).await.expect("revoke"));
        assert!(!other.revoke(&created.id).await.expect("revoke again"));
        assert!(!other.accepts(secret.expose_secret()), "refused at once where revoked");
        assert!(
            settles(&keys, secret.expose_secret(), false).await,
            "revoked elsewhere, refused here within the reload interval"
        );
        assert!(!format!("{created:?}").contains(&created.hash), "{created:?}");
    }

    #[tokio::test]
    async fn concurrent_changes_from_two_processes_lose_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tasks = Vec::new();
        for process in 0..2 {
            // Each its own `ApiKeys`, as two processes would have.
            let keys = ApiKeys::in_data_dir(dir.path()).await.expect("open");
            tasks.push(tokio::spawn(async move {
                for n in 0..20 {
                    keys.create(&format!("process {process} key {n}"))
                        .await
                        .expect("create");
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let keys = ApiKeys::in_data_dir(dir.path()).await.expect("open");
        assert_eq!(
            keys.list().await.expect("list").len(),
            40,
            "no create may overwrite another"
        );
    }

    #[tokio::test]
    async fn keys_that_cannot_be_read_are_all_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = ApiKeys::in_data_dir(dir.path()).await.expect("open");
        let (_, secret) = keys.create("service").await.expect("create");
        assert!(keys.accepts(secret.expose_secret()));
        fs::write(dir.path().join(KEYS_FILE_NAME), "{ not json").expect("damage");
        assert!(
            settles(&keys, secret.expose_secret(), false).await,
            "unreadable keys are refused, not the old set kept"
        );
        assert!(keys.unreadable());
        let error = ApiKeys::in_data_dir(dir.path()).await.expect_err("unreadable at start");
        assert!(error.to_string().contains("cannot parse the API key file"), "{error}");
    }
}
