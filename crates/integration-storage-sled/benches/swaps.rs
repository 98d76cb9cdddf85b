//! Durable compare-and-swaps per second on the sled store, on disk, with 1,
//! 4, 16 and 64 tasks swapping at once (each its own account, so every swap
//! wins and is flushed before it is acknowledged).
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use integration_core::Storage;
use integration_core::storage::Swap;
use integration_storage_sled::SledStorage;
use integration_storage_tests::sample_account;

const CONCURRENCY: [usize; 4] = [1, 4, 16, 64];

fn durable_swaps(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // On the disk the target directory is on: a tmpfs would make fsync free.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let storage = Arc::new(SledStorage::open(dir.path()).expect("open sled"));
    runtime.block_on(async {
        for task in 0..CONCURRENCY[CONCURRENCY.len() - 1] {
            storage
                .insert_account(&sample_account(&format!("bench-{task}")), &[])
                .await
                .expect("insert");
        }
    });

    let mut group = c.benchmark_group("sled_durable_swaps");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for tasks in CONCURRENCY {
        group.bench_with_input(BenchmarkId::from_parameter(tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iterations| {
                let per_task = iterations.div_ceil(tasks as u64);
                runtime.block_on(async {
                    let started = Instant::now();
                    let handles: Vec<_> = (0..tasks)
                        .map(|task| {
                            let storage = Arc::clone(&storage);
                            tokio::spawn(async move { swap_own_account(&storage, task, per_task).await })
                        })
                        .collect();
                    for handle in handles {
                        handle.await.expect("swapper");
                    }
                    // Time per swap, counted over the swaps actually made.
                    started
                        .elapsed()
                        .mul_f64(iterations as f64 / (per_task * tasks as u64) as f64)
                })
            });
        });
    }
    group.finish();
}

async fn swap_own_account(storage: &SledStorage, task: usize, swaps: u64) {
    let id = format!("bench-{task}");
    let mut account = storage
        .account(&integration_core::AccountId::new(id).expect("id"))
        .await
        .expect("read")
        .expect("present");
    for _ in 0..swaps {
        match storage
            .compare_and_swap_account(account.revision, &account, &[])
            .await
            .expect("swap")
        {
            Swap::Swapped(stored) => account = stored,
            Swap::Conflict(_) => panic!("nobody else swaps this account"),
        }
    }
}

criterion_group!(benches, durable_swaps);
criterion_main!(benches);
