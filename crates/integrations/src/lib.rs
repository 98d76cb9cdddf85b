#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use integration_core::*;

#[cfg(feature = "http")]
mod runtime;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use runtime::{Integrations, Removal};

/// Registers the auth methods of this build, one per enabled feature, with
/// [`method::register`]; the methods left out are recorded with the
/// feature that brings them, for the error a definition using one gets.
/// Idempotent. [`Integrations::new`] calls it; call it yourself before
/// loading definitions without one.
///
/// ```
/// integrations::register_methods();
/// let definitions = integrations::Definitions::from_str(
///     r#"
///     [[integration]]
///     key = "erp"
///     name = "ERP"
///     base_url = "https://erp.example/api"
///     auth = { type = "basic" }
///     "#,
///     integrations::definition::Format::Toml,
/// )?;
/// assert_eq!(definitions.integration("erp")?.auth_type(), "basic");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn register_methods() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        macro_rules! method {
            ($feature:literal, $name:literal, $table:ty) => {
                #[cfg(feature = $feature)]
                method::register::<$table>();
                #[cfg(not(feature = $feature))]
                method::register_unavailable(
                    $name,
                    concat!("enable the `", $feature, "` feature of the `integrations` crate"),
                );
            };
        }
        method!("auth-oauth2", "oauth2", integration_auth_oauth2::OAuth2);
        method!("auth-api-token", "api_token", integration_auth_api_token::ApiToken);
        method!("auth-basic", "basic", integration_auth_basic::Basic);
        method!(
            "auth-custom-token",
            "custom_token",
            integration_auth_custom_token::CustomToken
        );
        method!("sftp", "sftp", integration_sftp::Sftp);
    });
}

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

/// Storage backends, one feature each. The trait itself is [`Storage`].
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
