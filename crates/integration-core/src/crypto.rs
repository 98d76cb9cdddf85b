//! Encryption of credentials before they reach any storage backend.
//!
//! Each secret value is sealed on its own with XChaCha20-Poly1305 under a
//! versioned envelope: `version (1) | key id (4) | nonce (24) | ciphertext`.
//! The header, the account id and the field name are bound as associated
//! data, so a sealed value cannot be moved to another account or field, and
//! one that was sealed under another key is recognised as such.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Error, ErrorKind, Result};

mod keyring;

pub use keyring::{ENCRYPTION_KEYS_ENV, KEYRING_ENV, KEYRING_FILE_NAME, Keyring};

/// The environment variable that holds the encryption key (32 bytes, in
/// base64 or hex).
pub const ENCRYPTION_KEY_ENV: &str = "INTEGRATIONS_ENCRYPTION_KEY";

/// The key file's name inside a data directory.
pub const KEY_FILE_NAME: &str = "encryption.key";

/// Version 2 binds a context (for accounts: their integration and plain
/// parameters) as well as the owner and field. Version 1, which bound the
/// owner and field only, is still opened.
const ENVELOPE_VERSION: u8 = 2;
const ENVELOPE_VERSION_1: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// `N` bytes from the operating system's cryptographic random source, for
/// secrets such as API keys.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A 256-bit key. Its bytes are wiped from memory when it is dropped and
/// never shown: Debug prints only its id.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl EncryptionKey {
    /// A new random key.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&key);
        Self { bytes }
    }

    /// Reads a key written in base64 (standard alphabet) or as 64 hex digits.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let decoded = Zeroizing::new(if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| key_error("the key is not valid hex"))?
        } else {
            BASE64
                .decode(text)
                .map_err(|_| key_error("the key is neither base64 nor 64 hex digits"))?
        });
        if decoded.len() != 32 {
            return Err(key_error(format!("the key must be 32 bytes, found {}", decoded.len())));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&decoded);
        Ok(Self { bytes })
    }

    /// The key in base64, for writing it down.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.bytes.as_slice()))
    }

    /// A short public fingerprint: the first bytes of the key's SHA-256.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::digest(self.bytes.as_slice());
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }

    /// The key from [`ENCRYPTION_KEY_ENV`], if that variable is set.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(ENCRYPTION_KEY_ENV) {
            Ok(text) => Self::parse(&text)
                .map(Some)
                .map_err(|error| key_error(format!("{ENCRYPTION_KEY_ENV}: {}", error.message()))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(key_error(format!("{ENCRYPTION_KEY_ENV} is not valid UTF-8")))
            }
        }
    }

    /// Reads the key file at `path`, or creates it with a new random key,
    /// readable and writable by its owner only (0600).
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match fs::read_to_string(path) {
            Ok(text) => {
                check_permissions(path)?;
                return Self::parse(&text)
                    .map_err(|error| key_error(format!("key file {}: {}", path.display(), error.message())));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(key_error(format!("cannot read key file {}", path.display())).with_source(error));
            }
        }
        let key = Self::generate();
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|error| key_error(format!("cannot create {}", parent.display())).with_source(error))?;
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(key.to_base64().as_bytes())
                    .and_then(|()| file.write_all(b"\n"))
                    .and_then(|()| file.sync_all())
                    .map_err(|error| {
                        key_error(format!("cannot write key file {}", path.display())).with_source(error)
                    })?;
                tracing::info!(path = %path.display(), key_id = %key.id(), "created a new encryption key");
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
            Err(error) => Err(key_error(format!("cannot create key file {}", path.display())).with_source(error)),
        }
    }

    /// The key from [`ENCRYPTION_KEY_ENV`] when it is set, otherwise the
    /// key file in `data_dir`, created when missing.
    pub fn from_env_or_data_dir(data_dir: &Path) -> Result<Self> {
        match Self::from_env()? {
            Some(key) => Ok(key),
            None => Self::load_or_create(&data_dir.join(KEY_FILE_NAME)),
        }
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(|error| key_error(format!("cannot read key file {}", path.display())).with_source(error))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(key_error(format!(
            "key file {} is readable by other users (mode {:o}); run `chmod 600` on it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path) -> Result<()> {
    Ok(())
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

/// The public fingerprint of a key, shown in errors and logs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl std::str::FromStr for KeyId {
    type Err = Error;

    /// A key id as it is shown: 8 hex digits.
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.len() != 2 * KEY_ID_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(key_error(format!("`{text}` is not a key id (8 hex digits)")));
        }
        let mut id = [0u8; KEY_ID_LEN];
        for (index, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16)
                .map_err(|_| key_error(format!("`{text}` is not a key id (8 hex digits)")))?;
        }
        Ok(Self(id))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// An encrypted value, as backends store it (base64 in text formats).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(Vec<u8>);

impl SealedSecret {
    /// Wraps envelope bytes, as read back from a backend.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The envelope bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The id of the key it was sealed with, read from its envelope.
    pub fn key_id(&self) -> Option<KeyId> {
        let id = self.0.get(1..1 + KEY_ID_LEN)?;
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(id);
        Some(KeyId(key_id))
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.0.len())
    }
}

impl Serialize for SealedSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SealedSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        BASE64
            .decode(text.as_bytes())
            .map(Self)
            .map_err(|_| serde::de::Error::custom("sealed secret is not valid base64"))
    }
}

/// Seals secret values with the active key of a [`Keyring`], and opens
/// them with whichever of its keys sealed them (the key id is in the
/// envelope).
///
/// Cloning is cheap and shares the keys: a cipher made with
/// [`Cipher::reloading`] picks up a changed keyring in every clone.
#[derive(Clone)]
pub struct Cipher {
    inner: Arc<CipherInner>,
}

struct CipherInner {
    keys: RwLock<Arc<Sealers>>,
    source: Option<Source>,
}

/// One AEAD per key of the keyring, the active one first.
struct Sealers {
    active: Sealer,
    others: Vec<Sealer>,
}

struct Sealer {
    id: KeyId,
    aead: XChaCha20Poly1305,
}

impl Sealers {
    fn new(keyring: &Keyring) -> Self {
        let sealer = |key: &EncryptionKey| Sealer {
            id: key.id(),
            aead: XChaCha20Poly1305::new(key.bytes.as_slice().into()),
        };
        Self {
            active: sealer(keyring.active()),
            others: keyring.keys()[1..].iter().map(sealer).collect(),
        }
    }

    fn find(&self, id: &[u8]) -> Option<&Sealer> {
        std::iter::once(&self.active)
            .chain(&self.others)
            .find(|sealer| sealer.id.0 == id)
    }
}

type LoadKeyring = dyn Fn() -> Result<Keyring> + Send + Sync;

/// Where a reloading cipher reads its keyring again.
struct Source {
    load: Box<LoadKeyring>,
    started: Instant,
    /// Milliseconds after `started` of the last reload: an atomic, as
    /// every seal and open looks at it.
    reloaded: AtomicU64,
}

/// How often a reloading cipher reads its keyring again when used.
pub const KEYRING_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// How soon a value sealed with a key it does not know makes a reloading
/// cipher read its keyring again.
const RELOAD_ON_UNKNOWN_KEY: Duration = Duration::from_millis(100);

impl Cipher {
    /// A cipher over `key` alone.
    pub fn new(key: &EncryptionKey) -> Self {
        Self::with_keyring(&Keyring::new(key.clone()))
    }

    /// A cipher over `keyring`: sealing with its active key, opening with
    /// any of its keys.
    pub fn with_keyring(keyring: &Keyring) -> Self {
        Self {
            inner: Arc::new(CipherInner {
                keys: RwLock::new(Arc::new(Sealers::new(keyring))),
                source: None,
            }),
        }
    }

    /// A cipher over the keyring `load` gives, read now and again when
    /// the cipher is used at most every [`KEYRING_RELOAD_INTERVAL`], and at
    /// once when a value sealed with a key it does not know is opened (a
    /// key another process rotated to). A keyring that cannot be read
    /// again leaves the keys as they were.
    pub fn reloading(load: impl Fn() -> Result<Keyring> + Send + Sync + 'static) -> Result<Self> {
        let keyring = load()?;
        Ok(Self {
            inner: Arc::new(CipherInner {
                keys: RwLock::new(Arc::new(Sealers::new(&keyring))),
                source: Some(Source {
                    load: Box::new(load),
                    started: Instant::now(),
                    reloaded: AtomicU64::new(0),
                }),
            }),
        })
    }

    /// The id of the active key, which seals (a reloading cipher reads its
    /// keyring again first, at most every [`KEYRING_RELOAD_INTERVAL`]).
    pub fn key_id(&self) -> KeyId {
        self.reload_after(KEYRING_RELOAD_INTERVAL);
        self.sealers().active.id
    }

    /// The ids of every key, the active one first (read again as
    /// [`key_id`](Self::key_id) is).
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.reload_after(KEYRING_RELOAD_INTERVAL);
        let sealers = self.sealers();
        std::iter::once(&sealers.active)
            .chain(&sealers.others)
            .map(|sealer| sealer.id)
            .collect()
    }

    fn sealers(&self) -> Arc<Sealers> {
        Arc::clone(&self.inner.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the keyring again if it was last read at least `interval` ago.
    fn reload_after(&self, interval: Duration) {
        let Some(source) = &self.inner.source else { return };
        let now = u64::try_from(source.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = source.reloaded.load(Ordering::Relaxed);
        let interval = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < interval
            || source
                .reloaded
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match (source.load)() {
            Ok(keyring) => {
                let sealers = Arc::new(Sealers::new(&keyring));
                *self.inner.keys.write().unwrap_or_else(|p| p.into_inner()) = sealers;
            }
            Err(error) => tracing::warn!(%error, "cannot read the keyring again; keeping the keys in use"),
        }
    }

    /// Encrypts `plaintext`, bound to `owner` (an account id or pending
    /// state) and `field`.
    pub fn seal(&self, owner: &str, field: &str, plaintext: &[u8]) -> SealedSecret {
        self.seal_in_context(owner, field, &[], plaintext)
    }

    /// Encrypts `plaintext`, bound to `owner`, `field` and `context`: bytes
    /// that must be the same when it is opened, such as a digest of where
    /// the value may be used.
    pub fn seal_in_context(&self, owner: &str, field: &str, context: &[u8], plaintext: &[u8]) -> SealedSecret {
        self.reload_after(KEYRING_RELOAD_INTERVAL);
        let sealers = self.sealers();
        let active = &sealers.active;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut envelope = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        envelope.push(ENVELOPE_VERSION);
        envelope.extend_from_slice(&active.id.0);
        envelope.extend_from_slice(&nonce);
        let aad = associated_data(&envelope, owner, field, Some(context));
        let ciphertext = active
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Encryption fails only for inputs beyond 256 GiB.
            .unwrap_or_default();
        envelope.extend_from_slice(&ciphertext);
        SealedSecret(envelope)
    }

    /// Decrypts a value sealed for `owner` and `field`.
    pub fn open(&self, owner: &str, field: &str, sealed: &SealedSecret) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.open_in_context(owner, field, &[], sealed)
    }

    /// Decrypts a value sealed for `owner`, `field` and `context`, with the
    /// key of the keyring that sealed it. A value in a version 1 envelope,
    /// sealed before contexts were bound, opens for its owner and field
    /// whatever `context` is; sealing it again binds the context.
    pub fn open_in_context(
        &self,
        owner: &str,
        field: &str,
        context: &[u8],
        sealed: &SealedSecret,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let envelope = sealed.as_bytes();
        if envelope.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::Truncated);
        }
        let context = match envelope[0] {
            ENVELOPE_VERSION => Some(context),
            ENVELOPE_VERSION_1 => None,
            other => return Err(OpenError::UnknownVersion(other)),
        };
        let key_id = &envelope[1..1 + KEY_ID_LEN];
        self.reload_after(KEYRING_RELOAD_INTERVAL);
        let mut sealers = self.sealers();
        if sealers.find(key_id).is_none() {
            self.reload_after(RELOAD_ON_UNKNOWN_KEY);
            sealers = self.sealers();
        }
        let Some(sealer) = sealers.find(key_id) else {
            let mut sealed_with = [0u8; KEY_ID_LEN];
            sealed_with.copy_from_slice(key_id);
            return Err(OpenError::OtherKey {
                sealed_with: KeyId(sealed_with),
                current: sealers.active.id,
            });
        };
        let nonce = XNonce::from_slice(&envelope[1 + KEY_ID_LEN..HEADER_LEN]);
        let aad = associated_data(&envelope[..HEADER_LEN], owner, field, context);
        sealer
            .aead
            .decrypt(
                nonce,
                Payload {
                    msg: &envelope[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Forged)
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cipher")
            .field("key_ids", &self.key_ids())
            .field("reloading", &self.inner.source.is_some())
            .finish()
    }
}

/// The header, the owner, a NUL, the field and, from version 2 on, a NUL
/// and the context.
fn associated_data(header: &[u8], owner: &str, field: &str, context: Option<&[u8]>) -> Vec<u8> {
    let context_len = context.map_or(0, |context| context.len() + 1);
    let mut aad = Vec::with_capacity(header.len() + owner.len() + field.len() + 1 + context_len);
    aad.extend_from_slice(header);
    aad.extend_from_slice(owner.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    if let Some(context) = context {
        aad.push(0);
        aad.extend_from_slice(context);
    }
    aad
}

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than the smallest envelope.
    #[error("the sealed value is truncated")]
    Truncated,
    /// An envelope version this build does not know.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// Sealed under another key.
    #[error("sealed with another encryption key (key id {sealed_with}; the current key is {current})")]
    OtherKey {
        /// The id of the key it was sealed with.
        sealed_with: KeyId,
        /// The id of the key in use.
        current: KeyId,
    },
    /// Authentication failed: the value was altered, or moved from another
    /// account or field, or the account's integration or plain parameters
    /// changed behind the store's back.
    #[error(
        "authentication failed: the value was altered, belongs to another account or field, \
         or the account's integration or parameters were changed outside the store"
    )]
    Forged,
}

fn key_error(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Key, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&EncryptionKey::generate())
    }

    /// An envelope as version 1 sealed it: owner and field bound, no context.
    fn seal_v1(cipher: &Cipher, owner: &str, field: &str, plaintext: &[u8]) -> SealedSecret {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut envelope = vec![ENVELOPE_VERSION_1];
        let sealers = cipher.sealers();
        envelope.extend_from_slice(&sealers.active.id.0);
        envelope.extend_from_slice(&nonce);
        let aad = associated_data(&envelope, owner, field, None);
        let ciphertext = sealers
            .active
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("encrypt");
        envelope.extend_from_slice(&ciphertext);
        SealedSecret(envelope)
    }

    #[test]
    fn the_context_is_bound_and_version_1_envelopes_still_open() {
        let cipher = cipher();
        let sealed = cipher.seal_in_context("acct", "credential:token", b"acme|host-digest", b"s3cret");
        assert_eq!(sealed.as_bytes()[0], 2);
        let opened = cipher
            .open_in_context("acct", "credential:token", b"acme|host-digest", &sealed)
            .expect("same context");
        assert_eq!(opened.as_slice(), b"s3cret");
        for (owner, field, context) in [
            ("acct", "credential:token", b"other|host-digest".as_slice()),
            ("acct", "credential:token", b"".as_slice()),
            ("acct2", "credential:token", b"acme|host-digest".as_slice()),
        ] {
            assert_eq!(
                cipher.open_in_context(owner, field, context, &sealed).map(|_| ()),
                Err(OpenError::Forged),
                "{owner} {field} {context:?}"
            );
        }
        let old = seal_v1(&cipher, "acct", "credential:token", b"from before");
        let opened = cipher
            .open_in_context("acct", "credential:token", b"any context", &old)
            .expect("a version 1 envelope opens");
        assert_eq!(opened.as_slice(), b"from before");
        assert_eq!(
            cipher
                .open_in_context("acct2", "credential:token", b"", &old)
                .map(|_| ()),
            Err(OpenError::Forged),
            "version 1 still binds the owner"
        );
    }

    #[test]
    fn sealed_values_open_for_their_owner_and_field_only() {
        let cipher = cipher();
        let sealed = cipher.seal("acct1", "credential:password", b"hunter2");
        assert_eq!(
            cipher
                .open("acct1", "credential:password", &sealed)
                .expect("opens")
                .as_slice(),
            b"hunter2"
        );
        assert_eq!(
            cipher.open("acct2", "credential:password", &sealed),
            Err(OpenError::Forged)
        );
        assert_eq!(
            cipher.open("acct1", "credential:username", &sealed),
            Err(OpenError::Forged)
        );
        assert!(!sealed.as_bytes().windows(7).any(|window| window == b"hunter2"));
    }

    #[test]
    fn the_same_value_seals_differently_each_time() {
        let cipher = cipher();
        assert_ne!(cipher.seal("a", "f", b"x"), cipher.seal("a", "f", b"x"));
    }

    #[test]
    fn damaged_envelopes_are_told_apart() {
        let cipher = cipher();
        let sealed = cipher.seal("a", "f", b"value");
        let mut flipped = sealed.as_bytes().to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            cipher.open("a", "f", &SealedSecret::from_bytes(flipped)),
            Err(OpenError::Forged)
        );
        assert_eq!(
            cipher.open("a", "f", &SealedSecret::from_bytes(vec![1; 10])),
            Err(OpenError::Truncated)
        );
        let mut version = sealed.as_bytes().to_vec();
        version[0] = 9;
        assert_eq!(
            cipher.open("a", "f", &SealedSecret::from_bytes(version)),
            Err(OpenError::UnknownVersion(9))
        );
        let other = Cipher::new(&EncryptionKey::generate());
        assert!(matches!(other.open("a", "f", &sealed), Err(OpenError::OtherKey { .. })));
    }

    #[test]
    fn keys_parse_from_base64_and_hex() {
        let key = EncryptionKey::generate();
        let from_base64 = EncryptionKey::parse(&key.to_base64()).expect("base64");
        assert_eq!(from_base64.id(), key.id());
        let hex: String = key.bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(EncryptionKey::parse(&hex).expect("hex").id(), key.id());
        let short = EncryptionKey::parse("c2hvcnQ=").expect_err("too short");
        assert!(short.to_string().contains("32 bytes, found 5"), "{short}");
        assert!(EncryptionKey::parse("not a key!").is_err());
    }

    #[test]
    fn debug_shows_the_key_id_only() {
        let key = EncryptionKey::generate();
        let debug = format!("{key:?} {:?}", Cipher::new(&key));
        assert!(debug.contains(&key.id().to_string()));
        assert!(!debug.contains(key.to_base64().as_str()));
        let hex: String = key.bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!debug.contains(&hex));
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join(KEY_FILE_NAME);
        let created = EncryptionKey::load_or_create(&path).expect("created");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(EncryptionKey::load_or_create(&path).expect("reused").id(), created.id());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = EncryptionKey::load_or_create(&path).expect_err("readable by others");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        assert!(!error.to_string().contains(created.to_base64().as_str()));
    }
}
