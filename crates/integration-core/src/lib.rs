#![doc = include_str!("../README.md")]

pub mod account;
mod account_store;
pub mod crypto;
pub mod definition;
pub mod destination;
mod error;
pub mod events;
pub mod method;
pub mod storage;
pub mod webhooks;

pub use account::{
    AccountError, AccountHealth, AccountId, AccountStatus, ConnectedAccount, EndUser, NewAccount, Secrets,
};
pub use account_store::{AccountList, AccountStore, Update};
pub use crypto::{Cipher, EncryptionKey};
pub use definition::{Definitions, Integration};
pub use error::{Error, ErrorKind, Result};
pub use events::{Event, EventId, EventType};
pub use storage::{
    AccountPage, AccountQuery, ChangeListener, ConnectSession, KeyStorage, PendingAuthorization, Storage, StoreChange,
    StoredAccount, StoredApiKey, Swap,
};
pub use webhooks::WebhookStorage;

/// Re-exported so that users and backends name the same types.
pub use async_trait::async_trait;
pub use integration_template as template;
pub use secrecy;
pub use time;
