//! What goes over the local socket: one call of the storage traits per
//! request, its answer or its error.

use integrations::events::{Event, EventId, OutboxBacklog};
use integrations::storage::{AccountPage, AccountQuery, ConnectSession, PendingAuthorization, StoredAccount, Swap};
use integrations::time::OffsetDateTime;
use integrations::webhooks::{StoredDelivery, StoredWebhook};
use integrations::{AccountId, AccountStatus, Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// A call of [`Storage`](integrations::storage::Storage) or
/// [`WebhookStorage`](integrations::webhooks::WebhookStorage), with its
/// arguments.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub(crate) enum StorageCall {
    InsertAccount {
        account: StoredAccount,
        events: Vec<Event>,
    },
    Account {
        id: AccountId,
    },
    Accounts,
    AccountsPage {
        query: Query,
    },
    CompareAndSwapAccount {
        expected_revision: u64,
        account: StoredAccount,
        events: Vec<Event>,
    },
    DeleteAccount {
        id: AccountId,
        events: Vec<Event>,
    },
    ClaimEvents {
        #[serde(with = "integrations::time::serde::rfc3339")]
        now: OffsetDateTime,
        #[serde(with = "integrations::time::serde::rfc3339")]
        until: OffsetDateTime,
        limit: usize,
    },
    CompleteEvent {
        id: EventId,
    },
    OutboxBacklog,
    InsertPendingAuthorization {
        pending: PendingAuthorization,
    },
    TakePendingAuthorization {
        state: String,
    },
    DeleteExpiredPendingAuthorizations {
        #[serde(with = "integrations::time::serde::rfc3339")]
        now: OffsetDateTime,
    },
    PendingAuthorizations,
    InsertConnectSession {
        session: ConnectSession,
    },
    ConnectSession {
        token_hash: String,
    },
    UpdateConnectSession {
        expected: ConnectSession,
        session: ConnectSession,
    },
    DeleteExpiredConnectSessions {
        #[serde(with = "integrations::time::serde::rfc3339")]
        now: OffsetDateTime,
    },
    Check,
    InsertWebhook {
        webhook: StoredWebhook,
    },
    Webhooks,
    UpdateWebhook {
        expected: StoredWebhook,
        webhook: StoredWebhook,
    },
    DeleteWebhook {
        id: String,
    },
    InsertDeliveries {
        deliveries: Vec<StoredDelivery>,
    },
    ClaimDeliveries {
        #[serde(with = "integrations::time::serde::rfc3339")]
        now: OffsetDateTime,
        #[serde(with = "integrations::time::serde::rfc3339")]
        until: OffsetDateTime,
        limit: usize,
    },
    UpdateDelivery {
        expected: StoredDelivery,
        delivery: StoredDelivery,
    },
    Delivery {
        id: String,
    },
    Deliveries {
        webhook: String,
        before: Option<String>,
        limit: usize,
    },
    DeleteDeliveriesBefore {
        #[serde(with = "integrations::time::serde::rfc3339")]
        before: OffsetDateTime,
    },
}

impl StorageCall {
    /// The account a call changes, when it changes one.
    pub(crate) fn changed_account(&self) -> Option<&AccountId> {
        match self {
            Self::InsertAccount { account, .. } | Self::CompareAndSwapAccount { account, .. } => Some(&account.id),
            Self::DeleteAccount { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// The answer to a call: its value, or the error it failed with.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
    Ok(serde_json::Value),
    Error(WireError),
}

/// An [`Error`] as words: its kind and its message (context included).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub(crate) kind: String,
    pub(crate) message: String,
}

impl From<&Error> for WireError {
    fn from(error: &Error) -> Self {
        Self {
            kind: kind_name(error.kind()).to_owned(),
            message: error.to_string(),
        }
    }
}

impl From<WireError> for Error {
    fn from(error: WireError) -> Self {
        Error::new(kind_of(&error.kind), error.message)
    }
}

/// Each error kind and its name on the socket.
const KINDS: [(ErrorKind, &str); 12] = [
    (ErrorKind::InvalidInput, "invalid_input"),
    (ErrorKind::NotFound, "not_found"),
    (ErrorKind::AlreadyExists, "already_exists"),
    (ErrorKind::Unreadable, "unreadable"),
    (ErrorKind::Key, "key"),
    (ErrorKind::Storage, "storage"),
    (ErrorKind::Refused, "refused"),
    (ErrorKind::Timeout, "timeout"),
    (ErrorKind::Transport, "transport"),
    (ErrorKind::Provider, "provider"),
    (ErrorKind::Config, "config"),
    (ErrorKind::Conflict, "conflict"),
];

fn kind_name(kind: ErrorKind) -> &'static str {
    KINDS
        .iter()
        .find(|(known, _)| *known == kind)
        .map_or("storage", |(_, name)| name)
}

fn kind_of(name: &str) -> ErrorKind {
    KINDS
        .iter()
        .find(|(_, known)| *known == name)
        .map_or(ErrorKind::Storage, |(kind, _)| *kind)
}

/// A record, or why it cannot be read (in its place in a list).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Record {
    Account(Box<StoredAccount>),
    Unreadable(WireError),
}

impl From<Result<StoredAccount>> for Record {
    fn from(record: Result<StoredAccount>) -> Self {
        match record {
            Ok(account) => Self::Account(Box::new(account)),
            Err(error) => Self::Unreadable(WireError::from(&error)),
        }
    }
}

impl Record {
    pub(crate) fn into_result(self) -> Result<StoredAccount> {
        match self {
            Self::Account(account) => Ok(*account),
            Self::Unreadable(error) => Err(error.into()),
        }
    }
}

/// An [`AccountQuery`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Query {
    after: Option<AccountId>,
    limit: usize,
    integration: Option<String>,
    status: Option<AccountStatus>,
    min_consecutive_failures: Option<u32>,
}

impl From<&AccountQuery> for Query {
    fn from(query: &AccountQuery) -> Self {
        Self {
            after: query.after.clone(),
            limit: query.limit,
            integration: query.integration.clone(),
            status: query.status,
            min_consecutive_failures: query.min_consecutive_failures,
        }
    }
}

impl From<Query> for AccountQuery {
    fn from(query: Query) -> Self {
        AccountQuery {
            after: query.after,
            limit: query.limit,
            integration: query.integration,
            status: query.status,
            min_consecutive_failures: query.min_consecutive_failures,
        }
    }
}

/// An [`AccountPage`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Page {
    pub(crate) accounts: Vec<Record>,
    pub(crate) next: Option<AccountId>,
}

impl From<AccountPage> for Page {
    fn from(page: AccountPage) -> Self {
        Self {
            accounts: page.accounts.into_iter().map(Record::from).collect(),
            next: page.next,
        }
    }
}

impl From<Page> for AccountPage {
    fn from(page: Page) -> Self {
        AccountPage {
            accounts: page.accounts.into_iter().map(Record::into_result).collect(),
            next: page.next,
        }
    }
}

/// A [`Swap`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SwapOutcome {
    Swapped(StoredAccount),
    Conflict(StoredAccount),
}

impl From<Swap> for SwapOutcome {
    fn from(swap: Swap) -> Self {
        match swap {
            Swap::Swapped(account) => Self::Swapped(account),
            Swap::Conflict(account) => Self::Conflict(account),
        }
    }
}

impl From<SwapOutcome> for Swap {
    fn from(swap: SwapOutcome) -> Self {
        match swap {
            SwapOutcome::Swapped(account) => Swap::Swapped(account),
            SwapOutcome::Conflict(account) => Swap::Conflict(account),
        }
    }
}

/// An [`OutboxBacklog`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Backlog {
    pub(crate) events: u64,
    #[serde(with = "integrations::time::serde::rfc3339::option")]
    pub(crate) oldest: Option<OffsetDateTime>,
}

impl From<OutboxBacklog> for Backlog {
    fn from(backlog: OutboxBacklog) -> Self {
        Self {
            events: backlog.events,
            oldest: backlog.oldest,
        }
    }
}

impl From<Backlog> for OutboxBacklog {
    fn from(backlog: Backlog) -> Self {
        OutboxBacklog {
            events: backlog.events,
            oldest: backlog.oldest,
        }
    }
}

/// What a revocation in the gateway did.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Disconnected {
    pub(crate) revoked: Vec<String>,
    pub(crate) failures: Vec<WireError>,
    pub(crate) endpoint: bool,
}

/// What a removal in the gateway did.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Removed {
    pub(crate) existed: bool,
    pub(crate) revoked: Vec<String>,
    pub(crate) revoke_failures: Vec<WireError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_crosses_the_socket_as_itself() {
        for (kind, _) in KINDS {
            let error = Error::new(kind, "no such account").with_context("account", "a1");
            let crossed = Error::from(WireError::from(&error));
            assert_eq!(crossed.kind(), kind);
            assert_eq!(crossed.to_string(), error.to_string());
        }
        assert_eq!(kind_of("something new"), ErrorKind::Storage);
    }
}
