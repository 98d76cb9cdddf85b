//! The commands' end of the local socket: a running gateway's store as a
//! [`Storage`] of their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integrations::events::{Event, EventId, OutboxBacklog};
use integrations::storage::{
    AccountPage, AccountQuery, ConnectSession, PendingAuthorization, Storage, StoredAccount, Swap,
};
use integrations::time::OffsetDateTime;
use integrations::webhooks::{StoredDelivery, StoredWebhook, WebhookStorage};
use integrations::{AccountId, Error, ErrorKind, Result, async_trait};
use serde::de::DeserializeOwned;

use super::protocol::{Backlog, Disconnected, Page, Record, Removed, Reply, StorageCall, SwapOutcome};
use super::{GatewayStatus, PROTOCOL};

/// How long one call may take: a store call, not a provider's.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a gateway has to say it is there.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A running gateway, reached through its socket in the data directory.
#[derive(Debug, Clone)]
pub struct LocalGateway {
    http: reqwest::Client,
    socket: PathBuf,
    keeps_webhooks: bool,
}

impl LocalGateway {
    /// The gateway listening on `socket`: `None` when none runs there (no
    /// socket, or one left by a gateway that stopped), an error when one
    /// is there but does not answer, or speaks another protocol.
    pub async fn find(socket: &Path) -> Result<Option<(Self, GatewayStatus)>> {
        if std::fs::symlink_metadata(socket).is_err() {
            return Ok(None);
        }
        let http = reqwest::Client::builder()
            .unix_socket(socket)
            // A connection per call: a pooled one belongs to the runtime
            // that made it, and a store is shared across runtimes; a local
            // connection costs microseconds.
            .pool_max_idle_per_host(0)
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|error| {
                Error::new(ErrorKind::Config, "cannot make a client for the gateway's socket").with_source(error)
            })?;
        let mut gateway = Self {
            http,
            socket: socket.to_owned(),
            keeps_webhooks: false,
        };
        let status = match gateway.status().await {
            Ok(status) => status,
            Err(error) if error.kind() == ErrorKind::Timeout => return Err(error),
            // Nobody listens: the socket of a gateway that stopped.
            Err(_) => return Ok(None),
        };
        if status.protocol != PROTOCOL {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the gateway running on this data directory (pid {}, version {}) speaks another protocol than \
                     this command (version {}): restart it with this version",
                    status.pid,
                    status.version,
                    env!("CARGO_PKG_VERSION")
                ),
            ));
        }
        gateway.keeps_webhooks = status.store_keeps_webhooks;
        Ok(Some((gateway, status)))
    }

    /// What the gateway says of itself.
    pub async fn status(&self) -> Result<GatewayStatus> {
        let response = self
            .http
            .get("http://gateway/local/status")
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        self.read(response).await
    }

    /// The gateway's store, for a command to use as its own.
    pub fn storage(&self) -> SocketStorage {
        SocketStorage { gateway: self.clone() }
    }

    /// Removes account `id` in the gateway, revoking its OAuth 2.0 tokens
    /// first, while the gateway's own refreshes keep off it: whether it
    /// existed, the tokens revoked, and the revocations that failed.
    pub async fn remove_account(&self, id: &AccountId) -> Result<(bool, Vec<String>, Vec<Error>)> {
        let removed: Removed = self.post("http://gateway/local/remove-account", id).await?;
        Ok((
            removed.existed,
            removed.revoked,
            removed.revoke_failures.into_iter().map(Error::from).collect(),
        ))
    }

    /// Revokes account `id`'s OAuth 2.0 tokens in the gateway and forgets
    /// them: the tokens revoked, the provider's failures, and whether the
    /// integration has a revoke endpoint.
    pub async fn disconnect_account(&self, id: &AccountId) -> Result<(Vec<String>, Vec<Error>, bool)> {
        let disconnected: Disconnected = self.post("http://gateway/local/disconnect-account", id).await?;
        Ok((
            disconnected.revoked,
            disconnected.failures.into_iter().map(Error::from).collect(),
            disconnected.endpoint,
        ))
    }

    fn unreachable(&self, error: &reqwest::Error) -> Error {
        let kind = if error.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Storage
        };
        Error::new(
            kind,
            format!(
                "cannot reach the gateway through {}: {error} (is it stuck? stop it, or remove the socket if no gateway runs)",
                self.socket.display()
            ),
        )
    }

    async fn post<T: DeserializeOwned>(&self, url: &str, body: &impl serde::Serialize) -> Result<T> {
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        match self.read::<Reply>(response).await? {
            Reply::Ok(value) => serde_json::from_value(value).map_err(|error| {
                Error::new(ErrorKind::Storage, "the gateway's answer is not what was asked for").with_source(error)
            }),
            Reply::Error(error) => Err(error.into()),
        }
    }

    async fn call<T: DeserializeOwned>(&self, call: &StorageCall) -> Result<T> {
        self.post("http://gateway/local/storage", call).await
    }

    /// The body of a successful answer, or the gateway's refusal in words.
    async fn read<T: DeserializeOwned>(&self, response: reqwest::Response) -> Result<T> {
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(Error::new(
                ErrorKind::Storage,
                format!("the gateway refused the call ({status}): {body}"),
            ));
        }
        let bytes = response.bytes().await.map_err(|error| self.unreachable(&error))?;
        serde_json::from_slice(&bytes)
            .map_err(|error| Error::new(ErrorKind::Storage, "the gateway's answer cannot be read").with_source(error))
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

    async fn insert_connect_session(&self, session: &ConnectSession) -> Result<()> {
        self.gateway
            .call(&StorageCall::InsertConnectSession {
                session: session.clone(),
            })
            .await
    }

    async fn connect_session(&self, token_hash: &str) -> Result<Option<ConnectSession>> {
        self.gateway
            .call(&StorageCall::ConnectSession {
                token_hash: token_hash.to_owned(),
            })
            .await
    }

    async fn update_connect_session(&self, expected: &ConnectSession, session: &ConnectSession) -> Result<bool> {
        self.gateway
            .call(&StorageCall::UpdateConnectSession {
                expected: expected.clone(),
                session: session.clone(),
            })
            .await
    }

    async fn delete_expired_connect_sessions(&self, now: OffsetDateTime) -> Result<usize> {
        self.gateway
            .call(&StorageCall::DeleteExpiredConnectSessions { now })
            .await
    }

    async fn check(&self) -> Result<()> {
        self.gateway.call(&StorageCall::Check).await
    }

    fn webhook_storage(&self) -> Option<&dyn WebhookStorage> {
        self.gateway.keeps_webhooks.then_some(self as &dyn WebhookStorage)
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
