#![doc = include_str!("../README.md")]

pub mod account;
mod account_store;
pub mod crypto;
pub mod definition;
pub mod destination;
mod error;
pub mod method;
pub mod storage;

pub use account::{AccountId, AccountStatus, ConnectedAccount, NewAccount, Secrets};
pub use account_store::{AccountList, AccountStore, Update};
pub use crypto::{Cipher, EncryptionKey};
pub use definition::{Definitions, Integration};
pub use error::{Error, ErrorKind, Result};
pub use storage::{
    AccountPage, AccountQuery, ChangeListener, KeyStorage, PendingAuthorization, Storage, StoreChange, StoredAccount,
    StoredApiKey, Swap,
};

/// Re-exported so that users and backends name the same types.
pub use async_trait::async_trait;
pub use integration_template as template;
pub use secrecy;
pub use time;
