#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use integration_core::*;

pub use integration_runtime::events::{EventHandler, EventRelay, RelayHandle, RelaySettings};
#[cfg(feature = "auth-oauth2")]
pub use integration_runtime::scheduler::{SchedulerHandle, SchedulerPass, SchedulerSettings};
pub use integration_runtime::{Integrations, Removal, register_methods};

/// Authenticated HTTP requests through accounts.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http {
    pub use integration_http::*;
}

/// SFTP through accounts of `sftp` integrations.
#[cfg(feature = "sftp")]
#[cfg_attr(docsrs, doc(cfg(feature = "sftp")))]
pub mod sftp {
    pub use integration_sftp::*;
}

/// The auth methods, one feature each.
pub mod auth {
    /// API Token.
    #[cfg(feature = "auth-api-token")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth-api-token")))]
    pub mod api_token {
        pub use integration_auth_api_token::*;
    }

    /// HTTP Basic Auth.
    #[cfg(feature = "auth-basic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth-basic")))]
    pub mod basic {
        pub use integration_auth_basic::*;
    }

    /// JWT: a signed JWT as the token, or exchanged for one.
    #[cfg(feature = "auth-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth-jwt")))]
    pub mod jwt {
        pub use integration_auth_jwt::*;
    }

    /// OAuth 2.0.
    #[cfg(feature = "auth-oauth2")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth-oauth2")))]
    pub mod oauth2 {
        pub use integration_auth_oauth2::*;
    }

    /// Custom Token.
    #[cfg(feature = "auth-custom-token")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth-custom-token")))]
    pub mod custom_token {
        pub use integration_auth_custom_token::*;
    }
}

/// The built-in catalog of ready definitions for popular APIs.
#[cfg(feature = "catalog")]
#[cfg_attr(docsrs, doc(cfg(feature = "catalog")))]
pub mod catalog {
    pub use integration_catalog::*;
}

/// Storage backends, one feature each. The trait itself is [`Storage`].
pub mod storage {
    pub use integration_core::storage::*;

    /// The in-memory backend.
    #[cfg(feature = "storage-memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "storage-memory")))]
    pub mod memory {
        pub use integration_storage_memory::*;
    }

    /// The PostgreSQL backend.
    #[cfg(feature = "storage-postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "storage-postgres")))]
    pub mod postgres {
        pub use integration_storage_postgres::*;
    }

    /// The embedded sled backend.
    #[cfg(feature = "storage-sled")]
    #[cfg_attr(docsrs, doc(cfg(feature = "storage-sled")))]
    pub mod sled {
        pub use integration_storage_sled::*;
    }
}
