//! The sled backend keeps the `Storage` contract.

use std::sync::Arc;

use integration_storage_sled::SledStorage;

mod common;

integration_storage_tests::conformance_tests!(|| async {
    Arc::new(SledStorage::temporary().expect("temporary sled database"))
});

integration_storage_tests::webhook_storage_tests!(|| async {
    Arc::new(SledStorage::temporary().expect("temporary sled database"))
});

integration_storage_tests::persistence_tests!(
    open: |dir: &std::path::Path| {
        let dir = dir.to_owned();
        async move { Arc::new(SledStorage::open(&dir).expect("open sled")) }
    },
    spoil: |dir: &std::path::Path, id: &integration_core::AccountId| {
        // Behind the backend's back, as a damaged disk would.
        let db = common::open_raw(dir);
        let accounts = db.open_tree("accounts.v1").expect("accounts tree");
        accounts.insert(id.as_str(), b"{not json".as_slice()).expect("write garbage");
        db.flush().expect("flush");
    },
);

#[tokio::test]
async fn debug_shows_no_record_contents() {
    use integration_core::Storage;
    let storage = SledStorage::temporary().expect("temporary sled database");
    storage
        .insert_account(&integration_storage_tests::sample_account("acct1"), &[])
        .await
        .expect("insert");
    assert_eq!(
        format!("{storage:?}"),
        "SledStorage { accounts: 1, pending_authorizations: 0, connect_sessions: 0, outbox: 0, webhooks: 0, deliveries: 0 }"
    );
}

#[test]
fn a_directory_this_process_holds_is_refused_at_once_saying_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let held = SledStorage::open(dir.path()).expect("open");
    let clone = held.clone();
    let error = SledStorage::open(dir.path()).expect_err("the directory is held here");
    assert_eq!(error.kind(), integration_core::ErrorKind::Storage);
    assert!(
        error.to_string().contains("this process has it open already"),
        "{error}"
    );
    // Held until the last clone goes.
    drop(held);
    assert!(SledStorage::open(dir.path()).is_err(), "a clone still holds it");
    drop(clone);
    SledStorage::open(dir.path()).expect("open again once every clone is dropped");
}

#[test]
fn a_directory_opens_again_right_after_its_handle_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    for round in 0..50 {
        let storage = SledStorage::open(dir.path()).unwrap_or_else(|error| panic!("open in round {round}: {error}"));
        let account = integration_storage_tests::sample_account(&format!("acct{round}"));
        runtime
            .block_on(integration_core::Storage::insert_account(&storage, &account, &[]))
            .expect("insert");
        drop(storage);
    }
}
