//! The gateway's end of the local socket.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use integrations::storage::Storage;
use integrations::webhooks::WebhookStorage;
use integrations::{Error, ErrorKind, Integrations, Result};
use serde::Serialize;

use super::GatewayStatus;
use super::protocol::{Backlog, Page, Record, Reply, StorageCall, SwapOutcome, WireError};

/// The largest call taken: records are small, but a call may carry many.
const MAX_CALL_BYTES: usize = 16 * 1024 * 1024;

/// What the socket serves: the gateway's status, and, when the gateway
/// holds the data directory's embedded store, that store.
#[derive(Debug, Clone)]
pub struct LocalService {
    status: GatewayStatus,
    integrations: Option<Integrations>,
}

impl LocalService {
    /// Answers `integrations status` with `status`.
    pub fn new(status: GatewayStatus) -> Self {
        Self {
            status,
            integrations: None,
        }
    }

    /// Also lends the store of `integrations` to the commands, which cannot
    /// open it while the gateway holds it; the accounts they change are
    /// dropped from the gateway's caches.
    pub fn with_store(mut self, integrations: Integrations) -> Self {
        self.status.store_shared = true;
        self.integrations = Some(integrations);
        self
    }

    /// The routes, to serve on the socket.
    pub fn router(self) -> Router {
        Router::new()
            .route("/local/status", get(status))
            .route("/local/storage", post(call))
            .layer(DefaultBodyLimit::max(MAX_CALL_BYTES))
            .with_state(Arc::new(self))
    }
}

async fn status(State(service): State<Arc<LocalService>>) -> Json<GatewayStatus> {
    Json(service.status.clone())
}

async fn call(State(service): State<Arc<LocalService>>, Json(call): Json<StorageCall>) -> Json<Reply> {
    let Some(integrations) = &service.integrations else {
        return Json(Reply::Error(WireError::from(&Error::new(
            ErrorKind::Config,
            "this gateway does not lend its store: it runs on a database the commands reach themselves",
        ))));
    };
    let changed = call.changed_account().cloned();
    let reply = match answer(integrations.store().storage().as_ref(), call).await {
        Ok(value) => {
            // A command changed an account behind the gateway's caches.
            if let Some(id) = changed {
                integrations.forget(&id);
            }
            Reply::Ok(value)
        }
        Err(error) => Reply::Error(WireError::from(&error)),
    };
    Json(reply)
}

async fn answer(storage: &dyn Storage, call: StorageCall) -> Result<serde_json::Value> {
    match call {
        StorageCall::InsertAccount { account, events } => value(storage.insert_account(&account, &events).await?),
        StorageCall::Account { id } => value(storage.account(&id).await?),
        StorageCall::Accounts => value(
            storage
                .accounts()
                .await?
                .iter()
                .map(Record::from_result)
                .collect::<Vec<_>>(),
        ),
        StorageCall::AccountsPage { query } => value(Page::from(&storage.accounts_page(&query.into()).await?)),
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
        StorageCall::ClaimEvents { now, until, limit } => value(storage.claim_events(now, until, limit).await?),
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
        StorageCall::Check => value(storage.check().await?),
        call => answer_webhooks(webhook_storage(storage)?, call).await,
    }
}

async fn answer_webhooks(storage: &dyn WebhookStorage, call: StorageCall) -> Result<serde_json::Value> {
    match call {
        StorageCall::InsertWebhook { webhook } => value(storage.insert_webhook(&webhook).await?),
        StorageCall::Webhooks => value(storage.webhooks().await?),
        StorageCall::UpdateWebhook { expected, webhook } => value(storage.update_webhook(&expected, &webhook).await?),
        StorageCall::DeleteWebhook { id } => value(storage.delete_webhook(&id).await?),
        StorageCall::InsertDeliveries { deliveries } => value(storage.insert_deliveries(&deliveries).await?),
        StorageCall::ClaimDeliveries { now, until, limit } => value(storage.claim_deliveries(now, until, limit).await?),
        StorageCall::UpdateDelivery { expected, delivery } => {
            value(storage.update_delivery(&expected, &delivery).await?)
        }
        StorageCall::Delivery { id } => value(storage.delivery(&id).await?),
        StorageCall::Deliveries { webhook, before, limit } => {
            value(storage.deliveries(&webhook, before.as_deref(), limit).await?)
        }
        StorageCall::DeleteDeliveriesBefore { before } => value(storage.delete_deliveries_before(before).await?),
        _ => Err(Error::new(ErrorKind::Storage, "not a webhook storage call")),
    }
}

fn webhook_storage(storage: &dyn Storage) -> Result<&dyn WebhookStorage> {
    storage
        .webhook_storage()
        .ok_or_else(|| Error::new(ErrorKind::Config, "this storage backend keeps no webhooks"))
}

fn value(value: impl Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|error| Error::new(ErrorKind::Storage, "cannot encode a stored record").with_source(error))
}
