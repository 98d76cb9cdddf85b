//! What commands share: the data directory, the definitions, the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use integrations::http::HttpClient;
use integrations::storage::postgres::{PoolSettings, PostgresStorage};
use integrations::storage::sled::SledStorage;
use integrations::storage::{KeyStorage, Storage};
use integrations::{AccountStore, Cipher, Definitions, EncryptionKey, Integrations};
use integrations_gateway::keys::KeyFile;

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
/// `--database-url`, or sled in the data directory.
pub(crate) async fn storage(global: &GlobalArgs) -> Result<Arc<dyn Storage>> {
    Ok(match database(global).await? {
        Some(database) => Arc::new(database),
        None => {
            let dir = data_dir(global)?;
            create_private_dir(&dir)?;
            Arc::new(SledStorage::open(dir.join("db"))?)
        }
    })
}

/// Where accounts are kept, and the key that seals their secrets: the
/// database of `--database-url`, or sled in the data directory (created
/// with its encryption key, unless INTEGRATIONS_ENCRYPTION_KEY is set, when
/// missing).
pub(crate) async fn store(global: &GlobalArgs) -> Result<AccountStore> {
    let (storage, key): (Arc<dyn Storage>, _) = if global.database_url.is_some() {
        // Every gateway on the database must seal with the same key: one
        // made up per data directory would lock the others out.
        let Some(key) = EncryptionKey::from_env().context("cannot get the encryption key")? else {
            bail!(
                "with --database-url, the encryption key comes from INTEGRATIONS_ENCRYPTION_KEY, the same on \
                 every gateway: set it (for a new key: `openssl rand -base64 32`)"
            );
        };
        let database = database(global).await?.context("no database URL")?;
        (Arc::new(database), key)
    } else {
        let dir = data_dir(global)?;
        create_private_dir(&dir)?;
        let key = EncryptionKey::from_env_or_data_dir(&dir).context("cannot get the encryption key")?;
        (Arc::new(SledStorage::open(dir.join("db"))?), key)
    };
    Ok(AccountStore::new(storage, Cipher::new(&key)))
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
    integrations_with_http(global, HttpClient::new()?).await
}

pub(crate) async fn integrations_with_http(global: &GlobalArgs, http: HttpClient) -> Result<Integrations> {
    let definitions = definitions(global)?;
    let store = store(global).await?;
    Ok(Integrations::with_http_client(definitions, store, http))
}
