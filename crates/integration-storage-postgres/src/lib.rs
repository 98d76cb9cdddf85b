#![doc = include_str!("../README.md")]

mod changes;
mod records;
mod runtime;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_core::storage::{
    AccountPage, AccountQuery, ChangeListener, KeyStorage, PendingAuthorization, Storage, StoredAccount, StoredApiKey,
    Swap,
};
use integration_core::time::OffsetDateTime;
use integration_core::{AccountId, Error, ErrorKind, Result, async_trait};
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::records::{ACCOUNT_COLUMNS, PENDING_COLUMNS, account_from_row, nanos, pending_from_row};
use crate::runtime::DatabaseRuntime;

/// The connections a pool keeps at most, unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// How long getting a connection may take before a call fails.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations this build knows, embedded: the newest is the schema it
/// writes.
fn migrator() -> Migrator {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(description),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    };
    Migrator {
        migrations: Cow::Owned(vec![
            migration(
                1,
                "accounts and pending authorizations",
                include_str!("../migrations/0001_accounts.sql"),
            ),
            migration(
                2,
                "API keys and change notifications",
                include_str!("../migrations/0002_api_keys_and_change_notifications.sql"),
            ),
        ]),
        ..Migrator::DEFAULT
    }
}

/// Accounts, pending authorizations and API keys in PostgreSQL, for several
/// gateways on one database.
///
/// Every change to an account is announced on the `integration_accounts`
/// channel (a trigger, so writers of any kind are heard): [`Storage::listen`]
/// passes them on.
///
/// Queries run on a small runtime of the store's own, so that a store can
/// be shared by callers on any runtime (the gateway runs one per worker
/// thread). Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresStorage {
    pool: PgPool,
    runtime: DatabaseRuntime,
    /// Where, for Debug output and errors: host, port and database, never
    /// the password.
    place: String,
    /// The last health check and when it ran: a check reaches the database
    /// at most once per [`CHECK_INTERVAL`], however often it is asked for
    /// (`/healthz` needs no key).
    checked: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
}

/// How long a health check's answer is reused.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("database", &self.place)
            .finish_non_exhaustive()
    }
}

/// How to connect, beside the URL.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections kept at most.
    pub max_connections: u32,
    /// How long getting a connection may take.
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl PostgresStorage {
    /// Connects to `url` (`postgres://user:password@host:port/database`),
    /// runs the migrations this build has not run yet, and refuses a
    /// database whose schema is newer than this build.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Self> {
        let options: PgConnectOptions = url.parse().map_err(|error: sqlx::Error| {
            // The URL may hold a password: the error says what is wrong, not the URL.
            Error::new(
                ErrorKind::Config,
                format!("the PostgreSQL URL is not valid: {}", without_url(&error)),
            )
        })?;
        Self::connect_with(options, settings).await
    }

    /// The same, with the connection options built in code (a schema in
    /// `search_path`, TLS settings).
    pub async fn connect_with(options: PgConnectOptions, settings: PoolSettings) -> Result<Self> {
        let place = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let runtime = DatabaseRuntime::start()?;
        let described = place.clone();
        let pool = runtime
            .run(async move {
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(settings.connect_timeout)
                    .connect_with(options)
                    .await
                    .map_err(|error| {
                        Error::new(
                            ErrorKind::Storage,
                            format!("cannot connect to PostgreSQL at {described}: {}", without_url(&error)),
                        )
                    })?;
                migrator()
                    .run(&pool)
                    .await
                    .map_err(|error| migration_error(&described, error))?;
                Ok::<_, Error>(pool)
            })
            .await??;
        Ok(Self {
            pool,
            runtime,
            place,
            checked: Arc::default(),
        })
    }

    /// The pool, for queries of your own on the same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `query` with the pool on the store's runtime.
    async fn run<T, F>(&self, operation: &'static str, query: impl FnOnce(PgPool) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .run(query(self.pool.clone()))
            .await?
            .map_err(|error| error.with_context("operation", operation))
    }
}

/// A failed query as a storage error; the message never holds values.
fn failed(error: sqlx::Error) -> Error {
    Error::new(ErrorKind::Storage, format!("PostgreSQL: {}", without_url(&error)))
        .with_source(error)
        .temporary()
}

/// What went wrong, in words that cannot hold a password.
fn without_url(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Configuration(_) => "invalid connection settings".to_owned(),
        sqlx::Error::Database(database) => format!("the database refused: {}", database.message()),
        sqlx::Error::Io(io) => format!("connection failed: {io}"),
        sqlx::Error::Tls(_) => "TLS failed".to_owned(),
        sqlx::Error::PoolTimedOut => "no connection within the connect timeout".to_owned(),
        sqlx::Error::PoolClosed => "the pool is closed".to_owned(),
        sqlx::Error::Protocol(message) => format!("protocol error: {message}"),
        other => other.to_string(),
    }
}

fn migration_error(place: &str, error: MigrateError) -> Error {
    let known = migrator()
        .migrations
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
    let message = match &error {
        MigrateError::VersionMissing(version) => format!(
            "the database at {place} has schema migration {version}, newer than this build knows \
             (up to {known}): run a newer `integrations`, or restore the database"
        ),
        MigrateError::VersionMismatch(version) => format!(
            "the database at {place} ran a different migration {version} than this build has: \
             it was changed by hand, or by another program"
        ),
        MigrateError::Execute(sqlx) | MigrateError::ExecuteMigration(sqlx, _) => {
            format!("migrating the database at {place} failed: {}", without_url(sqlx))
        }
        other => format!("migrating the database at {place} failed: {other}"),
    };
    Error::new(ErrorKind::Storage, message).with_source(error)
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn insert_account(&self, account: &StoredAccount) -> Result<()> {
        let account = account.clone();
        self.run("insert account", |pool| async move {
            let secret_parameters = records::split(&account.secret_parameters);
            let credentials = records::split(&account.credentials);
            let inserted = sqlx::query(
                "INSERT INTO integration_accounts (id, integration, status, status_reason, parameters, \
                 secret_parameter_names, secret_parameter_values, credential_names, credential_values, \
                 created_at_ns, updated_at_ns, revision) \
                 VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING",
            )
            .bind(account.id.as_str())
            .bind(&account.integration)
            .bind(records::status_name(account.status))
            .bind(&account.status_reason)
            .bind(records::json(&account.parameters))
            .bind(&secret_parameters.0)
            .bind(&secret_parameters.1)
            .bind(&credentials.0)
            .bind(&credentials.1)
            .bind(nanos(account.created_at))
            .bind(nanos(account.updated_at))
            .bind(records::revision(account.revision)?)
            .execute(&pool)
            .await
            .map_err(failed)?;
            if inserted.rows_affected() == 0 {
                return Err(Error::new(ErrorKind::AlreadyExists, "an account with this id exists")
                    .with_context("account", &account.id));
            }
            Ok(())
        })
        .await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<StoredAccount>> {
        let id = id.clone();
        self.run("read account", |pool| async move {
            let row = sqlx::query(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM integration_accounts WHERE id = $1"
            ))
            .bind(id.as_str())
            .fetch_optional(&pool)
            .await
            .map_err(failed)?;
            row.as_ref().map(account_from_row).transpose()
        })
        .await
    }

    async fn accounts(&self) -> Result<Vec<Result<StoredAccount>>> {
        self.run("list accounts", |pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM integration_accounts ORDER BY id"
            ))
            .fetch_all(&pool)
            .await
            .map_err(failed)?;
            Ok(rows.iter().map(account_from_row).collect())
        })
        .await
    }

    async fn accounts_page(&self, query: &AccountQuery) -> Result<AccountPage> {
        let query = query.clone();
        self.run("list a page of accounts", |pool| async move {
            let limit = query.limit.max(1);
            // The filters in SQL, on the indexed columns; a row is read
            // whole only once it is on the page.
            let rows = sqlx::query(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM integration_accounts \
                 WHERE ($1::text IS NULL OR id > $1) AND ($2::text IS NULL OR integration = $2) \
                 AND ($3::text IS NULL OR status = $3) ORDER BY id LIMIT $4"
            ))
            .bind(query.after.as_ref().map(AccountId::as_str))
            .bind(query.integration.as_deref())
            .bind(query.status.map(records::status_name))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await
            .map_err(failed)?;
            let next = if rows.len() == limit {
                rows.last()
                    .and_then(|row| sqlx::Row::try_get::<String, _>(row, "id").ok())
                    .and_then(|id| AccountId::new(id).ok())
            } else {
                None
            };
            Ok(AccountPage {
                accounts: rows.iter().map(account_from_row).collect(),
                next,
            })
        })
        .await
    }

    async fn compare_and_swap_account(&self, expected_revision: u64, account: &StoredAccount) -> Result<Swap> {
        let account = account.clone();
        self.run("swap account", |pool| async move {
            let next = expected_revision
                .checked_add(1)
                .ok_or_else(|| Error::new(ErrorKind::Conflict, "the account's revision cannot grow further"))?;
            let secret_parameters = records::split(&account.secret_parameters);
            let credentials = records::split(&account.credentials);
            // One conditional statement: atomic, whatever other gateways do.
            let swapped = sqlx::query(&format!(
                "UPDATE integration_accounts SET integration = $3, status = $4, status_reason = $5, \
                 parameters = $6::jsonb, secret_parameter_names = $7, secret_parameter_values = $8, \
                 credential_names = $9, credential_values = $10, created_at_ns = $11, updated_at_ns = $12, \
                 revision = $13 WHERE id = $1 AND revision = $2 RETURNING {ACCOUNT_COLUMNS}"
            ))
            .bind(account.id.as_str())
            .bind(records::revision(expected_revision)?)
            .bind(&account.integration)
            .bind(records::status_name(account.status))
            .bind(&account.status_reason)
            .bind(records::json(&account.parameters))
            .bind(&secret_parameters.0)
            .bind(&secret_parameters.1)
            .bind(&credentials.0)
            .bind(&credentials.1)
            .bind(nanos(account.created_at))
            .bind(nanos(account.updated_at))
            .bind(records::revision(next)?)
            .fetch_optional(&pool)
            .await
            .map_err(failed)?;
            if let Some(row) = swapped {
                return account_from_row(&row).map(Swap::Swapped);
            }
            // Not swapped: a conflict, or no such account.
            let stored = sqlx::query(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM integration_accounts WHERE id = $1"
            ))
            .bind(account.id.as_str())
            .fetch_optional(&pool)
            .await
            .map_err(failed)?;
            match stored {
                Some(row) => account_from_row(&row).map(Swap::Conflict),
                None => Err(Error::new(ErrorKind::NotFound, "no such account").with_context("account", &account.id)),
            }
        })
        .await
    }

    async fn delete_account(&self, id: &AccountId) -> Result<bool> {
        let id = id.clone();
        self.run("delete account", |pool| async move {
            let deleted = sqlx::query("DELETE FROM integration_accounts WHERE id = $1")
                .bind(id.as_str())
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(deleted.rows_affected() > 0)
        })
        .await
    }

    async fn insert_pending_authorization(&self, pending: &PendingAuthorization) -> Result<()> {
        let pending = pending.clone();
        self.run("insert pending authorization", |pool| async move {
            let secrets = records::split(&pending.secrets);
            let inserted = sqlx::query(
                "INSERT INTO integration_pending_authorizations (state, account, created_at_ns, expires_at_ns, \
                 data, secret_names, secret_values) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) \
                 ON CONFLICT (state) DO NOTHING",
            )
            .bind(&pending.state)
            .bind(pending.account.as_str())
            .bind(nanos(pending.created_at))
            .bind(nanos(pending.expires_at))
            .bind(records::json(&pending.data))
            .bind(&secrets.0)
            .bind(&secrets.1)
            .execute(&pool)
            .await
            .map_err(failed)?;
            if inserted.rows_affected() == 0 {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "a pending authorization with this state exists",
                ));
            }
            Ok(())
        })
        .await
    }

    async fn take_pending_authorization(&self, state: &str) -> Result<Option<PendingAuthorization>> {
        let state = state.to_owned();
        self.run("take pending authorization", |pool| async move {
            // Deleted and returned in one statement: one taker gets it.
            let row = sqlx::query(&format!(
                "DELETE FROM integration_pending_authorizations WHERE state = $1 RETURNING {PENDING_COLUMNS}"
            ))
            .bind(&state)
            .fetch_optional(&pool)
            .await
            .map_err(failed)?;
            row.as_ref().map(pending_from_row).transpose()
        })
        .await
    }

    async fn delete_expired_pending_authorizations(&self, now: OffsetDateTime) -> Result<usize> {
        self.run("delete expired pending authorizations", |pool| async move {
            let deleted = sqlx::query("DELETE FROM integration_pending_authorizations WHERE expires_at_ns <= $1")
                .bind(nanos(now))
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
        })
        .await
    }

    async fn pending_authorizations(&self) -> Result<Vec<PendingAuthorization>> {
        self.run("list pending authorizations", |pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {PENDING_COLUMNS} FROM integration_pending_authorizations ORDER BY state"
            ))
            .fetch_all(&pool)
            .await
            .map_err(failed)?;
            rows.iter().map(pending_from_row).collect()
        })
        .await
    }

    async fn check(&self) -> Result<()> {
        // Held while checking: concurrent callers wait for one answer.
        let mut checked = self.checked.lock().await;
        let reachable = match *checked {
            Some((at, reachable)) if at.elapsed() < CHECK_INTERVAL => reachable,
            _ => {
                let answer = self
                    .run("check the database", |pool| async move {
                        // The schema too, not only the server.
                        sqlx::query("SELECT 1 FROM integration_accounts LIMIT 1")
                            .execute(&pool)
                            .await
                            .map_err(failed)
                            .map(drop)
                    })
                    .await;
                if let Err(error) = &answer {
                    tracing::warn!(%error, database = %self.place, "the database cannot be reached");
                }
                *checked = Some((Instant::now(), answer.is_ok()));
                answer.is_ok()
            }
        };
        if reachable {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Storage,
                format!("the database at {} cannot be reached", self.place),
            )
            .temporary())
        }
    }

    fn listen(&self, listener: ChangeListener) {
        self.runtime.spawn(changes::listen(self.pool.clone(), listener));
    }
}

#[async_trait]
impl KeyStorage for PostgresStorage {
    async fn insert_key(&self, key: &StoredApiKey) -> Result<()> {
        let key = key.clone();
        self.run("insert API key", |pool| async move {
            let inserted = sqlx::query(
                "INSERT INTO integration_api_keys (id, name, created_at_ns, hash) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&key.id)
            .bind(&key.name)
            .bind(nanos(key.created_at))
            .bind(&key.hash)
            .execute(&pool)
            .await
            .map_err(failed)?;
            if inserted.rows_affected() == 0 {
                return Err(
                    Error::new(ErrorKind::AlreadyExists, "an API key with this id exists").with_context("key", &key.id)
                );
            }
            Ok(())
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<StoredApiKey>> {
        self.run("list API keys", |pool| async move {
            let rows = sqlx::query(
                "SELECT id, name, created_at_ns, hash FROM integration_api_keys ORDER BY created_at_ns, id",
            )
            .fetch_all(&pool)
            .await
            .map_err(failed)?;
            rows.iter().map(records::key_from_row).collect()
        })
        .await
    }

    async fn delete_key(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.run("delete API key", |pool| async move {
            let deleted = sqlx::query("DELETE FROM integration_api_keys WHERE id = $1")
                .bind(&id)
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(deleted.rows_affected() > 0)
        })
        .await
    }
}
