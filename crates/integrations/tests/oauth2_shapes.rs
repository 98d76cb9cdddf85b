//! OAuth 2.0 providers off the standard's beaten path: a JSON token
//! request body, a separate refresh endpoint, scopes joined with commas.

use std::sync::Arc;

use integrations::auth::oauth2::{Callback, RedirectUri};
use integrations::definition::Format;
use integrations::secrecy::ExposeSecret;
use integrations::storage::memory::MemoryStorage;
use integrations::{
    AccountId, AccountStore, Cipher, ConnectedAccount, Definitions, EncryptionKey, Integrations, NewAccount,
};
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

/// Starts the authorization of `id` and completes it with a callback of
/// `code=c`, the state and `extra` query parameters; the authorization URL
/// and the outcome.
async fn connect(hub: &Integrations, id: &AccountId, extra: &str) -> (Url, integrations::Result<ConnectedAccount>) {
    let start = hub.start_authorization(id, &redirect()).await.expect("start");
    let state = start
        .url
        .query_pairs()
        .find_map(|(name, value)| (name == "state").then(|| value.into_owned()))
        .expect("state");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("state", &state).append_pair("code", "c");
    let query = query.finish() + extra;
    let outcome = hub.complete_authorization(&Callback::from_query(&query)).await;
    (start.url, outcome)
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
            "code": "c",
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

    let (url, connected) = connect(&hub, &id, "").await;
    let scope = url
        .query_pairs()
        .find_map(|(name, value)| (name == "scope").then(|| value.into_owned()));
    assert_eq!(scope.as_deref(), Some("files:read,file_comments:write"));
    let connected = connected.expect("complete");
    let token = |account: &ConnectedAccount, name: &str| {
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
        (
            "access_token_verb = \"POST\"\nscope = \"a\"\nrevoke_token_request = { token_placement = \"bearer\" }",
            "auth.revoke_token_request: there is no revoke_token_endpoint",
        ),
        (
            "access_token_verb = \"POST\"\nscope = \"a\"\nrevoke_token_endpoint = \"https://shaped.example/revoke\"\n\
             revoke_token_request = { token_placement = \"bearer\", tokens = [\"refresh_token\"] }",
            "auth.revoke_token_request.tokens: a refresh token is no bearer credential",
        ),
        (
            "access_token_verb = \"POST\"\nscope = \"a\"\nrevoke_token_endpoint = \"https://shaped.example/revoke\"\n\
             revoke_token_request = { token_placement = \"bearer\", client_authentication = \"basic\" }",
            "auth.revoke_token_request.client_authentication",
        ),
        (
            "access_token_verb = \"POST\"\nscope = \"a\"\nrevoke_token_endpoint = \"https://shaped.example/revoke\"\n\
             revoke_token_request = { verb = \"PATCH\" }",
            "verb",
        ),
        (
            "access_token_verb = \"POST\"\nscope = \"a\"\nrevoke_token_endpoint = \"https://shaped.example/revoke\"\n\
             revoke_token_request = { headers = { Authorization = \"Basic x\" } }",
            "auth.revoke_token_request.headers: `Authorization` is not a header the request may set",
        ),
        (
            "access_token_verb = \"POST\"\nscope = \"a\"\nrevoke_token_endpoint = \"https://shaped.example/revoke\"\n\
             revoke_token_request = { token_placement = \"query\", client_authentication = \"body\" }",
            "auth.revoke_token_request.client_authentication: with `query` the client secret would go in the URL",
        ),
        (
            "access_token_verb = \"POST\"\nscope = \"a\"\nrevoke_token_endpoint = \"https://shaped.example/revoke\"\n\
             revoke_token_request = { verb = \"GET\", token_placement = \"json\" }",
            "auth.revoke_token_request.token_placement: a GET has no body",
        ),
    ] {
        let errors = Definitions::from_str(&base(extra), Format::Toml)
            .expect_err(extra)
            .to_string();
        assert!(errors.contains(field), "{extra}: {errors}");
    }
}

/// The parameters a provider gives while an account connects: from the
/// token response (Salesforce's instance URL, an origin), the callback
/// (QuickBooks' realmId) and a lookup made with the new token (Atlassian's
/// cloud id); refused when an account is made, used in templates once
/// given, updated by refreshes.
#[tokio::test]
async fn values_the_provider_gives_are_saved_and_used() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_partial_json(
            serde_json::json!({ "grant_type": "authorization_code" }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "first-access",
            "refresh_token": "first-refresh",
            "instance_url": server.uri(),
            "org": { "id": "org-1" },
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_partial_json(serde_json::json!({ "grant_type": "refresh_token" })))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "second-access",
            "org": { "id": "org-2" },
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lookup"))
        .and(header("authorization", "Bearer first-access"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([{ "id": "cloud-7" }])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/services/data/realm/4620816365/me"))
        .and(header("x-cloud", "cloud-7"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let definition = definition(
        &server,
        &format!(
            r#"scope = "api"
            client_authentication = "body"
            token_request_format = "json"
            token_response_parameters = {{ instance_url = "/instance_url", org_id = "/org/id" }}
            callback_parameters = ["realmId"]
            connection_lookup = {{ url = "{}/lookup", parameters = {{ cloud_id = "/0/id" }} }}"#,
            server.uri()
        ),
    )
    .replace(
        &format!(r#"base_url = "{}/api""#, server.uri()),
        "base_url = \"{instance_url}/services/data/realm/{realmId}\"\nallow_ip_hosts = true\nallow_insecure_http = true\n\
         request_parameters = [{ type = \"header\", name = \"X-Cloud\", value = \"{cloud_id}\" }]",
    );
    integrations::register_methods();
    let definitions = Definitions::from_str(&definition, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let integration = definitions.get("shaped").expect("shaped").clone();
    let refused = store
        .create(
            &integration,
            NewAccount::new(AccountId::new("acct").expect("id")).parameter("instance_url", "https://evil.example"),
        )
        .await
        .expect_err("a provided parameter is not given")
        .to_string();
    assert!(
        refused.contains("parameter `instance_url` is not given: the provider gives it")
            && refused.contains("auth.token_response_parameters.instance_url")
            && !refused.contains("evil.example"),
        "{refused}"
    );
    store
        .create(&integration, NewAccount::new(AccountId::new("acct").expect("id")))
        .await
        .expect("a pending account needs none of them");
    let hub = Integrations::new(definitions, store).expect("integrations");
    let id = AccountId::new("acct").expect("id");

    let connected = connect(&hub, &id, "&realmId=4620816365&unrelated=x")
        .await
        .1
        .expect("complete");
    let parameters = connected.parameters();
    assert_eq!(parameters.get("instance_url"), Some(&server.uri()));
    assert_eq!(parameters.get("org_id").map(String::as_str), Some("org-1"));
    assert_eq!(parameters.get("realmId").map(String::as_str), Some("4620816365"));
    assert_eq!(parameters.get("cloud_id").map(String::as_str), Some("cloud-7"));
    assert!(
        !parameters.contains_key("unrelated"),
        "only declared callback values are kept"
    );

    let response = hub
        .client(&id)
        .await
        .expect("client")
        .request(integrations::http::Method::GET, "/me")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);

    let refreshed = hub.refresh(&id).await.expect("refresh");
    assert_eq!(refreshed.parameters().get("org_id").map(String::as_str), Some("org-2"));
    assert_eq!(
        refreshed.parameters().get("instance_url"),
        Some(&server.uri()),
        "a value the refresh leaves out is kept"
    );
}

/// A provider's value is checked as an account's own would be: no plain
/// http, no IP address, nothing the template cannot hold; the account is
/// left unconnected, the value never quoted.
#[tokio::test]
async fn a_provider_value_that_leads_astray_is_refused() {
    for (instance_url, refusal) in [
        ("http://insecure.example", "leads to plain http"),
        ("https://10.0.0.5", "makes the host an IP address"),
        ("https://169.254.169.254", "metadata"),
        ("https://me@evil.example", "not an origin"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "first-access",
                "instance_url": instance_url,
            })))
            .mount(&server)
            .await;
        let definition = definition(
            &server,
            r#"scope = "api"
            token_response_parameters = { instance_url = "/instance_url" }"#,
        )
        .replace(
            &format!(r#"base_url = "{}/api""#, server.uri()),
            r#"base_url = "{instance_url}/api""#,
        );
        let hub = hub(&definition).await;
        let id = AccountId::new("acct").expect("id");
        let error = connect(&hub, &id, "").await.1.expect_err(instance_url).to_string();
        assert!(
            error.contains("the provider's values are refused") && error.contains(refusal),
            "{instance_url}: {error}"
        );
        assert!(!error.contains(instance_url.trim_start_matches("https://")), "{error}");
        let account = hub.store().get(&id).await.expect("account");
        assert_eq!(account.status(), integrations::AccountStatus::Pending);
        assert!(account.parameters().get("instance_url").is_none());
    }
}

/// A lookup that fails leaves the account unconnected, with the status
/// named; no token of it is kept, and the provider is told to revoke them.
#[tokio::test]
async fn a_failed_connection_lookup_connects_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "first-access",
            "refresh_token": "first-refresh",
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lookup"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([])))
        .mount(&server)
        .await;
    // The tokens it will not keep are revoked, none left live unknown.
    for hint in ["refresh_token", "access_token"] {
        Mock::given(method("POST"))
            .and(path("/revoke"))
            .and(wiremock::matchers::body_string_contains(format!(
                "token_type_hint={hint}"
            )))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
    }
    let hub = hub(&definition(
        &server,
        &format!(
            r#"scope = "api"
            revoke_token_endpoint = "{uri}/revoke"
            connection_lookup = {{ url = "{uri}/lookup", parameters = {{ cloud_id = "/0/id" }} }}"#,
            uri = server.uri()
        ),
    ))
    .await;
    let id = AccountId::new("acct").expect("id");
    let error = connect(&hub, &id, "")
        .await
        .1
        .expect_err("no site in the lookup")
        .to_string();
    assert!(
        error.contains("the connection lookup's answer has no value at /0/id (parameter `cloud_id`)"),
        "{error}"
    );
    let account = hub.store().get(&id).await.expect("account");
    assert_eq!(account.status(), integrations::AccountStatus::Pending);
    assert!(account.credentials().get("access_token").is_none());
}

/// A provider that ends a refresh token's access tokens with it, and then
/// refuses to revoke them again (Google's 400), has revoked both.
#[tokio::test]
async fn an_access_token_ended_with_its_refresh_token_counts_as_revoked() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "first-access",
            "refresh_token": "first-refresh",
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(wiremock::matchers::body_string_contains(
            "token_type_hint=refresh_token",
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(wiremock::matchers::body_string_contains("token_type_hint=access_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({ "error": "invalid_token" })))
        .expect(2)
        .mount(&server)
        .await;
    let hub = hub(&definition(
        &server,
        &format!(
            r#"scope = "api"
            revoke_token_endpoint = "{}/revoke""#,
            server.uri()
        ),
    ))
    .await;
    let id = AccountId::new("acct").expect("id");
    connect(&hub, &id, "").await.1.expect("complete");
    let revocation = hub.disconnect(&id).await.expect("disconnect");
    assert_eq!(revocation.revoked, ["refresh_token", "access_token"]);
    assert!(revocation.failures.is_empty(), "{:?}", revocation.failures);

    // Alone, a refused access token revocation is a failure.
    let store = hub.store();
    let account = store.get(&id).await.expect("account");
    let mut credentials = account.credentials().clone();
    credentials.insert("access_token", integrations::secrecy::SecretString::from("lone-access"));
    store
        .update_credentials(&account, credentials, integrations::AccountStatus::Connected, None)
        .await
        .expect("update");
    let revocation = hub.disconnect(&id).await.expect("disconnect");
    assert!(revocation.revoked.is_empty());
    assert_eq!(revocation.failures.len(), 1);
}

#[test]
fn provided_parameters_and_endpoint_hosts_are_checked_in_definitions() {
    integrations::register_methods();
    let base = |extra: &str| {
        format!(
            r#"
            [[integration]]
            key = "shaped"
            name = "Shaped"
            base_url = "https://api.shaped.example"
            parameters = [{{ name = "shop" }}, {{ name = "host" }}]
            [integration.auth]
            type = "oauth2"
            grant_type = "authorization_code"
            authorization_endpoint = "https://shaped.example/authorize"
            access_token_verb = "POST"
            scope = "a"
            client_id = {{ env = "SHAPED_CLIENT_ID" }}
            client_secret = {{ env = "SHAPED_CLIENT_SECRET" }}
            token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
            {extra}
            "#
        )
    };
    let token_at = |url: &str| format!("access_token_endpoint = \"{url}\"");
    let ok = [
        token_at("https://{shop}.myshopify.com/admin/oauth/access_token"),
        token_at("https://shaped.example/token") + "\ntoken_response_parameters = { instance_url = \"/instance_url\" }",
    ];
    for extra in ok {
        Definitions::from_str(&base(&extra), Format::Toml).unwrap_or_else(|errors| panic!("{extra}: {errors}"));
    }
    let token = token_at("https://shaped.example/token");
    for (extra, field, message) in [
        (
            token_at("https://{host}/token"),
            "auth.access_token_endpoint",
            "its host comes from parameter `host`",
        ),
        (
            token_at("https://{shop}.com/token"),
            "auth.access_token_endpoint",
            "its host comes from parameter `shop`",
        ),
        (
            format!("{token}\ntoken_response_parameters = {{ shop = \"/shop\" }}"),
            "auth.token_response_parameters.shop",
            "also declared in parameters",
        ),
        (
            format!(
                "{token}\ncallback_parameters = [\"region\"]\nrevoke_token_endpoint = \"https://{{region}}.shaped.example/revoke\""
            ),
            "auth.revoke_token_endpoint",
            "comes from the authorization callback",
        ),
        (
            format!(
                "{token}\nconnection_lookup = {{ url = \"https://shaped.example/{{site}}\", parameters = {{ site = \"/0/id\" }} }}"
            ),
            "auth.connection_lookup.url",
            "what the lookup gives",
        ),
        (
            format!("{token}\ntoken_parameters = {{ grant_type = \"account_credentials\" }}"),
            "auth.token_parameters.grant_type",
            "set by the grant itself",
        ),
        (
            format!("{token}\ncallback_parameters = [\"token\"]"),
            "auth.callback_parameters[0]",
            "`token` is reserved",
        ),
        (
            format!(
                "{token}\ntoken_response_parameters = {{ tenant = \"/tenant\" }}\nrevoke_token_endpoint = \"https://shaped.example/{{tenant}}/revoke\""
            ),
            "auth.revoke_token_endpoint",
            "after this is used",
        ),
        (
            format!(
                "{token}\ntoken_response_parameters = {{ extra = \"/extra\" }}\ntoken_parameters = {{ audience = \"{{extra}}\" }}"
            ),
            "auth.token_parameters.audience",
            "after this is used",
        ),
    ] {
        let errors = Definitions::from_str(&base(&extra), Format::Toml)
            .expect_err(&extra)
            .to_string();
        assert!(errors.contains(field) && errors.contains(message), "{extra}: {errors}");
    }
    let provided_host = base(&format!(
        "{token}\ntoken_response_parameters = {{ region = \"/region\" }}"
    ))
    .replace(
        "base_url = \"https://api.shaped.example\"",
        "base_url = \"https://api.shaped.example\"\nallowed_hosts = [\"{region}.shaped.example\"]",
    );
    let errors = Definitions::from_str(&provided_host, Format::Toml)
        .expect_err("a provided allowed host")
        .to_string();
    assert!(
        errors.contains("allowed_hosts[0]: `region` is given by the provider"),
        "{errors}"
    );
    let chosen_grant = base(&format!("{token}\ntoken_parameters = {{ grant_type = \"{{shop}}\" }}")).replace(
        "grant_type = \"authorization_code\"",
        "grant_type = \"client_credentials\"",
    );
    let errors = Definitions::from_str(&chosen_grant, Format::Toml)
        .expect_err("a grant type from a parameter")
        .to_string();
    assert!(
        errors.contains("auth.token_parameters.grant_type: a grant type is written in the definition"),
        "{errors}"
    );
    let bad_env = base(&token).replace("SHAPED_CLIENT_ID", "not a name");
    let errors = Definitions::from_str(&bad_env, Format::Toml)
        .expect_err("an env name")
        .to_string();
    assert!(
        errors.contains("auth.client_id.env: `not a name` is not an environment variable name"),
        "{errors}"
    );
}
