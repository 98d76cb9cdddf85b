//! API keys: random bearer keys, stored as SHA-256 hashes in a file of the
//! data directory, compared in constant time.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use integrations::crypto::random_bytes;
use integrations::secrecy::SecretString;
use integrations::time::OffsetDateTime;
use integrations::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The key file's name inside a data directory.
pub const KEYS_FILE_NAME: &str = "api-keys.json";

const KEY_PREFIX: &str = "ik_";

/// A stored API key: its id, name and hash. The key itself is shown once,
/// when it is created, and never kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    /// A short public id, used to revoke the key.
    pub id: String,
    /// What the key is for.
    pub name: String,
    /// When it was created.
    #[serde(with = "integrations::time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Hex SHA-256 of the key.
    hash: String,
}

#[derive(Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<ApiKey>,
}

/// The API keys of a gateway, in one file; changes made by another process
/// (`integrations keys create` while the gateway runs) are picked up.
#[derive(Debug)]
pub struct ApiKeys {
    path: PathBuf,
    /// The SHA-256 of the file's contents as last read (`None`: no file
    /// yet), and its keys.
    loaded: Mutex<(Option<[u8; 32]>, Vec<ApiKey>)>,
    opened: Instant,
    /// When the file was last looked at (milliseconds after `opened`), to
    /// stat it at most once per [`RELOAD_INTERVAL`] on the request path.
    checked: AtomicU64,
    /// Changes whenever the set of keys does: a key accepted at one
    /// generation is still valid while it lasts.
    generation: AtomicU64,
}

/// How long a revocation made by another process may take to be seen.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(RELOAD_INTERVAL_MILLIS);
const RELOAD_INTERVAL_MILLIS: u64 = 500;

impl ApiKeys {
    /// The keys in `path` (none when the file does not exist yet).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let keys = Self {
            path: path.into(),
            loaded: Mutex::new((None, Vec::new())),
            opened: Instant::now(),
            checked: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        };
        keys.reload()?;
        Ok(keys)
    }

    /// The keys of a data directory.
    pub fn in_data_dir(dir: &Path) -> Result<Self> {
        Self::open(dir.join(KEYS_FILE_NAME))
    }

    /// Creates a key named `name`; returns it with the key itself, which
    /// is not stored and cannot be shown again.
    pub fn create(&self, name: &str) -> Result<(ApiKey, SecretString)> {
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
        self.update(|keys| keys.push(key.clone()))?;
        Ok((key, SecretString::from(secret)))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<ApiKey>> {
        self.reload()?;
        Ok(self.loaded.lock().unwrap_or_else(|p| p.into_inner()).1.clone())
    }

    /// Revokes the key with `id`; returns whether it existed.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        let mut found = false;
        self.update(|keys| {
            let before = keys.len();
            keys.retain(|key| key.id != id);
            found = keys.len() != before;
        })?;
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
        self.reload_if_due();
        self.generation.load(Ordering::Acquire)
    }

    fn reload_if_due(&self) {
        // Milliseconds since the keys were opened: an atomic rather than a
        // lock, as every request on every worker reads it.
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let checked = self.checked.load(Ordering::Relaxed);
        let due = now.saturating_sub(checked) >= RELOAD_INTERVAL_MILLIS
            && self
                .checked
                .compare_exchange(checked, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if due && let Err(error) = self.reload() {
            // Keys that cannot be read are not trusted: a revocation may be
            // what could not be read.
            tracing::error!(%error, "cannot reload the API keys; every key is refused until they can be read");
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if !loaded.1.is_empty() || loaded.0.is_some() {
                *loaded = (None, Vec::new());
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn find<T>(&self, presented: &str, found: impl Fn(&ApiKey) -> T) -> Option<T> {
        self.reload_if_due();
        let presented = hash(presented);
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let mut matching = None;
        for key in &loaded.1 {
            if bool::from(key.hash.as_bytes().ct_eq(presented.as_bytes())) {
                matching = Some(found(key));
            }
        }
        matching
    }

    /// Whether any key exists.
    pub fn is_empty(&self) -> bool {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).1.is_empty()
    }

    /// Reads the file again; the keys change only when its contents did
    /// (compared by digest: a write within the file system's timestamp
    /// granularity, or one that kept the old time, is still seen).
    fn reload(&self) -> Result<()> {
        let text = match fs::read(&self.path) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(self.error("cannot read").with_source(error)),
        };
        let digest = text.as_deref().map(|text| <[u8; 32]>::from(Sha256::digest(text)));
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if digest.is_some() && loaded.0 == digest {
            return Ok(());
        }
        loaded.1 = match &text {
            None => Vec::new(),
            Some(text) => {
                serde_json::from_slice::<KeyFile>(text)
                    .map_err(|e| self.error("cannot parse").with_source(e))?
                    .keys
            }
        };
        loaded.0 = digest;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Changes the keys under an exclusive lock on a file beside them, held
    /// from reading the current keys to renaming the new file in place, so
    /// that two processes changing the keys at once lose neither change.
    fn update(&self, change: impl FnOnce(&mut Vec<ApiKey>)) -> Result<()> {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("json.lock"))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| self.error("cannot lock").with_source(e))?;
        self.reload()?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = loaded.1.clone();
        change(&mut keys);
        let text = serde_json::to_string_pretty(&KeyFile { keys: keys.clone() })
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
        *loaded = (Some(Sha256::digest(text.as_bytes()).into()), keys);
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(lock);
        Ok(())
    }

    fn error(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Storage,
            format!("{what} the API key file {}", self.path.display()),
        )
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
    use integrations::secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn keys_are_stored_hashed_and_verified() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = ApiKeys::in_data_dir(dir.path()).expect("open");
        let (created, secret) = keys.create("billing service").expect("create");
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
        let other = ApiKeys::in_data_dir(dir.path()).expect("open");
        assert!(other.verify(secret.expose_secret()).is_some());
        assert!(other.revoke(&created.id).expect("revoke"));
        assert!(!other.revoke(&created.id).expect("revoke again"));
        std::thread::sleep(RELOAD_INTERVAL);
        assert!(
            keys.verify(secret.expose_secret()).is_none(),
            "revoked elsewhere, refused here"
        );
        assert!(!format!("{created:?}").contains(secret.expose_secret()));
    }

    #[test]
    fn a_change_is_seen_by_its_contents_even_with_the_old_timestamp() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEYS_FILE_NAME);
        let keys = ApiKeys::open(&path).expect("open");
        let (_, secret) = keys.create("first").expect("create");
        let modified = fs::metadata(&path).and_then(|m| m.modified()).expect("mtime");
        // Another process revokes every key; the file keeps its old time.
        fs::write(&path, r#"{"keys": []}"#).expect("write");
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(modified))
            .expect("set mtime");
        std::thread::sleep(RELOAD_INTERVAL);
        assert!(!keys.accepts(secret.expose_secret()), "the revocation is seen");
    }

    #[test]
    fn concurrent_changes_from_two_processes_lose_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let threads: Vec<_> = (0..2)
            .map(|process| {
                // Each its own `ApiKeys`, as two processes would have.
                let keys = ApiKeys::in_data_dir(dir.path()).expect("open");
                std::thread::spawn(move || {
                    for n in 0..20 {
                        keys.create(&format!("process {process} key {n}")).expect("create");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let listed = ApiKeys::in_data_dir(dir.path()).expect("open").list().expect("list");
        assert_eq!(listed.len(), 40, "no create may overwrite another");
    }

    #[test]
    fn keys_that_cannot_be_read_are_all_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = ApiKeys::in_data_dir(dir.path()).expect("open");
        let (_, secret) = keys.create("service").expect("create");
        assert!(keys.accepts(secret.expose_secret()));
        fs::write(dir.path().join(KEYS_FILE_NAME), "{ not json").expect("damage");
        std::thread::sleep(RELOAD_INTERVAL);
        assert!(
            !keys.accepts(secret.expose_secret()),
            "unreadable keys are refused, not the old set kept"
        );
    }
}
