//! The background scheduler against an OAuth 2.0 server on loopback: idle
//! accounts refreshed before their tokens expire with no request made,
//! refused grants and repeated failures ending in `needs_reauth`, health
//! checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_oauth2_test_server::{Config, TestServer};
use integrations::auth::oauth2::{Callback, RedirectUri};
use integrations::definition::Format;
use integrations::secrecy::{ExposeSecret, SecretString};
use integrations::storage::memory::MemoryStorage;
use integrations::time::OffsetDateTime;
use integrations::time::format_description::well_known::Rfc3339;
use integrations::{
    AccountId, AccountStatus, AccountStore, Cipher, Definitions, EncryptionKey, Integrations, NewAccount,
    SchedulerSettings, Secrets,
};

fn acct() -> AccountId {
    AccountId::new("acct").expect("id")
}

async fn connected_hub(server: &TestServer) -> Integrations {
    connected_hubs(&[(server, "provider", "acct")]).await
}

/// Integrations of `(server, integration key, account id)`, each account
/// connected through its server's authorization flow.
async fn connected_hubs(accounts: &[(&TestServer, &str, &str)]) -> Integrations {
    integrations::register_methods();
    let text: String = accounts
        .iter()
        .map(|(server, key, _)| {
            server
                .definition("\"test-secret\"")
                .replace(r#"key = "provider""#, &format!(r#"key = "{key}""#))
        })
        .collect();
    let definitions = Definitions::from_str(&text, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let hub = Integrations::new(definitions, store).expect("integrations");
    let redirect = RedirectUri::from_public_base_url("http://127.0.0.1:9/gateway").expect("redirect");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (_, key, id) in accounts {
        let id = AccountId::new(*id).expect("id");
        let integration = hub.integration(key).expect("integration").clone();
        let new = NewAccount {
            id: id.clone(),
            parameters: Secrets::new(),
            credentials: Secrets::new(),
        };
        hub.create_account(&integration, new).await.expect("create");
        let start = hub.start_authorization(&id, &redirect).await.expect("start");
        let response = client.get(start.url.clone()).send().await.expect("authorize");
        let location = response.headers()["location"].to_str().expect("location").to_owned();
        let query = url::Url::parse(&location)
            .expect("callback")
            .query()
            .unwrap_or_default()
            .to_owned();
        hub.complete_authorization(&Callback::from_query(&query))
            .await
            .expect("complete");
    }
    hub
}

fn expiry(account: &integrations::ConnectedAccount) -> OffsetDateTime {
    let text = account.credentials().get("access_token_expires_at").expect("an expiry");
    OffsetDateTime::parse(text.expose_secret(), &Rfc3339).expect("RFC 3339")
}

#[tokio::test]
async fn an_idle_account_is_refreshed_before_its_token_expires() {
    let server = TestServer::start(Config {
        access_token_lifetime: Some(Duration::from_secs(4)),
        ..Config::default()
    })
    .await;
    let hub = connected_hub(&server).await;
    let first = hub.store().get(&acct()).await.expect("account");
    let expires = expiry(&first);
    let settings = SchedulerSettings::default();

    // No request is made: only the scheduler's passes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.token_calls("refresh_token") == 0 {
        assert!(Instant::now() < deadline, "never refreshed");
        hub.run_scheduler_pass(&settings).await.expect("pass");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        OffsetDateTime::now_utc() < expires,
        "refreshed before the token expired"
    );
    let refreshed = hub.store().get(&acct()).await.expect("account");
    assert!(expiry(&refreshed) > expires);
    assert!(refreshed.health().last_refresh_at.is_some());
    let next = refreshed.health().next_check_at.expect("a next look");
    assert!(
        next < expiry(&refreshed),
        "looked at again before the new token expires"
    );

    // Passes right after do nothing: the account is not due.
    let calls = server.token_calls("refresh_token");
    let pass = hub.run_scheduler_pass(&settings).await.expect("pass");
    assert_eq!(pass.worked, 0);
    assert_eq!(server.token_calls("refresh_token"), calls);
}

#[tokio::test]
async fn a_refused_grant_stops_the_refreshes_at_once() {
    let server = TestServer::start(Config::default()).await;
    let hub = connected_hub(&server).await;
    let account = hub.store().get(&acct()).await.expect("account");
    let refresh_token = account.credentials().get("refresh_token").expect("refresh token");
    reqwest::Client::new()
        .post(server.url("/revoke"))
        .form(&[
            ("token", refresh_token.expose_secret()),
            ("client_id", "test-client"),
            ("client_secret", "test-secret"),
        ])
        .send()
        .await
        .expect("revoke");
    // Idle "for a day" at once: every pass would refresh.
    let settings = SchedulerSettings::default().idle_refresh(Duration::from_millis(1));
    let pass = hub.run_scheduler_pass(&settings).await.expect("pass");
    assert_eq!((pass.worked, pass.failed, pass.needs_reauth), (1, 1, 1), "{pass:?}");
    let account = hub.store().get(&acct()).await.expect("account");
    assert_eq!(account.status(), AccountStatus::NeedsReauth);
    assert_eq!(
        account.health().last_error.as_ref().expect("an error").code,
        "invalid_grant"
    );
    for _ in 0..3 {
        hub.run_scheduler_pass(&settings).await.expect("pass");
    }
    assert_eq!(
        server.token_calls("refresh_token"),
        1,
        "no refresh after the grant was refused"
    );
}

#[tokio::test]
async fn passing_failures_end_in_needs_reauth_after_the_limit() {
    let server = TestServer::start(Config::default()).await;
    let hub = connected_hub(&server).await;
    server.configure(|config| config.fail_token_requests = Some(503));
    // The backoff is capped by the idle interval: 1 s here.
    let settings = SchedulerSettings::default()
        .idle_refresh(Duration::from_secs(1))
        .max_consecutive_failures(3);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        hub.run_scheduler_pass(&settings).await.expect("pass");
        let account = hub.store().get(&acct()).await.expect("account");
        if account.status() == AccountStatus::NeedsReauth {
            assert_eq!(account.health().consecutive_failures, 3);
            let reason = account.status_reason().expect("a reason");
            assert!(
                reason.contains("3 refreshes in a row failed (last: temporarily_unavailable)"),
                "{reason}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never gave up: {:?}", account.health());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = server.token_calls("refresh_token");
    server.configure(|config| config.fail_token_requests = None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    hub.run_scheduler_pass(&settings).await.expect("pass");
    assert_eq!(server.token_calls("refresh_token"), calls, "stopped refreshing");
}

#[tokio::test]
async fn a_stalled_provider_does_not_hold_up_healthy_accounts() {
    let healthy = TestServer::start(Config::default()).await;
    let stalled = TestServer::start(Config::default()).await;
    let hub = connected_hubs(&[(&stalled, "slow", "a-slow"), (&healthy, "provider", "b-healthy")]).await;
    stalled.configure(|config| config.token_delay = Duration::from_secs(20));
    let settings = SchedulerSettings::default().idle_refresh(Duration::from_millis(1));
    let pass = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run_scheduler_pass(&settings).await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthy.token_calls("refresh_token") == 0 {
        assert!(
            Instant::now() < deadline,
            "the healthy account waited for the stalled one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!pass.is_finished(), "the stalled one is still in flight");
    pass.abort();
}

#[tokio::test]
async fn a_health_check_answered_401_marks_the_account() {
    let server = TestServer::start(Config::default()).await;
    integrations::register_methods();
    let definitions = Definitions::from_str(
        &format!(
            r#"
            [[integration]]
            key = "me"
            name = "Me"
            base_url = "{}"
            health_check = {{ method = "GET", path = "me" }}
            [integration.auth]
            type = "api_token"
            token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
            "#,
            server.url("/api/")
        ),
        Format::Toml,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let hub = Integrations::new(definitions, store).expect("integrations");
    let mut credentials = Secrets::new();
    credentials.insert("token", SecretString::from("not-a-token-it-knows".to_owned()));
    let integration = hub.integration("me").expect("me").clone();
    hub.create_account(
        &integration,
        NewAccount {
            id: acct(),
            parameters: Secrets::new(),
            credentials,
        },
    )
    .await
    .expect("create");
    let pass = hub
        .run_scheduler_pass(&SchedulerSettings::default())
        .await
        .expect("pass");
    assert_eq!(pass.needs_reauth, 1, "{pass:?}");
    let account = hub.store().get(&acct()).await.expect("account");
    assert_eq!(account.status(), AccountStatus::NeedsReauth);
    let reason = account.status_reason().expect("a reason");
    assert!(reason.contains("health check GET me answered 401"), "{reason}");
}
