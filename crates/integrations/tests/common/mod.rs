//! Helpers shared by the tests of requests through accounts.
#![allow(dead_code, reason = "each test file uses some of them")]

use std::sync::Arc;

use integrations::definition::Format;
use integrations::http::HttpClient;
use integrations::secrecy::SecretString;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, Integrations, NewAccount, Secrets};
use wiremock::{MockServer, Request};

pub(crate) fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    pairs
        .iter()
        .map(|(name, value)| (*name, SecretString::from((*value).to_owned())))
        .collect()
}

/// Integrations over `definitions` with one account `acct`.
pub(crate) async fn hub(definitions: &str, parameters: &[(&str, &str)], credentials: &[(&str, &str)]) -> Integrations {
    integrations::register_methods();
    let definitions = Definitions::from_str(definitions, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let key = definitions.iter().next().expect("one integration").key.clone();
    store
        .create(
            definitions.get(&key).expect("integration"),
            NewAccount {
                id: acct(),
                parameters: secrets(parameters),
                credentials: secrets(credentials),
            },
        )
        .await
        .expect("create account");
    Integrations::new(definitions, store).expect("integrations")
}

pub(crate) fn acct() -> AccountId {
    AccountId::new("acct").expect("valid id")
}

pub(crate) async fn only_request(server: &MockServer) -> Request {
    let mut requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 1, "expected exactly one request");
    requests.remove(0)
}

pub(crate) fn header_values(request: &Request, name: &str) -> Vec<String> {
    request
        .headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect()
}

/// Both transports `forward` may use: hyper, and reqwest (a caller's own
/// client, or an outbound proxy configured).
pub(crate) fn forwarding_clients() -> [(&'static str, HttpClient); 2] {
    let own = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client");
    [
        ("relay", HttpClient::new().expect("http client")),
        ("reqwest", HttpClient::from_reqwest(own)),
    ]
}

pub(crate) async fn hub_with(http: HttpClient, definitions: &str, credentials: &[(&str, &str)]) -> Integrations {
    let hub = hub(definitions, &[], credentials).await;
    Integrations::with_http_client(hub.definitions().clone(), hub.store().clone(), http)
}

pub(crate) fn retrying_definition(uri: &str, policy: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{uri}"
        timeout_seconds = 0.5
        retry = {{ {policy} }}
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
        "#
    )
}

pub(crate) async fn hits(server: &MockServer) -> usize {
    server.received_requests().await.expect("recording").len()
}

/// An API Token integration `crm` at `base_url`, its token in `X-Key`.
pub(crate) fn x_key_definition(base_url: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{base_url}"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
        "#
    )
}
