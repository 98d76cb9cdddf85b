//! A process killed between the provider's token response and the store
//! write never leaves the account silently holding a refresh token the
//! provider has already spent.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use integration_oauth2_test_server::{Config, TestServer};
use integrations::auth::oauth2::{Callback, RedirectUri};
use integrations::definition::Format;
use integrations::events::{Event, EventId, OutboxBacklog};
use integrations::secrecy::ExposeSecret;
use integrations::storage::sled::SledStorage;
use integrations::storage::{PendingAuthorization, Storage, StoredAccount, Swap};
use integrations::time::OffsetDateTime;
use integrations::{
    AccountId, AccountStatus, AccountStore, Cipher, Definitions, EncryptionKey, Integrations, NewAccount, Result,
    Secrets, async_trait,
};

const CHILD_ENV: &str = "INTEGRATIONS_TEST_OAUTH2_CHILD";

fn definition(token_url: &str, authorize_url: &str) -> Definitions {
    integrations::register_methods();
    Definitions::from_str(
        &format!(
            r#"
            [[integration]]
            key = "provider"
            name = "Provider"
            timeout_seconds = 0.5
            [integration.auth]
            type = "oauth2"
            grant_type = "authorization_code"
            authorization_endpoint = "{authorize_url}"
            access_token_endpoint = "{token_url}"
            access_token_verb = "POST"
            scope = "profile"
            client_id = "test-client"
            client_secret = "test-secret"
            token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
            "#
        ),
        Format::Toml,
    )
    .expect("valid definition")
}

fn acct() -> AccountId {
    AccountId::new("acct").expect("id")
}

/// Sled, but the second compare-and-swap (the one that stores the new
/// tokens after the lease) announces itself and never returns.
#[derive(Debug)]
struct StallsBeforeStoringTokens {
    inner: SledStorage,
    swaps: AtomicUsize,
}

#[async_trait]
impl Storage for StallsBeforeStoringTokens {
    async fn insert_account(&self, account: &StoredAccount, events: &[Event]) -> Result<()> {
        self.inner.insert_account(account, events).await
    }
    async fn account(&self, id: &AccountId) -> Result<Option<StoredAccount>> {
        self.inner.account(id).await
    }
    async fn accounts(&self) -> Result<Vec<Result<StoredAccount>>> {
        self.inner.accounts().await
    }
    async fn accounts_page(&self, query: &integrations::AccountQuery) -> Result<integrations::AccountPage> {
        self.inner.accounts_page(query).await
    }
    async fn compare_and_swap_account(
        &self,
        expected_revision: u64,
        account: &StoredAccount,
        events: &[Event],
    ) -> Result<Swap> {
        if self.swaps.fetch_add(1, Ordering::SeqCst) == 1 {
            let mut stdout = std::io::stdout();
            writeln!(stdout, "STORING")
                .and_then(|()| stdout.flush())
                .expect("stdout");
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.inner
            .compare_and_swap_account(expected_revision, account, events)
            .await
    }
    async fn delete_account(&self, id: &AccountId, events: &[Event]) -> Result<bool> {
        self.inner.delete_account(id, events).await
    }
    async fn claim_events(&self, now: OffsetDateTime, until: OffsetDateTime, limit: usize) -> Result<Vec<Event>> {
        self.inner.claim_events(now, until, limit).await
    }
    async fn complete_event(&self, id: &EventId) -> Result<bool> {
        self.inner.complete_event(id).await
    }
    async fn outbox_backlog(&self) -> Result<OutboxBacklog> {
        self.inner.outbox_backlog().await
    }
    async fn insert_pending_authorization(&self, pending: &PendingAuthorization) -> Result<()> {
        self.inner.insert_pending_authorization(pending).await
    }
    async fn take_pending_authorization(&self, state: &str) -> Result<Option<PendingAuthorization>> {
        self.inner.take_pending_authorization(state).await
    }
    async fn delete_expired_pending_authorizations(&self, now: OffsetDateTime) -> Result<usize> {
        self.inner.delete_expired_pending_authorizations(now).await
    }
}

/// In the child: refresh, stalling right before the tokens are stored.
async fn refresh_until_killed(dir: &str, key: &str, token_url: &str) {
    let storage = StallsBeforeStoringTokens {
        inner: SledStorage::open(dir).expect("open sled"),
        swaps: AtomicUsize::new(0),
    };
    let store = AccountStore::new(Arc::new(storage), Cipher::new(&EncryptionKey::parse(key).expect("key")));
    let hub = Integrations::new(definition(token_url, token_url), store).expect("integrations");
    let _ = hub.refresh(&acct()).await;
    panic!("the refresh should have stalled before storing");
}

fn refresh_token(store_dir: &Path, key: &EncryptionKey) -> (Option<String>, AccountStatus) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = AccountStore::new(Arc::new(SledStorage::open(store_dir).expect("open")), Cipher::new(key));
        let account = store.get(&acct()).await.expect("account");
        (
            account
                .credentials()
                .get("refresh_token")
                .map(|t| t.expose_secret().to_owned()),
            account.status(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_token_response_and_store_write_never_leaves_a_spent_token_in_use() {
    if let Ok(settings) = std::env::var(CHILD_ENV) {
        let mut parts = settings.splitn(3, ' ');
        let (dir, key, token_url) = (parts.next(), parts.next(), parts.next());
        return refresh_until_killed(dir.expect("dir"), key.expect("key"), token_url.expect("url")).await;
    }
    let server = TestServer::start(Config::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = EncryptionKey::generate();

    // Connect the account, then close the database for the child.
    {
        let store = AccountStore::new(
            Arc::new(SledStorage::open(dir.path()).expect("open")),
            Cipher::new(&key),
        );
        let definitions = definition(&server.url("/token"), &server.url("/authorize"));
        store
            .create(
                definitions.get("provider").expect("provider"),
                NewAccount {
                    id: acct(),
                    parameters: Secrets::new(),
                    credentials: Secrets::new(),
                },
            )
            .await
            .expect("create");
        let hub = Integrations::new(definitions, store).expect("integrations");
        let redirect = RedirectUri::from_public_base_url("http://127.0.0.1:9").expect("redirect");
        let start = hub.start_authorization(&acct(), &redirect).await.expect("start");
        let location = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(start.url)
            .send()
            .await
            .expect("authorize")
            .headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let query = location.split_once('?').map(|(_, query)| query).unwrap_or_default();
        hub.complete_authorization(&Callback::from_query(query))
            .await
            .expect("connected");
    }
    let (original, _) = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        let key = key.clone();
        move || refresh_token(&dir, &key)
    })
    .await
    .expect("read");
    let original = original.expect("a refresh token");

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_kill_between_token_response_and_store_write_never_leaves_a_spent_token_in_use",
            "--nocapture",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{} {} {}",
                dir.path().display(),
                key.to_base64().as_str(),
                server.url("/token")
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("stdout");
    let stalled = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .any(|line| line.is_ok_and(|l| l.contains("STORING")))
    })
    .await
    .expect("read child");
    assert!(stalled, "the child never reached the store write");
    child.kill().expect("kill");
    child.wait().expect("reap");

    // The provider answered and rotated: the stored refresh token is spent.
    assert_eq!(server.token_calls("refresh_token"), 1);
    assert!(server.is_spent(&original));

    // Whoever uses the account next finds out, once the dead holder's lease
    // has expired, and the account says it must be connected again instead
    // of keeping a token that can never work.
    let store = AccountStore::new(
        Arc::new(SledStorage::open(dir.path()).expect("reopen")),
        Cipher::new(&key),
    );
    let hub =
        Integrations::new(definition(&server.url("/token"), &server.url("/authorize")), store).expect("integrations");
    let error = hub.refresh(&acct()).await.expect_err("the spent token is refused");
    assert!(error.to_string().contains("invalid_grant"), "{error}");
    let account = hub.store().get(&acct()).await.expect("account");
    assert_eq!(account.status(), AccountStatus::NeedsReauth);
    assert!(
        account.credentials().get("refresh_token").is_none(),
        "the spent refresh token is gone"
    );
    assert!(account.credentials().get("refresh_lease").is_none());
}
