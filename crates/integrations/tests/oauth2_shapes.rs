//! OAuth 2.0 providers off the standard's beaten path: a JSON token
//! request body, a separate refresh endpoint, scopes joined with commas.

use std::sync::Arc;

use integrations::auth::oauth2::{Callback, RedirectUri};
use integrations::definition::Format;
use integrations::secrecy::ExposeSecret;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, Integrations, NewAccount};
use url::Url;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn definition(server: &MockServer, extra: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "shaped"
        name = "Shaped"
        base_url = "{base}/api"
        [integration.auth]
        type = "oauth2"
        grant_type = "authorization_code"
        authorization_endpoint = "{base}/authorize"
        access_token_endpoint = "{base}/token"
        access_token_verb = "POST"
        client_id = "shaped-client"
        client_secret = "shaped-secret"
        pkce = false
        token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
        {extra}
        "#,
        base = server.uri(),
    )
}

async fn hub(definition: &str) -> Integrations {
    integrations::register_methods();
    let definitions = Definitions::from_str(definition, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    store
        .create(
            definitions.get("shaped").expect("shaped"),
            NewAccount::new(AccountId::new("acct").expect("id")),
        )
        .await
        .expect("create");
    Integrations::new(definitions, store).expect("integrations")
}

fn redirect() -> RedirectUri {
    RedirectUri::from_public_base_url("http://127.0.0.1:9").expect("redirect")
}

/// A Notion-like provider: client authentication by Basic, a JSON body, and
/// Figma-like refreshes at their own URL; scopes joined with commas.
#[tokio::test]
async fn a_json_token_body_a_refresh_endpoint_and_comma_scopes() {
    let server = MockServer::start().await;
    let basic = "Basic c2hhcGVkLWNsaWVudDpzaGFwZWQtc2VjcmV0";
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("content-type", "application/json"))
        .and(header("authorization", basic))
        .and(body_partial_json(serde_json::json!({
            "grant_type": "authorization_code",
            "code": "the-code",
            "redirect_uri": redirect().as_str(),
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "first-access",
            "refresh_token": "first-refresh",
            "expires_in": 3600,
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/refresh"))
        .and(header("content-type", "application/json"))
        .and(body_partial_json(serde_json::json!({
            "grant_type": "refresh_token",
            "refresh_token": "first-refresh",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "second-access",
            "refresh_token": "second-refresh",
            "expires_in": 3600,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let hub = hub(&definition(
        &server,
        &format!(
            r#"token_request_format = "json"
            refresh_token_endpoint = "{}/refresh"
            scope = ["files:read", "file_comments:write"]
            scope_separator = ",""#,
            server.uri()
        ),
    ))
    .await;
    let id = AccountId::new("acct").expect("id");

    let start = hub.start_authorization(&id, &redirect()).await.expect("start");
    let scope = start
        .url
        .query_pairs()
        .find_map(|(name, value)| (name == "scope").then(|| value.into_owned()));
    assert_eq!(scope.as_deref(), Some("files:read,file_comments:write"));
    let state = start
        .url
        .query_pairs()
        .find_map(|(name, value)| (name == "state").then(|| value.into_owned()))
        .expect("state");
    let mut callback = Url::parse("http://127.0.0.1:9/").expect("url");
    callback
        .query_pairs_mut()
        .append_pair("state", &state)
        .append_pair("code", "the-code");
    let connected = hub
        .complete_authorization(&Callback::from_query(callback.query().unwrap_or_default()))
        .await
        .expect("complete");
    let token = |account: &integrations::ConnectedAccount, name: &str| {
        account
            .credentials()
            .get(name)
            .map(|value| value.expose_secret().to_owned())
    };
    assert_eq!(token(&connected, "access_token").as_deref(), Some("first-access"));

    let refreshed = hub.refresh(&id).await.expect("refresh");
    assert_eq!(token(&refreshed, "access_token").as_deref(), Some("second-access"));
    assert_eq!(token(&refreshed, "refresh_token").as_deref(), Some("second-refresh"));
}

#[test]
fn misplaced_shapes_are_refused_with_the_field_named() {
    integrations::register_methods();
    let server_uri = "https://shaped.example";
    let base = |extra: &str| {
        format!(
            r#"
            [[integration]]
            key = "shaped"
            name = "Shaped"
            [integration.auth]
            type = "oauth2"
            grant_type = "client_credentials"
            access_token_endpoint = "{server_uri}/token"
            client_id = "id"
            client_secret = "secret"
            token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
            {extra}
            "#
        )
    };
    for (extra, field) in [
        (
            "access_token_verb = \"GET\"\nscope = \"a\"\ntoken_request_format = \"json\"",
            "auth.token_request_format",
        ),
        (
            "access_token_verb = \"POST\"\nscope = \"a b\"\nscope_separator = \",\"",
            "auth.scope_separator",
        ),
        (
            "access_token_verb = \"POST\"\nscope = [\"a\"]\ntoken_request_format = \"xml\"",
            "token_request_format",
        ),
    ] {
        let errors = Definitions::from_str(&base(extra), Format::Toml)
            .expect_err(extra)
            .to_string();
        assert!(errors.contains(field), "{extra}: {errors}");
    }
}
