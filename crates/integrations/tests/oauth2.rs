//! OAuth 2.0 flows against an authorization server running on loopback.

use std::sync::Arc;
use std::time::Duration;

use integration_oauth2_test_server::{Config, TestServer};
use integrations::auth::oauth2::{Callback, RedirectUri};
use integrations::definition::Format;
use integrations::http::{Method, StatusCode};
use integrations::secrecy::{ExposeSecret, SecretString};
use integrations::storage::memory::MemoryStorage;
use integrations::time::OffsetDateTime;
use integrations::{
    AccountId, AccountStatus, AccountStore, Cipher, Definitions, EncryptionKey, ErrorKind, Integrations, NewAccount,
    Secrets,
};
use url::Url;

fn definition(server: &TestServer, grant: &str, extra: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "provider"
        name = "Provider"
        base_url = "{base}"
        parameters = [{{ name = "client_secret", secret = true }}]
        [integration.auth]
        type = "oauth2"
        grant_type = "{grant}"
        authorization_endpoint = "{authorize}"
        access_token_endpoint = "{token}"
        access_token_verb = "POST"
        revoke_token_endpoint = "{revoke}"
        scope = "profile email"
        client_id = "test-client"
        client_secret = "{{client_secret}}"
        token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
        {extra}
        "#,
        base = server.url("/api"),
        authorize = server.url("/authorize"),
        token = server.url("/token"),
        revoke = server.url("/revoke"),
    )
}

fn acct() -> AccountId {
    AccountId::new("acct").expect("id")
}

fn store() -> AccountStore {
    AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()))
}

async fn hub_with(definition: &str, store: AccountStore) -> Integrations {
    integrations::register_methods();
    let definitions = Definitions::from_str(definition, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
    if store.get(&acct()).await.is_err() {
        let mut parameters = Secrets::new();
        parameters.insert("client_secret", SecretString::from("test-secret".to_owned()));
        store
            .create(
                definitions.get("provider").expect("provider"),
                NewAccount {
                    id: acct(),
                    parameters,
                    credentials: Secrets::new(),
                },
            )
            .await
            .expect("create");
    }
    Integrations::new(definitions, store).expect("integrations")
}

fn redirect() -> RedirectUri {
    RedirectUri::from_public_base_url("http://127.0.0.1:9/gateway").expect("redirect")
}

/// Follows the authorization URL as a browser would, without following the
/// redirect back: returns the callback's query.
async fn authorize(url: &Url) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = client.get(url.clone()).send().await.expect("authorize");
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "the server redirects back");
    let location = response.headers()["location"].to_str().expect("location").to_owned();
    assert!(location.starts_with(redirect().as_str()), "{location}");
    Url::parse(&location)
        .expect("callback URL")
        .query()
        .unwrap_or_default()
        .to_owned()
}

async fn connect(hub: &Integrations) -> integrations::ConnectedAccount {
    let start = hub.start_authorization(&acct(), &redirect()).await.expect("start");
    let query = authorize(&start.url).await;
    hub.complete_authorization(&Callback::from_query(&query))
        .await
        .expect("complete")
}

async fn me(hub: &Integrations) -> StatusCode {
    let account = hub.client(&acct()).await.expect("account");
    account.request(Method::GET, "me").send().await.expect("sent").status()
}

fn credential(account: &integrations::ConnectedAccount, name: &str) -> Option<String> {
    account
        .credentials()
        .get(name)
        .map(|value| value.expose_secret().to_owned())
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    let server = TestServer::start(Config {
        require_pkce: true,
        ..Config::default()
    })
    .await;
    let hub = hub_with(
        &definition(
            &server,
            "authorization_code",
            r#"authorization_parameters = { prompt = "consent" }"#,
        ),
        store(),
    )
    .await;
    assert_eq!(
        hub.store().get(&acct()).await.expect("account").status(),
        AccountStatus::Pending
    );

    let start = hub.start_authorization(&acct(), &redirect()).await.expect("start");
    let query = authorize(&start.url).await;
    let sent = server.last_authorization().expect("authorization request");
    assert_eq!(sent["client_id"], "test-client");
    assert_eq!(
        sent["redirect_uri"],
        "http://127.0.0.1:9/gateway/internal/sessions/v1/auth/callback"
    );
    assert_eq!(sent["scope"], "profile email");
    assert_eq!(sent["code_challenge_method"], "S256");
    assert!(sent["state"].len() >= 20, "a random state");
    assert_eq!(sent["prompt"], "consent");

    let account = hub
        .complete_authorization(&Callback::from_query(&query))
        .await
        .expect("complete");
    assert_eq!(account.status(), AccountStatus::Connected);
    assert!(credential(&account, "refresh_token").is_some());
    assert_eq!(me(&hub).await, StatusCode::OK);

    // The state is single use.
    let replay = hub
        .complete_authorization(&Callback::from_query(&query))
        .await
        .expect_err("replayed");
    assert_eq!(replay.kind(), ErrorKind::Refused);
    assert!(replay.to_string().contains("unknown or already used state"), "{replay}");
    assert_eq!(server.token_calls("authorization_code"), 1);
}

#[tokio::test]
async fn bad_callbacks_are_refused() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub_with(&definition(&server, "authorization_code", "pkce = false"), store()).await;

    let unknown = hub
        .complete_authorization(&Callback::from_query("state=forged&code=x"))
        .await
        .expect_err("unknown state");
    assert_eq!(unknown.kind(), ErrorKind::Refused);

    // The user refuses at the provider.
    let start = hub.start_authorization(&acct(), &redirect()).await.expect("start");
    assert!(
        !start.url.as_str().contains("code_challenge"),
        "pkce = false sends no challenge"
    );
    let mut denied_url = start.url.clone();
    denied_url.query_pairs_mut().append_pair("deny", "1");
    let query = authorize(&denied_url).await;
    let denied = hub
        .complete_authorization(&Callback::from_query(&query))
        .await
        .expect_err("denied");
    assert_eq!(denied.kind(), ErrorKind::Provider);
    assert!(
        denied
            .to_string()
            .starts_with("the provider refused the authorization: access_denied"),
        "{denied}"
    );

    // An expired state.
    let start = hub.start_authorization(&acct(), &redirect()).await.expect("start");
    let query = authorize(&start.url).await;
    let callback = Callback::from_query(&query);
    let key: String = {
        use sha2::Digest;
        sha2::Sha256::digest(callback.state.as_deref().expect("state").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let storage = hub.store().storage();
    let mut pending = storage
        .take_pending_authorization(&key)
        .await
        .expect("take")
        .expect("pending");
    pending.expires_at = OffsetDateTime::now_utc() - Duration::from_secs(1);
    storage.insert_pending_authorization(&pending).await.expect("put back");
    let expired = hub.complete_authorization(&callback).await.expect_err("expired");
    assert!(expired.to_string().contains("expired"), "{expired}");
    assert_eq!(server.token_calls("authorization_code"), 0, "no code was exchanged");
}

#[tokio::test]
async fn client_credentials_are_fetched_cached_and_sent() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub_with(
        &definition(&server, "client_credentials", r#"client_authentication = "body""#),
        store(),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(me(&hub).await, StatusCode::OK);
    }
    assert_eq!(server.token_calls("client_credentials"), 1);
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_is_refused() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub_with(&definition(&server, "authorization_code", ""), store()).await;
    let connected = connect(&hub).await;
    let first = credential(&connected, "refresh_token").expect("refresh token");

    let refreshed = hub.refresh(&acct()).await.expect("refresh");
    let second = credential(&refreshed, "refresh_token").expect("rotated refresh token");
    assert_ne!(first, second, "the refresh token was rotated");
    assert!(server.is_spent(&first), "the provider refuses the old refresh token");
    assert_eq!(
        credential(&hub.store().get(&acct()).await.expect("stored"), "refresh_token"),
        Some(second.clone())
    );
    assert_eq!(me(&hub).await, StatusCode::OK);

    // Without rotation, the old refresh token is kept.
    server.configure(|config| config.rotate_refresh_tokens = false);
    let kept = hub.refresh(&acct()).await.expect("refresh");
    assert_eq!(credential(&kept, "refresh_token"), Some(second));
}

#[tokio::test]
async fn invalid_grant_marks_the_account_and_stops() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub_with(&definition(&server, "authorization_code", ""), store()).await;
    let connected = connect(&hub).await;
    // The provider revokes the grant behind our back.
    let refresh = credential(&connected, "refresh_token").expect("refresh token");
    reqwest::Client::new()
        .post(server.url("/revoke"))
        .basic_auth("test-client", Some("test-secret"))
        .form(&[("token", refresh.as_str())])
        .send()
        .await
        .expect("revoke");

    let error = hub.refresh(&acct()).await.expect_err("invalid_grant");
    assert_eq!(error.kind(), ErrorKind::Provider);
    let account = hub.store().get(&acct()).await.expect("account");
    assert_eq!(account.status(), AccountStatus::NeedsReauth);
    assert!(
        account
            .status_reason()
            .is_some_and(|reason| reason.contains("invalid_grant"))
    );
    assert!(
        credential(&account, "refresh_token").is_none(),
        "the refused refresh token is dropped"
    );

    let calls = server.token_calls("refresh_token");
    let again = hub.refresh(&acct()).await.expect_err("stopped");
    assert!(again.to_string().contains("needs to be connected again"), "{again}");
    assert_eq!(
        server.token_calls("refresh_token"),
        calls,
        "no further attempt reaches the provider"
    );
}

#[tokio::test]
async fn disconnect_and_removal_revoke_refresh_token_first() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub_with(&definition(&server, "authorization_code", ""), store()).await;
    let connected = connect(&hub).await;
    let refresh = credential(&connected, "refresh_token").expect("refresh token");
    let access = credential(&connected, "access_token").expect("access token");

    let revocation = hub.disconnect(&acct()).await.expect("disconnect");
    assert_eq!(revocation.revoked, ["refresh_token", "access_token"]);
    assert!(server.is_revoked(&refresh) && server.is_revoked(&access));
    let account = hub.store().get(&acct()).await.expect("account");
    assert_eq!(account.status(), AccountStatus::Pending);
    assert!(account.credentials().is_empty());

    // Removal revokes too, and a provider failure does not block it.
    connect(&hub).await;
    server.configure(|config| config.client_secret = "rotated-by-provider".to_owned());
    let removal = hub.remove_account(&acct()).await.expect("remove");
    assert!(removal.existed);
    assert_eq!(
        removal.revoke_failures.len(),
        2,
        "both revocations were refused: {:?}",
        removal.revoke_failures
    );
    assert!(
        hub.store().get(&acct()).await.is_err(),
        "the account is gone all the same"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_requests_on_an_expired_token_make_one_refresh() {
    let server = TestServer::start(Config {
        token_delay: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let hub = hub_with(&definition(&server, "authorization_code", ""), store()).await;
    connect(&hub).await;
    // Expire the stored access token.
    let account = hub.store().get(&acct()).await.expect("account");
    let mut credentials = account.credentials().clone();
    let past = (OffsetDateTime::now_utc() - Duration::from_secs(5))
        .format(&integrations::time::format_description::well_known::Rfc3339)
        .expect("time");
    credentials.insert("access_token_expires_at", SecretString::from(past));
    hub.store()
        .update_credentials(&account, credentials, account.status(), None)
        .await
        .expect("expire");
    hub.forget(&acct());

    let client = hub.client(&acct()).await.expect("account");
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request(Method::GET, "me").send().await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("sent").status(), StatusCode::OK);
    }
    assert_eq!(server.token_calls("refresh_token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_sharing_a_store_refresh_once() {
    let server = TestServer::start(Config {
        token_delay: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let shared = store();
    let first = hub_with(&definition(&server, "authorization_code", ""), shared.clone()).await;
    let second = hub_with(&definition(&server, "authorization_code", ""), shared.clone()).await;
    connect(&first).await;
    let before = first.store().get(&acct()).await.expect("account");

    // Both see a token rejected with 401 at the same moment.
    server.configure(|config| config.access_token_lifetime = Some(Duration::from_secs(3600)));
    let (a, b) = tokio::join!(
        async {
            let client = first.client(&acct()).await.expect("account");
            let credential = client.authenticator().credential().await.expect("credential");
            client.authenticator().rejected(&credential).await.expect("rejected");
            client.authenticator().credential().await.expect("renewed")
        },
        async {
            let client = second.client(&acct()).await.expect("account");
            let credential = client.authenticator().credential().await.expect("credential");
            client.authenticator().rejected(&credential).await.expect("rejected");
            client.authenticator().credential().await.expect("renewed")
        },
    );
    assert_eq!(server.token_calls("refresh_token"), 1, "the provider saw one refresh");
    assert_eq!(a.expose_token(), b.expose_token(), "both use the one new token");
    let after = shared.get(&acct()).await.expect("account");
    assert_ne!(credential(&after, "access_token"), credential(&before, "access_token"));
    assert_eq!(credential(&after, "access_token").as_deref(), a.expose_token());
    assert!(credential(&after, "refresh_lease").is_none(), "the lease was released");
    assert_eq!(me(&first).await, StatusCode::OK);
    assert_eq!(me(&second).await, StatusCode::OK);
}

#[tokio::test]
async fn off_standard_providers_get_verb_auth_and_paths_from_the_definition() {
    let server = TestServer::start(Config {
        nest_tokens: true,
        expires_in_as_string: true,
        issue_refresh_tokens: false,
        ..Config::default()
    })
    .await;
    let extra = r#"client_authentication = "body"
        token_response = { token = "/data/access_token", refresh_token = "/data/refresh_token", expires_in = "/data/expires_in" }"#;
    let definition = definition(&server, "authorization_code", extra)
        .replace(r#"access_token_verb = "POST""#, r#"access_token_verb = "GET""#);
    let hub = hub_with(&definition, store()).await;
    let account = connect(&hub).await;
    assert!(credential(&account, "access_token").is_some());
    assert!(
        credential(&account, "access_token_expires_at").is_some(),
        "expires_in as a string was read"
    );
    assert!(credential(&account, "refresh_token").is_none());
    assert_eq!(account.status_reason(), Some("the provider sent no refresh token"));
    assert_eq!(me(&hub).await, StatusCode::OK);
}

#[tokio::test]
async fn a_missing_expires_in_uses_the_default_lifetime() {
    let server = TestServer::start(Config {
        access_token_lifetime: None,
        ..Config::default()
    })
    .await;
    let hub = hub_with(
        &definition(
            &server,
            "authorization_code",
            "token_response = { lifetime_seconds = 600 }",
        ),
        store(),
    )
    .await;
    let account = connect(&hub).await;
    let expires = credential(&account, "access_token_expires_at").expect("default lifetime applied");
    let expires =
        OffsetDateTime::parse(&expires, &integrations::time::format_description::well_known::Rfc3339).expect("time");
    let lifetime = expires - OffsetDateTime::now_utc();
    assert!(
        lifetime > integrations::time::Duration::seconds(590) && lifetime <= integrations::time::Duration::seconds(600)
    );
}

#[tokio::test]
async fn secrets_never_show_in_debug() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub_with(&definition(&server, "authorization_code", ""), store()).await;
    let account = connect(&hub).await;
    let client = hub.client(&acct()).await.expect("account");
    let shown = format!("{account:?} {client:?} {hub:?}");
    for secret in ["test-secret", &credential(&account, "access_token").expect("token")] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[tokio::test]
async fn a_401_on_a_request_refreshes_once_and_retries() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub_with(&definition(&server, "authorization_code", ""), store()).await;
    let connected = connect(&hub).await;
    assert_eq!(me(&hub).await, StatusCode::OK);
    // The provider stops accepting the access token before it expires.
    let access = credential(&connected, "access_token").expect("access token");
    reqwest::Client::new()
        .post(server.url("/revoke"))
        .basic_auth("test-client", Some("test-secret"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(me(&hub).await, StatusCode::OK, "refreshed after the 401 and retried");
    assert_eq!(server.token_calls("refresh_token"), 1);
    assert_eq!(me(&hub).await, StatusCode::OK);
    assert_eq!(server.token_calls("refresh_token"), 1, "the new token is reused");
}

#[tokio::test]
async fn client_credentials_are_fetched_again_ahead_of_expiry() {
    let server = TestServer::start(Config {
        access_token_lifetime: Some(Duration::from_secs(2)),
        ..Config::default()
    })
    .await;
    let hub = hub_with(&definition(&server, "client_credentials", ""), store()).await;
    assert_eq!(me(&hub).await, StatusCode::OK);
    assert_eq!(me(&hub).await, StatusCode::OK);
    assert_eq!(server.token_calls("client_credentials"), 1);
    // Renewal is due halfway through a lifetime shorter than the margin.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(me(&hub).await, StatusCode::OK);
    assert_eq!(
        server.token_calls("client_credentials"),
        2,
        "renewed before the token expired"
    );
}

#[tokio::test]
async fn transient_refresh_failures_back_off() {
    let server = TestServer::start(Config::default()).await;
    let hub = hub_with(&definition(&server, "authorization_code", ""), store()).await;
    connect(&hub).await;
    server.configure(|config| config.fail_token_requests = Some(503));
    let client = hub.client(&acct()).await.expect("account");
    let credential = client.authenticator().credential().await.expect("credential");
    client.authenticator().rejected(&credential).await.expect("rejected");

    let first = client
        .authenticator()
        .credential()
        .await
        .expect_err("the provider is down");
    assert!(first.is_temporary(), "{first}");
    assert!(first.to_string().contains("503"), "{first}");
    let second = client.authenticator().credential().await.expect_err("backing off");
    assert!(second.to_string().contains("waiting before the next one"), "{second}");
    assert_eq!(
        server.token_calls("refresh_token"),
        1,
        "the back-off kept the provider from a second call"
    );
    let account = hub.store().get(&acct()).await.expect("account");
    assert_eq!(
        account.status(),
        AccountStatus::Connected,
        "a transient failure is not invalid_grant"
    );
    assert!(
        account.credentials().get("refresh_lease").is_none(),
        "the lease was released"
    );
}

/// An authorization started for an account, which is then removed and
/// created again under another integration: the callback is refused, and
/// the code never reaches the new integration's token endpoint.
#[tokio::test]
async fn a_callback_for_an_account_recreated_under_another_integration_is_refused() {
    let first = TestServer::start(Config::default()).await;
    let second = TestServer::start(Config::default()).await;
    let definitions = format!(
        "{}\n{}",
        definition(&first, "authorization_code", ""),
        definition(&second, "authorization_code", "").replace("key = \"provider\"", "key = \"second\""),
    );
    let hub = hub_with(&definitions, store()).await;
    let start = hub.start_authorization(&acct(), &redirect()).await.expect("start");
    let query = authorize(&start.url).await;

    hub.remove_account(&acct()).await.expect("remove");
    let mut parameters = Secrets::new();
    parameters.insert("client_secret", SecretString::from("test-secret".to_owned()));
    hub.create_account(
        hub.integration("second").expect("second"),
        NewAccount {
            id: acct(),
            parameters,
            credentials: Secrets::new(),
        },
    )
    .await
    .expect("re-create");

    let error = hub
        .complete_authorization(&Callback::from_query(&query))
        .await
        .expect_err("the account changed integration");
    assert_eq!(error.kind(), ErrorKind::Refused, "{error}");
    assert!(error.to_string().contains("another integration"), "{error}");
    assert_eq!(
        second.token_calls("authorization_code"),
        0,
        "the code must not reach the second provider"
    );
}
