//! pgbench-style: accounts inserted per second and compare-and-swaps per
//! second on PostgreSQL, with 1, 16 and 64 concurrent writers, through
//! `PostgresStorage` (the pool of 10 connections the gateway uses by
//! default, or `--pool N`).
//!
//! `cargo bench -p integration-storage-postgres --bench writes`, against
//! `INTEGRATIONS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a schema of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use integration_core::Storage;
use integration_core::storage::Swap;
use integration_storage_postgres::{PoolSettings, PostgresStorage};
use integration_storage_tests::sample_account;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

const WRITERS: [usize; 3] = [1, 16, 64];
const RUN: Duration = Duration::from_secs(3);

fn main() {
    let pool = std::env::args()
        .skip_while(|arg| arg != "--pool")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(integration_storage_postgres::DEFAULT_MAX_CONNECTIONS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(pool));
}

async fn run(pool: u32) {
    let url = std::env::var("INTEGRATIONS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    let mut admin = PgConnection::connect_with(&options)
        .await
        .expect("PostgreSQL is needed");
    let schema = format!("integrations_bench_writes_{}", std::process::id());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("schema");
    let storage = Arc::new(
        PostgresStorage::connect_with(
            options.clone().options([("search_path", schema.as_str())]),
            PoolSettings {
                max_connections: pool,
                ..PoolSettings::default()
            },
        )
        .await
        .expect("connect"),
    );
    println!("PostgreSQL, a pool of {pool} connections, {RUN:?} per run:");
    for writers in WRITERS {
        let writing = Arc::clone(&storage);
        let inserted = for_each_writer(writers, move |writer, n| {
            let storage = Arc::clone(&writing);
            async move {
                storage
                    .insert_account(&sample_account(&format!("insert-{writers}-{writer}-{n}")), &[])
                    .await
                    .expect("insert");
            }
        })
        .await;
        // Each writer swaps its own account: no conflicts, every swap a
        // conditional UPDATE that wins.
        for writer in 0..writers {
            storage
                .insert_account(&sample_account(&format!("swap-{writers}-{writer}")), &[])
                .await
                .expect("insert");
        }
        let swapping = Arc::clone(&storage);
        let swapped = for_each_writer(writers, move |writer, n| {
            let storage = Arc::clone(&swapping);
            async move {
                let mut account = sample_account(&format!("swap-{writers}-{writer}"));
                account.status_reason = Some(format!("swap {n}"));
                match storage
                    .compare_and_swap_account(n + 1, &account, &[])
                    .await
                    .expect("swap")
                {
                    Swap::Swapped(_) => {}
                    Swap::Conflict(stored) => panic!("a writer's own account conflicted at {}", stored.revision),
                }
            }
        })
        .await;
        println!("{writers:>3} writers: {inserted:>8.0} inserts/s  {swapped:>8.0} compare-and-swaps/s");
    }
    drop(storage);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .expect("drop schema");
}

/// Runs `operation(writer, n)` for n = 0, 1, … in each of `writers` tasks
/// for [`RUN`]; returns operations per second.
async fn for_each_writer<F, Fut>(writers: usize, operation: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (done, stop, operation) = (Arc::clone(&done), Arc::clone(&stop), operation.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    operation(writer, n).await;
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
