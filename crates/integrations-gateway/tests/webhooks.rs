//! Webhooks end to end: endpoints over `/v1/webhooks`, events of account
//! changes delivered signed (checked by a receiver with its own HMAC),
//! retried, listed, retried by hand, rotated, and disabled by a 410.

use std::sync::Arc;
use std::time::Duration;

use integration_webhook_test_receiver::Receiver;
use integrations::auth::oauth2::RedirectUri;
use integrations::definition::Format;
use integrations::events::{Event, EventType};
use integrations::secrecy::ExposeSecret;
use integrations::storage::memory::MemoryStorage;
use integrations::time::OffsetDateTime;
use integrations::webhooks::{DeliveryState, StoredDelivery};
use integrations::{AccountStore, Cipher, Definitions, EncryptionKey, Integrations};
use integrations_gateway::AppState;
use integrations_gateway::keys::ApiKeys;
use integrations_gateway::webhooks::{Deliverer, DeliverySettings, WebhookWorkers, Webhooks};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;

/// A gateway whose webhooks are delivered, retrying after 100 ms twice.
struct Gateway {
    base: String,
    key: String,
    http: reqwest::Client,
    _workers: WebhookWorkers,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start() -> Self {
        Self::with_schedule(vec![Duration::from_millis(100); 2]).await
    }

    async fn with_schedule(schedule: Vec<Duration>) -> Self {
        Self::with(common::DEFINITIONS, schedule).await
    }

    async fn with(definitions: &str, schedule: Vec<Duration>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = ApiKeys::in_data_dir(dir.path()).await.expect("keys");
        let (_, key) = keys.create("tests").await.expect("key");
        integrations::register_methods();
        let definitions = Definitions::from_str(definitions, Format::Toml).expect("valid");
        let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
        let workers = integrations_gateway::webhooks::spawn(
            Deliverer::new(
                Webhooks::new(store.clone()),
                DeliverySettings::default().schedule(schedule),
            )
            .expect("deliverer"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(AppState {
            integrations: Integrations::new(definitions, store).expect("integrations"),
            keys,
            redirect_uri: RedirectUri::from_public_base_url(&base).expect("redirect"),
            openapi_requires_key: false,
        });
        tokio::spawn(integrations_gateway::serve(listener, state, std::future::pending()));
        Self {
            base,
            key: key.expose_secret().to_owned(),
            http: reqwest::Client::new(),
            _workers: workers,
            _dir: dir,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("response");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn add_webhook(&self, url: &str, events: &[&str]) -> (String, String) {
        let (status, created) = self
            .call(
                Method::POST,
                "/v1/webhooks",
                Some(json!({ "url": url, "events": events })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (
            created["id"].as_str().expect("id").to_owned(),
            created["secret"].as_str().expect("secret").to_owned(),
        )
    }

    async fn create_account(&self, id: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/accounts",
                Some(json!({ "id": id, "integration": "weather", "credentials": { "token": "token-s3cret" } })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn events_are_delivered_signed_retried_listed_and_resent() {
    let gateway = Gateway::start().await;
    let receiver = Receiver::start().await;
    let (id, secret) = gateway.add_webhook(&receiver.url(), &[]).await;
    assert!(id.starts_with("wh_") && secret.starts_with("whsec_"), "{id} {secret}");
    let (_, listed) = gateway.call(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["url"], receiver.url().as_str());
    assert!(
        !listed.to_string().contains(&secret[6..]),
        "the secret is shown once: {listed}"
    );

    // Down twice, then fine.
    receiver.answer(&[503, 500]);
    gateway.create_account("w1").await;
    let delivered = receiver.wait_for_delivered(1, WAIT).await;
    let all = receiver.received();
    assert_eq!(all.len(), 3, "two failures, then the delivery: {all:#?}");
    for received in &all {
        assert!(
            received.signed_with(&secret),
            "signed with the endpoint's secret: {received:?}"
        );
        assert_eq!(
            received.id, all[0].id,
            "one webhook-id across retries, for deduplication"
        );
        assert_eq!(received.raw, all[0].raw, "the same body");
        let age = integrations::time::OffsetDateTime::now_utc().unix_timestamp() - received.timestamp;
        assert!((0..60).contains(&age), "a fresh timestamp: {age}");
    }
    let event = &delivered[0].body;
    assert_eq!(event["type"], "account.created");
    assert_eq!(event["id"], delivered[0].id.as_str());
    assert_eq!(event["data"]["account"], "w1");
    assert_eq!(event["data"]["integration"], "weather");
    assert!(
        !String::from_utf8_lossy(&delivered[0].raw).contains("s3cret"),
        "no secret in an event"
    );

    let (status, page) = gateway
        .call(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let delivery = &page["deliveries"][0];
    assert_eq!(delivery["state"], "delivered");
    let statuses: Vec<_> = delivery["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| attempt["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, [503, 500, 204]);
    assert_eq!(delivery["event"]["id"], delivered[0].id.as_str());

    // Sent again by hand.
    let delivery_id = delivery["id"].as_str().expect("id");
    let (status, retried) = gateway
        .call(
            Method::POST,
            &format!("/v1/webhooks/{id}/deliveries/{delivery_id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    let again = receiver.wait_for_delivered(2, WAIT).await;
    assert_eq!(again[1].id, again[0].id);

    // A rotation: both secrets sign while the overlap lasts.
    let (status, rotated) = gateway
        .call(Method::POST, &format!("/v1/webhooks/{id}/rotate-secret"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_secret_expires_at"].is_string());
    let (status, _) = gateway.call(Method::DELETE, "/v1/accounts/w1", None).await;
    assert_eq!(status, StatusCode::OK);
    let removed = receiver.wait_for_delivered(3, WAIT).await;
    let removed = &removed[2];
    assert_eq!(removed.kind(), "account.removed");
    assert!(
        removed.signed_with(&new_secret) && removed.signed_with(&secret),
        "{removed:?}"
    );
    assert_eq!(removed.signatures.len(), 2);
}

#[tokio::test]
async fn only_the_chosen_events_go_to_an_endpoint_and_a_410_disables_it() {
    let gateway = Gateway::start().await;
    let removals = Receiver::start().await;
    let gone = Receiver::start().await;
    let (_, _) = gateway.add_webhook(&removals.url(), &["account.removed"]).await;
    let (gone_id, _) = gateway.add_webhook(&gone.url(), &[]).await;
    gone.answer(&[410]);

    gateway.create_account("w1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, webhook) = gateway
            .call(Method::GET, &format!("/v1/webhooks/{gone_id}"), None)
            .await;
        if webhook["disabled"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("410"))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not disabled: {webhook}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, page) = gateway
        .call(Method::GET, &format!("/v1/webhooks/{gone_id}/deliveries"), None)
        .await;
    assert_eq!(page["deliveries"][0]["state"], "failed", "a 410 is not retried: {page}");
    let delivery_id = page["deliveries"][0]["id"].as_str().expect("id").to_owned();
    let (status, refused) = gateway
        .call(
            Method::POST,
            &format!("/v1/webhooks/{gone_id}/deliveries/{delivery_id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");

    gateway.call(Method::DELETE, "/v1/accounts/w1", None).await;
    let removed = removals.wait_for_delivered(1, WAIT).await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].kind(), "account.removed", "account.created was not chosen");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gone.received().len(), 1, "nothing more goes to a disabled endpoint");
    assert_eq!(removals.received().len(), 1);

    // Enabled again, it gets the next events.
    let (status, enabled) = gateway
        .call(Method::POST, &format!("/v1/webhooks/{gone_id}/enable"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert!(enabled.get("disabled").is_none());
    gateway.create_account("w2").await;
    let delivered = gone.wait_for_delivered(1, WAIT).await;
    assert_eq!(delivered[0].body["data"]["account"], "w2");
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_event_when_it_is_back() {
    let gateway = Gateway::with_schedule(vec![Duration::from_millis(100); 100]).await;
    // A port nobody listens on, for now.
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("address")
    };
    let (id, secret) = gateway.add_webhook(&format!("http://{address}/hook"), &[]).await;
    gateway.create_account("w1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let page = loop {
        let (_, page) = gateway
            .call(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None)
            .await;
        if page["deliveries"][0]["attempts"]
            .as_array()
            .is_some_and(|attempts| attempts.len() >= 2)
        {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempts: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = &page["deliveries"][0];
    assert_eq!(first["state"], "pending", "{page}");
    assert_eq!(first["attempts"][0]["error"], "cannot connect to the endpoint");
    assert!(
        !page.to_string().contains(&address.to_string()),
        "errors do not quote the URL"
    );

    let receiver = Receiver::start_on(address).await;
    let delivered = receiver.wait_for_delivered(1, WAIT).await;
    assert!(delivered[0].signed_with(&secret));
    assert_eq!(delivered[0].kind(), "account.created");
}

#[tokio::test]
async fn bad_endpoints_and_unknown_names_are_refused_by_field() {
    let gateway = Gateway::start().await;
    for (body, says) in [
        (json!({ "url": "ftp://hooks.example/in" }), "`url`"),
        (
            json!({ "url": "https://user:pw@hooks.example/in" }),
            "no username or password",
        ),
        (
            json!({ "url": "https://hooks.example/in", "events": ["account.exploded"] }),
            "account.exploded",
        ),
        (
            json!({ "url": "https://hooks.example/in", "secret": "mine" }),
            "unknown field",
        ),
    ] {
        let (status, refused) = gateway.call(Method::POST, "/v1/webhooks", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        let message = refused["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{message}");
        assert!(!message.contains("pw@"), "{message}");
    }
    for (method, path) in [
        (Method::GET, "/v1/webhooks/wh_none"),
        (Method::DELETE, "/v1/webhooks/wh_none"),
        (Method::POST, "/v1/webhooks/wh_none/rotate-secret"),
        (Method::GET, "/v1/webhooks/wh_none/deliveries"),
        (Method::POST, "/v1/webhooks/wh_none/deliveries/dlv_none/retry"),
    ] {
        let (status, _) = gateway.call(method.clone(), path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (id, _) = gateway.add_webhook("https://hooks.example/in", &[]).await;
    let (status, _) = gateway
        .call(
            Method::POST,
            &format!("/v1/webhooks/{id}/deliveries/dlv_none/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, refused) = gateway
        .call(
            Method::POST,
            &format!("/v1/webhooks/{id}/rotate-secret"),
            Some(json!({ "overlap_seconds": 10_000_000 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, refused) = gateway
        .call(Method::GET, &format!("/v1/webhooks/{id}/deliveries?limit=0"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    for metadata in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal./computeMetadata/v1/",
    ] {
        let (status, refused) = gateway
            .call(Method::POST, "/v1/webhooks", Some(json!({ "url": metadata })))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .expect("message")
                .contains("metadata")
        );
    }
    // Each event is a delivery per endpoint: their number is bounded.
    for n in 1..100 {
        gateway.add_webhook(&format!("https://hooks.example/{n}"), &[]).await;
    }
    let (status, refused) = gateway
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": "https://hooks.example/more" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .expect("message")
            .contains("at most 100")
    );

    for path in ["/v1/webhooks", &format!("/v1/webhooks/{id}/deliveries")] {
        let response = reqwest::get(format!("{}{path}", gateway.base)).await.expect("response");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} needs a key");
    }
}

#[tokio::test]
async fn replaced_credentials_are_announced_and_checked() {
    let gateway = Gateway::start().await;
    let receiver = Receiver::start().await;
    gateway
        .add_webhook(&receiver.url(), &["account.credentials_updated"])
        .await;
    gateway.create_account("w1").await;
    let (status, account) = gateway
        .call(
            Method::PUT,
            "/v1/accounts/w1/credentials",
            Some(json!({ "credentials": { "token": "new-s3cret" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(account["status"], "connected");
    assert!(!account.to_string().contains("new-s3cret"), "write-only: {account}");
    let delivered = receiver.wait_for_delivered(1, WAIT).await;
    assert_eq!(delivered[0].kind(), "account.credentials_updated");
    assert_eq!(delivered[0].body["data"]["account"], "w1");

    for (path, body, says) in [
        (
            "/v1/accounts/w1/credentials",
            json!({ "credentials": { "nope": "x" } }),
            "nope",
        ),
        (
            "/v1/accounts/w1/credentials",
            json!({ "credentials": {}, "extra": 1 }),
            "unknown field",
        ),
    ] {
        let (status, refused) = gateway.call(Method::PUT, path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert!(refused.to_string().contains(says), "{refused}");
    }
    let (status, _) = gateway
        .call(
            Method::PUT,
            "/v1/accounts/ghost/credentials",
            Some(json!({ "credentials": { "token": "x" } })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_oauth_account_s_failures_and_recoveries_arrive_once_each() {
    use integration_oauth2_test_server::{Config, TestServer};

    let provider = TestServer::start(Config::default()).await;
    let gateway = Gateway::with(
        &provider.definition(r#""test-secret""#),
        vec![Duration::from_millis(100); 5],
    )
    .await;
    let receiver = Receiver::start().await;
    // Every other first attempt fails: retries must not make duplicates.
    receiver.answer(&[500, 204].repeat(6));
    let (_, secret) = gateway.add_webhook(&receiver.url(), &[]).await;
    let (status, _) = gateway
        .call(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "p1", "integration": "provider" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let connect = async || {
        let (status, connect) = gateway.call(Method::POST, "/v1/accounts/p1/connect", None).await;
        assert_eq!(status, StatusCode::OK, "{connect}");
        let landing = reqwest::get(connect["authorization_url"].as_str().expect("url"))
            .await
            .expect("browser");
        assert_eq!(landing.status(), StatusCode::OK);
    };
    connect().await;

    // A passing outage of the token endpoint, then back.
    provider.configure(|config| config.fail_token_requests = Some(503));
    let (status, _) = gateway.call(Method::POST, "/v1/accounts/p1/refresh", None).await;
    assert!(status.is_server_error(), "{status}");
    provider.configure(|config| config.fail_token_requests = None);
    let (status, refreshed) = gateway.call(Method::POST, "/v1/accounts/p1/refresh", None).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");

    // The provider revokes the grant; the account is connected again.
    provider.revoke_refresh_tokens();
    let (status, refused) = gateway.call(Method::POST, "/v1/accounts/p1/refresh", None).await;
    assert!(status.is_client_error() || status.is_server_error(), "{refused}");
    let (_, account) = gateway.call(Method::GET, "/v1/accounts/p1", None).await;
    assert_eq!(account["status"], "needs_reauth", "{account}");
    connect().await;

    let expected = [
        "account.created",
        "account.connected",
        "account.refresh_failed",
        "account.recovered",
        "account.needs_reauth",
        "account.connected",
    ];
    let delivered = receiver.wait_for_delivered(expected.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered_now: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|received| received.answered < 300)
        .collect();
    assert_eq!(delivered_now.len(), delivered.len(), "nothing delivered twice");
    let mut by_id: Vec<_> = delivered
        .iter()
        .map(|received| {
            (
                received.body["id"].as_str().unwrap().to_owned(),
                received.kind().to_owned(),
            )
        })
        .collect();
    by_id.sort();
    by_id.dedup();
    let kinds: Vec<_> = by_id.iter().map(|(_, kind)| kind.as_str()).collect();
    assert_eq!(kinds, expected, "each once, in the order made");
    assert!(delivered.iter().all(|received| received.signed_with(&secret)));
}

#[tokio::test]
async fn a_delivery_being_attempted_is_not_retried_over() {
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let webhooks = Webhooks::new(store);
    let (webhook, _) = webhooks.add("https://hooks.example/in", Vec::new()).await.expect("add");
    let event = Event::new(EventType::AccountCreated, &"acct".parse().expect("id"), "crm");
    let now = OffsetDateTime::now_utc();
    let delivery = StoredDelivery {
        id: StoredDelivery::id_for(&event, &webhook.id),
        webhook: webhook.id.clone(),
        event,
        state: DeliveryState::Pending,
        attempts: Vec::new(),
        next_attempt_at: Some(now),
        claimed_until: None,
        created_at: now,
    };
    let backend = webhooks.backend().expect("backend");
    backend
        .insert_deliveries(std::slice::from_ref(&delivery))
        .await
        .expect("insert");
    let claimed = backend
        .claim_deliveries(now, now + Duration::from_secs(60), 1)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);

    let refused = webhooks.retry(&webhook.id, &delivery.id).await.expect_err("in flight");
    assert_eq!(refused.kind(), integrations::ErrorKind::Conflict, "{refused}");
    assert!(refused.to_string().contains("being attempted now"), "{refused}");

    // Once the attempt is recorded, a retry makes it due again.
    let mut failed = claimed[0].clone();
    failed.state = DeliveryState::Failed;
    failed.claimed_until = None;
    failed.next_attempt_at = None;
    assert!(backend.update_delivery(&claimed[0], &failed).await.expect("record"));
    let retried = webhooks.retry(&webhook.id, &delivery.id).await.expect("retry");
    assert_eq!(retried.state, DeliveryState::Pending);
    assert!(
        !backend.update_delivery(&claimed[0], &failed).await.expect("record"),
        "an attempt's outcome is not written over the retry"
    );
}
