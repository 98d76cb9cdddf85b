//! What commands share: the data directory, the definitions, the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use integrations::crypto::{KEY_FILE_NAME, KEYRING_ENV, KEYRING_FILE_NAME, Keyring};
use integrations::http::HttpClient;
use integrations::storage::postgres::{PoolSettings, PostgresStorage};
use integrations::storage::sled::SledStorage;
use integrations::storage::{KeyStorage, Storage};
use integrations::{AccountStore, Cipher, Definitions, EncryptionKey, Integrations};
use integrations_gateway::keys::KeyFile;
use integrations_gateway::local::{GatewayStatus, LocalGateway};

use crate::cli::{DatabaseUrl, GlobalArgs};

/// The data directory: `--data-dir`, or `integrations` in the user's data
/// directory.
pub(crate) fn data_dir(global: &GlobalArgs) -> Result<PathBuf> {
    match &global.data_dir {
        Some(dir) => Ok(dir.clone()),
        None => match dirs::data_dir() {
            Some(dir) => Ok(dir.join("integrations")),
            None => bail!("cannot find the user's data directory: pass --data-dir or set INTEGRATIONS_DATA_DIR"),
        },
    }
}

/// Loads the definitions named by `--definitions`.
pub(crate) fn definitions(global: &GlobalArgs) -> Result<Definitions> {
    if global.definitions.is_empty() {
        bail!("no definitions given: pass --definitions PATH or set INTEGRATIONS_DEFINITIONS");
    }
    Definitions::load(&global.definitions).map_err(|errors| {
        let count = errors.errors().len();
        anyhow::Error::new(errors).context(format!(
            "the definitions have {count} problem{}; run `integrations validate` to list them",
            if count == 1 { "" } else { "s" }
        ))
    })
}

/// Connects to the PostgreSQL database of `--database-url`, migrating it.
pub(crate) async fn database(global: &GlobalArgs) -> Result<Option<PostgresStorage>> {
    match &global.database_url {
        Some(url) => Ok(Some(connect(global, url).await?)),
        None => Ok(None),
    }
}

/// Connects to the database at `url` with the pool settings of the flags,
/// migrating it.
pub(crate) async fn connect(global: &GlobalArgs, url: &DatabaseUrl) -> Result<PostgresStorage> {
    let settings = PoolSettings {
        max_connections: global.database_pool_size,
        connect_timeout: Duration::from_secs(global.database_connect_timeout),
    };
    // The error names the host, port and database, never the password.
    Ok(PostgresStorage::connect(url.expose()?, settings).await?)
}

/// The records as the backend keeps them, sealed: the database of
/// `--database-url`, or sled in the data directory, through the gateway
/// that holds it when one runs there.
pub(crate) async fn storage(global: &GlobalArgs) -> Result<Arc<dyn Storage>> {
    Ok(storage_and_lender(global).await?.0)
}

/// [`storage`], and the status of the gateway it goes through, if it does.
async fn storage_and_lender(global: &GlobalArgs) -> Result<(Arc<dyn Storage>, Option<GatewayStatus>)> {
    if let Some((gateway, status)) = lending_gateway(global).await? {
        tracing::debug!(pid = status.pid, "the store is reached through the running gateway");
        return Ok((Arc::new(gateway.storage()), Some(status)));
    }
    Ok((own_storage(global).await?, None))
}

/// The gateway running on the data directory that lends its embedded store
/// to the commands, if one does. A gateway there on another store (a
/// database) is named in a warning: this command then works on the
/// embedded store, not on the gateway's.
pub(crate) async fn lending_gateway(global: &GlobalArgs) -> Result<Option<(LocalGateway, GatewayStatus)>> {
    if global.database_url.is_some() {
        return Ok(None);
    }
    match running_gateway(global).await? {
        Some((gateway, status)) if status.store_shared => Ok(Some((gateway, status))),
        Some((_, status)) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "warning: the gateway running on this data directory (pid {}) works on {}; this command works \
                     on the embedded store: pass --database-url to work on the gateway's",
                    status.pid, status.store
                );
            });
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The store opened by this process itself, as a gateway must: another
/// gateway on the data directory is refused.
pub(crate) async fn own_storage(global: &GlobalArgs) -> Result<Arc<dyn Storage>> {
    Ok(match database(global).await? {
        Some(database) => Arc::new(database),
        None => {
            let dir = data_dir(global)?;
            create_private_dir(&dir)?;
            Arc::new(SledStorage::open(dir.join("db"))?)
        }
    })
}

/// The gateway running on the data directory, if one answers on its
/// socket.
pub(crate) async fn running_gateway(global: &GlobalArgs) -> Result<Option<(LocalGateway, GatewayStatus)>> {
    let socket = data_dir(global)?.join(integrations_gateway::local::SOCKET_NAME);
    Ok(LocalGateway::find(&socket).await?)
}

/// Where accounts are kept, and the keyring that seals their secrets: the
/// database of `--database-url`, or sled in the data directory.
pub(crate) async fn store(global: &GlobalArgs) -> Result<AccountStore> {
    // The keys first: a shared database without them is refused before it
    // is even reached.
    let cipher = key_source(global)?.cipher()?;
    let (storage, lender) = storage_and_lender(global).await?;
    if let Some(gateway) = lender {
        check_same_keys(&cipher, &gateway)?;
    }
    Ok(AccountStore::new(storage, cipher))
}

/// Refuses to work through a gateway that seals with keys this command
/// lacks, or that lacks this command's: each would write records the other
/// cannot open.
fn check_same_keys(cipher: &Cipher, gateway: &GatewayStatus) -> Result<()> {
    let ours: Vec<String> = cipher.key_ids().iter().map(ToString::to_string).collect();
    let our_active = cipher.key_id().to_string();
    let theirs_active = gateway.key_ids.first();
    if gateway.key_ids.contains(&our_active) && theirs_active.is_some_and(|active| ours.contains(active)) {
        return Ok(());
    }
    bail!(
        "the gateway running on this data directory (pid {}) seals with key {} and this command with key {}: \
         give the command the gateway's keys (the same INTEGRATIONS_ENCRYPTION_KEY, or the data directory's key \
         file), or each would write records the other cannot open",
        gateway.pid,
        theirs_active.map_or("(none)", String::as_str),
        our_active
    )
}

/// [`store`] opened by this process itself, for `serve`.
pub(crate) async fn own_store(global: &GlobalArgs) -> Result<AccountStore> {
    let cipher = key_source(global)?.cipher()?;
    Ok(AccountStore::new(own_storage(global).await?, cipher))
}

/// Where the keyring comes from.
pub(crate) enum KeySource {
    /// INTEGRATIONS_ENCRYPTION_KEY (active) and INTEGRATIONS_ENCRYPTION_KEYS
    /// (decrypt-only): read once.
    Environment(Keyring),
    /// The file INTEGRATIONS_ENCRYPTION_KEYRING names: read again while
    /// the process runs.
    File(PathBuf),
    /// The data directory's keyring file, or its key file before the first
    /// rotation (created when missing): read again while the process runs.
    DataDir(PathBuf),
}

/// The keyring's source for these arguments and environment.
pub(crate) fn key_source(global: &GlobalArgs) -> Result<KeySource> {
    if let Some(path) = std::env::var_os(KEYRING_ENV) {
        return Ok(KeySource::File(PathBuf::from(path)));
    }
    if let Some(keyring) = Keyring::from_env().context("cannot get the encryption key")? {
        return Ok(KeySource::Environment(keyring));
    }
    if global.database_url.is_some() {
        // Every gateway on the database must seal with the same keys: a key
        // made up per data directory would lock the others out.
        bail!(
            "with --database-url, the encryption key comes from INTEGRATIONS_ENCRYPTION_KEY (or a keyring file \
             named by INTEGRATIONS_ENCRYPTION_KEYRING), the same on every gateway: set it (for a new key: \
             `openssl rand -base64 32`)"
        );
    }
    let dir = data_dir(global)?;
    create_private_dir(&dir)?;
    Ok(KeySource::DataDir(dir))
}

impl KeySource {
    /// The keyring as it is now.
    pub(crate) fn keyring(&self) -> Result<Keyring> {
        Ok(match self {
            Self::Environment(keyring) => keyring.clone(),
            Self::File(path) => Keyring::load(path)?,
            Self::DataDir(dir) => data_dir_keyring(dir)?,
        })
    }

    /// A cipher over the keyring, following a keyring file's changes.
    pub(crate) fn cipher(&self) -> Result<Cipher> {
        Ok(match self {
            Self::Environment(keyring) => Cipher::with_keyring(keyring),
            Self::File(path) => {
                let path = path.clone();
                Cipher::reloading(move || Keyring::load(&path)).context("cannot read the keyring")?
            }
            Self::DataDir(dir) => {
                let dir = dir.clone();
                Cipher::reloading(move || data_dir_keyring(&dir)).context("cannot get the encryption key")?
            }
        })
    }

    /// Where a changed keyring is written, if the process can write it.
    pub(crate) fn keyring_file(&self) -> Option<PathBuf> {
        match self {
            Self::Environment(_) => None,
            Self::File(path) => Some(path.clone()),
            Self::DataDir(dir) => Some(dir.join(KEYRING_FILE_NAME)),
        }
    }
}

/// The data directory's keyring: its keyring file once a key was rotated,
/// its key file (created when missing) before.
fn data_dir_keyring(dir: &Path) -> integrations::Result<Keyring> {
    let keyring = dir.join(KEYRING_FILE_NAME);
    if keyring.exists() {
        return Keyring::load(&keyring);
    }
    EncryptionKey::load_or_create(&dir.join(KEY_FILE_NAME)).map(Keyring::new)
}

/// Where the gateway's API keys are kept: the database of `--database-url`,
/// or a file in the data directory (usable while a gateway runs).
pub(crate) async fn key_storage(global: &GlobalArgs) -> Result<Arc<dyn KeyStorage>> {
    Ok(match database(global).await? {
        Some(database) => Arc::new(database),
        None => {
            let dir = data_dir(global)?;
            create_private_dir(&dir)?;
            Arc::new(KeyFile::in_data_dir(&dir))
        }
    })
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    // A directory that was already there may be open to others (sled's
    // files are created 0644): it is made private on every open.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("cannot read the data directory {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
                format!(
                    "the data directory {} is open to other users (mode {:o}) and cannot be made private",
                    dir.display(),
                    mode & 0o777
                )
            })?;
        }
    }
    Ok(())
}

/// The definitions and the store together, ready for requests.
pub(crate) async fn integrations(global: &GlobalArgs) -> Result<Integrations> {
    let definitions = definitions(global)?;
    let store = store(global).await?;
    Ok(Integrations::with_http_client(definitions, store, HttpClient::new()?))
}

/// [`integrations`] on a store this process opens itself, as a gateway
/// runs, with `http`.
pub(crate) async fn serving_integrations(global: &GlobalArgs, http: HttpClient) -> Result<Integrations> {
    let definitions = definitions(global)?;
    let store = own_store(global).await?;
    Ok(Integrations::with_http_client(definitions, store, http))
}
