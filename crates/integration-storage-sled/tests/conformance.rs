//! The sled backend keeps the `Storage` contract.

use std::sync::Arc;

use integration_storage_sled::SledStorage;

integration_storage_tests::conformance_tests!(|| async {
    Arc::new(SledStorage::temporary().expect("temporary sled database"))
});
