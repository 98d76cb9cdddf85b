//! The account store over both backends: secrets sealed at rest,
//! compare-and-swap on credentials, clear errors.

use std::sync::Arc;

use integrations::definition::Format;
use integrations::secrecy::{ExposeSecret, SecretString};
use integrations::storage::memory::MemoryStorage;
use integrations::storage::sled::SledStorage;
use integrations::{
    AccountId, AccountStatus, AccountStore, Cipher, Definitions, EncryptionKey, ErrorKind, NewAccount, Secrets,
    Storage, Update,
};

const DEFINITIONS: &str = r#"
    [[integration]]
    key = "crm"
    name = "CRM"
    parameters = [{ name = "subdomain" }, { name = "client_secret", secret = true }]
    [integration.auth]
    type = "oauth2"
    grant_type = "authorization_code"
    authorization_endpoint = "https://{subdomain}.crm.example/authorize"
    access_token_endpoint = "https://{subdomain}.crm.example/token"
    access_token_verb = "POST"
    scope = "read"
    client_id = "id"
    client_secret = "{client_secret}"
    token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
"#;

fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    pairs
        .iter()
        .map(|(name, value)| (*name, SecretString::from((*value).to_owned())))
        .collect()
}

fn backends() -> Vec<Arc<dyn Storage>> {
    vec![
        Arc::new(MemoryStorage::new()),
        Arc::new(SledStorage::temporary().expect("temporary sled")),
    ]
}

async fn create(store: &AccountStore, id: &str) -> integrations::ConnectedAccount {
    integrations::register_methods();
    let definitions = Definitions::from_str(DEFINITIONS, Format::Toml).expect("valid");
    store
        .create(
            definitions.get("crm").expect("crm"),
            NewAccount {
                id: AccountId::new(id).expect("id"),
                parameters: secrets(&[("subdomain", "eu1"), ("client_secret", "client-s3cret")]),
                credentials: secrets(&[("refresh_token", "refresh-s3cret")]),
            },
        )
        .await
        .expect("create")
}

#[tokio::test]
async fn secrets_are_sealed_before_the_backend_sees_them() {
    for storage in backends() {
        let store = AccountStore::new(Arc::clone(&storage), Cipher::new(&EncryptionKey::generate()));
        let account = create(&store, "acct1").await;
        let stored = storage.account(account.id()).await.expect("read").expect("present");
        let raw = serde_json::to_string(&stored).expect("json");
        assert!(!raw.contains("s3cret"), "{storage:?} saw a plaintext secret: {raw}");
        assert!(raw.contains("eu1"), "plain parameters are stored as they are");

        let read = store.get(account.id()).await.expect("get");
        let refresh = read.credentials().get("refresh_token").expect("refresh token");
        assert_eq!(refresh.expose_secret(), "refresh-s3cret");
        assert_eq!(
            read.secret_parameters()
                .get("client_secret")
                .map(|s| s.expose_secret().to_owned()),
            Some("client-s3cret".to_owned())
        );
        assert_eq!(read.status(), AccountStatus::Connected);
        assert!(!format!("{read:?} {stored:?}").contains("s3cret"));
    }
}

#[tokio::test]
async fn a_stale_update_never_overwrites_a_newer_token() {
    for storage in backends() {
        let store = AccountStore::new(storage, Cipher::new(&EncryptionKey::generate()));
        let original = create(&store, "acct1").await;

        // Two refreshes start from the same revision; the second must lose.
        let first = store
            .update_credentials(
                &original,
                secrets(&[("refresh_token", "rotated-1")]),
                AccountStatus::Connected,
                None,
            )
            .await
            .expect("first update");
        let Update::Updated(updated) = first else {
            panic!("the first update must win")
        };
        assert_eq!(updated.revision(), 2);
        let second = store
            .update_credentials(
                &original,
                secrets(&[("refresh_token", "rotated-2")]),
                AccountStatus::Connected,
                None,
            )
            .await
            .expect("second update");
        let Update::Conflict(current) = second else {
            panic!("the stale update must conflict")
        };
        assert_eq!(
            current
                .credentials()
                .get("refresh_token")
                .map(|s| s.expose_secret().to_owned()),
            Some("rotated-1".to_owned()),
            "the conflict must hand back the newer token"
        );
        let stored = store.get(original.id()).await.expect("get");
        assert_eq!(
            stored
                .credentials()
                .get("refresh_token")
                .map(|s| s.expose_secret().to_owned()),
            Some("rotated-1".to_owned())
        );

        let marked = store
            .update_credentials(
                &stored,
                Secrets::new(),
                AccountStatus::NeedsReauth,
                Some("invalid_grant".to_owned()),
            )
            .await
            .expect("mark");
        assert!(matches!(marked, Update::Updated(ref a) if a.status() == AccountStatus::NeedsReauth));
        assert_eq!(
            store.get(original.id()).await.expect("get").status_reason(),
            Some("invalid_grant")
        );
    }
}

#[tokio::test]
async fn missing_and_duplicate_accounts_are_clear_errors() {
    for storage in backends() {
        let store = AccountStore::new(storage, Cipher::new(&EncryptionKey::generate()));
        create(&store, "acct1").await;
        integrations::register_methods();
        let definitions = Definitions::from_str(DEFINITIONS, Format::Toml).expect("valid");
        let duplicate = store
            .create(
                definitions.get("crm").expect("crm"),
                NewAccount {
                    id: AccountId::new("acct1").expect("id"),
                    parameters: secrets(&[("subdomain", "eu1"), ("client_secret", "x")]),
                    credentials: Secrets::new(),
                },
            )
            .await
            .expect_err("duplicate");
        assert_eq!(duplicate.kind(), ErrorKind::AlreadyExists);
        assert_eq!(duplicate.to_string(), "account exists already (account `acct1`)");

        let missing = store
            .get(&AccountId::new("nobody").expect("id"))
            .await
            .expect_err("missing");
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert_eq!(missing.to_string(), "no such account (account `nobody`)");

        assert!(
            store
                .remove(&AccountId::new("acct1").expect("id"))
                .await
                .expect("remove")
        );
        assert!(
            !store
                .remove(&AccountId::new("acct1").expect("id"))
                .await
                .expect("remove again")
        );
        assert!(store.list().await.expect("list").accounts.is_empty());
    }
}

/// Someone who can write the store but lacks the key moves an account to
/// another integration, or points its host parameter elsewhere: its
/// secrets no longer open, so its credential cannot follow.
#[tokio::test]
async fn a_record_moved_to_another_integration_or_host_no_longer_opens() {
    for storage in backends() {
        let store = AccountStore::new(Arc::clone(&storage), Cipher::new(&EncryptionKey::generate()));
        let account = create(&store, "acct1").await;
        let stored = storage.account(account.id()).await.expect("read").expect("stored");
        for sealed in stored.credentials.values().chain(stored.secret_parameters.values()) {
            assert_eq!(sealed.as_bytes()[0], 2, "written in the current envelope version");
        }
        for tamper in ["integration", "host"] {
            let mut moved = stored.clone();
            match tamper {
                "integration" => moved.integration = "other".to_owned(),
                _ => {
                    moved
                        .parameters
                        .insert("subdomain".to_owned(), "attacker.example#".to_owned());
                }
            }
            let current = storage.account(account.id()).await.expect("read").expect("stored");
            storage
                .compare_and_swap_account(current.revision, &moved, &[])
                .await
                .expect("written behind the store's back");
            let error = store.get(account.id()).await.expect_err(tamper);
            assert_eq!(error.kind(), ErrorKind::Unreadable, "{tamper}: {error}");
            assert!(error.to_string().contains("cannot decrypt"), "{tamper}: {error}");
            assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
        }
    }
}
