//! Acknowledged writes survive a kill, and an unreadable record spoils only
//! itself.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_core::definition::Format;
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, ErrorKind, NewAccount, Secrets};
use integration_storage_sled::SledStorage;

mod common;
use common::open_raw;

const CHILD_DIR_ENV: &str = "INTEGRATIONS_TEST_SLED_CHILD_DIR";
const CHILD_KEY_ENV: &str = "INTEGRATIONS_TEST_SLED_CHILD_KEY";
const ACKS_BEFORE_KILL: usize = 40;

fn definitions() -> Definitions {
    integration_core::method::register::<integration_auth_basic::Basic>();
    Definitions::from_str(
        r#"
        [[integration]]
        key = "acme"
        name = "Acme"
        auth = { type = "basic" }
        "#,
        Format::Toml,
    )
    .expect("valid definition")
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

fn new_account(id: &str) -> NewAccount {
    NewAccount {
        id: AccountId::new(id).expect("valid id"),
        parameters: Secrets::new(),
        credentials: [
            ("username", secret(id)),
            ("password", secret(&format!("password-of-{id}"))),
        ]
        .into_iter()
        .collect(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs in the child process: writes accounts and prints `ack <id>` after
/// each write returns, until it is killed.
fn write_until_killed(dir: &str, key: &str) {
    let cipher = Cipher::new(&EncryptionKey::parse(key).expect("key from parent"));
    let store = AccountStore::new(Arc::new(SledStorage::open(dir).expect("open sled")), cipher);
    let definitions = definitions();
    let integration = definitions.get("acme").expect("acme");
    runtime().block_on(async {
        let mut stdout = std::io::stdout();
        for n in 0..100_000 {
            let id = format!("account-{n:06}");
            let account = store.create(integration, new_account(&id)).await.expect("create");
            // Every other account is also updated, so swaps are covered too.
            if n % 2 == 1 {
                let mut credentials = Secrets::new();
                credentials.insert("username", secret(&id));
                credentials.insert("password", secret(&format!("rotated-{id}")));
                store
                    .update_credentials(&account, credentials, account.status(), None)
                    .await
                    .expect("update");
            }
            writeln!(stdout, "ack {id}")
                .and_then(|()| stdout.flush())
                .expect("stdout");
        }
    });
}

#[test]
fn acknowledged_writes_survive_a_kill() {
    if let (Ok(dir), Ok(key)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_KEY_ENV)) {
        return write_until_killed(&dir, &key);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let key = EncryptionKey::generate();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "acknowledged_writes_survive_a_kill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .env(CHILD_KEY_ENV, key.to_base64().as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child writer");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        // libtest may print its own text before ours on the same line.
        if let Some((_, id)) = line.split_once("ack ") {
            acknowledged.push(id.to_owned());
        }
        if acknowledged.len() >= ACKS_BEFORE_KILL || Instant::now() > deadline {
            break;
        }
    }
    // SIGKILL: no destructor, no flush on the way out.
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    assert_eq!(
        acknowledged.len(),
        ACKS_BEFORE_KILL,
        "the child wrote too slowly or died"
    );

    let store = AccountStore::new(
        Arc::new(SledStorage::open(dir.path()).expect("reopen sled after the kill")),
        Cipher::new(&key),
    );
    runtime().block_on(async {
        for id in &acknowledged {
            let n: u32 = id.trim_start_matches("account-").parse().expect("numbered id");
            let account = store
                .get(&AccountId::new(id.as_str()).expect("valid id"))
                .await
                .unwrap_or_else(|error| panic!("acknowledged account {id} lost or unreadable: {error}"));
            let password = account
                .credentials()
                .get("password")
                .expect("password")
                .expose_secret()
                .to_owned();
            let expected = if n % 2 == 1 {
                format!("rotated-{id}")
            } else {
                format!("password-of-{id}")
            };
            assert_eq!(password, expected, "account {id} has the wrong password after the kill");
        }
        let list = store.list().await.expect("list after the kill");
        assert!(
            list.unreadable.is_empty(),
            "unreadable records after the kill: {:?}",
            list.unreadable
        );
    });
}

#[test]
fn an_unreadable_record_spoils_only_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = EncryptionKey::generate();
    let definitions = definitions();
    let integration = definitions.get("acme").expect("acme");
    runtime().block_on(async {
        let store = AccountStore::new(
            Arc::new(SledStorage::open(dir.path()).expect("open")),
            Cipher::new(&key),
        );
        for id in ["garbled", "healthy", "tampered"] {
            store.create(integration, new_account(id)).await.expect("create");
        }
    });

    // Damage two records behind the backend's back.
    {
        let db = open_raw(dir.path());
        let tree = db.open_tree("accounts.v1").expect("tree");
        tree.insert("garbled", b"{not json".as_slice()).expect("write garbage");
        let record = tree.get("tampered").expect("read").expect("present");
        let mut json: serde_json::Value = serde_json::from_slice(&record).expect("json");
        // Move healthy's sealed password onto tampered: the associated data
        // must refuse it.
        let healthy: serde_json::Value =
            serde_json::from_slice(&tree.get("healthy").expect("read").expect("present")).expect("json");
        json["credentials"]["password"] = healthy["credentials"]["password"].clone();
        tree.insert("tampered", serde_json::to_vec(&json).expect("json"))
            .expect("write");
        db.flush().expect("flush");
    }

    let store = AccountStore::new(
        Arc::new(SledStorage::open(dir.path()).expect("reopen")),
        Cipher::new(&key),
    );
    runtime().block_on(async {
        let list = store.list().await.expect("list");
        let readable: Vec<&str> = list.accounts.iter().map(|account| account.id().as_str()).collect();
        assert_eq!(readable, ["healthy"]);
        let mut unreadable: Vec<_> = list.unreadable.iter().collect();
        unreadable.sort_by_key(|error| error.context("account").map(str::to_owned));
        let messages: Vec<String> = unreadable.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2);
        assert!(messages[0].contains("account `garbled`"), "{}", messages[0]);
        assert!(messages[0].contains("cannot parse"), "{}", messages[0]);
        assert!(messages[1].contains("account `tampered`"), "{}", messages[1]);
        assert!(
            messages[1].contains("cannot decrypt credential `password`"),
            "{}",
            messages[1]
        );
        for error in &list.unreadable {
            assert_eq!(error.kind(), ErrorKind::Unreadable);
            assert!(
                !format!("{error:?}").contains("password-of"),
                "an error must never show a secret"
            );
        }

        // A different key is told apart from tampering.
        let other = AccountStore::new(Arc::clone(store.storage()), Cipher::new(&EncryptionKey::generate()));
        let error = other
            .get(&AccountId::new("healthy").expect("id"))
            .await
            .expect_err("wrong key");
        assert!(
            error.to_string().contains("sealed with another encryption key"),
            "{error}"
        );
    });
}
