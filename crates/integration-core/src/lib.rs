#![doc = include_str!("../README.md")]

pub mod account;
pub mod crypto;
pub mod definition;
pub mod destination;
mod error;
pub mod storage;
mod store;

pub use account::{AccountId, AccountStatus, ConnectedAccount, NewAccount, Secrets};
pub use crypto::{Cipher, EncryptionKey};
pub use definition::{Definitions, Integration};
pub use error::{Error, ErrorKind, Result};
pub use storage::{PendingAuthorization, Storage, StoredAccount, Swap};
pub use store::{AccountList, AccountStore, Update};

/// Re-exported so that users and backends name the same types.
pub use async_trait::async_trait;
pub use integration_template as template;
pub use secrecy;
pub use time;
