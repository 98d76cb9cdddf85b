//! The data directory's key file keeps the `KeyStorage` contract.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use integrations_gateway::keys::KeyFile;

/// A key file of its own, in a directory under the target's.
fn fresh() -> Arc<KeyFile> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "key-file-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory for the key file");
    Arc::new(KeyFile::in_data_dir(&dir))
}

integration_storage_tests::key_storage_tests!(|| async { fresh() });
