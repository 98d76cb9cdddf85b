//! The gateway's end of the local socket.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use integrations::storage::{AccountQuery, Storage};
use integrations::{AccountId, Error, ErrorKind, Integrations, Result};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::GatewayStatus;
use super::protocol::{Backlog, Disconnected, Page, Record, Removed, Reply, StorageCall, SwapOutcome, WireError};

/// The largest call taken: records are small, but a call may carry many.
const MAX_CALL_BYTES: usize = 16 * 1024 * 1024;
/// The most records a claim or a list hands over in one call.
const MAX_RECORDS_PER_CALL: usize = 1000;
/// Calls served at once; more wait their turn.
const CONCURRENT_CALLS: usize = 8;
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the socket serves: the gateway's status, and, when the gateway
/// holds the data directory's embedded store, that store.
#[derive(Debug, Clone)]
pub struct LocalService {
    status: GatewayStatus,
    integrations: Option<Integrations>,
    calls: Arc<Semaphore>,
}

impl LocalService {
    /// Answers `integrations status` with `status`.
    pub fn new(status: GatewayStatus) -> Self {
        Self {
            status,
            integrations: None,
            calls: Arc::new(Semaphore::new(CONCURRENT_CALLS)),
        }
    }

    /// Also lends the store of `integrations` to the commands, which cannot
    /// open it while the gateway holds it; the accounts they change are
    /// dropped from the gateway's caches, and removals run in the gateway.
    pub fn with_store(mut self, integrations: Integrations) -> Self {
        let store = integrations.store();
        self.status.store_shared = true;
        self.status.store_keeps_webhooks = store.storage().webhook_storage().is_some();
        self.status.key_ids = key_ids(&integrations);
        self.integrations = Some(integrations);
        self
    }

    /// The routes, to serve on the socket.
    pub fn router(self) -> Router {
        Router::new()
            .route("/local/status", get(status))
            .route("/local/storage", post(call))
            .route("/local/remove-account", post(remove_account))
            .route("/local/disconnect-account", post(disconnect_account))
            .layer(DefaultBodyLimit::max(MAX_CALL_BYTES))
            .with_state(Arc::new(self))
    }

    fn integrations(&self) -> Result<&Integrations> {
        self.integrations.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "this gateway does not lend its store: it runs on a database the commands reach themselves",
            )
        })
    }

    /// Waits for the calls under way to end (at most `grace`), then refuses
    /// new ones: for a gateway that stops, so that a command's write is not
    /// cut between the store and its answer. Returns whether they all
    /// ended in time.
    pub async fn finish_calls(&self, grace: Duration) -> bool {
        let all = u32::try_from(CONCURRENT_CALLS).unwrap_or(u32::MAX);
        let ended = tokio::time::timeout(grace, self.calls.acquire_many(all)).await;
        self.calls.close();
        matches!(ended, Ok(Ok(_)))
    }

    /// Runs `work` in turn with the other calls, within the time limit.
    async fn in_turn<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let _turn = self
            .calls
            .acquire()
            .await
            .map_err(|_| Error::new(ErrorKind::Storage, "the gateway is stopping"))?;
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, "the gateway's store took too long"))?
    }
}

async fn status(State(service): State<Arc<LocalService>>) -> Json<GatewayStatus> {
    let mut status = service.status.clone();
    // As the keyring is now: a rotation reloads it while the gateway runs.
    if let Some(integrations) = &service.integrations {
        status.key_ids = key_ids(integrations);
    }
    Json(status)
}

fn key_ids(integrations: &Integrations) -> Vec<String> {
    integrations
        .store()
        .cipher()
        .key_ids()
        .iter()
        .map(ToString::to_string)
        .collect()
}

async fn call(State(service): State<Arc<LocalService>>, Json(call): Json<StorageCall>) -> Json<Reply> {
    reply(
        async {
            let integrations = service.integrations()?;
            let changed = call.changed_account().cloned();
            let outcome = service
                .in_turn(answer(integrations.store().storage().as_ref(), call))
                .await;
            // A command changed an account behind the gateway's caches; a
            // write that failed late (its flush) may have landed too.
            if let Some(id) = changed {
                integrations.forget(&id);
            }
            outcome
        }
        .await,
    )
}

/// Removes an account in the gateway: its removal guard keeps the
/// gateway's own refreshes off it while its tokens are revoked.
async fn remove_account(State(service): State<Arc<LocalService>>, Json(id): Json<AccountId>) -> Json<Reply> {
    reply(
        async {
            let integrations = service.integrations()?;
            let removal = service.in_turn(integrations.remove_account(&id)).await?;
            value(Removed {
                existed: removal.existed,
                revoked: removal.revoked.iter().map(|token| (*token).to_owned()).collect(),
                revoke_failures: removal.revoke_failures.iter().map(WireError::from).collect(),
            })
        }
        .await,
    )
}

/// Revokes an OAuth 2.0 account's tokens in the gateway, with the
/// gateway's copy of the account and its token cache.
async fn disconnect_account(State(service): State<Arc<LocalService>>, Json(id): Json<AccountId>) -> Json<Reply> {
    reply(
        async {
            let integrations = service.integrations()?;
            let revocation = service.in_turn(integrations.disconnect(&id)).await?;
            value(Disconnected {
                revoked: revocation.revoked.iter().map(|token| (*token).to_owned()).collect(),
                failures: revocation.failures.iter().map(WireError::from).collect(),
                endpoint: revocation.endpoint,
            })
        }
        .await,
    )
}

/// The answer to a call, as it crosses the socket.
fn reply(outcome: Result<serde_json::Value>) -> Json<Reply> {
    Json(match outcome {
        Ok(value) => Reply::Ok(value),
        Err(error) => Reply::Error(WireError::from(&error)),
    })
}

async fn answer(storage: &dyn Storage, call: StorageCall) -> Result<serde_json::Value> {
    let webhooks = || {
        storage
            .webhook_storage()
            .ok_or_else(|| Error::new(ErrorKind::Config, "this storage backend keeps no webhooks"))
    };
    let limited = |limit: usize| limit.min(MAX_RECORDS_PER_CALL);
    // Every call named: a new one does not compile until it is answered.
    match call {
        StorageCall::InsertAccount { account, events } => value(storage.insert_account(&account, &events).await?),
        StorageCall::Account { id } => value(storage.account(&id).await?),
        StorageCall::Accounts => value(
            storage
                .accounts()
                .await?
                .into_iter()
                .map(Record::from)
                .collect::<Vec<_>>(),
        ),
        StorageCall::AccountsPage { query } => {
            let mut query = AccountQuery::from(query);
            query.limit = limited(query.limit);
            value(Page::from(storage.accounts_page(&query).await?))
        }
        StorageCall::CompareAndSwapAccount {
            expected_revision,
            account,
            events,
        } => value(SwapOutcome::from(
            storage
                .compare_and_swap_account(expected_revision, &account, &events)
                .await?,
        )),
        StorageCall::DeleteAccount { id, events } => value(storage.delete_account(&id, &events).await?),
        StorageCall::ClaimEvents { now, until, limit } => {
            value(storage.claim_events(now, until, limited(limit)).await?)
        }
        StorageCall::CompleteEvent { id } => value(storage.complete_event(&id).await?),
        StorageCall::OutboxBacklog => value(Backlog::from(storage.outbox_backlog().await?)),
        StorageCall::InsertPendingAuthorization { pending } => {
            value(storage.insert_pending_authorization(&pending).await?)
        }
        StorageCall::TakePendingAuthorization { state } => value(storage.take_pending_authorization(&state).await?),
        StorageCall::DeleteExpiredPendingAuthorizations { now } => {
            value(storage.delete_expired_pending_authorizations(now).await?)
        }
        StorageCall::PendingAuthorizations => value(storage.pending_authorizations().await?),
        StorageCall::InsertConnectSession { session } => value(storage.insert_connect_session(&session).await?),
        StorageCall::ConnectSession { token_hash } => value(storage.connect_session(&token_hash).await?),
        StorageCall::UpdateConnectSession { expected, session } => {
            value(storage.update_connect_session(&expected, &session).await?)
        }
        StorageCall::DeleteExpiredConnectSessions { now } => value(storage.delete_expired_connect_sessions(now).await?),
        StorageCall::Check => value(storage.check().await?),
        StorageCall::InsertWebhook { webhook } => value(webhooks()?.insert_webhook(&webhook).await?),
        StorageCall::Webhooks => value(webhooks()?.webhooks().await?),
        StorageCall::UpdateWebhook { expected, webhook } => {
            value(webhooks()?.update_webhook(&expected, &webhook).await?)
        }
        StorageCall::DeleteWebhook { id } => value(webhooks()?.delete_webhook(&id).await?),
        StorageCall::InsertDeliveries { deliveries } => value(webhooks()?.insert_deliveries(&deliveries).await?),
        StorageCall::ClaimDeliveries { now, until, limit } => {
            value(webhooks()?.claim_deliveries(now, until, limited(limit)).await?)
        }
        StorageCall::UpdateDelivery { expected, delivery } => {
            value(webhooks()?.update_delivery(&expected, &delivery).await?)
        }
        StorageCall::Delivery { id } => value(webhooks()?.delivery(&id).await?),
        StorageCall::Deliveries { webhook, before, limit } => value(
            webhooks()?
                .deliveries(&webhook, before.as_deref(), limited(limit))
                .await?,
        ),
        StorageCall::DeleteDeliveriesBefore { before } => value(webhooks()?.delete_deliveries_before(before).await?),
    }
}

fn value(value: impl Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|error| Error::new(ErrorKind::Storage, "cannot encode a stored record").with_source(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopping_gateway_lets_the_calls_under_way_end_then_refuses_new_ones() {
        let service = LocalService::new(GatewayStatus::of_this_process(String::new(), String::new()));
        let under_way = Arc::clone(&service.calls).acquire_owned().await.expect("a call");
        let finishing = tokio::spawn({
            let service = service.clone();
            async move { service.finish_calls(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!finishing.is_finished(), "it waits for the call under way");
        drop(under_way);
        assert!(finishing.await.expect("finished"), "all calls ended in time");
        let refused = service
            .in_turn(async { Ok(()) })
            .await
            .expect_err("refused once stopping");
        assert!(refused.to_string().contains("stopping"), "{refused}");

        let busy = LocalService::new(GatewayStatus::of_this_process(String::new(), String::new()));
        let _stuck = Arc::clone(&busy.calls).acquire_owned().await.expect("a call");
        assert!(
            !busy.finish_calls(Duration::from_millis(20)).await,
            "a call that does not end is left"
        );
    }
}
