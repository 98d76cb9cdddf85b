//! The PostgreSQL backend keeps the `Storage` contract, each test in a
//! schema of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use integration_core::{ErrorKind, Storage};
use integration_storage_postgres::{PoolSettings, PostgresStorage};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The database tests make their schemas in.
fn url() -> String {
    std::env::var("INTEGRATIONS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A store in a new schema, or `None` (skipped, with the reason printed)
/// when PostgreSQL cannot be reached, unless `INTEGRATIONS_REQUIRE_PEERS=1`.
async fn fresh() -> Option<Arc<PostgresStorage>> {
    let (options, schema) = schema().await?;
    let storage = PostgresStorage::connect_with(
        options.options([("search_path", schema.as_str())]),
        PoolSettings::default(),
    )
    .await
    .unwrap_or_else(|error| panic!("connect in schema {schema}: {error}"));
    Some(Arc::new(storage))
}

/// A connection to the tests' database and its options, or `None` (the
/// test skips, saying why) when PostgreSQL cannot be reached, unless
/// `INTEGRATIONS_REQUIRE_PEERS=1`.
async fn admin() -> Option<(PgConnectOptions, PgConnection)> {
    let options: PgConnectOptions = url().parse().expect("a PostgreSQL URL");
    match PgConnection::connect_with(&options).await {
        Ok(connection) => Some((options, connection)),
        Err(error) => {
            integration_test_peers::skip(
                "postgres",
                &format!("PostgreSQL is not reachable at {}: {error}", url()),
            );
            None
        }
    }
}

/// A new, empty schema, and the options of its database.
async fn schema() -> Option<(PgConnectOptions, String)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (options, mut admin) = admin().await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    // Schemas of runs more than an hour old go.
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'integrations\\_test\\_%' \
         AND split_part(nspname, '_', 3)::bigint < $1",
    )
    .bind(i64::try_from(now).expect("time") - 3600)
    .fetch_all(&mut admin)
    .await
    .expect("list schemas");
    for schema in stale {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut admin)
            .await
            .expect("drop a stale schema");
    }
    let schema = format!(
        "integrations_test_{now}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut admin)
        .await
        .expect("create schema");
    admin.close().await.expect("close");
    Some((options, schema))
}

integration_storage_tests::conformance_tests!(|| fresh());
integration_storage_tests::key_storage_tests!(|| fresh());
integration_storage_tests::webhook_storage_tests!(|| fresh());

#[tokio::test]
async fn a_schema_newer_than_the_build_is_refused() {
    let Some((options, schema)) = schema().await else {
        return;
    };
    let options = options.options([("search_path", schema.as_str())]);
    let storage = PostgresStorage::connect_with(options.clone(), PoolSettings::default())
        .await
        .expect("first start migrates");
    // Connecting again finds the schema as this build left it.
    PostgresStorage::connect_with(options.clone(), PoolSettings::default())
        .await
        .expect("a second start finds nothing to do");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', true, '\\x00', 0)",
    )
    .execute(storage.pool())
    .await
    .expect("a migration from a newer build");
    let error = PostgresStorage::connect_with(options, PoolSettings::default())
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Storage);
    let message = error.to_string();
    assert!(
        message.contains("schema migration 999, newer than this build knows"),
        "{message}"
    );
}

#[tokio::test]
async fn errors_and_debug_never_show_the_password() {
    // Nothing listens on port 9 of loopback.
    let error = PostgresStorage::connect(
        "postgres://integrations:pw-s3cret@127.0.0.1:9/integrations",
        PoolSettings {
            connect_timeout: std::time::Duration::from_millis(500),
            ..PoolSettings::default()
        },
    )
    .await
    .expect_err("nothing listens there");
    let message = format!("{error} {error:?}");
    assert!(
        message.contains("cannot connect to PostgreSQL at 127.0.0.1:9/integrations"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    let bad = PostgresStorage::connect("postgres://integrations:pw-s3cret@[::1/x", PoolSettings::default())
        .await
        .expect_err("not a URL");
    assert!(!format!("{bad} {bad:?}").contains("s3cret"), "{bad:?}");

    let Some(storage) = fresh().await else { return };
    let shown = format!("{storage:?}");
    assert!(shown.starts_with("PostgresStorage"), "{shown}");
    assert!(storage.accounts().await.expect("list").is_empty());
}

/// The schema a persistence test keeps its data in, named after its
/// temporary directory, so that every `open` of one test finds the same.
fn schema_for(dir: &std::path::Path) -> String {
    let name = dir.file_name().and_then(|name| name.to_str()).unwrap_or_default();
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    // The hour keeps it among the schemas `schema()` cleans up later.
    format!("integrations_test_{}_{cleaned}", now - now % 3600)
}

async fn open_in(dir: &std::path::Path) -> Option<Arc<PostgresStorage>> {
    let schema = schema_for(dir);
    let (options, mut admin) = admin().await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut admin)
        .await
        .expect("create schema");
    admin.close().await.expect("close");
    let storage = PostgresStorage::connect_with(
        options.options([("search_path", schema.as_str())]),
        PoolSettings::default(),
    )
    .await
    .expect("connect");
    Some(Arc::new(storage))
}

integration_storage_tests::persistence_tests!(
    open: |dir: &std::path::Path| {
        let dir = dir.to_owned();
        async move { open_in(&dir).await }
    },
    spoil: |dir: &std::path::Path, id: &integration_core::AccountId| {
        // Behind the backend's back, as a broken migration or a hand edit would.
        let (schema, id) = (schema_for(dir), id.as_str().to_owned());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let options: PgConnectOptions = url().parse().expect("a PostgreSQL URL");
                let mut connection = PgConnection::connect_with(&options.options([("search_path", schema.as_str())]))
                    .await
                    .expect("connect");
                sqlx::query("UPDATE integration_accounts SET status = 'not-a-status' WHERE id = $1")
                    .bind(&id)
                    .execute(&mut connection)
                    .await
                    .expect("spoil");
            });
        })
        .join()
        .expect("spoiler thread");
    },
);

/// Two handles on one schema (two gateways): each hears the other's
/// account changes and removals, and nothing of another schema.
#[tokio::test]
async fn changes_through_one_handle_are_heard_by_another() {
    use integration_core::storage::StoreChange;
    use integration_core::{AccountId, Swap};

    let Some((options, shared)) = schema().await else {
        return;
    };
    let open = |schema: String| {
        let options = options.clone();
        async move {
            PostgresStorage::connect_with(
                options.options([("search_path", schema.as_str())]),
                PoolSettings::default(),
            )
            .await
            .expect("connect")
        }
    };
    let writer = open(shared.clone()).await;
    let reader = open(shared).await;
    let Some((_, elsewhere)) = schema().await else { return };
    let unrelated = open(elsewhere).await;

    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
    reader.listen(Arc::new(move |change: &StoreChange| {
        let _ = heard.send(change.clone());
    }));
    let next = async |hearing: &mut tokio::sync::mpsc::UnboundedReceiver<StoreChange>| loop {
        let change = tokio::time::timeout(std::time::Duration::from_secs(1), hearing.recv())
            .await
            .expect("a change heard within a second")
            .expect("listening");
        if change != StoreChange::Unknown {
            return change;
        }
    };
    // Subscribed: the first thing heard is that earlier changes are unknown.
    assert_eq!(
        tokio::time::timeout(std::time::Duration::from_secs(5), hearing.recv())
            .await
            .expect("subscribed"),
        Some(StoreChange::Unknown)
    );

    let account = integration_storage_tests::sample_account("acct1");
    unrelated.insert_account(&account, &[]).await.expect("insert elsewhere");
    unrelated
        .delete_account(&account.id, &[])
        .await
        .expect("delete elsewhere");
    writer.insert_account(&account, &[]).await.expect("insert");
    let Swap::Swapped(swapped) = writer.compare_and_swap_account(1, &account, &[]).await.expect("swap") else {
        panic!("swapped")
    };
    let id = AccountId::new("acct1").expect("id");
    assert_eq!(next(&mut hearing).await, StoreChange::Account(id.clone()), "the swap");
    writer.delete_account(&swapped.id, &[]).await.expect("delete");
    assert_eq!(next(&mut hearing).await, StoreChange::Account(id), "the removal");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), next(&mut hearing))
            .await
            .is_err(),
        "nothing else: the other schema's changes are not heard"
    );
}

/// `/healthz` needs no key: however often it asks, the database is
/// checked at most once a second.
#[tokio::test]
async fn a_health_check_reaches_the_database_at_most_once_a_second() {
    let Some((options, schema)) = schema().await else {
        return;
    };
    let storage = PostgresStorage::connect_with(
        options.options([("search_path", schema.as_str())]),
        PoolSettings::default(),
    )
    .await
    .expect("connect");
    storage.check().await.expect("reachable");
    // The accounts' table goes away behind the store's back: checks within
    // the second still get the answer of the first.
    let (_, mut admin) = admin().await.expect("admin connection");
    sqlx::query(&format!("ALTER TABLE \"{schema}\".integration_accounts RENAME TO gone"))
        .execute(&mut admin)
        .await
        .expect("rename");
    let checks: Vec<_> = (0..100).map(|_| storage.check()).collect();
    for check in checks {
        check.await.expect("the answer of the last check");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let error = storage.check().await.expect_err("checked again: the table is gone");
    assert!(error.is_temporary());
    assert!(error.to_string().contains("cannot be reached"), "{error}");
}
