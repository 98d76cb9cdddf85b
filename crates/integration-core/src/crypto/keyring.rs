//! Keyrings: one active key that seals, and older keys that only open, so
//! that the key can be rotated while records sealed with the old one are
//! re-sealed (modelled on Vault's keyring).

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use super::{ENCRYPTION_KEY_ENV, EncryptionKey, KeyId, check_permissions, key_error};
use crate::{Error, Result};

/// The environment variable with the decrypt-only keys that go with
/// [`ENCRYPTION_KEY_ENV`]: `ID:KEY` pairs separated by commas, each ID the
/// key's id (as `integrations encryption status` shows it).
pub const ENCRYPTION_KEYS_ENV: &str = "INTEGRATIONS_ENCRYPTION_KEYS";

/// The environment variable naming a keyring file, read again while the
/// process runs.
pub const KEYRING_ENV: &str = "INTEGRATIONS_ENCRYPTION_KEYRING";

/// The keyring file's name inside a data directory.
pub const KEYRING_FILE_NAME: &str = "encryption.keyring";

/// Keys that open sealed values; the first, the active key, also seals.
/// Debug shows key ids only.
#[derive(Clone)]
pub struct Keyring {
    /// The active key first; no id twice.
    keys: Vec<EncryptionKey>,
}

impl Keyring {
    /// A keyring of one key, active.
    pub fn new(active: EncryptionKey) -> Self {
        Self { keys: vec![active] }
    }

    /// The key that seals.
    pub fn active(&self) -> &EncryptionKey {
        &self.keys[0]
    }

    /// Every key, the active one first.
    pub fn keys(&self) -> &[EncryptionKey] {
        &self.keys
    }

    /// The key with `id`.
    pub fn get(&self, id: KeyId) -> Option<&EncryptionKey> {
        self.keys.iter().find(|key| key.id() == id)
    }

    /// Adds `key` as a decrypt-only key; a key already there stays as it is.
    pub fn add(&mut self, key: EncryptionKey) {
        if self.get(key.id()).is_none() {
            self.keys.push(key);
        }
    }

    /// Makes `key` the active key; the previous one stays, decrypt-only.
    pub fn rotate_to(&mut self, key: EncryptionKey) {
        self.keys.retain(|kept| kept.id() != key.id());
        self.keys.insert(0, key);
    }

    /// Removes the decrypt-only key `id`; returns whether it was there. The
    /// active key cannot be removed.
    pub fn remove(&mut self, id: KeyId) -> Result<bool> {
        if self.active().id() == id {
            return Err(key_error(format!(
                "key {id} is the active key: rotate to a new key before retiring it"
            )));
        }
        let before = self.keys.len();
        self.keys.retain(|key| key.id() != id);
        Ok(self.keys.len() != before)
    }

    /// Reads `ID:KEY` entries, separated by commas or lines (`#` starts a
    /// comment); the first is the active key. Each ID must be its key's id,
    /// which catches a key pasted next to the wrong id.
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys: Vec<EncryptionKey> = Vec::new();
        let entries = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for (index, entry) in entries.enumerate() {
            let number = index + 1;
            let Some((id, key)) = entry.split_once(':') else {
                return Err(key_error(format!("keyring entry {number} is not `ID:KEY`")));
            };
            let key = EncryptionKey::parse(key)
                .map_err(|error| key_error(format!("keyring entry {number} ({}): {}", id.trim(), error.message())))?;
            if key.id().to_string() != id.trim() {
                return Err(key_error(format!(
                    "keyring entry {number}: the key's id is {}, not `{}`",
                    key.id(),
                    id.trim()
                )));
            }
            if keys.iter().any(|kept| kept.id() == key.id()) {
                return Err(key_error(format!(
                    "keyring entry {number}: key {} is listed twice",
                    key.id()
                )));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(key_error("the keyring holds no key"));
        }
        Ok(Self { keys })
    }

    /// The keyring as [`parse`](Self::parse) reads it, one key per line.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::from(
            "# integrations keyring: ID:KEY per line, the active key first\n",
        ));
        for key in &self.keys {
            text.push_str(&format!("{}:{}\n", key.id(), key.to_base64().as_str()));
        }
        text
    }

    /// The keyring of the environment: [`ENCRYPTION_KEY_ENV`] active, with
    /// the decrypt-only keys of [`ENCRYPTION_KEYS_ENV`]; `None` when the
    /// first is not set.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(active) = EncryptionKey::from_env()? else {
            if std::env::var_os(ENCRYPTION_KEYS_ENV).is_some() {
                return Err(key_error(format!(
                    "{ENCRYPTION_KEYS_ENV} is set without {ENCRYPTION_KEY_ENV}: set the active key too"
                )));
            }
            return Ok(None);
        };
        let mut keyring = Self::new(active);
        match std::env::var(ENCRYPTION_KEYS_ENV) {
            Ok(text) if !text.trim().is_empty() => {
                let others = Self::parse(&text)
                    .map_err(|error| key_error(format!("{ENCRYPTION_KEYS_ENV}: {}", error.message())))?;
                for key in others.keys {
                    keyring.add(key);
                }
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(key_error(format!("{ENCRYPTION_KEYS_ENV} is not valid UTF-8")));
            }
        }
        Ok(Some(keyring))
    }

    /// Reads the keyring file at `path`, which only its owner may read.
    pub fn load(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(
            fs::read_to_string(path)
                .map_err(|error| key_error(format!("cannot read keyring {}", path.display())).with_source(error))?,
        );
        check_permissions(path)?;
        Self::parse(&text).map_err(|error| key_error(format!("keyring {}: {}", path.display(), error.message())))
    }

    /// Writes the keyring to `path` (0600), whole: to a temporary file
    /// first, renamed over, so that a reader never sees half of it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let cannot = |error: std::io::Error| -> Error {
            key_error(format!("cannot write keyring {}", path.display())).with_source(error)
        };
        let temporary = path.with_extension("keyring.tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary).map_err(cannot)?;
        file.write_all(self.to_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(cannot)?;
        fs::rename(&temporary, path).map_err(cannot)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active().id())
            .field("keys", &self.keys.iter().map(EncryptionKey::id).collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Cipher;

    #[test]
    fn a_rotated_keyring_opens_the_old_values_and_seals_with_the_new_key() {
        let old = EncryptionKey::generate();
        let sealed_before = Cipher::new(&old).seal("a", "f", b"secret");
        let mut keyring = Keyring::new(old.clone());
        let new = EncryptionKey::generate();
        keyring.rotate_to(new.clone());
        assert_eq!(keyring.active().id(), new.id());
        let cipher = Cipher::with_keyring(&keyring);
        assert_eq!(cipher.key_ids(), [new.id(), old.id()]);
        assert_eq!(
            cipher.open("a", "f", &sealed_before).expect("opens").as_slice(),
            b"secret"
        );
        let sealed_after = cipher.seal("a", "f", b"secret");
        assert_eq!(sealed_after.key_id(), Some(new.id()));

        let error = keyring.remove(new.id()).expect_err("the active key stays");
        assert!(error.to_string().contains("is the active key"), "{error}");
        assert!(keyring.remove(old.id()).expect("retired"));
        let cipher = Cipher::with_keyring(&keyring);
        assert!(
            cipher.open("a", "f", &sealed_before).is_err(),
            "retired: no longer opens"
        );
    }

    #[test]
    fn keyrings_are_written_and_read_back_with_their_ids_checked() {
        let mut keyring = Keyring::new(EncryptionKey::generate());
        keyring.add(EncryptionKey::generate());
        let text = keyring.to_text();
        let read = Keyring::parse(&text).expect("reads back");
        assert_eq!(format!("{read:?}"), format!("{keyring:?}"));
        let one_line = text.lines().skip(1).collect::<Vec<_>>().join(" , ");
        assert_eq!(
            format!("{:?}", Keyring::parse(&one_line).expect("commas")),
            format!("{keyring:?}")
        );

        let key = EncryptionKey::generate();
        let wrong_id = format!("00000000:{}", key.to_base64().as_str());
        let error = Keyring::parse(&wrong_id).expect_err("wrong id");
        assert!(
            error.to_string().contains(&format!("the key's id is {}", key.id())),
            "{error}"
        );
        assert!(!error.to_string().contains(key.to_base64().as_str()), "{error}");
        for (text, message) in [
            ("", "holds no key"),
            ("no colon", "is not `ID:KEY`"),
            ("abcd:not-a-key", "entry 1 (abcd)"),
        ] {
            let error = Keyring::parse(text).expect_err(text);
            assert!(error.to_string().contains(message), "{text}: {error}");
        }
        let twice = format!("{}:{}\n{0}:{1}", key.id(), key.to_base64().as_str());
        assert!(
            Keyring::parse(&twice)
                .expect_err("twice")
                .to_string()
                .contains("listed twice")
        );
        assert!(!format!("{keyring:?}").contains(keyring.active().to_base64().as_str()));
    }

    #[cfg(unix)]
    #[test]
    fn a_reloading_cipher_follows_its_keyring_file() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEYRING_FILE_NAME);
        let old = EncryptionKey::generate();
        Keyring::new(old.clone()).save(&path).expect("save");
        assert_eq!(
            fs::metadata(&path).expect("metadata").permissions().mode() & 0o777,
            0o600
        );
        let watched = path.clone();
        let cipher = Cipher::reloading(move || Keyring::load(&watched)).expect("cipher");
        let sealed_old = cipher.seal("a", "f", b"v");

        // Another process rotates: a value sealed with the new key opens at
        // once, and sealing moves to the new key within the interval.
        let new = EncryptionKey::generate();
        let mut keyring = Keyring::load(&path).expect("load");
        keyring.rotate_to(new.clone());
        keyring.save(&path).expect("save");
        let sealed_new = Cipher::new(&new).seal("a", "f", b"v");
        std::thread::sleep(super::super::RELOAD_ON_UNKNOWN_KEY);
        assert_eq!(cipher.open("a", "f", &sealed_new).expect("opens").as_slice(), b"v");
        assert_eq!(
            cipher.open("a", "f", &sealed_old).expect("still opens").as_slice(),
            b"v"
        );
        assert_eq!(cipher.key_id(), new.id());

        // A keyring that cannot be read again keeps the keys in use.
        fs::write(&path, "broken").expect("break");
        std::thread::sleep(super::super::KEYRING_RELOAD_INTERVAL);
        assert_eq!(cipher.seal("a", "f", b"v").key_id(), Some(new.id()));
    }
}
