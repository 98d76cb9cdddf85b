#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use integration_core::*;

/// Storage backends, one feature each. The trait itself is
/// [`Storage`].
pub mod storage {
    pub use integration_core::storage::*;

    /// The in-memory backend.
    #[cfg(feature = "storage-memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "storage-memory")))]
    pub mod memory {
        pub use integration_storage_memory::*;
    }

    /// The embedded sled backend.
    #[cfg(feature = "storage-sled")]
    #[cfg_attr(docsrs, doc(cfg(feature = "storage-sled")))]
    pub mod sled {
        pub use integration_storage_sled::*;
    }
}
