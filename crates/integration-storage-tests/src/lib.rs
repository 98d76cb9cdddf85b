#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use integration_core::crypto::SealedSecret;
use integration_core::storage::{AccountQuery, ConnectSession, PendingAuthorization, Storage, StoredAccount, Swap};
use integration_core::time::OffsetDateTime;
use integration_core::{AccountError, AccountHealth, AccountId, AccountStatus, ErrorKind};

pub mod connect_sessions;
pub mod keys;
pub mod outbox;
pub mod stress;
pub mod webhooks;

pub use connect_sessions::{
    concurrent_connect_session_updates_from_one_record_let_exactly_one_win, connect_session_reads_back_equal,
    connect_session_update_replaces_only_the_expected_record,
    duplicate_connect_session_is_refused_and_keeps_the_original, expired_connect_sessions_are_deleted_and_others_kept,
};
pub use outbox::{
    claimed_events_wait_for_their_claim_to_end, concurrent_claims_hand_each_event_to_one,
    events_are_stored_with_the_change_that_causes_them,
};

pub use stress::Layout;

/// The runtime each generated test runs on: multi-threaded, 4 workers,
/// built here so that a backend's crate needs no tokio of its own.
#[doc(hidden)]
pub fn __runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("cannot build a tokio runtime for the conformance suite: {error}"))
}

/// What a conformance factory gives: a store, or `None` when the store's
/// server is missing and the test is skipped (the factory prints why, and
/// fails instead when `INTEGRATIONS_REQUIRE_PEERS=1`).
pub trait MaybeStorage {
    /// The store's type.
    type Store: ?Sized;

    /// The store, if there is one.
    fn into_storage(self) -> Option<Arc<Self::Store>>;
}

impl<S: ?Sized> MaybeStorage for Arc<S> {
    type Store = S;

    fn into_storage(self) -> Option<Arc<S>> {
        Some(self)
    }
}

impl<S: ?Sized> MaybeStorage for Option<Arc<S>> {
    type Store = S;

    fn into_storage(self) -> Option<Arc<S>> {
        self
    }
}

/// Generates one `#[test]` per behavior of the `Storage` contract (each on
/// a tokio runtime of its own: the crate calling it needs no tokio),
/// and one per [`stress`] behavior and [`Layout`], in modules
/// `stress_on_a_threaded_runtime` and `stress_on_a_runtime_per_worker`.
///
/// `$factory` is a closure returning a future of a fresh, empty store
/// (`Arc<impl Storage>`), or of `Option<Arc<impl Storage>>` for a store
/// whose server may be missing ([`MaybeStorage`]).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@tests $factory;
            missing_account_is_none,
            inserted_account_reads_back_equal,
            duplicate_insert_is_refused_and_keeps_the_original,
            accounts_are_listed_sorted_by_id,
            accounts_are_paged_by_id_with_filters,
            swap_at_expected_revision_replaces_and_bumps_it,
            swap_at_stale_revision_conflicts_and_changes_nothing,
            swap_of_missing_account_is_not_found,
            concurrent_swaps_from_one_revision_let_exactly_one_win,
            end_user_is_cleared_and_set_again_by_swaps,
            delete_reports_whether_the_account_existed,
            pending_authorization_is_taken_once,
            concurrent_takes_of_one_state_get_it_exactly_once,
            duplicate_pending_state_is_refused,
            expired_pending_authorizations_are_deleted_and_others_kept,
            pending_authorizations_are_listed_by_state,
            sealed_secrets_round_trip_byte_for_byte,
            connect_session_reads_back_equal,
            duplicate_connect_session_is_refused_and_keeps_the_original,
            connect_session_update_replaces_only_the_expected_record,
            concurrent_connect_session_updates_from_one_record_let_exactly_one_win,
            expired_connect_sessions_are_deleted_and_others_kept,
            events_are_stored_with_the_change_that_causes_them,
            claimed_events_wait_for_their_claim_to_end,
            concurrent_claims_hand_each_event_to_one,
        );
    };
    (@tests $factory:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::__runtime().block_on(async {
                    let factory = $factory;
                    let Some(storage) = $crate::MaybeStorage::into_storage(factory().await) else {
                        return;
                    };
                    $crate::$name(storage).await;
                });
            }
        )*

        /// The stress behaviors with tasks on one multi-threaded runtime.
        mod stress_on_a_threaded_runtime {
            #[allow(unused_imports, reason = "the factory may name the backend's imports")]
            use super::*;
            $crate::conformance_tests!(@stress $factory; $crate::stress::Layout::Threaded);
        }

        /// The stress behaviors on the gateway's layout: a single-threaded
        /// runtime per worker thread, all sharing one store.
        mod stress_on_a_runtime_per_worker {
            #[allow(unused_imports, reason = "the factory may name the backend's imports")]
            use super::*;
            $crate::conformance_tests!(@stress $factory; $crate::stress::Layout::RuntimePerWorker { workers: 4 });
        }
    };
    (@stress $factory:expr; $layout:expr) => {
        $crate::conformance_tests!(@stress $factory; $layout;
            concurrent_inserts_all_land,
            concurrent_swaps_on_one_account_win_once_per_revision,
            concurrent_swaps_on_many_accounts_all_land,
            concurrent_pending_authorization_writers_all_land,
        );
    };
    (@stress $factory:expr; $layout:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::__runtime().block_on(async {
                    let factory = $factory;
                    let Some(storage) = $crate::MaybeStorage::into_storage(factory().await) else {
                        return;
                    };
                    $crate::stress::$name(storage, $layout).await;
                });
            }
        )*
    };
}

/// Generates the opt-in behaviors of a store that persists, one `#[test]`
/// each: [`acknowledged_writes_survive_a_reopen`] and
/// [`an_unreadable_record_is_an_error_in_its_place`].
///
/// `open` is a closure `|dir: &Path| async { Arc<impl Storage> }` that opens
/// the store kept in `dir` (a fresh temporary directory per test; a
/// backend that is not file-based may keep its data elsewhere, the same
/// for every call of one test). `spoil` is a closure `|dir: &Path, id:
/// &AccountId|`, called while the store is closed, that makes the stored
/// record of `id` unreadable (garbage where the record's bytes are).
#[macro_export]
macro_rules! persistence_tests {
    (open: $open:expr, spoil: $spoil:expr $(,)?) => {
        #[test]
        fn acknowledged_writes_survive_a_reopen() {
            $crate::__runtime().block_on($crate::acknowledged_writes_survive_a_reopen($open));
        }

        #[test]
        fn an_unreadable_record_is_an_error_in_its_place() {
            $crate::__runtime().block_on($crate::an_unreadable_record_is_an_error_in_its_place(
                $open, $spoil,
            ));
        }
    };
}

/// Runs every behavior in turn, each on a fresh store from `factory`.
/// Panics naming the first behavior that fails.
pub async fn run_all<F, Fut, S>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
    S: Storage,
{
    missing_account_is_none(factory().await).await;
    inserted_account_reads_back_equal(factory().await).await;
    duplicate_insert_is_refused_and_keeps_the_original(factory().await).await;
    accounts_are_listed_sorted_by_id(factory().await).await;
    swap_at_expected_revision_replaces_and_bumps_it(factory().await).await;
    swap_at_stale_revision_conflicts_and_changes_nothing(factory().await).await;
    swap_of_missing_account_is_not_found(factory().await).await;
    concurrent_swaps_from_one_revision_let_exactly_one_win(factory().await).await;
    end_user_is_cleared_and_set_again_by_swaps(factory().await).await;
    delete_reports_whether_the_account_existed(factory().await).await;
    pending_authorization_is_taken_once(factory().await).await;
    concurrent_takes_of_one_state_get_it_exactly_once(factory().await).await;
    duplicate_pending_state_is_refused(factory().await).await;
    expired_pending_authorizations_are_deleted_and_others_kept(factory().await).await;
    pending_authorizations_are_listed_by_state(factory().await).await;
    sealed_secrets_round_trip_byte_for_byte(factory().await).await;
    connect_sessions::connect_session_reads_back_equal(factory().await).await;
    connect_sessions::duplicate_connect_session_is_refused_and_keeps_the_original(factory().await).await;
    connect_sessions::connect_session_update_replaces_only_the_expected_record(factory().await).await;
    connect_sessions::concurrent_connect_session_updates_from_one_record_let_exactly_one_win(factory().await).await;
    connect_sessions::expired_connect_sessions_are_deleted_and_others_kept(factory().await).await;
    outbox::events_are_stored_with_the_change_that_causes_them(factory().await).await;
    outbox::claimed_events_wait_for_their_claim_to_end(factory().await).await;
    outbox::concurrent_claims_hand_each_event_to_one(factory().await).await;
    for layout in [Layout::Threaded, Layout::RuntimePerWorker { workers: 4 }] {
        stress::concurrent_inserts_all_land(factory().await, layout).await;
        stress::concurrent_swaps_on_one_account_win_once_per_revision(factory().await, layout).await;
        stress::concurrent_swaps_on_many_accounts_all_land(factory().await, layout).await;
        stress::concurrent_pending_authorization_writers_all_land(factory().await, layout).await;
    }
}

/// A sample account record with sealed-looking bytes.
pub fn sample_account(id: &str) -> StoredAccount {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    StoredAccount {
        id: account_id(id),
        integration: "acme".to_owned(),
        parameters: BTreeMap::from([("subdomain".to_owned(), "eu1".to_owned())]),
        secret_parameters: BTreeMap::from([("client_secret".to_owned(), SealedSecret::from_bytes(vec![1, 2, 3]))]),
        credentials: BTreeMap::from([
            ("access_token".to_owned(), SealedSecret::from_bytes(vec![4, 5, 6, 7])),
            ("refresh_token".to_owned(), SealedSecret::from_bytes(vec![8, 9])),
        ]),
        status: AccountStatus::Connected,
        status_reason: None,
        health: AccountHealth {
            last_refresh_at: Some(now),
            last_error: Some(AccountError {
                code: "temporarily_unavailable".to_owned(),
                at: now,
            }),
            consecutive_failures: 2,
            next_check_at: Some(now),
        },
        end_user: Some(integration_core::EndUser {
            id: "user-7".to_owned(),
            display_name: Some("Ada at Acme".to_owned()),
        }),
        created_at: now,
        updated_at: now,
        revision: 1,
    }
}

/// A sample pending authorization expiring at `expires_at`.
pub fn sample_pending(state: &str, expires_at: OffsetDateTime) -> PendingAuthorization {
    PendingAuthorization {
        state: state.to_owned(),
        account: account_id("acct1"),
        created_at: expires_at - Duration::from_secs(600),
        expires_at,
        data: BTreeMap::from([("redirect_uri".to_owned(), "https://example.test/cb".to_owned())]),
        secrets: BTreeMap::from([("pkce_verifier".to_owned(), SealedSecret::from_bytes(vec![0xfe; 40]))]),
    }
}

fn account_id(id: &str) -> AccountId {
    AccountId::new(id).unwrap_or_else(|error| panic!("test account id {id:?}: {error}"))
}

/// Behavior: `account` of an id never inserted returns `Ok(None)`.
pub async fn missing_account_is_none(storage: Arc<impl Storage + ?Sized>) {
    let found = storage
        .account(&account_id("nobody"))
        .await
        .expect("account() must not fail");
    assert!(found.is_none(), "a missing account must read as None");
}

/// Behavior: `insert_account` stores the record as given.
pub async fn inserted_account_reads_back_equal(storage: Arc<impl Storage + ?Sized>) {
    let account = sample_account("acct1");
    storage
        .insert_account(&account, &[])
        .await
        .expect("insert must succeed");
    let read = storage.account(&account.id).await.expect("account() must not fail");
    assert_eq!(
        read.as_ref(),
        Some(&account),
        "the record must read back as it was inserted"
    );
}

/// Behavior: inserting an existing id fails with `AlreadyExists` and keeps
/// the stored record.
pub async fn duplicate_insert_is_refused_and_keeps_the_original(storage: Arc<impl Storage + ?Sized>) {
    let original = sample_account("acct1");
    storage
        .insert_account(&original, &[])
        .await
        .expect("first insert must succeed");
    let mut other = sample_account("acct1");
    other.integration = "other".to_owned();
    let error = storage
        .insert_account(&other, &[])
        .await
        .expect_err("second insert must fail");
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "duplicate insert: {error}");
    let read = storage.account(&original.id).await.expect("account() must not fail");
    assert_eq!(
        read.as_ref(),
        Some(&original),
        "a refused insert must not change the record"
    );
}

/// Behavior: `accounts` returns every account sorted by id.
pub async fn accounts_are_listed_sorted_by_id(storage: Arc<impl Storage + ?Sized>) {
    for id in ["charlie", "alpha", "bravo", "alpha-2"] {
        storage
            .insert_account(&sample_account(id), &[])
            .await
            .expect("insert must succeed");
    }
    let ids: Vec<String> = storage
        .accounts()
        .await
        .expect("accounts() must not fail")
        .into_iter()
        .map(|entry| entry.expect("every record is readable").id.to_string())
        .collect();
    assert_eq!(ids, ["alpha", "alpha-2", "bravo", "charlie"]);
}

/// Behavior: a swap at the stored revision replaces the record and stores
/// revision + 1.
pub async fn swap_at_expected_revision_replaces_and_bumps_it(storage: Arc<impl Storage + ?Sized>) {
    let account = sample_account("acct1");
    storage
        .insert_account(&account, &[])
        .await
        .expect("insert must succeed");
    let mut next = account.clone();
    next.credentials
        .insert("access_token".to_owned(), SealedSecret::from_bytes(vec![42; 8]));
    next.status = AccountStatus::NeedsReauth;
    let outcome = storage
        .compare_and_swap_account(1, &next, &[])
        .await
        .expect("swap must not fail");
    let expected = StoredAccount { revision: 2, ..next };
    assert_eq!(
        outcome,
        Swap::Swapped(expected.clone()),
        "swap at the stored revision must succeed"
    );
    let read = storage.account(&account.id).await.expect("account() must not fail");
    assert_eq!(
        read,
        Some(expected),
        "the swapped record must be stored with revision 2"
    );
}

/// Behavior: a swap at another revision changes nothing and returns the
/// stored record.
pub async fn swap_at_stale_revision_conflicts_and_changes_nothing(storage: Arc<impl Storage + ?Sized>) {
    let account = sample_account("acct1");
    storage
        .insert_account(&account, &[])
        .await
        .expect("insert must succeed");
    let mut next = account.clone();
    next.status = AccountStatus::NeedsReauth;
    let outcome = storage
        .compare_and_swap_account(7, &next, &[])
        .await
        .expect("swap must not fail");
    assert_eq!(
        outcome,
        Swap::Conflict(account.clone()),
        "a stale swap must report the stored record"
    );
    let read = storage.account(&account.id).await.expect("account() must not fail");
    assert_eq!(read, Some(account), "a stale swap must change nothing");
}

/// Behavior: swapping a missing account fails with `NotFound`.
pub async fn swap_of_missing_account_is_not_found(storage: Arc<impl Storage + ?Sized>) {
    let error = storage
        .compare_and_swap_account(1, &sample_account("ghost"), &[])
        .await
        .expect_err("swapping a missing account must fail");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    let read = storage
        .account(&account_id("ghost"))
        .await
        .expect("account() must not fail");
    assert!(read.is_none(), "a failed swap must not create the account");
}

/// Behavior: of many concurrent swaps from one revision, exactly one wins.
pub async fn concurrent_swaps_from_one_revision_let_exactly_one_win(storage: Arc<impl Storage + ?Sized>) {
    swap_race(storage).await;
}

async fn swap_race<S: Storage + ?Sized>(storage: Arc<S>) {
    const CONTENDERS: u8 = 24;
    let account = sample_account("acct1");
    storage
        .insert_account(&account, &[])
        .await
        .expect("insert must succeed");
    let barrier = Arc::new(tokio::sync::Barrier::new(usize::from(CONTENDERS)));
    let mut tasks = Vec::new();
    for contender in 0..CONTENDERS {
        let storage = Arc::clone(&storage);
        let barrier = Arc::clone(&barrier);
        let mut next = account.clone();
        next.credentials
            .insert("access_token".to_owned(), SealedSecret::from_bytes(vec![contender; 4]));
        tasks.push(async move {
            barrier.wait().await;
            storage.compare_and_swap_account(1, &next, &[]).await
        });
    }
    let outcomes = futures_join_all(tasks).await;
    let winners: Vec<&StoredAccount> = outcomes
        .iter()
        .filter_map(|outcome| match outcome.as_ref().expect("swap must not fail") {
            Swap::Swapped(stored) => Some(stored),
            Swap::Conflict(_) => None,
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {CONTENDERS} concurrent swaps must win"
    );
    let stored = storage.account(&account.id).await.expect("account() must not fail");
    assert_eq!(
        stored.as_ref(),
        Some(winners[0]),
        "the winner's record must be the stored one"
    );
    assert_eq!(stored.map(|s| s.revision), Some(2));
}

/// Behavior: `end_user` is stored as given by inserts and swaps: it can be
/// cleared, and set again, with or without a name.
pub async fn end_user_is_cleared_and_set_again_by_swaps(storage: Arc<impl Storage + ?Sized>) {
    let account = sample_account("acct1");
    storage
        .insert_account(&account, &[])
        .await
        .expect("insert must succeed");
    let without_a_name = Some(integration_core::EndUser {
        id: "user-8".to_owned(),
        display_name: None,
    });
    let mut current = account.clone();
    for (revision, end_user) in (1..).zip([None, without_a_name, account.end_user.clone()]) {
        let next = StoredAccount {
            end_user,
            ..current.clone()
        };
        let outcome = storage
            .compare_and_swap_account(revision, &next, &[])
            .await
            .expect("swap must not fail");
        current = StoredAccount {
            revision: revision + 1,
            ..next
        };
        assert_eq!(
            outcome,
            Swap::Swapped(current.clone()),
            "the swap from revision {revision}"
        );
        let read = storage.account(&account.id).await.expect("account() must not fail");
        assert_eq!(
            read.as_ref(),
            Some(&current),
            "the end user after the swap from revision {revision}"
        );
    }
    let mut anonymous = sample_account("acct2");
    anonymous.end_user = None;
    storage
        .insert_account(&anonymous, &[])
        .await
        .expect("insert must succeed");
    let read = storage.account(&anonymous.id).await.expect("account() must not fail");
    assert_eq!(
        read,
        Some(anonymous),
        "an account without an end user must read back without one"
    );
}

/// Runs futures concurrently on the runtime and collects their outputs in
/// order.
async fn futures_join_all<T: Send + 'static>(futures: Vec<impl Future<Output = T> + Send + 'static>) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task must not panic"));
    }
    outputs
}

/// Behavior: `delete_account` returns whether the account existed.
pub async fn delete_reports_whether_the_account_existed(storage: Arc<impl Storage + ?Sized>) {
    let account = sample_account("acct1");
    storage
        .insert_account(&account, &[])
        .await
        .expect("insert must succeed");
    storage
        .insert_account(&sample_account("acct2"), &[])
        .await
        .expect("insert must succeed");
    assert!(
        storage
            .delete_account(&account.id, &[])
            .await
            .expect("delete must not fail"),
        "existing → true"
    );
    assert!(
        !storage
            .delete_account(&account.id, &[])
            .await
            .expect("delete must not fail"),
        "missing → false"
    );
    assert!(
        storage
            .account(&account.id)
            .await
            .expect("account() must not fail")
            .is_none()
    );
    assert!(
        storage
            .account(&account_id("acct2"))
            .await
            .expect("account() must not fail")
            .is_some(),
        "deleting one account must keep the others"
    );
}

/// Behavior: pages list each matching account once, in id order, with a
/// cursor until the last page, filtered by integration, status and failures
/// in a row.
pub async fn accounts_are_paged_by_id_with_filters(storage: Arc<impl Storage + ?Sized>) {
    let accounts = [
        ("a1", "crm", AccountStatus::Connected),
        ("a2", "erp", AccountStatus::Connected),
        ("a3", "crm", AccountStatus::NeedsReauth),
        ("a4", "erp", AccountStatus::Pending),
        ("a5", "crm", AccountStatus::Connected),
    ];
    for (n, (id, integration, status)) in accounts.into_iter().enumerate() {
        let mut account = sample_account(id);
        account.integration = integration.to_owned();
        account.status = status;
        // 0, 1, 2, 0, 1 failures in a row.
        account.health.consecutive_failures = u32::try_from(n % 3).unwrap_or(0);
        storage
            .insert_account(&account, &[])
            .await
            .expect("insert must succeed");
    }
    let page_through = |mut query: AccountQuery| {
        let storage = Arc::clone(&storage);
        async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                let page = storage.accounts_page(&query).await.expect("a page must be read");
                assert!(
                    page.accounts.len() <= query.limit.max(1),
                    "a page holds at most `limit`"
                );
                for account in page.accounts {
                    seen.push(account.expect("every record is readable").id.as_str().to_owned());
                }
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => return seen,
                }
            }
            panic!("paging must end: {seen:?}");
        }
    };
    assert_eq!(
        page_through(AccountQuery::first(2)).await,
        ["a1", "a2", "a3", "a4", "a5"]
    );
    assert_eq!(
        page_through(AccountQuery::first(5)).await,
        ["a1", "a2", "a3", "a4", "a5"]
    );
    // A limit of 0 lists one at a time rather than none forever.
    assert_eq!(
        page_through(AccountQuery::first(0)).await,
        ["a1", "a2", "a3", "a4", "a5"]
    );
    let erp = AccountQuery {
        integration: Some("erp".to_owned()),
        ..AccountQuery::first(1)
    };
    assert_eq!(page_through(erp).await, ["a2", "a4"]);
    let needs_reauth = AccountQuery {
        status: Some(AccountStatus::NeedsReauth),
        ..AccountQuery::first(10)
    };
    assert_eq!(page_through(needs_reauth).await, ["a3"]);
    let failing = AccountQuery {
        min_consecutive_failures: Some(1),
        ..AccountQuery::first(1)
    };
    assert_eq!(page_through(failing).await, ["a2", "a3", "a5"]);
    let failing_crm = AccountQuery {
        integration: Some("crm".to_owned()),
        min_consecutive_failures: Some(2),
        ..AccountQuery::first(10)
    };
    assert_eq!(page_through(failing_crm).await, ["a3"]);
    let after = AccountQuery {
        after: Some(account_id("a3")),
        ..AccountQuery::first(10)
    };
    assert_eq!(page_through(after).await, ["a4", "a5"]);
    let past_the_end = storage
        .accounts_page(&AccountQuery {
            after: Some(account_id("z")),
            ..AccountQuery::first(10)
        })
        .await
        .expect("a page must be read");
    assert!(past_the_end.accounts.is_empty() && past_the_end.next.is_none());
    // An id that is not stored is a cursor all the same.
    let between = storage
        .accounts_page(&AccountQuery {
            after: Some(account_id("a2x")),
            ..AccountQuery::first(1)
        })
        .await
        .expect("a page must be read");
    assert_eq!(between.accounts.len(), 1);
    assert_eq!(between.next, Some(account_id("a3")));
}

fn in_ten_minutes() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::from_secs(600)
}

/// Behavior: a pending authorization is taken once, then gone.
pub async fn pending_authorization_is_taken_once(storage: Arc<impl Storage + ?Sized>) {
    let pending = sample_pending("state-1", in_ten_minutes());
    storage
        .insert_pending_authorization(&pending)
        .await
        .expect("insert must succeed");
    let first = storage
        .take_pending_authorization("state-1")
        .await
        .expect("take must not fail");
    assert_eq!(
        first,
        Some(pending),
        "the first take must return the stored authorization"
    );
    let second = storage
        .take_pending_authorization("state-1")
        .await
        .expect("take must not fail");
    assert!(second.is_none(), "a state must be single use");
    let unknown = storage
        .take_pending_authorization("never-stored")
        .await
        .expect("take must not fail");
    assert!(unknown.is_none());
}

/// Behavior: of concurrent takes of one state, exactly one gets it.
pub async fn concurrent_takes_of_one_state_get_it_exactly_once(storage: Arc<impl Storage + ?Sized>) {
    take_race(storage).await;
}

async fn take_race<S: Storage + ?Sized>(storage: Arc<S>) {
    const TAKERS: usize = 24;
    storage
        .insert_pending_authorization(&sample_pending("contended", in_ten_minutes()))
        .await
        .expect("insert must succeed");
    let barrier = Arc::new(tokio::sync::Barrier::new(TAKERS));
    let mut tasks = Vec::new();
    for _ in 0..TAKERS {
        let storage = Arc::clone(&storage);
        let barrier = Arc::clone(&barrier);
        tasks.push(async move {
            barrier.wait().await;
            storage.take_pending_authorization("contended").await
        });
    }
    let taken = futures_join_all(tasks)
        .await
        .into_iter()
        .filter(|outcome| outcome.as_ref().expect("take must not fail").is_some())
        .count();
    assert_eq!(taken, 1, "exactly one of {TAKERS} concurrent takes must get the state");
}

/// Behavior: inserting a state that is pending fails with `AlreadyExists`.
pub async fn duplicate_pending_state_is_refused(storage: Arc<impl Storage + ?Sized>) {
    let pending = sample_pending("state-1", in_ten_minutes());
    storage
        .insert_pending_authorization(&pending)
        .await
        .expect("insert must succeed");
    let mut other = pending.clone();
    other.account = account_id("intruder");
    let error = storage
        .insert_pending_authorization(&other)
        .await
        .expect_err("a duplicate state must be refused");
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}");
    let taken = storage
        .take_pending_authorization("state-1")
        .await
        .expect("take must not fail");
    assert_eq!(taken, Some(pending), "a refused insert must keep the original");
}

/// Behavior: expired pending authorizations are deleted, the others kept.
pub async fn expired_pending_authorizations_are_deleted_and_others_kept(storage: Arc<impl Storage + ?Sized>) {
    let now = OffsetDateTime::now_utc();
    storage
        .insert_pending_authorization(&sample_pending("expired", now - Duration::from_secs(1)))
        .await
        .expect("insert must succeed");
    storage
        .insert_pending_authorization(&sample_pending("at-now", now))
        .await
        .expect("insert must succeed");
    storage
        .insert_pending_authorization(&sample_pending("live", now + Duration::from_secs(60)))
        .await
        .expect("insert must succeed");
    let deleted = storage
        .delete_expired_pending_authorizations(now)
        .await
        .expect("delete must not fail");
    assert_eq!(deleted, 2, "the expired and the one expiring at `now` must go");
    assert!(
        storage
            .take_pending_authorization("expired")
            .await
            .expect("take")
            .is_none()
    );
    assert!(
        storage
            .take_pending_authorization("live")
            .await
            .expect("take")
            .is_some(),
        "live must stay"
    );
}

/// Behavior: `pending_authorizations` lists every pending authorization,
/// sorted by state, as stored.
pub async fn pending_authorizations_are_listed_by_state(storage: Arc<impl Storage + ?Sized>) {
    let expires_at = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    assert!(storage.pending_authorizations().await.expect("list").is_empty());
    for state in ["state-b", "state-a", "state-c"] {
        storage
            .insert_pending_authorization(&sample_pending(state, expires_at))
            .await
            .expect("insert");
    }
    storage.take_pending_authorization("state-c").await.expect("take");
    let listed = storage.pending_authorizations().await.expect("list");
    assert_eq!(
        listed,
        [
            sample_pending("state-a", expires_at),
            sample_pending("state-b", expires_at)
        ]
    );
}

/// Behavior: sealed secrets come back byte for byte, whatever the bytes.
pub async fn sealed_secrets_round_trip_byte_for_byte(storage: Arc<impl Storage + ?Sized>) {
    let mut account = sample_account("bytes");
    let every_byte: Vec<u8> = (0..=255).collect();
    let large = vec![0xa5; 256 * 1024];
    account.credentials = BTreeMap::from([
        ("every_byte".to_owned(), SealedSecret::from_bytes(every_byte)),
        ("empty".to_owned(), SealedSecret::from_bytes(Vec::new())),
        ("large".to_owned(), SealedSecret::from_bytes(large)),
    ]);
    account
        .parameters
        .insert("ünïcödé".to_owned(), "値 ✓ \"quoted\"\n".to_owned());
    storage
        .insert_account(&account, &[])
        .await
        .expect("insert must succeed");
    let read = storage.account(&account.id).await.expect("account() must not fail");
    assert_eq!(read, Some(account), "bytes and text must round-trip exactly");
}

/// Behavior (opt-in, for stores that persist): what was acknowledged is
/// there after the store is closed and opened again: inserts, a swap's new
/// revision, a delete, pending authorizations inserted and taken, a
/// connect session's update.
pub async fn acknowledged_writes_survive_a_reopen<M, F, Fut>(open: F)
where
    M: MaybeStorage<Store: Storage>,
    F: Fn(&Path) -> Fut,
    Fut: Future<Output = M>,
{
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("cannot make a temporary directory: {error}"));
    let kept = sample_account("kept");
    let mut swapped = sample_account("swapped");
    let expires_at = in_ten_minutes();
    let session = connect_sessions::sample_connect_session(&connect_sessions::sample_token_hash(1), expires_at);
    let completed = ConnectSession {
        completed_at: Some(expires_at),
        ..session.clone()
    };
    {
        let Some(storage) = open(dir.path()).await.into_storage() else {
            return;
        };
        for id in ["kept", "swapped", "deleted"] {
            storage
                .insert_account(&sample_account(id), &[])
                .await
                .expect("insert must succeed");
        }
        swapped.status = AccountStatus::NeedsReauth;
        let swap = storage
            .compare_and_swap_account(1, &swapped, &[])
            .await
            .expect("swap must not fail");
        assert!(matches!(swap, Swap::Swapped(_)), "the swap from revision 1 must win");
        assert!(
            storage
                .delete_account(&account_id("deleted"), &[])
                .await
                .expect("delete must succeed")
        );
        for state in ["pending-kept", "pending-taken"] {
            storage
                .insert_pending_authorization(&sample_pending(state, expires_at))
                .await
                .expect("insert must succeed");
        }
        assert!(
            storage
                .take_pending_authorization("pending-taken")
                .await
                .expect("take must not fail")
                .is_some()
        );
        storage
            .insert_connect_session(&session)
            .await
            .expect("insert must succeed");
        assert!(
            storage
                .update_connect_session(&session, &completed)
                .await
                .expect("update must not fail")
        );
        assert_eq!(
            Arc::strong_count(&storage),
            1,
            "the suite must hold the only handle, so that dropping it closes the store"
        );
    }
    let Some(storage) = open(dir.path()).await.into_storage() else {
        return;
    };
    let read = |id: &'static str| {
        let storage = Arc::clone(&storage);
        async move {
            storage
                .account(&account_id(id))
                .await
                .unwrap_or_else(|error| panic!("account {id} after reopening: {error}"))
        }
    };
    assert_eq!(read("kept").await, Some(kept), "an inserted account must survive");
    swapped.revision = 2;
    assert_eq!(
        read("swapped").await,
        Some(swapped),
        "a swap must survive with its revision"
    );
    assert_eq!(read("deleted").await, None, "a delete must survive");
    assert!(
        storage
            .take_pending_authorization("pending-kept")
            .await
            .expect("take must not fail")
            .is_some(),
        "a pending authorization must survive"
    );
    assert!(
        storage
            .take_pending_authorization("pending-taken")
            .await
            .expect("take must not fail")
            .is_none(),
        "a taken pending authorization must stay taken"
    );
    assert_eq!(
        storage
            .connect_session(&session.token_hash)
            .await
            .expect("connect_session() must not fail"),
        Some(completed),
        "an updated connect session must survive"
    );
}

/// Behavior (opt-in, for stores that persist): a record that cannot be
/// read is an error in its place: `accounts` lists it as an `Err` between
/// the others, and `account` of its id fails rather than answering `None`;
/// every other record stays readable.
pub async fn an_unreadable_record_is_an_error_in_its_place<M, F, Fut, Spoil>(open: F, spoil: Spoil)
where
    M: MaybeStorage<Store: Storage>,
    F: Fn(&Path) -> Fut,
    Fut: Future<Output = M>,
    Spoil: Fn(&Path, &AccountId),
{
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("cannot make a temporary directory: {error}"));
    {
        let Some(storage) = open(dir.path()).await.into_storage() else {
            return;
        };
        for id in ["a-first", "b-spoiled", "c-last"] {
            storage
                .insert_account(&sample_account(id), &[])
                .await
                .expect("insert must succeed");
        }
    }
    spoil(dir.path(), &account_id("b-spoiled"));
    let Some(storage) = open(dir.path()).await.into_storage() else {
        return;
    };
    let listed = storage.accounts().await.expect("accounts() must not fail as a whole");
    let outcome: Vec<Option<&str>> = listed
        .iter()
        .map(|record| record.as_ref().ok().map(|account| account.id.as_str()))
        .collect();
    assert_eq!(
        outcome,
        [Some("a-first"), None, Some("c-last")],
        "the unreadable record must be an error in its place, the others listed"
    );
    assert!(
        storage.account(&account_id("b-spoiled")).await.is_err(),
        "reading an unreadable record must fail, not answer None"
    );
    assert_eq!(
        storage
            .account(&account_id("c-last"))
            .await
            .expect("a readable record must stay readable"),
        Some(sample_account("c-last"))
    );
}
