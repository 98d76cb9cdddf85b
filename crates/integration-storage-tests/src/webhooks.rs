//! The behaviors of the [`WebhookStorage`] contract, generated as tests by
//! [`webhook_storage_tests!`](crate::webhook_storage_tests).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use integration_core::ErrorKind;
use integration_core::crypto::SealedSecret;
use integration_core::events::EventType;
use integration_core::time::OffsetDateTime;
use integration_core::webhooks::{
    DeliveryAttempt, DeliveryState, StoredDelivery, StoredWebhook, WebhookDisabled, WebhookStorage,
};

use crate::outbox::sample_event;

/// Generates one `#[test]` per behavior of the `WebhookStorage` contract.
///
/// `$factory` is a closure returning a future of a fresh, empty store
/// (`Arc<impl WebhookStorage>`), or of `Option<…>` for a store whose server
/// may be missing ([`MaybeStorage`](crate::MaybeStorage)).
#[macro_export]
macro_rules! webhook_storage_tests {
    ($factory:expr) => {
        $crate::webhook_storage_tests!(@tests $factory;
            webhooks_are_listed_oldest_first_updated_and_deleted,
            deliveries_are_stored_once_and_claimed_when_due,
            concurrent_delivery_claims_hand_each_to_one,
            deliveries_are_listed_newest_first_and_old_finished_ones_deleted,
        );
    };
    (@tests $factory:expr; $($name:ident,)*) => {
        /// The `WebhookStorage` contract.
        mod webhook_storage {
            #[allow(unused_imports, reason = "the factory may name the backend's imports")]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::__runtime().block_on(async {
                        let factory = $factory;
                        let Some(storage) = $crate::MaybeStorage::into_storage(factory().await) else {
                            return;
                        };
                        $crate::webhooks::$name(storage).await;
                    });
                }
            )*
        }
    };
}

fn base_time() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A sample endpoint created `seconds` after a fixed time.
pub fn sample_webhook(id: &str, seconds: u64) -> StoredWebhook {
    StoredWebhook {
        id: id.to_owned(),
        url: format!("https://hooks.example/{id}"),
        events: vec![EventType::NeedsReauth, EventType::Recovered],
        secret: SealedSecret::from_bytes(vec![1, 2, 3, 4]),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: base_time() + Duration::from_secs(seconds),
        disabled: None,
    }
}

/// A pending delivery to `webhook` due at `due`.
pub fn sample_delivery(webhook: &str, account: &str, due: OffsetDateTime) -> StoredDelivery {
    let event = sample_event(EventType::NeedsReauth, account);
    StoredDelivery {
        id: StoredDelivery::id_for(&event, webhook),
        webhook: webhook.to_owned(),
        event,
        state: DeliveryState::Pending,
        attempts: Vec::new(),
        next_attempt_at: Some(due),
        claimed_until: None,
        created_at: due,
    }
}

/// Behavior: endpoints are listed oldest first, as stored; a duplicate id
/// is refused; an update replaces only the copy it was made from; deletes
/// remove.
pub async fn webhooks_are_listed_oldest_first_updated_and_deleted(storage: Arc<impl WebhookStorage + ?Sized>) {
    let (first, second) = (sample_webhook("wh_b", 1), sample_webhook("wh_a", 2));
    storage.insert_webhook(&first).await.expect("insert");
    storage.insert_webhook(&second).await.expect("insert");
    let duplicate = storage.insert_webhook(&sample_webhook("wh_b", 3)).await.unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        storage.webhooks().await.expect("list"),
        vec![first.clone(), second.clone()]
    );

    let mut disabled = first.clone();
    disabled.disabled = Some(WebhookDisabled {
        reason: "the endpoint answered 410 Gone".to_owned(),
        at: base_time(),
    });
    disabled.previous_secret = Some(SealedSecret::from_bytes(vec![9, 9]));
    disabled.previous_secret_expires_at = Some(base_time() + Duration::from_secs(86_400));
    assert!(storage.update_webhook(&first, &disabled).await.expect("update"));
    let mut reverted = first.clone();
    reverted.url = "https://hooks.example/stale".to_owned();
    assert!(
        !storage.update_webhook(&first, &reverted).await.expect("update"),
        "a change made from a stale copy is refused"
    );
    assert!(
        !storage
            .update_webhook(&sample_webhook("wh_none", 0), &sample_webhook("wh_none", 0))
            .await
            .expect("update")
    );
    assert!(storage.delete_webhook("wh_a").await.expect("delete"));
    assert!(!storage.delete_webhook("wh_a").await.expect("delete"));
    assert_eq!(storage.webhooks().await.expect("list"), vec![disabled]);
}

/// Behavior: a delivery is stored once however often it is handed over,
/// claimed only when due and unclaimed, and changed by updates.
pub async fn deliveries_are_stored_once_and_claimed_when_due(storage: Arc<impl WebhookStorage + ?Sized>) {
    storage
        .insert_webhook(&sample_webhook("wh_1", 0))
        .await
        .expect("insert");
    let now = OffsetDateTime::now_utc();
    let due = sample_delivery("wh_1", "acct1", now - Duration::from_secs(5));
    let later = sample_delivery("wh_1", "acct2", now + Duration::from_secs(60));
    storage
        .insert_deliveries(&[due.clone(), later.clone()])
        .await
        .expect("insert");
    let mut changed = due.clone();
    changed.attempts.push(DeliveryAttempt {
        at: now,
        status: Some(500),
        error: None,
        duration_ms: 3,
    });
    storage.insert_deliveries(&[changed]).await.expect("insert again");
    assert_eq!(
        storage.delivery(&due.id).await.expect("read"),
        Some(due.clone()),
        "kept as first stored"
    );

    let until = now + Duration::from_secs(30);
    let claimed = storage.claim_deliveries(now, until, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1, "only what is due");
    assert_eq!(claimed[0].id, due.id);
    assert_eq!(claimed[0].claimed_until, Some(until));
    assert!(
        storage
            .claim_deliveries(now, until, 10)
            .await
            .expect("claim")
            .is_empty(),
        "claimed once"
    );

    let mut delivered = claimed[0].clone();
    delivered.state = DeliveryState::Delivered;
    delivered.next_attempt_at = None;
    delivered.claimed_until = None;
    delivered.attempts.push(DeliveryAttempt {
        at: now,
        status: Some(204),
        error: None,
        duration_ms: 12,
    });
    assert!(
        !storage.update_delivery(&due, &delivered).await.expect("update"),
        "the unclaimed copy is stale once claimed"
    );
    assert!(storage.update_delivery(&claimed[0], &delivered).await.expect("update"));
    assert!(
        !storage.update_delivery(&claimed[0], &due).await.expect("update"),
        "an outcome is recorded once"
    );
    assert_eq!(storage.delivery(&due.id).await.expect("read"), Some(delivered));
    let at_due_time = storage
        .claim_deliveries(now + Duration::from_secs(60), until + Duration::from_secs(60), 10)
        .await
        .expect("claim");
    assert_eq!(
        at_due_time.len(),
        1,
        "a delivered one is never claimed; the later one once due"
    );
    assert_eq!(at_due_time[0].id, later.id);
    let mut unknown = later.clone();
    unknown.id = "dlv_none".to_owned();
    assert!(!storage.update_delivery(&unknown, &unknown).await.expect("update"));
}

/// Behavior: of concurrent claimers, each due delivery goes to one.
pub async fn concurrent_delivery_claims_hand_each_to_one(storage: Arc<impl WebhookStorage + ?Sized>) {
    storage
        .insert_webhook(&sample_webhook("wh_1", 0))
        .await
        .expect("insert");
    let now = OffsetDateTime::now_utc();
    let deliveries: Vec<_> = (0..40)
        .map(|n| sample_delivery("wh_1", &format!("acct{n}"), now - Duration::from_secs(1)))
        .collect();
    storage.insert_deliveries(&deliveries).await.expect("insert");
    let claimers: Vec<_> = (0..6)
        .map(|_| {
            let storage = Arc::clone(&storage);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = storage
                        .claim_deliveries(now, now + Duration::from_secs(60), 3)
                        .await
                        .expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|delivery| delivery.id));
                }
            })
        })
        .collect();
    let mut counts = BTreeMap::new();
    for claimer in claimers {
        for id in claimer.await.expect("a claimer panicked") {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    assert_eq!(counts.len(), deliveries.len(), "every delivery is claimed");
    assert!(counts.values().all(|count| *count == 1), "none twice: {counts:?}");
}

/// Behavior: an endpoint's deliveries are listed newest first and paged by
/// id; old finished deliveries are deleted, pending ones kept; deleting
/// the endpoint deletes its deliveries.
pub async fn deliveries_are_listed_newest_first_and_old_finished_ones_deleted(
    storage: Arc<impl WebhookStorage + ?Sized>,
) {
    storage
        .insert_webhook(&sample_webhook("wh_1", 0))
        .await
        .expect("insert");
    storage
        .insert_webhook(&sample_webhook("wh_2", 1))
        .await
        .expect("insert");
    let start = base_time();
    let mut ours = Vec::new();
    for n in 0..5u64 {
        let mut delivery = sample_delivery("wh_1", &format!("acct{n}"), start + Duration::from_secs(n));
        if n < 3 {
            delivery.state = DeliveryState::Delivered;
            delivery.next_attempt_at = None;
        }
        ours.push(delivery);
        // Ids follow the events' creation times.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    storage.insert_deliveries(&ours).await.expect("insert");
    storage
        .insert_deliveries(&[sample_delivery("wh_2", "acct9", start)])
        .await
        .expect("insert");

    let newest: Vec<_> = ours.iter().rev().map(|delivery| delivery.id.clone()).collect();
    let first_page = storage.deliveries("wh_1", None, 2).await.expect("list");
    assert_eq!(first_page.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), newest[..2]);
    let rest = storage
        .deliveries("wh_1", Some(&first_page[1].id), 10)
        .await
        .expect("list");
    assert_eq!(rest.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), newest[2..]);

    let deleted = storage
        .delete_deliveries_before(start + Duration::from_secs(2))
        .await
        .expect("delete");
    assert_eq!(deleted, 2, "finished and older only");
    let left = storage.deliveries("wh_1", None, 10).await.expect("list");
    assert_eq!(left.len(), 3);

    assert!(storage.delete_webhook("wh_1").await.expect("delete"));
    assert!(storage.deliveries("wh_1", None, 10).await.expect("list").is_empty());
    assert!(storage.delivery(&ours[4].id).await.expect("read").is_none());
    assert_eq!(storage.deliveries("wh_2", None, 10).await.expect("list").len(), 1);
}
