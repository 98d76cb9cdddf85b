//! Hearing other gateways' changes: `LISTEN integration_accounts`, with
//! [`StoreChange::Unknown`] whenever the channel may have missed some.

use std::time::Duration;

use integration_core::AccountId;
use integration_core::storage::{ChangeListener, StoreChange};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// The channel the accounts' trigger notifies.
const CHANNEL: &str = "integration_accounts";

/// How often caches are told to drop everything while the channel is
/// down: well within the second a change may take to be seen.
const WHILE_DOWN: Duration = Duration::from_millis(250);

/// Passes the changes of this store's schema on to `listener`, for as long
/// as the store's runtime runs.
pub(crate) async fn listen(pool: PgPool, listener: ChangeListener) {
    let mut channel: Option<(PgListener, String)> = None;
    loop {
        let Some((connection, schema)) = &mut channel else {
            match subscribe(&pool).await {
                Ok(subscribed) => {
                    // Whatever changed before this connection was heard by
                    // no one.
                    listener(&StoreChange::Unknown);
                    channel = Some(subscribed);
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot listen for account changes");
                    listener(&StoreChange::Unknown);
                    tokio::time::sleep(WHILE_DOWN).await;
                }
            }
            continue;
        };
        match connection.try_recv().await {
            Ok(Some(notification)) => {
                if let Some(id) = account_of(notification.payload(), schema) {
                    listener(&StoreChange::Account(id));
                }
            }
            // The connection dropped: what was sent meanwhile is lost.
            Ok(None) | Err(_) => {
                listener(&StoreChange::Unknown);
                channel = None;
            }
        }
    }
}

async fn subscribe(pool: &PgPool) -> sqlx::Result<(PgListener, String)> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(pool)
        .await?;
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok((listener, schema))
}

/// The account a notification names, if it is of `schema`.
fn account_of(payload: &str, schema: &str) -> Option<AccountId> {
    let (from, id) = payload.split_once('\n')?;
    (from == schema).then(|| AccountId::new(id).ok()).flatten()
}
