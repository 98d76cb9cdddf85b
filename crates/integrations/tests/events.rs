//! Events of connected accounts: written with the change that causes them,
//! handed to a library handler at least once, each kind when it happens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_oauth2_test_server::{Config, TestServer};
use integrations::auth::oauth2::{Callback, RedirectUri};
use integrations::definition::Format;
use integrations::events::{Event, EventType};
use integrations::secrecy::{ExposeSecret, SecretString};
use integrations::storage::memory::MemoryStorage;
use integrations::{
    AccountId, AccountStatus, AccountStore, Cipher, Definitions, EncryptionKey, Error, ErrorKind, EventRelay,
    Integrations, NewAccount, RelaySettings, Secrets, Storage,
};

fn acct() -> AccountId {
    AccountId::new("acct").expect("id")
}

fn redirect() -> RedirectUri {
    RedirectUri::from_public_base_url("http://127.0.0.1:9/gateway").expect("redirect")
}

async fn hub(server: &TestServer) -> Integrations {
    integrations::register_methods();
    let definitions = Definitions::from_str(&server.definition("\"test-secret\""), Format::Toml)
        .unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    Integrations::new(definitions, store).expect("integrations")
}

async fn connect(hub: &Integrations) {
    let start = hub.start_authorization(&acct(), &redirect()).await.expect("start");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
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

/// The events the handler got, kept in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Event>>>);

impl Received {
    fn all(&self) -> Vec<Event> {
        self.0.lock().expect("lock").clone()
    }

    /// Waits until `count` events arrived.
    async fn wait_for(&self, count: usize) -> Vec<Event> {
        for _ in 0..200 {
            let all = self.all();
            if all.len() >= count {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {count} events, got {:?}", self.all());
    }
}

#[tokio::test]
async fn an_oauth_account_s_life_arrives_once_each_in_order() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub(&server).await;
    let received = Received::default();
    let sink = received.clone();
    let _relay = hub.on_event(move |event: Event| {
        let sink = sink.clone();
        async move {
            sink.0.lock().expect("lock").push(event);
            Ok(())
        }
    });
    let integration = hub.integration("provider").expect("provider").clone();
    hub.create_account(
        &integration,
        NewAccount {
            id: acct(),
            parameters: Secrets::new(),
            credentials: Secrets::new(),
        },
    )
    .await
    .expect("create");
    connect(&hub).await;

    // The token endpoint is down twice, then back.
    server.configure(|config| config.fail_token_requests = Some(503));
    for _ in 0..2 {
        hub.refresh(&acct()).await.expect_err("the provider is down");
    }
    let failing = hub.store().get(&acct()).await.expect("account");
    assert_eq!(failing.health().consecutive_failures, 2);
    assert_eq!(
        failing.health().last_error.as_ref().expect("an error").code,
        "temporarily_unavailable"
    );
    assert_eq!(
        failing.status(),
        AccountStatus::Connected,
        "a passing failure needs no new authorization"
    );
    server.configure(|config| config.fail_token_requests = None);
    let recovered = hub.refresh(&acct()).await.expect("refreshed");
    assert_eq!(recovered.health().consecutive_failures, 0);
    assert!(recovered.health().last_refresh_at.is_some());

    // The provider revokes the refresh token; the account is connected again.
    let refresh_token = recovered.credentials().get("refresh_token").expect("refresh token");
    let revoked = reqwest::Client::new()
        .post(server.url("/revoke"))
        .form(&[
            ("token", refresh_token.expose_secret()),
            ("client_id", "test-client"),
            ("client_secret", "test-secret"),
        ])
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success());
    hub.refresh(&acct()).await.expect_err("the grant is revoked");
    hub.refresh(&acct()).await.expect_err("still needs a new authorization");
    connect(&hub).await;
    let refused = hub
        .replace_credentials(&acct(), Secrets::new())
        .await
        .expect_err("OAuth 2.0 tokens come from the provider");
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    hub.remove_account(&acct()).await.expect("remove");

    let events = received.wait_for(8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_after = received.all();
    assert_eq!(
        events_after.len(),
        events.len(),
        "nothing more, nothing twice: {events_after:#?}"
    );
    let kinds: Vec<_> = events.iter().map(|event| event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::AccountCreated,
            EventType::AccountConnected,
            EventType::RefreshFailed,
            EventType::RefreshFailed,
            EventType::Recovered,
            EventType::NeedsReauth,
            EventType::AccountConnected,
            EventType::AccountRemoved,
        ]
    );
    assert!(
        events
            .iter()
            .all(|event| event.data.account == acct() && event.data.integration == "provider")
    );
    assert_eq!(events[2].data.attempt, Some(1));
    assert_eq!(events[3].data.attempt, Some(2));
    assert_eq!(events[3].data.reason.as_deref(), Some("temporarily_unavailable"));
    assert_eq!(
        events[5].data.reason.as_deref(),
        Some("invalid_grant"),
        "the provider's code, not a sentence"
    );
    let shown = format!("{events:?}");
    assert!(!shown.contains(refresh_token.expose_secret()), "no secret in an event");
    let mut ids: Vec<_> = events.iter().map(|event| event.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "unique ids");
    assert!(
        events.windows(2).all(|pair| pair[0].id < pair[1].id),
        "ids follow the order"
    );
}

#[tokio::test]
async fn a_failing_handler_gets_the_event_again_once_its_claim_ends() {
    // Before the definitions are read: they name the methods registered.
    integrations::register_methods();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let store = AccountStore::new(Arc::clone(&storage), Cipher::new(&EncryptionKey::generate()));
    let definitions = Definitions::from_str(
        r#"
        [[integration]]
        key = "echo"
        name = "Echo"
        base_url = "https://echo.example"
        [integration.auth]
        type = "api_token"
        token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
        "#,
        Format::Toml,
    )
    .expect("valid");
    let mut credentials = Secrets::new();
    credentials.insert("token", SecretString::from("t0ken".to_owned()));
    store
        .create(
            definitions.get("echo").expect("echo"),
            NewAccount {
                id: acct(),
                parameters: Secrets::new(),
                credentials,
            },
        )
        .await
        .expect("create");

    let relay = EventRelay::new(
        Arc::clone(&storage),
        RelaySettings::default().claim(Duration::from_millis(200)),
    );
    let calls = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&calls);
    let flaky = move |event: Event| {
        let counted = Arc::clone(&counted);
        async move {
            let mut calls = counted.lock().expect("lock");
            *calls += 1;
            assert_eq!(event.kind, EventType::AccountCreated);
            if *calls == 1 {
                return Err(Error::new(ErrorKind::Transport, "the handler's own outage"));
            }
            Ok(())
        }
    };
    assert_eq!(relay.relay_once(&flaky).await.expect("relay"), 0, "not completed");
    assert_eq!(
        relay.relay_once(&flaky).await.expect("relay"),
        0,
        "claimed: not handed on twice at once"
    );
    assert_eq!(*calls.lock().expect("lock"), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(relay.relay_once(&flaky).await.expect("relay"), 1, "handed on again");
    assert_eq!(storage.outbox_backlog().await.expect("backlog").events, 0, "completed");
    assert_eq!(relay.relay_once(&flaky).await.expect("relay"), 0);
}

#[tokio::test]
async fn a_store_without_events_leaves_the_outbox_empty() {
    integrations::register_methods();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let store = AccountStore::new(Arc::clone(&storage), Cipher::new(&EncryptionKey::generate())).without_events();
    let definitions = Definitions::from_str(
        r#"
        [[integration]]
        key = "echo"
        name = "Echo"
        base_url = "https://echo.example"
        [integration.auth]
        type = "api_token"
        token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
        "#,
        Format::Toml,
    )
    .expect("valid");
    let mut credentials = Secrets::new();
    credentials.insert("token", SecretString::from("t0ken".to_owned()));
    let account = store
        .create(
            definitions.get("echo").expect("echo"),
            NewAccount {
                id: acct(),
                parameters: Secrets::new(),
                credentials: credentials.clone(),
            },
        )
        .await
        .expect("create");
    store
        .replace_credentials(&account, credentials, AccountStatus::Connected)
        .await
        .expect("replace");
    assert!(store.remove(&acct()).await.expect("remove"));
    assert_eq!(storage.outbox_backlog().await.expect("backlog").events, 0);
}
