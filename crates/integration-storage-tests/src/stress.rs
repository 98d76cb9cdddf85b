//! Stress behaviors: many concurrent writers of every kind, each run with a
//! deadline so that a backend that hangs fails instead of stalling the suite.

use std::future::Future;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use integration_core::crypto::SealedSecret;
use integration_core::storage::{Storage, StoredAccount, Swap};
use tokio::sync::{Barrier, oneshot};

use crate::{in_ten_minutes, sample_account, sample_pending};

/// How many writers each stress behavior runs at once.
pub const WRITERS: usize = 64;

/// How long a stress behavior may take before it counts as hung. Healthy
/// backends finish each in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How the concurrent writers of a stress behavior are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Tasks on the calling multi-threaded runtime.
    Threaded,
    /// The gateway's layout: `workers` threads, each running its own
    /// single-threaded runtime, all sharing the one store.
    RuntimePerWorker {
        /// How many worker threads.
        workers: usize,
    },
}

/// Behavior: 64 concurrent writers inserting accounts all succeed, and every
/// account is then listed.
pub async fn concurrent_inserts_all_land(storage: Arc<impl Storage + ?Sized>, layout: Layout) {
    const PER_WRITER: usize = 8;
    within_deadline("concurrent_inserts_all_land", async {
        let writer_storage = Arc::clone(&storage);
        let outcomes = run_writers(layout, move |writer| {
            let storage = Arc::clone(&writer_storage);
            async move {
                for n in 0..PER_WRITER {
                    let id = format!("w{writer:02}-{n}");
                    storage
                        .insert_account(&sample_account(&id), &[])
                        .await
                        .unwrap_or_else(|error| panic!("insert of {id} must succeed: {error}"));
                }
            }
        })
        .await;
        assert_eq!(outcomes.len(), WRITERS);
        let listed = storage.accounts().await.expect("accounts() must not fail");
        assert_eq!(
            listed.len(),
            WRITERS * PER_WRITER,
            "every acknowledged insert must be listed"
        );
        for entry in listed {
            entry.expect("every record is readable");
        }
    })
    .await;
}

/// Behavior: 64 concurrent compare-and-swaps on one account, each retried
/// from the revision a conflict reports, win exactly once per revision and
/// none hangs.
pub async fn concurrent_swaps_on_one_account_win_once_per_revision(
    storage: Arc<impl Storage + ?Sized>,
    layout: Layout,
) {
    const WINS_PER_WRITER: usize = 4;
    within_deadline("concurrent_swaps_on_one_account_win_once_per_revision", async {
        let account = sample_account("contended");
        storage
            .insert_account(&account, &[])
            .await
            .expect("insert must succeed");
        let writer_storage = Arc::clone(&storage);
        let writer_account = account.clone();
        let won: Vec<Vec<StoredAccount>> = run_writers(layout, move |writer| {
            let storage = Arc::clone(&writer_storage);
            let account = writer_account.clone();
            async move { swap_until_won(&*storage, account, writer, WINS_PER_WRITER).await }
        })
        .await;
        let mut revisions: Vec<u64> = won.iter().flatten().map(|stored| stored.revision).collect();
        revisions.sort_unstable();
        let total = u64::try_from(WRITERS * WINS_PER_WRITER).expect("small");
        assert_eq!(
            revisions,
            (2..=total + 1).collect::<Vec<_>>(),
            "every revision must be won exactly once"
        );
        let last = won
            .iter()
            .flatten()
            .find(|stored| stored.revision == total + 1)
            .expect("the last revision has a winner");
        let stored = storage.account(&account.id).await.expect("account() must not fail");
        assert_eq!(stored.as_ref(), Some(last), "the last winner's record must be stored");
    })
    .await;
}

/// Behavior: concurrent compare-and-swaps spread over many accounts all
/// land: each account's revision counts the swaps won on it.
pub async fn concurrent_swaps_on_many_accounts_all_land(storage: Arc<impl Storage + ?Sized>, layout: Layout) {
    const SWAPS_PER_WRITER: usize = 8;
    within_deadline("concurrent_swaps_on_many_accounts_all_land", async {
        for index in 0..WRITERS {
            storage
                .insert_account(&sample_account(&format!("many-{index:02}")), &[])
                .await
                .expect("insert must succeed");
        }
        let writer_storage = Arc::clone(&storage);
        run_writers(layout, move |writer| {
            let storage = Arc::clone(&writer_storage);
            async move {
                // Each writer moves over the accounts, so neighbours collide.
                for step in 0..SWAPS_PER_WRITER {
                    let account = sample_account(&format!("many-{:02}", (writer + step) % WRITERS));
                    swap_until_won(&*storage, account, writer, 1).await;
                }
            }
        })
        .await;
        let listed = storage.accounts().await.expect("accounts() must not fail");
        let swaps: u64 = listed
            .into_iter()
            .map(|entry| entry.expect("every record is readable").revision - 1)
            .sum();
        assert_eq!(
            swaps,
            u64::try_from(WRITERS * SWAPS_PER_WRITER).expect("small"),
            "every won swap must be counted in a revision"
        );
    })
    .await;
}

/// Behavior: 64 concurrent writers inserting and then taking pending
/// authorizations all succeed, each getting back its own.
pub async fn concurrent_pending_authorization_writers_all_land(storage: Arc<impl Storage + ?Sized>, layout: Layout) {
    const PER_WRITER: usize = 4;
    within_deadline("concurrent_pending_authorization_writers_all_land", async {
        let writer_storage = Arc::clone(&storage);
        run_writers(layout, move |writer| {
            let storage = Arc::clone(&writer_storage);
            async move {
                let states: Vec<String> = (0..PER_WRITER).map(|n| format!("state-{writer:02}-{n}")).collect();
                for state in &states {
                    storage
                        .insert_pending_authorization(&sample_pending(state, in_ten_minutes()))
                        .await
                        .unwrap_or_else(|error| panic!("insert of {state} must succeed: {error}"));
                }
                for state in &states {
                    let taken = storage
                        .take_pending_authorization(state)
                        .await
                        .unwrap_or_else(|error| panic!("take of {state} must succeed: {error}"));
                    assert_eq!(
                        taken.map(|pending| pending.state),
                        Some(state.clone()),
                        "a writer must get back its own state"
                    );
                }
            }
        })
        .await;
        for writer in 0..WRITERS {
            let state = format!("state-{writer:02}-0");
            let again = storage.take_pending_authorization(&state).await.expect("take");
            assert!(again.is_none(), "{state} was taken already");
        }
    })
    .await;
}

/// Swaps `account` (with a credential naming `writer`) until `wins` swaps
/// have succeeded, starting each try from the revision last seen.
async fn swap_until_won<S: Storage + ?Sized>(
    storage: &S,
    account: StoredAccount,
    writer: usize,
    wins: usize,
) -> Vec<StoredAccount> {
    let mut next = account;
    let tag = u8::try_from(writer % 256).expect("in range");
    let mut revision = storage
        .account(&next.id)
        .await
        .expect("account() must not fail")
        .expect("the account exists")
        .revision;
    let mut won = Vec::with_capacity(wins);
    while won.len() < wins {
        let seq = u8::try_from(won.len() % 256).expect("in range");
        next.credentials
            .insert("access_token".to_owned(), SealedSecret::from_bytes(vec![tag, seq]));
        match storage
            .compare_and_swap_account(revision, &next, &[])
            .await
            .unwrap_or_else(|error| panic!("swap by writer {writer} must not fail: {error}"))
        {
            Swap::Swapped(stored) => {
                assert_eq!(stored.revision, revision + 1, "a won swap bumps the revision by one");
                revision = stored.revision;
                won.push(stored);
            }
            Swap::Conflict(current) => {
                assert!(
                    current.revision > revision,
                    "a conflict reports a newer revision than the stale one"
                );
                revision = current.revision;
            }
        }
    }
    won
}

/// Fails the calling test when `behavior` does not finish by [`DEADLINE`].
///
/// A backend that blocks the runtime's threads outright keeps even the
/// timer from firing, and a runtime whose threads are blocked never finishes
/// shutting down: past [`DEADLINE`] and [`ABORT_GRACE`], a watchdog thread
/// aborts the test process so that a hang can never stall the suite.
async fn within_deadline(name: &'static str, behavior: impl Future<Output = ()>) {
    let watchdog = Watchdog::arm(name);
    if tokio::time::timeout(DEADLINE, behavior).await.is_err() {
        watchdog.leave_armed();
        panic!("{name}: hung, not finished after {DEADLINE:?}");
    }
}

/// How long past [`DEADLINE`] the watchdog waits for a hung behavior's test
/// to fail on its own before it aborts the process.
pub const ABORT_GRACE: Duration = Duration::from_secs(30);

/// Aborts the process unless disarmed, by drop, within the deadline and
/// its grace. A behavior that panics on an assertion disarms it as it
/// unwinds.
struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    fn arm(name: &'static str) -> Self {
        let (disarm, disarmed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(DEADLINE + ABORT_GRACE) {
                eprintln!(
                    "{name}: hung and blocked its runtime, not finished after {:?}; aborting the test process",
                    DEADLINE + ABORT_GRACE
                );
                std::process::abort();
            }
        });
        Self { disarm: Some(disarm) }
    }

    /// Keeps the watchdog running after this handle is gone.
    fn leave_armed(mut self) {
        std::mem::forget(self.disarm.take());
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the watchdog thread, which then ends.
        self.disarm.take();
    }
}

/// Runs [`WRITERS`] writers, all released at once by a barrier, as `layout`
/// says, and returns their outputs in writer order.
async fn run_writers<T, F, Fut>(layout: Layout, writer: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(WRITERS));
    let writer = Arc::new(writer);
    let start = move |index: usize| {
        let barrier = Arc::clone(&barrier);
        let writer = Arc::clone(&writer);
        async move {
            barrier.wait().await;
            writer(index).await
        }
    };
    match layout {
        Layout::Threaded => {
            let handles: Vec<_> = (0..WRITERS).map(|index| tokio::spawn(start(index))).collect();
            let mut outputs = Vec::with_capacity(WRITERS);
            for handle in handles {
                outputs.push(handle.await.expect("a writer panicked"));
            }
            outputs
        }
        Layout::RuntimePerWorker { workers } => {
            let start = Arc::new(start);
            let mut receivers = Vec::with_capacity(workers);
            for worker in 0..workers {
                let (done, receiver) = oneshot::channel();
                receivers.push(receiver);
                let start = Arc::clone(&start);
                std::thread::Builder::new()
                    .name(format!("storage-tests-worker-{worker}"))
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("worker runtime");
                        let outputs = runtime.block_on(async {
                            let handles: Vec<_> = (worker..WRITERS)
                                .step_by(workers)
                                .map(|index| (index, tokio::spawn(start(index))))
                                .collect();
                            let mut outputs = Vec::with_capacity(handles.len());
                            for (index, handle) in handles {
                                outputs.push((index, handle.await.expect("a writer panicked")));
                            }
                            outputs
                        });
                        // The receiver is gone only when the behavior has failed.
                        let _ = done.send(outputs);
                    })
                    .expect("spawn a worker thread");
            }
            let mut outputs = Vec::with_capacity(WRITERS);
            for receiver in receivers {
                outputs.extend(receiver.await.expect("a worker thread panicked"));
            }
            outputs.sort_by_key(|(index, _)| *index);
            outputs.into_iter().map(|(_, output)| output).collect()
        }
    }
}
