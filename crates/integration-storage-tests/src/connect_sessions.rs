//! The connect session behaviors of the [`Storage`] contract: one record
//! per token hash, read expired or not, replaced only over the copy it was
//! made from, and removed once expired.

use std::sync::Arc;
use std::time::Duration;

use integration_core::storage::{ConnectSession, Storage};
use integration_core::time::OffsetDateTime;
use integration_core::{EndUser, ErrorKind};

use crate::{account_id, futures_join_all};

/// A token hash as the gateway makes them: 64 lowercase hex digits.
pub fn sample_token_hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// A sample open connect session expiring at `expires_at`.
pub fn sample_connect_session(token_hash: &str, expires_at: OffsetDateTime) -> ConnectSession {
    ConnectSession {
        token_hash: token_hash.to_owned(),
        account: account_id("acct1"),
        integrations: vec!["acme".to_owned(), "erp".to_owned()],
        reconnect: false,
        end_user: Some(EndUser {
            id: "user-7".to_owned(),
            display_name: Some("Ada at Acme".to_owned()),
        }),
        allowed_origins: vec!["https://app.example.com".to_owned()],
        return_url: Some("https://app.example.com/settings?tab=integrations".to_owned()),
        created_at: expires_at - Duration::from_secs(1800),
        expires_at,
        completed_at: None,
        created_pending: false,
        pending_created_at: None,
        parameters: std::collections::BTreeMap::from([("subdomain".to_owned(), "eu1".to_owned())]),
        attempts: 0,
    }
}

fn in_half_an_hour() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::from_secs(1800)
}

/// Behavior: `insert_connect_session` stores the session as given, and
/// `connect_session` returns it, expired or not; an unknown hash is `None`.
pub async fn connect_session_reads_back_equal(storage: Arc<impl Storage + ?Sized>) {
    let session = sample_connect_session(&sample_token_hash(1), in_half_an_hour());
    storage
        .insert_connect_session(&session)
        .await
        .expect("insert must succeed");
    let read = storage
        .connect_session(&session.token_hash)
        .await
        .expect("connect_session() must not fail");
    assert_eq!(read, Some(session), "the session must read back as it was inserted");

    // The optional fields left out, and already expired.
    let bare = ConnectSession {
        end_user: None,
        allowed_origins: Vec::new(),
        return_url: None,
        reconnect: true,
        ..sample_connect_session(
            &sample_token_hash(2),
            OffsetDateTime::now_utc() - Duration::from_secs(60),
        )
    };
    storage
        .insert_connect_session(&bare)
        .await
        .expect("insert must succeed");
    let read = storage
        .connect_session(&bare.token_hash)
        .await
        .expect("connect_session() must not fail");
    assert_eq!(read, Some(bare), "an expired session must still be returned");

    let unknown = storage
        .connect_session(&sample_token_hash(3))
        .await
        .expect("connect_session() must not fail");
    assert!(unknown.is_none(), "an unknown token hash must read as None");
}

/// Behavior: inserting a token hash that is stored fails with
/// `AlreadyExists` and keeps the stored session.
pub async fn duplicate_connect_session_is_refused_and_keeps_the_original(storage: Arc<impl Storage + ?Sized>) {
    let original = sample_connect_session(&sample_token_hash(1), in_half_an_hour());
    storage
        .insert_connect_session(&original)
        .await
        .expect("first insert must succeed");
    let other = ConnectSession {
        account: account_id("intruder"),
        ..original.clone()
    };
    let error = storage
        .insert_connect_session(&other)
        .await
        .expect_err("a duplicate token hash must be refused");
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}");
    let read = storage
        .connect_session(&original.token_hash)
        .await
        .expect("connect_session() must not fail");
    assert_eq!(read, Some(original), "a refused insert must keep the original");
}

/// Behavior: `update_connect_session` replaces the stored session only if
/// it equals `expected`, and says whether it did; a missing session is
/// `false`, and is not created.
pub async fn connect_session_update_replaces_only_the_expected_record(storage: Arc<impl Storage + ?Sized>) {
    let session = sample_connect_session(&sample_token_hash(1), in_half_an_hour());
    storage
        .insert_connect_session(&session)
        .await
        .expect("insert must succeed");
    let completed = ConnectSession {
        completed_at: Some(OffsetDateTime::now_utc()),
        created_pending: true,
        pending_created_at: Some(OffsetDateTime::now_utc()),
        attempts: 3,
        ..session.clone()
    };
    assert!(
        storage
            .update_connect_session(&session, &completed)
            .await
            .expect("update must not fail"),
        "an update over the stored record must succeed"
    );
    let read = storage
        .connect_session(&session.token_hash)
        .await
        .expect("connect_session() must not fail");
    assert_eq!(read.as_ref(), Some(&completed), "the update must be stored");

    // `session` is stale now: it differs from the stored record.
    let reopened = ConnectSession {
        return_url: None,
        ..session.clone()
    };
    assert!(
        !storage
            .update_connect_session(&session, &reopened)
            .await
            .expect("update must not fail"),
        "an update made from a stale copy must be refused"
    );
    let read = storage
        .connect_session(&session.token_hash)
        .await
        .expect("connect_session() must not fail");
    assert_eq!(read, Some(completed), "a refused update must change nothing");

    let missing = sample_connect_session(&sample_token_hash(9), in_half_an_hour());
    assert!(
        !storage
            .update_connect_session(&missing, &missing)
            .await
            .expect("update must not fail"),
        "updating a missing session must answer false"
    );
    let read = storage
        .connect_session(&missing.token_hash)
        .await
        .expect("connect_session() must not fail");
    assert!(read.is_none(), "a refused update must not create the session");
}

/// Behavior: of concurrent updates from the same stored session, exactly
/// one succeeds, and its record is the one stored.
pub async fn concurrent_connect_session_updates_from_one_record_let_exactly_one_win(
    storage: Arc<impl Storage + ?Sized>,
) {
    const CONTENDERS: u8 = 8;
    let session = sample_connect_session(&sample_token_hash(1), in_half_an_hour());
    storage
        .insert_connect_session(&session)
        .await
        .expect("insert must succeed");
    let barrier = Arc::new(tokio::sync::Barrier::new(usize::from(CONTENDERS)));
    let mut tasks = Vec::new();
    for contender in 0..CONTENDERS {
        let storage = Arc::clone(&storage);
        let barrier = Arc::clone(&barrier);
        let expected = session.clone();
        // Each contender's record differs from the others'.
        let next = ConnectSession {
            completed_at: Some(session.created_at + Duration::from_secs(u64::from(contender) + 1)),
            ..session.clone()
        };
        tasks.push(async move {
            barrier.wait().await;
            let won = storage.update_connect_session(&expected, &next).await;
            (won, next)
        });
    }
    let outcomes = futures_join_all(tasks).await;
    let winners: Vec<&ConnectSession> = outcomes
        .iter()
        .filter(|(won, _)| *won.as_ref().expect("update must not fail"))
        .map(|(_, next)| next)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {CONTENDERS} concurrent updates must succeed"
    );
    let stored = storage
        .connect_session(&session.token_hash)
        .await
        .expect("connect_session() must not fail");
    assert_eq!(
        stored.as_ref(),
        Some(winners[0]),
        "the winner's record must be the stored one"
    );
}

/// Behavior: `delete_expired_connect_sessions` removes those whose
/// `expires_at` is at or before `now`, returns how many, and keeps the
/// others.
pub async fn expired_connect_sessions_are_deleted_and_others_kept(storage: Arc<impl Storage + ?Sized>) {
    let now = OffsetDateTime::now_utc();
    let expired = sample_connect_session(&sample_token_hash(1), now - Duration::from_secs(1));
    let at_now = sample_connect_session(&sample_token_hash(2), now);
    let live = sample_connect_session(&sample_token_hash(3), now + Duration::from_secs(60));
    for session in [&expired, &at_now, &live] {
        storage
            .insert_connect_session(session)
            .await
            .expect("insert must succeed");
    }
    let deleted = storage
        .delete_expired_connect_sessions(now)
        .await
        .expect("delete must not fail");
    assert_eq!(deleted, 2, "the expired one and the one expiring at `now` must go");
    for gone in [&expired, &at_now] {
        assert!(
            storage
                .connect_session(&gone.token_hash)
                .await
                .expect("connect_session() must not fail")
                .is_none(),
            "an expired session must be deleted"
        );
    }
    assert_eq!(
        storage
            .connect_session(&live.token_hash)
            .await
            .expect("connect_session() must not fail"),
        Some(live),
        "a live session must stay"
    );
    assert_eq!(
        storage
            .delete_expired_connect_sessions(now)
            .await
            .expect("delete must not fail"),
        0,
        "nothing is left to delete"
    );
}
