//! Two `integrations serve` processes on one PostgreSQL database behave as
//! one service: what one does, the other sees.
//!
//! Each test gets a schema of its own in the database of
//! `INTEGRATIONS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without PostgreSQL they skip, unless `INTEGRATIONS_REQUIRE_PEERS=1`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Gateway;
use integration_oauth2_test_server::{Config, TestServer};
use integration_test_peers::skip;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// How soon a change on one gateway must be seen by the other.
const SEEN_WITHIN: Duration = Duration::from_secs(1);

fn postgres_url() -> String {
    std::env::var("INTEGRATIONS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The URL of a new, empty schema of the tests' database, or `None` (the
/// test skips, saying why) when PostgreSQL cannot be reached.
async fn fresh_database() -> Option<String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let url = postgres_url();
    let mut admin = match sqlx::PgConnection::connect(&url).await {
        Ok(admin) => admin,
        Err(error) => {
            skip("postgres", &format!("PostgreSQL is not reachable at {url}: {error}"));
            return None;
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    // The storage tests drop these schemas once they are an hour old.
    let schema = format!(
        "integrations_test_{now}_{}_gw{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{separator}options[search_path]={schema}"))
}

/// What every gateway of one test shares: the database and the key.
struct Shared {
    database: String,
    encryption_key: String,
    definitions: tempfile::NamedTempFile,
    data: tempfile::TempDir,
}

impl Shared {
    async fn new(definitions: &str) -> Option<Self> {
        let database = fresh_database().await?;
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("definitions file");
        std::fs::write(file.path(), definitions).expect("write definitions");
        Some(Self {
            database,
            encryption_key: integrations::EncryptionKey::generate().to_base64().to_string(),
            definitions: file,
            data: tempfile::tempdir().expect("temp dir"),
        })
    }

    fn envs(&self) -> [(&str, &str); 2] {
        [
            ("INTEGRATIONS_DATABASE_URL", self.database.as_str()),
            ("INTEGRATIONS_ENCRYPTION_KEY", self.encryption_key.as_str()),
        ]
    }

    /// A gateway with a data directory of its own, as on another machine.
    async fn gateway(&self, name: &str, args: &[&str]) -> Gateway {
        let data = self.data.path().join(name);
        std::fs::create_dir_all(&data).expect("data dir");
        Gateway::start_with(
            self.definitions.path().to_str().expect("utf-8"),
            &data,
            args,
            &self.envs(),
        )
        .await
    }

    /// `integrations ARGS` against the shared database.
    fn run(&self, args: &[&str]) -> String {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_integrations"))
            .args(args)
            .env("INTEGRATIONS_DATA_DIR", self.data.path().join("cli"))
            .envs(self.envs())
            .output()
            .expect("run integrations");
        assert!(
            output.status.success(),
            "integrations {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }
}

async fn call(
    gateway: &Gateway,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", gateway.base))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("response");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Waits until `check` holds, for at most `within`; whether it did.
async fn holds_within(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates account `p1` of the OAuth 2.0 `provider` on `gateway` and runs
/// its authorization as a browser would; returns the URL the browser
/// landed on (the callback, on whichever gateway the redirect URI names).
async fn connect_provider_account(gateway: &Gateway, key: &str) -> String {
    let (status, _) = call(
        gateway,
        key,
        reqwest::Method::POST,
        "/v1/accounts",
        Some(json!({ "id": "p1", "integration": "provider" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, connect) = call(gateway, key, reqwest::Method::POST, "/v1/accounts/p1/connect", None).await;
    assert_eq!(status, StatusCode::OK, "{connect}");
    let landing = reqwest::get(connect["authorization_url"].as_str().expect("url"))
        .await
        .expect("browser");
    let landed_on = landing.url().to_string();
    assert_eq!(landing.status(), StatusCode::OK);
    assert!(landing.text().await.expect("page").contains("Account p1 is connected."));
    landed_on
}

fn echo_definition(upstream: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "echo"
        name = "Echo"
        base_url = "{upstream}"
        [integration.auth]
        type = "api_token"
        token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_keys_changed_on_one_gateway_are_seen_by_the_other() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hello"))
        .and(header("authorization", "Bearer t-s3cret"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hi"))
        .mount(&upstream)
        .await;
    let Some(shared) = Shared::new(&echo_definition(&upstream.uri())).await else {
        return;
    };
    let key = shared.run(&["keys", "create", "--name", "tests"]).trim().to_owned();
    let first = shared.gateway("first", &[]).await;
    let second = shared.gateway("second", &[]).await;

    // Created on one, proxied by the other.
    let (status, created) = call(
        &first,
        &key,
        reqwest::Method::POST,
        "/v1/accounts",
        Some(json!({ "id": "e1", "integration": "echo", "credentials": { "token": "t-s3cret" } })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let proxied = |gateway: &Gateway| {
        let request = reqwest::Client::new()
            .get(format!("{}/v1/accounts/e1/proxy/hello", gateway.base))
            .bearer_auth(&key);
        async move { request.send().await.expect("proxied").status() }
    };
    assert_eq!(proxied(&second).await, StatusCode::OK);
    assert_eq!(proxied(&first).await, StatusCode::OK);
    let listed = shared.run(&["accounts", "list"]);
    assert!(listed.contains("e1  echo"), "{listed}");

    // Removed on one (where the other had it compiled), refused by the
    // other within a second.
    let (status, _) = call(&first, &key, reqwest::Method::DELETE, "/v1/accounts/e1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        holds_within(SEEN_WITHIN, async || proxied(&second).await == StatusCode::NOT_FOUND).await,
        "the other gateway still serves a removed account"
    );

    // A key revoked with the CLI is refused by both within a second.
    let id = key.split('_').nth(1).expect("key id").to_owned();
    assert!(shared.run(&["keys", "list"]).contains(&id));
    shared.run(&["keys", "revoke", &id]);
    for gateway in [&first, &second] {
        assert!(
            holds_within(SEEN_WITHIN, async || {
                call(gateway, &key, reqwest::Method::GET, "/v1/integrations", None)
                    .await
                    .0
                    == StatusCode::UNAUTHORIZED
            })
            .await,
            "a revoked key is still accepted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_deliver_each_event_once() {
    let upstream = MockServer::start().await;
    let Some(shared) = Shared::new(&echo_definition(&upstream.uri())).await else {
        return;
    };
    let key = shared.run(&["keys", "create", "--name", "tests"]).trim().to_owned();
    let receiver = integration_webhook_test_receiver::Receiver::start().await;
    // Every third attempt fails: retries are shared between them too.
    receiver.answer(&[503, 204, 204].repeat(10));
    let secret = shared.run(&["webhooks", "add", &receiver.url()]).trim().to_owned();
    let schedule = ["--webhook-retry-schedule", "200ms,200ms,200ms"];
    let first = shared.gateway("first", &schedule).await;
    let second = shared.gateway("second", &schedule).await;

    let accounts = 20;
    for n in 0..accounts {
        let gateway = if n % 2 == 0 { &first } else { &second };
        let id = format!("e{n:02}");
        let body = json!({ "id": id, "integration": "echo", "credentials": { "token": "t-s3cret" } });
        let (status, created) = call(gateway, &key, reqwest::Method::POST, "/v1/accounts", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let (status, _) = call(
            gateway,
            &key,
            reqwest::Method::DELETE,
            &format!("/v1/accounts/{id}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let delivered = receiver.wait_for_delivered(2 * accounts, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered_now: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|received| received.answered < 300)
        .collect();
    assert_eq!(delivered_now.len(), delivered.len(), "nothing delivered twice");
    let mut ids: Vec<_> = delivered.iter().map(|received| received.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2 * accounts, "each event once");
    assert!(delivered.iter().all(|received| received.signed_with(&secret)));
    for n in 0..accounts {
        let id = format!("e{n:02}");
        for kind in ["account.created", "account.removed"] {
            assert!(
                delivered
                    .iter()
                    .any(|received| received.kind() == kind && received.body["data"]["account"] == id.as_str()),
                "{kind} of {id}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_flow_ends_on_the_other_gateway_and_a_refresh_storm_makes_one_token_call() {
    let provider = TestServer::start(Config {
        // Renewed from half its lifetime on: the storm below comes after.
        access_token_lifetime: Some(Duration::from_secs(4)),
        token_delay: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let Some(shared) = Shared::new(&provider.definition(r#""test-secret""#)).await else {
        return;
    };
    let key = shared.run(&["keys", "create", "--name", "tests"]).trim().to_owned();
    let second = shared.gateway("second", &[]).await;
    // Both behind one public address: here, the second's.
    let first = shared.gateway("first", &["--public-url", &second.base]).await;

    // The browser follows the provider's redirect to the other gateway.
    let landed_on = connect_provider_account(&first, &key).await;
    assert!(landed_on.starts_with(&second.base), "{landed_on}");
    let (_, account) = call(&first, &key, reqwest::Method::GET, "/v1/accounts/p1", None).await;
    assert_eq!(account["status"], "connected", "{account}");

    // Both gateways compile the account, then its token comes due.
    for gateway in [&first, &second] {
        let (status, _) = call(gateway, &key, reqwest::Method::GET, "/v1/accounts/p1/proxy/me", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let requests: Vec<_> = (0..500)
        .map(|n| {
            let base = if n % 2 == 0 {
                first.base.clone()
            } else {
                second.base.clone()
            };
            let request = reqwest::Client::new()
                .get(format!("{base}/v1/accounts/p1/proxy/me"))
                .bearer_auth(&key);
            tokio::spawn(async move { request.send().await.map(|response| response.status()) })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("task").expect("answered"), StatusCode::OK);
    }
    assert_eq!(
        provider.token_calls("refresh_token"),
        1,
        "500 requests on two gateways, one refresh"
    );
}

/// A TCP relay to PostgreSQL that can be cut (every connection dropped,
/// new ones refused) and restored on the same port: a database restart as
/// the gateway sees it, without stopping the server other tests use.
struct Relay {
    port: u16,
    target: String,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let mut relay = Self {
            port,
            target,
            running: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let target = self.target.clone();
        self.running = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Drops every connection and refuses new ones.
    async fn cut(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
            let _ = running.await;
        }
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the relay's port again");
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_gives_503_and_the_gateway_recovers_without_a_restart() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hello"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hi"))
        .mount(&upstream)
        .await;
    let Some(mut shared) = Shared::new(&echo_definition(&upstream.uri())).await else {
        return;
    };
    // The same database, through the relay.
    let direct: url::Url = shared.database.parse().expect("a URL");
    let target = format!("{}:{}", direct.host_str().expect("host"), direct.port().unwrap_or(5432));
    let mut relay = Relay::start(target).await;
    let mut relayed = direct.clone();
    relayed.set_host(Some("127.0.0.1")).expect("host");
    relayed.set_port(Some(relay.port)).expect("port");
    shared.database = relayed.to_string();

    let key = shared.run(&["keys", "create", "--name", "tests"]).trim().to_owned();
    let gateway = shared.gateway("only", &["--database-connect-timeout", "1"]).await;
    let (status, _) = call(
        &gateway,
        &key,
        reqwest::Method::POST,
        "/v1/accounts",
        Some(json!({ "id": "e1", "integration": "echo", "credentials": { "token": "t-s3cret" } })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let proxied = async || {
        call(
            &gateway,
            &key,
            reqwest::Method::GET,
            "/v1/accounts/e1/proxy/hello",
            None,
        )
        .await
    };
    assert_eq!(proxied().await.0, StatusCode::OK);

    relay.cut().await;
    let health = async || {
        let response = reqwest::get(format!("{}/healthz", gateway.base))
            .await
            .expect("healthz");
        (response.status(), response.json::<Value>().await.expect("JSON"))
    };
    assert!(
        holds_within(Duration::from_secs(5), async || health().await.0
            == StatusCode::SERVICE_UNAVAILABLE)
        .await,
        "/healthz reports the lost database"
    );
    assert_eq!(
        health().await.1,
        json!({ "status": "unavailable", "store": "unreachable" })
    );
    for path in ["/v1/accounts/e1/proxy/hello", "/v1/accounts/e1", "/v1/accounts"] {
        let (status, body) = call(&gateway, &key, reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["error"]["kind"], "unavailable", "{path}: {body}");
        assert!(!body.to_string().contains("s3cret"));
    }

    relay.restore().await;
    assert!(
        holds_within(Duration::from_secs(10), async || health().await.0 == StatusCode::OK).await,
        "the gateway sees the database back"
    );
    assert!(
        holds_within(Duration::from_secs(5), async || proxied().await.0 == StatusCode::OK).await,
        "proxying works again without a restart"
    );
    let (status, _) = call(
        &gateway,
        &key,
        reqwest::Method::POST,
        "/v1/accounts",
        Some(json!({ "id": "e2", "integration": "echo", "credentials": { "token": "t-s3cret" } })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "writes work again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_copied_to_postgres_and_served_from_there() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hello"))
        .and(header("authorization", "Bearer t-s3cret-2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hi"))
        .mount(&upstream)
        .await;
    let Some(shared) = Shared::new(&echo_definition(&upstream.uri())).await else {
        return;
    };
    // A data directory as a single gateway on sled leaves it.
    let sled_dir = shared.data.path().join("sled");
    let on_sled = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_integrations"))
            .args(["--definitions", shared.definitions.path().to_str().expect("utf-8")])
            .args(args)
            .env("INTEGRATIONS_DATA_DIR", &sled_dir)
            .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
            .env_remove("INTEGRATIONS_DATABASE_URL")
            .output()
            .expect("run integrations");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (_, key, _) = on_sled(&["keys", "create", "--name", "moved"]);
    let key = key.trim().to_owned();
    for n in 1..=3 {
        let (code, _, stderr) = on_sled(&[
            "accounts",
            "add",
            "echo",
            "--id",
            &format!("e{n}"),
            "--credential",
            &format!("token=t-s3cret-{n}"),
        ]);
        assert_eq!(code, Some(0), "{stderr}");
    }
    {
        // An OAuth 2.0 flow in progress.
        use integrations::storage::Storage;
        let sled = integrations::storage::sled::SledStorage::open(sled_dir.join("db")).expect("open sled");
        let pending = integrations::storage::PendingAuthorization {
            state: "in-flight".to_owned(),
            account: integrations::AccountId::new("e1").expect("id"),
            created_at: integrations::time::OffsetDateTime::now_utc(),
            expires_at: integrations::time::OffsetDateTime::now_utc() + Duration::from_secs(600),
            data: Default::default(),
            secrets: Default::default(),
        };
        sled.insert_pending_authorization(&pending).await.expect("pending");
    }

    let (code, _, stderr) = on_sled(&["webhooks", "add", "https://hooks.example/moved"]);
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stdout, stderr) = on_sled(&["storage", "copy", "--to", &shared.database]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "copied and checked 3 accounts, 1 API keys, 1 pending authorizations and 1 webhook endpoints to \
             PostgresStorage"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("3 events wait in the outbox and are not copied"),
        "{stderr}"
    );
    assert!(
        shared
            .run(&["webhooks", "list"])
            .contains("https://hooks.example/moved")
    );
    let (code, _, stderr) = on_sled(&["storage", "copy", "--to", &shared.database]);
    assert_eq!(code, Some(1), "a second copy into a database with records is refused");
    assert!(stderr.contains("the target database already holds records"), "{stderr}");
    assert!(!stderr.contains(&shared.database), "the URL is not shown: {stderr}");
    let (code, _, stderr) = on_sled(&["storage", "copy", "--to", &shared.database, "--allow-non-empty"]);
    assert_eq!(code, Some(0), "the same records again are fine: {stderr}");

    // Gateways on the database, with the data directory's key, serve them.
    let sealed_with = std::fs::read_to_string(sled_dir.join("encryption.key")).expect("the key");
    let gateway = Gateway::start_with(
        shared.definitions.path().to_str().expect("utf-8"),
        &shared.data.path().join("gateway"),
        &[],
        &[
            ("INTEGRATIONS_DATABASE_URL", shared.database.as_str()),
            ("INTEGRATIONS_ENCRYPTION_KEY", sealed_with.trim()),
        ],
    )
    .await;
    let (status, _) = call(
        &gateway,
        &key,
        reqwest::Method::GET,
        "/v1/accounts/e2/proxy/hello",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_rotated_and_rewrapped_while_gateways_keep_proxying() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hello"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hi"))
        .mount(&upstream)
        .await;
    let Some(shared) = Shared::new(&echo_definition(&upstream.uri())).await else {
        return;
    };
    // The keyring in a file every process reads (a mounted secret, say).
    let keyring = shared.data.path().join("keyring");
    let first_key = integrations::EncryptionKey::generate();
    integrations::crypto::Keyring::new(first_key.clone())
        .save(&keyring)
        .expect("keyring");
    let keyring_path = keyring.to_str().expect("utf-8").to_owned();
    let envs = [
        ("INTEGRATIONS_DATABASE_URL", shared.database.as_str()),
        ("INTEGRATIONS_ENCRYPTION_KEYRING", keyring_path.as_str()),
    ];
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_integrations"))
            .args(args)
            .env("INTEGRATIONS_DATA_DIR", shared.data.path().join("cli"))
            .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
            .envs(envs)
            .output()
            .expect("run integrations");
        assert!(
            output.status.success(),
            "integrations {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let key = run(&["keys", "create", "--name", "tests"]).trim().to_owned();
    let definitions = shared.definitions.path().to_str().expect("utf-8").to_owned();
    let first = Gateway::start_with(&definitions, &shared.data.path().join("first"), &[], &envs).await;
    let second = Gateway::start_with(&definitions, &shared.data.path().join("second"), &[], &envs).await;
    const ACCOUNTS: usize = 20;
    for n in 0..ACCOUNTS {
        let (status, _) = call(
            &first,
            &key,
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({ "id": format!("e{n:02}"), "integration": "echo", "credentials": { "token": "t-s3cret" } })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }

    // Requests on every account through both gateways, all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, key) = (stop.clone(), key.clone());
        let bases = [first.base.clone(), second.base.clone()];
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut sent, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let base = &bases[sent % 2];
                let account = format!("e{:02}", sent % ACCOUNTS);
                let response = client
                    .get(format!("{base}/v1/accounts/{account}/proxy/hello"))
                    .bearer_auth(&key)
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == StatusCode::OK => {}
                    Ok(response) => failed.push(format!("{account}: {}", response.text().await.unwrap_or_default())),
                    Err(error) => failed.push(format!("{account}: {error}")),
                }
                sent += 1;
            }
            (sent, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new_key = run(&["encryption", "rotate"]).trim().to_owned();
    let rewrapped = run(&["encryption", "rewrap"]);
    assert!(
        rewrapped.contains(&format!(
            "re-sealed {ACCOUNTS} of {ACCOUNTS} accounts with key {new_key}"
        )),
        "{rewrapped}"
    );
    // The gateways seal with the new key too: a new account lands on it.
    let (status, _) = call(
        &second,
        &key,
        reqwest::Method::POST,
        "/v1/accounts",
        Some(json!({ "id": "late", "integration": "echo", "credentials": { "token": "t-s3cret" } })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = traffic.await.expect("traffic");
    assert!(sent > ACCOUNTS, "traffic ran all along ({sent} requests)");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {failed:?}",
        failed.len()
    );

    let old = first_key.id().to_string();
    let status = run(&["encryption", "status"]);
    assert!(
        status.contains(&format!("{new_key}  active             {:>3}", ACCOUNTS + 1)),
        "{status}"
    );
    assert!(status.contains(&format!("{old}  decrypt-only         0")), "{status}");
    run(&["encryption", "retire", &old]);
    // Every record opens with the keyring that is left.
    for gateway in [&first, &second] {
        for n in 0..ACCOUNTS {
            let (status, body) = call(
                gateway,
                &key,
                reqwest::Method::GET,
                &format!("/v1/accounts/e{n:02}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let listed = run(&["accounts", "list"]);
    assert_eq!(listed.lines().count(), ACCOUNTS + 2, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_refresh_is_taken_over_by_the_other_once_the_lease_ends() {
    let provider = TestServer::start(Config {
        access_token_lifetime: Some(Duration::from_secs(4)),
        ..Config::default()
    })
    .await;
    // Token calls time out after 2 s, without retries: the lease lasts that
    // and a few seconds of slack.
    let definition = provider.definition(r#""test-secret""#).replace(
        r#"name = "Provider""#,
        "name = \"Provider\"\ntimeout_seconds = 2\nretry = { max_attempts = 1, max_total_seconds = 0.0 }",
    );
    let Some(shared) = Shared::new(&definition).await else {
        return;
    };
    let key = shared.run(&["keys", "create", "--name", "tests"]).trim().to_owned();
    let mut doomed = shared.gateway("doomed", &[]).await;
    let survivor = shared.gateway("survivor", &["--public-url", &doomed.base]).await;
    connect_provider_account(&survivor, &key).await;
    // Compiled on the doomed gateway while fresh: it renews from half its
    // lifetime on.
    let (status, _) = call(&doomed, &key, reqwest::Method::GET, "/v1/accounts/p1/proxy/me", None).await;
    assert_eq!(status, StatusCode::OK);

    // The provider now answers token requests slowly: any renewal from here
    // on, the request's or a scheduler's on either gateway, holds the lease
    // while the doomed gateway is killed (a renewal finished before the
    // delay would leave it a fresh token to answer with).
    provider.configure(|config| config.token_delay = Duration::from_millis(1500));
    // Due for renewal, and killed while it waits.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let pending = reqwest::Client::new()
        .get(format!("{}/v1/accounts/p1/proxy/me", doomed.base))
        .bearer_auth(&key)
        .send();
    let killed = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        doomed.kill();
    };
    let (answer, ()) = tokio::join!(pending, killed);
    if let Ok(response) = answer {
        panic!(
            "the doomed gateway answered before it was killed: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    provider.configure(|config| config.token_delay = Duration::ZERO);

    // The survivor serves once the lease ends, from a refresh of its own,
    // or finds the refresh token spent by the dead call and asks for a new
    // connection: never a spent token kept, never a request hanging.
    let started = Instant::now();
    let (status, body, account) = loop {
        let (status, body) = call(&survivor, &key, reqwest::Method::GET, "/v1/accounts/p1/proxy/me", None).await;
        let (_, account) = call(&survivor, &key, reqwest::Method::GET, "/v1/accounts/p1", None).await;
        let leased = account["credentials"].to_string().contains("refresh_lease");
        if !leased && [StatusCode::OK, StatusCode::CONFLICT, StatusCode::BAD_GATEWAY].contains(&status) {
            break (status, body, account);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no takeover: {status} {body} {account}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let credentials = account["credentials"].to_string();
    if status == StatusCode::OK {
        assert_eq!(account["status"], "connected", "{account}");
        assert!(credentials.contains("refresh_token"), "{account}");
    } else {
        assert_eq!(account["status"], "needs_reauth", "{status} {body} {account}");
        assert!(
            !credentials.contains("refresh_token"),
            "the spent token is not kept: {account}"
        );
    }
    // The survivor's call, and the dead one if it reached the provider.
    let calls = provider.token_calls("refresh_token");
    assert!((1..=2).contains(&calls), "{calls} refresh calls");
}
