//! The example backend keeps the `Storage` contract, the opt-in persistence
//! behaviors included.

use std::path::Path;
use std::sync::Arc;

use example_storage_backend::FileStorage;

integration_storage_tests::conformance_tests!(|| async {
    Arc::new(FileStorage::temporary().expect("temporary store"))
});

integration_storage_tests::persistence_tests!(
    open: |dir: &Path| {
        let dir = dir.to_owned();
        async move { Arc::new(FileStorage::open(dir).expect("open")) }
    },
    spoil: |dir: &Path, id: &integrations::AccountId| {
        std::fs::write(dir.join("accounts").join(format!("{id}.json")), b"{not json").expect("write garbage");
    },
);
