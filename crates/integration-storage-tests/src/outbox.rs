//! The outbox behaviors of the [`Storage`] contract: events stored in the
//! same step as the change that causes them, and claimed by one handler at
//! a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use integration_core::events::{Event, EventType};
use integration_core::storage::{Storage, Swap};
use integration_core::time::OffsetDateTime;

use crate::{account_id, sample_account};

/// An event of `kind` about `account`.
pub fn sample_event(kind: EventType, account: &str) -> Event {
    Event::new(kind, &account_id(account), "acme")
}

/// Every event of the outbox, claimed at `now` for a minute, in the order
/// given.
async fn claim_all(storage: &(impl Storage + ?Sized), now: OffsetDateTime) -> Vec<Event> {
    storage
        .claim_events(now, now + Duration::from_secs(60), 1000)
        .await
        .expect("claiming must not fail")
}

/// Behavior: each write stores its events when, and only when, the change
/// itself lands.
pub async fn events_are_stored_with_the_change_that_causes_them(storage: Arc<impl Storage + ?Sized>) {
    let now = OffsetDateTime::now_utc();
    let account = sample_account("acct1");
    let created = sample_event(EventType::AccountCreated, "acct1");
    storage
        .insert_account(&account, std::slice::from_ref(&created))
        .await
        .expect("insert must succeed");
    let refused = sample_event(EventType::AccountCreated, "acct1");
    assert!(storage.insert_account(&account, &[refused]).await.is_err());

    let mut next = account.clone();
    next.status_reason = Some("changed".to_owned());
    let stale = sample_event(EventType::NeedsReauth, "acct1");
    let conflict = storage
        .compare_and_swap_account(9, &next, &[stale])
        .await
        .expect("swap must not fail");
    assert!(matches!(conflict, Swap::Conflict(_)), "a stale swap conflicts");
    let failed = sample_event(EventType::RefreshFailed, "acct1").with_attempt(1);
    let swapped = storage
        .compare_and_swap_account(1, &next, std::slice::from_ref(&failed))
        .await
        .expect("swap must not fail");
    assert!(matches!(swapped, Swap::Swapped(_)));

    let ghost = sample_event(EventType::AccountRemoved, "ghost");
    assert!(
        !storage
            .delete_account(&account_id("ghost"), &[ghost])
            .await
            .expect("delete")
    );
    let removed = sample_event(EventType::AccountRemoved, "acct1");
    assert!(
        storage
            .delete_account(&account.id, std::slice::from_ref(&removed))
            .await
            .expect("delete")
    );

    let backlog = storage.outbox_backlog().await.expect("backlog");
    assert_eq!(backlog.events, 3, "only the events of changes that landed");
    assert_eq!(backlog.oldest, Some(created.timestamp));
    let claimed = claim_all(&*storage, now).await;
    assert_eq!(claimed, vec![created, failed, removed], "oldest first, as written");
}

/// Behavior: a claimed event is not claimed again until its claim ends,
/// and a completed one never again.
pub async fn claimed_events_wait_for_their_claim_to_end(storage: Arc<impl Storage + ?Sized>) {
    let now = OffsetDateTime::now_utc();
    let events: Vec<_> = (0..3)
        .map(|n| sample_event(EventType::AccountCreated, &format!("acct{n}")))
        .collect();
    for (n, event) in events.iter().enumerate() {
        storage
            .insert_account(&sample_account(&format!("acct{n}")), std::slice::from_ref(event))
            .await
            .expect("insert must succeed");
    }
    let first = storage
        .claim_events(now, now + Duration::from_secs(30), 2)
        .await
        .expect("claim");
    assert_eq!(first, events[..2], "at most `limit`, oldest first");
    let second = claim_all(&*storage, now).await;
    assert_eq!(second, events[2..], "claimed events are skipped");
    assert!(claim_all(&*storage, now + Duration::from_secs(29)).await.is_empty());

    assert!(storage.complete_event(&events[0].id).await.expect("complete"));
    assert!(!storage.complete_event(&events[0].id).await.expect("complete"), "once");
    let later = now + Duration::from_secs(30);
    assert_eq!(
        claim_all(&*storage, later).await,
        events[1..2],
        "an unfinished claim ends and the event is claimed again; a completed one is gone"
    );
    let backlog = storage.outbox_backlog().await.expect("backlog");
    assert_eq!(backlog.events, 2);
}

/// Behavior: of concurrent claimers, each event goes to exactly one.
pub async fn concurrent_claims_hand_each_event_to_one(storage: Arc<impl Storage + ?Sized>) {
    let total = 60;
    for n in 0..total {
        let id = format!("acct{n:02}");
        storage
            .insert_account(&sample_account(&id), &[sample_event(EventType::AccountCreated, &id)])
            .await
            .expect("insert must succeed");
    }
    let now = OffsetDateTime::now_utc();
    let claimers: Vec<_> = (0..6)
        .map(|_| {
            let storage = Arc::clone(&storage);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = storage
                        .claim_events(now, now + Duration::from_secs(60), 4)
                        .await
                        .expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|event| event.id));
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
    assert_eq!(counts.len(), total, "every event is claimed");
    assert!(
        counts.values().all(|count| *count == 1),
        "no event is claimed twice: {counts:?}"
    );
}
