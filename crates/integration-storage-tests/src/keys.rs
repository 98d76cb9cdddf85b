//! The behaviors of the [`KeyStorage`] contract, generated as tests by
//! [`key_storage_tests!`](crate::key_storage_tests).

use std::sync::Arc;
use std::time::Duration;

use integration_core::ErrorKind;
use integration_core::storage::{KeyStorage, StoredApiKey};
use integration_core::time::OffsetDateTime;

/// Generates one `#[test]` per behavior of the `KeyStorage` contract.
///
/// `$factory` is a closure returning a future of a fresh, empty key store
/// (`Arc<impl KeyStorage>`), or of `Option<…>` for a store whose server may
/// be missing ([`MaybeStorage`](crate::MaybeStorage)).
#[macro_export]
macro_rules! key_storage_tests {
    ($factory:expr) => {
        $crate::key_storage_tests!(@tests $factory;
            keys_are_listed_oldest_first,
            duplicate_key_id_is_refused_and_keeps_the_original,
            deleted_key_is_no_longer_listed,
            concurrent_key_inserts_all_land,
        );
    };
    (@tests $factory:expr; $($name:ident,)*) => {
        /// The `KeyStorage` contract.
        mod key_storage {
            #[allow(unused_imports, reason = "the factory may name the backend's imports")]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::__runtime().block_on(async {
                        let factory = $factory;
                        let Some(storage) = $crate::MaybeStorage::into_storage(factory().await) else {
                            return;
                        };
                        $crate::keys::$name(storage).await;
                    });
                }
            )*
        }
    };
}

/// A sample key created `seconds` after a fixed time.
pub fn sample_key(id: &str, seconds: u64) -> StoredApiKey {
    let created_at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        + Duration::from_secs(seconds);
    StoredApiKey {
        id: id.to_owned(),
        name: format!("key {id}"),
        created_at,
        hash: format!("{:0>64}", id),
    }
}

/// Behavior: `keys` returns every key, oldest first, as stored.
pub async fn keys_are_listed_oldest_first(storage: Arc<impl KeyStorage + ?Sized>) {
    assert!(
        storage.keys().await.expect("keys").is_empty(),
        "a fresh store has no key"
    );
    for (id, seconds) in [("c3", 30), ("a1", 10), ("b2", 20), ("a0", 20)] {
        storage.insert_key(&sample_key(id, seconds)).await.expect("insert");
    }
    let keys = storage.keys().await.expect("keys");
    let ids: Vec<&str> = keys.iter().map(|key| key.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a0", "b2", "c3"], "by creation time, then id");
    assert_eq!(keys[0], sample_key("a1", 10), "read back as stored");
}

/// Behavior: inserting an id that exists fails with `AlreadyExists` and
/// keeps the stored key.
pub async fn duplicate_key_id_is_refused_and_keeps_the_original(storage: Arc<impl KeyStorage + ?Sized>) {
    storage.insert_key(&sample_key("k1", 0)).await.expect("insert");
    let mut other = sample_key("k1", 5);
    other.name = "impostor".to_owned();
    let error = storage.insert_key(&other).await.expect_err("duplicate id");
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}");
    assert_eq!(storage.keys().await.expect("keys"), [sample_key("k1", 0)]);
}

/// Behavior: `delete_key` reports whether the key existed, and a deleted
/// key is never listed again.
pub async fn deleted_key_is_no_longer_listed(storage: Arc<impl KeyStorage + ?Sized>) {
    storage.insert_key(&sample_key("k1", 0)).await.expect("insert");
    storage.insert_key(&sample_key("k2", 1)).await.expect("insert");
    assert!(storage.delete_key("k1").await.expect("delete"), "it existed");
    assert!(!storage.delete_key("k1").await.expect("delete again"), "gone");
    assert!(!storage.delete_key("never").await.expect("delete missing"));
    assert_eq!(storage.keys().await.expect("keys"), [sample_key("k2", 1)]);
}

/// Behavior: concurrent inserts all land.
pub async fn concurrent_key_inserts_all_land(storage: Arc<impl KeyStorage + ?Sized>) {
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let storage = Arc::clone(&storage);
            tokio::spawn(async move { storage.insert_key(&sample_key(&format!("k{n:02}"), n)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("insert");
    }
    assert_eq!(storage.keys().await.expect("keys").len(), 32, "no insert may be lost");
}
