//! The sled backend keeps the `Storage` contract.

use std::sync::Arc;

use integration_storage_sled::SledStorage;

integration_storage_tests::conformance_tests!(|| async {
    Arc::new(SledStorage::temporary().expect("temporary sled database"))
});

#[tokio::test]
async fn debug_shows_no_record_contents() {
    use integration_core::Storage;
    let storage = SledStorage::temporary().expect("temporary sled database");
    storage
        .insert_account(&integration_storage_tests::sample_account("acct1"))
        .await
        .expect("insert");
    assert_eq!(
        format!("{storage:?}"),
        "SledStorage { accounts: 1, pending_authorizations: 0 }"
    );
}
