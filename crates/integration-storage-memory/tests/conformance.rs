//! The memory backend keeps the `Storage` contract.

use std::sync::Arc;

use integration_storage_memory::MemoryStorage;

integration_storage_tests::conformance_tests!(|| async { Arc::new(MemoryStorage::new()) });
