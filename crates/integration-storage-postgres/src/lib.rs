#![doc = include_str!("../README.md")]

mod changes;
mod records;
mod runtime;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_core::events::{Event, EventId, OutboxBacklog};
use integration_core::storage::{
    AccountPage, AccountQuery, ChangeListener, ConnectSession, KeyStorage, PendingAuthorization, Storage,
    StoredAccount, StoredApiKey, Swap,
};
use integration_core::time::OffsetDateTime;
use integration_core::webhooks::{StoredDelivery, StoredWebhook, WebhookStorage};
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
            migration(
                3,
                "account health, the outbox and webhooks",
                include_str!("../migrations/0003_health_outbox_and_webhooks.sql"),
            ),
            migration(
                4,
                "the scheduler's next check of each account",
                include_str!("../migrations/0004_next_check.sql"),
            ),
            migration(
                5,
                "finished webhook deliveries by age",
                include_str!("../migrations/0005_finished_deliveries.sql"),
            ),
            migration(
                6,
                "connect sessions and the end users of accounts",
                include_str!("../migrations/0006_connect_sessions_and_end_users.sql"),
            ),
        ]),
        ..Migrator::DEFAULT
    }
}

/// Accounts, pending authorizations, connect sessions, the outbox of
/// events, API keys and webhooks in PostgreSQL, for several gateways on
/// one database.
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
    async fn insert_account(&self, account: &StoredAccount, events: &[Event]) -> Result<()> {
        let account = account.clone();
        let events = events.to_vec();
        self.run("insert account", |pool| async move {
            let secret_parameters = records::split(&account.secret_parameters);
            let credentials = records::split(&account.credentials);
            let health = records::health_values(&account.health);
            let end_user = records::end_user_values(account.end_user.as_ref());
            let mut transaction = pool.begin().await.map_err(failed)?;
            let inserted = sqlx::query(
                "INSERT INTO integration_accounts (id, integration, status, status_reason, parameters, \
                 secret_parameter_names, secret_parameter_values, credential_names, credential_values, \
                 created_at_ns, updated_at_ns, revision, last_refresh_at_ns, last_error_code, last_error_at_ns, \
                 consecutive_failures, next_check_at_ns, end_user_id, end_user_name) \
                 VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
                 ON CONFLICT (id) DO NOTHING",
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
            .bind(health.last_refresh_at)
            .bind(health.last_error_code)
            .bind(health.last_error_at)
            .bind(health.consecutive_failures)
            .bind(health.next_check_at)
            .bind(end_user.id)
            .bind(end_user.name)
            .execute(&mut *transaction)
            .await
            .map_err(failed)?;
            if inserted.rows_affected() == 0 {
                return Err(Error::new(ErrorKind::AlreadyExists, "an account with this id exists")
                    .with_context("account", &account.id));
            }
            insert_events(&mut transaction, &events).await?;
            transaction.commit().await.map_err(failed)
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
                 AND ($3::text IS NULL OR status = $3) AND ($5::integer IS NULL OR consecutive_failures >= $5) \
                 ORDER BY id LIMIT $4"
            ))
            .bind(query.after.as_ref().map(AccountId::as_str))
            .bind(query.integration.as_deref())
            .bind(query.status.map(records::status_name))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(
                query
                    .min_consecutive_failures
                    .map(|least| i32::try_from(least).unwrap_or(i32::MAX)),
            )
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

    async fn compare_and_swap_account(
        &self,
        expected_revision: u64,
        account: &StoredAccount,
        events: &[Event],
    ) -> Result<Swap> {
        let account = account.clone();
        let events = events.to_vec();
        self.run("swap account", |pool| async move {
            let next = expected_revision
                .checked_add(1)
                .ok_or_else(|| Error::new(ErrorKind::Conflict, "the account's revision cannot grow further"))?;
            let secret_parameters = records::split(&account.secret_parameters);
            let credentials = records::split(&account.credentials);
            let health = records::health_values(&account.health);
            let end_user = records::end_user_values(account.end_user.as_ref());
            let mut transaction = pool.begin().await.map_err(failed)?;
            // One conditional statement: atomic, whatever other gateways do.
            let swapped = sqlx::query(&format!(
                "UPDATE integration_accounts SET integration = $3, status = $4, status_reason = $5, \
                 parameters = $6::jsonb, secret_parameter_names = $7, secret_parameter_values = $8, \
                 credential_names = $9, credential_values = $10, created_at_ns = $11, updated_at_ns = $12, \
                 revision = $13, last_refresh_at_ns = $14, last_error_code = $15, last_error_at_ns = $16, \
                 consecutive_failures = $17, next_check_at_ns = $18, end_user_id = $19, end_user_name = $20 \
                 WHERE id = $1 AND revision = $2 \
                 RETURNING {ACCOUNT_COLUMNS}"
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
            .bind(health.last_refresh_at)
            .bind(health.last_error_code)
            .bind(health.last_error_at)
            .bind(health.consecutive_failures)
            .bind(health.next_check_at)
            .bind(end_user.id)
            .bind(end_user.name)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(failed)?;
            if let Some(row) = swapped {
                let swapped = account_from_row(&row)?;
                insert_events(&mut transaction, &events).await?;
                transaction.commit().await.map_err(failed)?;
                return Ok(Swap::Swapped(swapped));
            }
            drop(transaction);
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

    async fn delete_account(&self, id: &AccountId, events: &[Event]) -> Result<bool> {
        let id = id.clone();
        let events = events.to_vec();
        self.run("delete account", |pool| async move {
            let mut transaction = pool.begin().await.map_err(failed)?;
            let deleted = sqlx::query("DELETE FROM integration_accounts WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(failed)?;
            let existed = deleted.rows_affected() > 0;
            if existed {
                insert_events(&mut transaction, &events).await?;
            }
            transaction.commit().await.map_err(failed)?;
            Ok(existed)
        })
        .await
    }

    async fn claim_events(&self, now: OffsetDateTime, until: OffsetDateTime, limit: usize) -> Result<Vec<Event>> {
        self.run("claim events", |pool| async move {
            // SKIP LOCKED: concurrent claimers take different events.
            let rows = sqlx::query(
                "UPDATE integration_outbox SET claimed_until_ns = $2 WHERE id IN ( \
                 SELECT id FROM integration_outbox WHERE claimed_until_ns IS NULL OR claimed_until_ns <= $1 \
                 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING event::text AS event",
            )
            .bind(nanos(now))
            .bind(nanos(until))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await
            .map_err(failed)?;
            let mut events = records::readable_records::<Event>(&rows, "event", "event");
            events.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(events)
        })
        .await
    }

    async fn complete_event(&self, id: &EventId) -> Result<bool> {
        let id = id.clone();
        self.run("complete event", |pool| async move {
            let deleted = sqlx::query("DELETE FROM integration_outbox WHERE id = $1")
                .bind(id.as_str())
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(deleted.rows_affected() > 0)
        })
        .await
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog> {
        self.run("measure the outbox", |pool| async move {
            let row = sqlx::query("SELECT count(*) AS events, min(occurred_at_ns) AS oldest FROM integration_outbox")
                .fetch_one(&pool)
                .await
                .map_err(failed)?;
            let events: i64 = sqlx::Row::try_get(&row, "events").map_err(failed)?;
            let oldest: Option<i64> = sqlx::Row::try_get(&row, "oldest").map_err(failed)?;
            Ok(OutboxBacklog {
                events: u64::try_from(events).unwrap_or(0),
                oldest: oldest.map(records::time).transpose()?,
            })
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

    async fn insert_connect_session(&self, session: &ConnectSession) -> Result<()> {
        let token_hash = session.token_hash.clone();
        let expires_at = nanos(session.expires_at);
        let record = json_text(session, "connect session")?;
        self.run("insert connect session", |pool| async move {
            let inserted = sqlx::query(
                "INSERT INTO integration_connect_sessions (token_hash, record, expires_at_ns) \
                 VALUES ($1, $2::jsonb, $3) ON CONFLICT (token_hash) DO NOTHING",
            )
            .bind(&token_hash)
            .bind(record)
            .bind(expires_at)
            .execute(&pool)
            .await
            .map_err(failed)?;
            if inserted.rows_affected() == 0 {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "a connect session with this token hash exists",
                ));
            }
            Ok(())
        })
        .await
    }

    async fn connect_session(&self, token_hash: &str) -> Result<Option<ConnectSession>> {
        let token_hash = token_hash.to_owned();
        self.run("read connect session", |pool| async move {
            let row =
                sqlx::query("SELECT record::text AS record FROM integration_connect_sessions WHERE token_hash = $1")
                    .bind(&token_hash)
                    .fetch_optional(&pool)
                    .await
                    .map_err(failed)?;
            row.as_ref()
                .map(|row| records::json_record(row, "record", "connect session"))
                .transpose()
        })
        .await
    }

    async fn update_connect_session(&self, expected: &ConnectSession, session: &ConnectSession) -> Result<bool> {
        let token_hash = session.token_hash.clone();
        let expires_at = nanos(session.expires_at);
        let record = json_text(session, "connect session")?;
        let expected = json_text(expected, "connect session")?;
        self.run("update connect session", |pool| async move {
            // jsonb compares by value: the swap happens only over `expected`.
            let updated = sqlx::query(
                "UPDATE integration_connect_sessions SET record = $2::jsonb, expires_at_ns = $3 \
                 WHERE token_hash = $1 AND record = $4::jsonb",
            )
            .bind(&token_hash)
            .bind(record)
            .bind(expires_at)
            .bind(expected)
            .execute(&pool)
            .await
            .map_err(failed)?;
            Ok(updated.rows_affected() > 0)
        })
        .await
    }

    async fn delete_expired_connect_sessions(&self, now: OffsetDateTime) -> Result<usize> {
        self.run("delete expired connect sessions", |pool| async move {
            let deleted = sqlx::query("DELETE FROM integration_connect_sessions WHERE expires_at_ns <= $1")
                .bind(nanos(now))
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
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

    fn webhook_storage(&self) -> Option<&dyn WebhookStorage> {
        Some(self)
    }

    fn listen(&self, listener: ChangeListener) {
        self.runtime.spawn(changes::listen(self.pool.clone(), listener));
    }
}

/// Stores `events` in the outbox, in `transaction`.
async fn insert_events(transaction: &mut sqlx::PgConnection, events: &[Event]) -> Result<()> {
    for event in events {
        let json = serde_json::to_string(event)
            .map_err(|error| Error::new(ErrorKind::Storage, "cannot encode an event").with_source(error))?;
        sqlx::query("INSERT INTO integration_outbox (id, occurred_at_ns, event) VALUES ($1, $2, $3::jsonb)")
            .bind(event.id.as_str())
            .bind(nanos(event.timestamp))
            .bind(json)
            .execute(&mut *transaction)
            .await
            .map_err(failed)?;
    }
    Ok(())
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

/// A record as JSON text, for a `JSONB` column.
fn json_text<T: serde::Serialize>(record: &T, what: &'static str) -> Result<String> {
    serde_json::to_string(record)
        .map_err(|error| Error::new(ErrorKind::Storage, format!("cannot encode a {what}")).with_source(error))
}

#[async_trait]
impl WebhookStorage for PostgresStorage {
    async fn insert_webhook(&self, webhook: &StoredWebhook) -> Result<()> {
        let id = webhook.id.clone();
        let created_at = nanos(webhook.created_at);
        let record = json_text(webhook, "webhook")?;
        self.run("insert webhook", |pool| async move {
            let inserted = sqlx::query(
                "INSERT INTO integration_webhooks (id, created_at_ns, record) VALUES ($1, $2, $3::jsonb) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&id)
            .bind(created_at)
            .bind(record)
            .execute(&pool)
            .await
            .map_err(failed)?;
            if inserted.rows_affected() == 0 {
                return Err(
                    Error::new(ErrorKind::AlreadyExists, "a webhook with this id exists").with_context("webhook", &id)
                );
            }
            Ok(())
        })
        .await
    }

    async fn webhooks(&self) -> Result<Vec<StoredWebhook>> {
        self.run("list webhooks", |pool| async move {
            let rows =
                sqlx::query("SELECT record::text AS record FROM integration_webhooks ORDER BY created_at_ns, id")
                    .fetch_all(&pool)
                    .await
                    .map_err(failed)?;
            rows.iter()
                .map(|row| records::json_record(row, "record", "webhook"))
                .collect()
        })
        .await
    }

    async fn update_webhook(&self, expected: &StoredWebhook, webhook: &StoredWebhook) -> Result<bool> {
        let id = webhook.id.clone();
        let record = json_text(webhook, "webhook")?;
        let expected = json_text(expected, "webhook")?;
        self.run("update webhook", |pool| async move {
            // jsonb compares by value: the swap happens only over `expected`.
            let updated =
                sqlx::query("UPDATE integration_webhooks SET record = $2::jsonb WHERE id = $1 AND record = $3::jsonb")
                    .bind(&id)
                    .bind(record)
                    .bind(expected)
                    .execute(&pool)
                    .await
                    .map_err(failed)?;
            Ok(updated.rows_affected() > 0)
        })
        .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.run("delete webhook", |pool| async move {
            // Its deliveries go with it (ON DELETE CASCADE).
            let deleted = sqlx::query("DELETE FROM integration_webhooks WHERE id = $1")
                .bind(&id)
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(deleted.rows_affected() > 0)
        })
        .await
    }

    async fn insert_deliveries(&self, deliveries: &[StoredDelivery]) -> Result<()> {
        let rows = deliveries
            .iter()
            .map(|delivery| Ok((delivery.clone(), json_text(delivery, "delivery")?)))
            .collect::<Result<Vec<_>>>()?;
        self.run("insert deliveries", |pool| async move {
            let mut transaction = pool.begin().await.map_err(failed)?;
            for (delivery, record) in rows {
                sqlx::query(
                    "INSERT INTO integration_webhook_deliveries (id, webhook, state, next_attempt_at_ns, \
                     claimed_until_ns, created_at_ns, record) \
                     SELECT $1, $2, $3, $4, $5, $6, $7::jsonb WHERE EXISTS (SELECT 1 FROM integration_webhooks WHERE id = $2) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&delivery.id)
                .bind(&delivery.webhook)
                .bind(delivery.state.as_str())
                .bind(delivery.next_attempt_at.map(nanos))
                .bind(delivery.claimed_until.map(nanos))
                .bind(nanos(delivery.created_at))
                .bind(record)
                .execute(&mut *transaction)
                .await
                .map_err(failed)?;
            }
            transaction.commit().await.map_err(failed)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<StoredDelivery>> {
        self.run("claim deliveries", |pool| async move {
            // The claim is in the column and in the record, which is what
            // readers get back.
            let rows = sqlx::query(
                "UPDATE integration_webhook_deliveries SET claimed_until_ns = $2, \
                 record = jsonb_set(record, '{claimed_until}', to_jsonb($4::text)) WHERE id IN ( \
                 SELECT id FROM integration_webhook_deliveries WHERE state = 'pending' AND next_attempt_at_ns <= $1 \
                 AND (claimed_until_ns IS NULL OR claimed_until_ns <= $1) \
                 ORDER BY next_attempt_at_ns, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING record::text AS record",
            )
            .bind(nanos(now))
            .bind(nanos(until))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(
                until
                    .format(&integration_core::time::format_description::well_known::Rfc3339)
                    .map_err(|error| Error::new(ErrorKind::Storage, "cannot format a time").with_source(error))?,
            )
            .fetch_all(&pool)
            .await
            .map_err(failed)?;
            let mut claimed = records::readable_records::<StoredDelivery>(&rows, "record", "delivery");
            claimed.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
            Ok(claimed)
        })
        .await
    }

    async fn update_delivery(&self, expected: &StoredDelivery, delivery: &StoredDelivery) -> Result<bool> {
        let delivery = delivery.clone();
        let record = json_text(&delivery, "delivery")?;
        let expected = json_text(expected, "delivery")?;
        self.run("update delivery", |pool| async move {
            let updated = sqlx::query(
                "UPDATE integration_webhook_deliveries SET state = $2, next_attempt_at_ns = $3, claimed_until_ns = $4, \
                 record = $5::jsonb WHERE id = $1 AND record = $6::jsonb",
            )
            .bind(&delivery.id)
            .bind(delivery.state.as_str())
            .bind(delivery.next_attempt_at.map(nanos))
            .bind(delivery.claimed_until.map(nanos))
            .bind(record)
            .bind(expected)
            .execute(&pool)
            .await
            .map_err(failed)?;
            Ok(updated.rows_affected() > 0)
        })
        .await
    }

    async fn delivery(&self, id: &str) -> Result<Option<StoredDelivery>> {
        let id = id.to_owned();
        self.run("read delivery", |pool| async move {
            let row = sqlx::query("SELECT record::text AS record FROM integration_webhook_deliveries WHERE id = $1")
                .bind(&id)
                .fetch_optional(&pool)
                .await
                .map_err(failed)?;
            row.as_ref()
                .map(|row| records::json_record(row, "record", "delivery"))
                .transpose()
        })
        .await
    }

    async fn deliveries(&self, webhook: &str, before: Option<&str>, limit: usize) -> Result<Vec<StoredDelivery>> {
        let webhook = webhook.to_owned();
        let before = before.map(str::to_owned);
        self.run("list deliveries", |pool| async move {
            let rows = sqlx::query(
                "SELECT record::text AS record FROM integration_webhook_deliveries \
                 WHERE webhook = $1 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            )
            .bind(&webhook)
            .bind(before.as_deref())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await
            .map_err(failed)?;
            rows.iter()
                .map(|row| records::json_record(row, "record", "delivery"))
                .collect()
        })
        .await
    }

    async fn delete_deliveries_before(&self, before: OffsetDateTime) -> Result<usize> {
        self.run("delete old deliveries", |pool| async move {
            let deleted = sqlx::query(
                "DELETE FROM integration_webhook_deliveries WHERE state <> 'pending' AND created_at_ns < $1",
            )
            .bind(nanos(before))
            .execute(&pool)
            .await
            .map_err(failed)?;
            Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
        })
        .await
    }
}
