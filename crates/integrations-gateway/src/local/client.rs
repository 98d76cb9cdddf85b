//! The commands' end of the local socket: a running gateway's store as a
//! [`Storage`] of their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integrations::events::{Event, EventId, OutboxBacklog};
use integrations::storage::{AccountPage, AccountQuery, PendingAuthorization, Storage, StoredAccount, Swap};
use integrations::time::OffsetDateTime;
use integrations::webhooks::{StoredDelivery, StoredWebhook, WebhookStorage};
use integrations::{AccountId, Error, ErrorKind, Result, async_trait};
use serde::de::DeserializeOwned;

use super::GatewayStatus;
use super::protocol::{Backlog, Page, Record, Reply, StorageCall, SwapOutcome};

/// How long one call may take: a store call, not a provider's.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A running gateway, reached through its socket in the data directory.
#[derive(Debug, Clone)]
pub struct LocalGateway {
    http: reqwest::Client,
    socket: PathBuf,
}

impl LocalGateway {
    /// The gateway listening on `socket`, or `None` when no gateway answers
    /// there (none runs, or one stopped without removing it).
    pub async fn find(socket: &Path) -> Option<(Self, GatewayStatus)> {
        if !socket.exists() {
            return None;
        }
        let gateway = Self {
            http: reqwest::Client::builder()
                .unix_socket(socket)
                // A connection per call: a pooled one belongs to the
                // runtime that made it, and a store is shared across
                // runtimes; a local connection costs microseconds.
                .pool_max_idle_per_host(0)
                .timeout(CALL_TIMEOUT)
                .build()
                .ok()?,
            socket: socket.to_owned(),
        };
        let status = gateway.status().await.ok()?;
        Some((gateway, status))
    }

    /// What the gateway says of itself.
    pub async fn status(&self) -> Result<GatewayStatus> {
        let response = self
            .http
            .get("http://gateway/local/status")
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        response.json().await.map_err(|error| self.unreachable(&error))
    }

    /// The gateway's store, for a command to use as its own.
    pub fn storage(&self) -> SocketStorage {
        SocketStorage { gateway: self.clone() }
    }

    fn unreachable(&self, error: &reqwest::Error) -> Error {
        Error::new(
            ErrorKind::Storage,
            format!("cannot reach the gateway through {}: {error}", self.socket.display()),
        )
    }

    async fn call<T: DeserializeOwned>(&self, call: &StorageCall) -> Result<T> {
        let response = self
            .http
            .post("http://gateway/local/storage")
            .json(call)
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        let reply: Reply = response.json().await.map_err(|error| self.unreachable(&error))?;
        match reply {
            Reply::Ok(value) => serde_json::from_value(value).map_err(|error| {
                Error::new(ErrorKind::Storage, "the gateway's answer is not what was asked for").with_source(error)
            }),
            Reply::Error(error) => Err(error.into()),
        }
    }
}

/// A running gateway's store, through its socket: every call is made by
/// the gateway on the store it holds, and the accounts a call changes are
/// dropped from the gateway's caches.
#[derive(Debug, Clone)]
pub struct SocketStorage {
    gateway: LocalGateway,
}

#[async_trait]
impl Storage for SocketStorage {
    async fn insert_account(&self, account: &StoredAccount, events: &[Event]) -> Result<()> {
        self.gateway
            .call(&StorageCall::InsertAccount {
                account: account.clone(),
                events: events.to_vec(),
            })
            .await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<StoredAccount>> {
        self.gateway.call(&StorageCall::Account { id: id.clone() }).await
    }

    async fn accounts(&self) -> Result<Vec<Result<StoredAccount>>> {
        let records: Vec<Record> = self.gateway.call(&StorageCall::Accounts).await?;
        Ok(records.into_iter().map(Record::into_result).collect())
    }

    async fn accounts_page(&self, query: &AccountQuery) -> Result<AccountPage> {
        let page: Page = self
            .gateway
            .call(&StorageCall::AccountsPage { query: query.into() })
            .await?;
        Ok(page.into())
    }

    async fn compare_and_swap_account(
        &self,
        expected_revision: u64,
        account: &StoredAccount,
        events: &[Event],
    ) -> Result<Swap> {
        let swap: SwapOutcome = self
            .gateway
            .call(&StorageCall::CompareAndSwapAccount {
                expected_revision,
                account: account.clone(),
                events: events.to_vec(),
            })
            .await?;
        Ok(swap.into())
    }

    async fn delete_account(&self, id: &AccountId, events: &[Event]) -> Result<bool> {
        self.gateway
            .call(&StorageCall::DeleteAccount {
                id: id.clone(),
                events: events.to_vec(),
            })
            .await
    }

    async fn claim_events(&self, now: OffsetDateTime, until: OffsetDateTime, limit: usize) -> Result<Vec<Event>> {
        self.gateway.call(&StorageCall::ClaimEvents { now, until, limit }).await
    }

    async fn complete_event(&self, id: &EventId) -> Result<bool> {
        self.gateway.call(&StorageCall::CompleteEvent { id: id.clone() }).await
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog> {
        let backlog: Backlog = self.gateway.call(&StorageCall::OutboxBacklog).await?;
        Ok(backlog.into())
    }

    async fn insert_pending_authorization(&self, pending: &PendingAuthorization) -> Result<()> {
        self.gateway
            .call(&StorageCall::InsertPendingAuthorization {
                pending: pending.clone(),
            })
            .await
    }

    async fn take_pending_authorization(&self, state: &str) -> Result<Option<PendingAuthorization>> {
        self.gateway
            .call(&StorageCall::TakePendingAuthorization {
                state: state.to_owned(),
            })
            .await
    }

    async fn delete_expired_pending_authorizations(&self, now: OffsetDateTime) -> Result<usize> {
        self.gateway
            .call(&StorageCall::DeleteExpiredPendingAuthorizations { now })
            .await
    }

    async fn pending_authorizations(&self) -> Result<Vec<PendingAuthorization>> {
        self.gateway.call(&StorageCall::PendingAuthorizations).await
    }

    async fn check(&self) -> Result<()> {
        self.gateway.call(&StorageCall::Check).await
    }

    fn webhook_storage(&self) -> Option<&dyn WebhookStorage> {
        Some(self)
    }
}

#[async_trait]
impl WebhookStorage for SocketStorage {
    async fn insert_webhook(&self, webhook: &StoredWebhook) -> Result<()> {
        self.gateway
            .call(&StorageCall::InsertWebhook {
                webhook: webhook.clone(),
            })
            .await
    }

    async fn webhooks(&self) -> Result<Vec<StoredWebhook>> {
        self.gateway.call(&StorageCall::Webhooks).await
    }

    async fn update_webhook(&self, expected: &StoredWebhook, webhook: &StoredWebhook) -> Result<bool> {
        self.gateway
            .call(&StorageCall::UpdateWebhook {
                expected: expected.clone(),
                webhook: webhook.clone(),
            })
            .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        self.gateway
            .call(&StorageCall::DeleteWebhook { id: id.to_owned() })
            .await
    }

    async fn insert_deliveries(&self, deliveries: &[StoredDelivery]) -> Result<()> {
        self.gateway
            .call(&StorageCall::InsertDeliveries {
                deliveries: deliveries.to_vec(),
            })
            .await
    }

    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<StoredDelivery>> {
        self.gateway
            .call(&StorageCall::ClaimDeliveries { now, until, limit })
            .await
    }

    async fn update_delivery(&self, expected: &StoredDelivery, delivery: &StoredDelivery) -> Result<bool> {
        self.gateway
            .call(&StorageCall::UpdateDelivery {
                expected: expected.clone(),
                delivery: delivery.clone(),
            })
            .await
    }

    async fn delivery(&self, id: &str) -> Result<Option<StoredDelivery>> {
        self.gateway.call(&StorageCall::Delivery { id: id.to_owned() }).await
    }

    async fn deliveries(&self, webhook: &str, before: Option<&str>, limit: usize) -> Result<Vec<StoredDelivery>> {
        self.gateway
            .call(&StorageCall::Deliveries {
                webhook: webhook.to_owned(),
                before: before.map(str::to_owned),
                limit,
            })
            .await
    }

    async fn delete_deliveries_before(&self, before: OffsetDateTime) -> Result<usize> {
        self.gateway.call(&StorageCall::DeleteDeliveriesBefore { before }).await
    }
}
