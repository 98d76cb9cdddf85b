//! Helpers shared by the sled backend's tests.

use std::path::Path;
use std::time::{Duration, Instant};

/// sled without the backend; waits, as `SledStorage::open` does, for the
/// previous handle's background threads to release the lock.
pub(crate) fn open_raw(path: &Path) -> sled::Db {
    let deadline = Instant::now() + integration_storage_sled::LOCK_WAIT;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(error) if Instant::now() < deadline && error.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("raw sled: {error}"),
        }
    }
}
