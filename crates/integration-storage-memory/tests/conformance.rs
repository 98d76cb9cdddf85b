//! The memory backend keeps the `Storage` contract.

use std::sync::Arc;

use integration_storage_memory::MemoryStorage;

integration_storage_tests::conformance_tests!(|| async { Arc::new(MemoryStorage::new()) });

#[tokio::test]
async fn debug_shows_no_record_contents() {
    use integration_core::Storage;
    let storage = MemoryStorage::new();
    storage
        .insert_account(&integration_storage_tests::sample_account("acct1"), &[])
        .await
        .expect("insert");
    assert_eq!(
        format!("{storage:?}"),
        "MemoryStorage { accounts: 1, pending_authorizations: 0, connect_sessions: 0, api_keys: 0, outbox: 0, webhooks: 0, deliveries: 0 }"
    );
}
integration_storage_tests::key_storage_tests!(|| async { Arc::new(MemoryStorage::new()) });
integration_storage_tests::webhook_storage_tests!(|| async { Arc::new(MemoryStorage::new()) });
