//! Every OAuth 2.0 and Custom Token entry against a loopback emulation of
//! its provider's documented behaviour, one data file per provider in
//! `emulations/`: the authorization URL, the token request's client
//! authentication and body, the token response's shape and the parameters
//! saved from it, where an authenticated request lands, refresh and revoke.
//!
//! Every `https://` URL of the entry and of the emulated answers is served
//! by one loopback server over plain HTTP, whatever its host: a resolver
//! sends every name to 127.0.0.1, and the server tells hosts apart by the
//! `Host` header.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use integrations::auth::oauth2::{Callback, RedirectUri};
use integrations::definition::Format;
use integrations::http::reqwest;
use integrations::http::{HttpClient, Method};
use integrations::secrecy::ExposeSecret;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, Integrations, NewAccount};
use serde::Deserialize;
use serde_json::Value;
use url::Url;
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

/// What a provider documents, as an emulation file says it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Emulation {
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    authorization: Option<Authorization>,
    token: Token,
    lookup: Option<Answer>,
    #[serde(default)]
    connected: Connected,
    request: ApiRequest,
    refresh: Option<Refresh>,
    revoke: Option<Revoke>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorization {
    url: String,
    #[serde(default)]
    query: BTreeMap<String, String>,
    pkce: bool,
    #[serde(default)]
    callback: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    url: String,
    /// `basic`, `body` or `none`.
    client_authentication: String,
    /// `form`, `json` or `query` (a GET).
    format: String,
    /// Parameters the request must carry besides the grant's own.
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    response: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    url: String,
    response: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Connected {
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    /// The access token's lifetime in seconds, when the token response's
    /// top-level `expires_in` does not say it (or is not where the
    /// provider gives it).
    lifetime_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiRequest {
    path: String,
    url: String,
    header: Option<NameValue>,
    query: Option<NameValue>,
    /// Other headers the provider requires on API calls.
    #[serde(default)]
    headers: Vec<NameValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Refresh {
    url: String,
    response: Value,
    rotates: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    url: String,
    /// `POST` unless said.
    method: Option<String>,
    /// Headers the provider requires on it.
    #[serde(default)]
    headers: Vec<NameValue>,
}

const CLIENT_ID: &str = "emulated-client";
const CLIENT_SECRET: &str = "emulated-secret";
const CODE: &str = "emulated-code";

/// Sends every host name to loopback; the URL keeps its port.
struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addresses: reqwest::dns::Addrs = Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
            Ok(addresses)
        })
    }
}

/// `https://host/path` as the emulator serves it: `http://host:PORT/path`.
fn local(url: &str, port: u16) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            format!("http://{}:{port}{}", &rest[..end], &rest[end..])
        }
        None => url.to_owned(),
    }
}

/// Every `https://` string in `value`, served by the emulator.
fn localize(value: &mut Value, port: u16) {
    match value {
        Value::String(text) => *text = local(text, port),
        Value::Array(items) => items.iter_mut().for_each(|item| localize(item, port)),
        Value::Object(fields) => fields.values_mut().for_each(|field| localize(field, port)),
        _ => {}
    }
}

/// Host and path: where a request lands, whatever the port.
fn place(url: &str) -> (String, String) {
    let url = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    (url.host_str().unwrap_or_default().to_owned(), url.path().to_owned())
}

fn place_of(request: &Request) -> (String, String) {
    let host = request
        .headers
        .get("host")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
    (host.to_owned(), request.url.path().to_owned())
}

/// The parameters of a token request, whatever its format.
fn parameters_of(request: &Request) -> BTreeMap<String, String> {
    let mut found: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&request.body) {
        for (name, value) in fields {
            found.insert(name, value.as_str().map_or_else(|| value.to_string(), str::to_owned));
        }
    } else {
        found.extend(url::form_urlencoded::parse(&request.body).into_owned());
    }
    found
}

/// The emulated provider: an answer per host, path and grant.
struct Provider {
    routes: Vec<((String, String), Option<&'static str>, Value)>,
}

impl Respond for Provider {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let at = place_of(request);
        let grant = parameters_of(request).get("grant_type").cloned();
        let answer = self
            .routes
            .iter()
            .filter(|(place, _, _)| *place == at)
            .find(|(_, only, _)| only.is_none_or(|only| grant.as_deref() == Some(only)))
            .or_else(|| self.routes.iter().find(|(place, _, _)| *place == at));
        match answer {
            Some((_, _, body)) => ResponseTemplate::new(200).set_body_json(body),
            None => ResponseTemplate::new(404).set_body_string(format!("the emulation has nothing at {at:?}")),
        }
    }
}

/// Runs one provider's emulation; every mismatch is returned, described.
async fn emulate(key: &str, emulation: Emulation) -> Result<(), String> {
    let entry = integrations::catalog::entry(key).ok_or(format!("no entry `{key}`"))?;
    let server = MockServer::start().await;
    let port = server.address().port();

    // The entry as a definition that extends it would make it: the
    // product's client id and secret, unless each account gives its own.
    let mut integration = entry.integration();
    localize(&mut integration, port);
    let auth = integration
        .get_mut("auth")
        .and_then(Value::as_object_mut)
        .ok_or("the entry has no auth table")?;
    for (field, value) in [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)] {
        if auth.get(field).is_some_and(|source| source.get("env").is_some()) {
            auth.insert(field.to_owned(), Value::String(value.to_owned()));
        }
    }
    integration["allow_insecure_http"] = Value::Bool(true);
    integration["retry"] = serde_json::json!({ "max_attempts": 1 });
    let document = serde_json::json!({ "integration": [integration] }).to_string();
    let definitions = Definitions::from_str(&document, Format::Json).map_err(|errors| format!("{errors}"))?;
    let (client_id, client_secret) = (
        emulation.parameters.get("client_id").map_or(CLIENT_ID, String::as_str),
        emulation
            .parameters
            .get("client_secret")
            .map_or(CLIENT_SECRET, String::as_str),
    );

    let mut token_response = emulation.token.response.clone();
    localize(&mut token_response, port);
    let mut routes = vec![(
        place(&emulation.token.url),
        Some("authorization_code"),
        token_response.clone(),
    )];
    if let Some(refresh) = &emulation.refresh {
        let mut response = refresh.response.clone();
        localize(&mut response, port);
        routes.insert(0, (place(&refresh.url), Some("refresh_token"), response));
    }
    routes.push((place(&emulation.token.url), None, token_response));
    if let Some(lookup) = &emulation.lookup {
        let mut response = lookup.response.clone();
        localize(&mut response, port);
        routes.push((place(&lookup.url), None, response));
    }
    routes.push((
        place(&emulation.request.url),
        None,
        serde_json::json!({ "emulated": true }),
    ));
    if let Some(revoke) = &emulation.revoke {
        routes.push((place(&revoke.url), None, serde_json::json!({})));
    }
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(Provider { routes })
        .mount(&server)
        .await;

    let reqwest = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(Loopback))
        .build()
        .map_err(|e| e.to_string())?;
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let hub = Integrations::with_http_client(definitions, store, HttpClient::from_reqwest(reqwest));
    let id = AccountId::new("emulated").map_err(|e| e.to_string())?;
    let mut new = NewAccount::new(id.clone());
    for (name, value) in &emulation.parameters {
        new = new.parameter(name, value);
    }
    let integration = hub.integration(key).map_err(|e| e.to_string())?.clone();
    hub.create_account(&integration, new)
        .await
        .map_err(|e| format!("creating the account: {e}"))?;
    let requests_to = |url: &str| {
        let at = place(url);
        let server = &server;
        async move {
            server
                .received_requests()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|request| place_of(request) == at)
                .collect::<Vec<_>>()
        }
    };

    // The authorization URL, then the callback and the code exchange.
    if let Some(authorization) = &emulation.authorization {
        let redirect = RedirectUri::from_public_base_url("http://127.0.0.1:9").map_err(|e| e.to_string())?;
        let start = hub
            .start_authorization(&id, &redirect)
            .await
            .map_err(|e| format!("starting the authorization: {e}"))?;
        let sent = start.url.as_str();
        let expected = local(&authorization.url, port);
        let without_query = sent.split('?').next().unwrap_or_default();
        if without_query != expected {
            return Err(format!("the authorization URL is {without_query}, expected {expected}"));
        }
        let query: BTreeMap<String, String> = start.url.query_pairs().into_owned().collect();
        let mut wanted = authorization.query.clone();
        wanted.insert("client_id".into(), client_id.into());
        wanted.insert("redirect_uri".into(), redirect.as_str().into());
        wanted.insert("response_type".into(), "code".into());
        for (name, value) in &wanted {
            if query.get(name) != Some(value) {
                return Err(format!(
                    "the authorization URL has {name}={:?}, expected {value:?}",
                    query.get(name)
                ));
            }
        }
        let state = query.get("state").ok_or("the authorization URL has no state")?;
        if query.contains_key("code_challenge") != authorization.pkce {
            return Err(format!(
                "the authorization URL {} a PKCE challenge",
                if authorization.pkce { "lacks" } else { "has" }
            ));
        }
        let mut callback = url::form_urlencoded::Serializer::new(String::new());
        callback.append_pair("state", state).append_pair("code", CODE);
        for (name, value) in &authorization.callback {
            callback.append_pair(name, value);
        }
        hub.complete_authorization(&Callback::from_query(&callback.finish()))
            .await
            .map_err(|e| format!("completing the authorization: {e}"))?;
    } else {
        // Client credentials and custom tokens: the first request gets one.
        hub.client(&id)
            .await
            .map_err(|e| e.to_string())?
            .request(Method::GET, &emulation.request.path)
            .send()
            .await
            .map_err(|e| format!("the first request: {e}"))?;
    }

    // The token request: where, client authentication, body format.
    let exchanges = requests_to(&emulation.token.url).await;
    let exchange = exchanges.first().ok_or("no token request reached the token endpoint")?;
    let parameters = parameters_of(exchange);
    let content_type = exchange
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    match emulation.token.format.as_str() {
        "form" if content_type.starts_with("application/x-www-form-urlencoded") => {}
        "json" if content_type.starts_with("application/json") => {}
        "query" if exchange.method.as_str() == "GET" => {}
        format => {
            return Err(format!(
                "the token request is not {format} (content type {content_type:?})"
            ));
        }
    }
    let basic = format!("Basic {}", BASE64.encode(format!("{client_id}:{client_secret}")));
    let authorization = exchange
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    let in_body = parameters.get("client_secret").map(String::as_str) == Some(client_secret)
        && parameters.get("client_id").map(String::as_str) == Some(client_id);
    match emulation.token.client_authentication.as_str() {
        "basic" if authorization == Some(basic.as_str()) && !parameters.contains_key("client_secret") => {}
        "body" if in_body && authorization.is_none() => {}
        "none" => {}
        style => {
            return Err(format!(
                "the token request does not authenticate the client by {style} \
                 (Authorization header: {}, client_secret in the body: {})",
                authorization.is_some(),
                parameters.contains_key("client_secret")
            ));
        }
    }
    let mut wanted = emulation.token.parameters.clone();
    if emulation.authorization.is_some() {
        wanted.insert("grant_type".into(), "authorization_code".into());
        wanted.insert("code".into(), CODE.into());
    }
    for (name, value) in &wanted {
        if parameters.get(name) != Some(value) {
            return Err(format!(
                "the token request has {name}={:?}, expected {value:?}",
                parameters.get(name)
            ));
        }
    }
    if let Some(authorization) = &emulation.authorization
        && parameters.contains_key("code_verifier") != authorization.pkce
    {
        return Err("the token request's code_verifier does not match the PKCE challenge".to_owned());
    }
    if let Some(lookup) = &emulation.lookup
        && requests_to(&lookup.url).await.is_empty()
    {
        return Err(format!("no connection lookup reached {}", lookup.url));
    }

    // The account: tokens and the parameters the provider gave.
    let account = hub.store().get(&id).await.map_err(|e| e.to_string())?;
    for (name, value) in &emulation.connected.parameters {
        let value = local(value, port);
        if account.parameters().get(name) != Some(&value) {
            return Err(format!(
                "the account's parameter {name} is {:?}, expected {value:?}",
                account.parameters().get(name)
            ));
        }
    }
    let credential = |account: &integrations::ConnectedAccount, name: &str| {
        account
            .credentials()
            .get(name)
            .map(|value| value.expose_secret().to_owned())
    };
    let first_access = credential(&account, "access_token").ok_or("no access token was stored")?;

    // The access token's expiry, from the documented lifetime.
    let documented = match emulation.token.response.get("expires_in") {
        Some(Value::Number(seconds)) => seconds.as_u64(),
        Some(Value::String(seconds)) => seconds.parse().ok(),
        _ => None,
    };
    let lifetime = emulation
        .connected
        .lifetime_seconds
        .or(documented.filter(|seconds| *seconds > 0))
        .or_else(|| {
            entry
                .integration()
                .pointer("/auth/token_response/lifetime_seconds")
                .and_then(Value::as_u64)
        });
    let expires_at = credential(&account, "access_token_expires_at").map(|at| {
        integrations::time::OffsetDateTime::parse(&at, &integrations::time::format_description::well_known::Rfc3339)
            .map(|at| (at - integrations::time::OffsetDateTime::now_utc()).whole_seconds())
    });
    match (lifetime, expires_at) {
        (None, None) => {}
        (Some(lifetime), Some(Ok(left))) if (left - lifetime as i64).abs() <= 120 => {}
        (lifetime, expires_at) => {
            return Err(format!(
                "the access token should expire in {lifetime:?} seconds; stored: {:?} seconds left",
                expires_at.map(|left| left.ok())
            ));
        }
    }

    // An authenticated request: where it lands, how it carries the token.
    let check_request = |access: String| {
        let hub = &hub;
        let id = &id;
        let emulation = &emulation;
        let first_access = first_access.clone();
        let requests_to = &requests_to;
        async move {
            hub.forget(id);
            let response = hub
                .client(id)
                .await
                .map_err(|e| format!("the account's client: {e}"))?
                .request(Method::GET, &emulation.request.path)
                .send()
                .await
                .map_err(|e| format!("the request to {}: {e}", emulation.request.path))?;
            if !response.status().is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(format!(
                    "the request to {} did not land at {} ({body})",
                    emulation.request.path, emulation.request.url
                ));
            }
            let landed = requests_to(&emulation.request.url).await;
            let request = landed.last().ok_or("no request landed")?;
            if let Some(header) = &emulation.request.header {
                let value = header.value.replace(&first_access, &access);
                let sent = request.headers.get(header.name.as_str()).and_then(|v| v.to_str().ok());
                if sent != Some(value.as_str()) {
                    return Err(format!(
                        "the request's {} header is {sent:?}, expected {value:?}",
                        header.name
                    ));
                }
            }
            for header in &emulation.request.headers {
                let sent = request.headers.get(header.name.as_str()).and_then(|v| v.to_str().ok());
                if sent != Some(header.value.as_str()) {
                    return Err(format!(
                        "the request's {} header is {sent:?}, expected {:?}",
                        header.name, header.value
                    ));
                }
            }
            if let Some(query) = &emulation.request.query {
                let value = query.value.replace(&first_access, &access);
                let sent = request
                    .url
                    .query_pairs()
                    .find_map(|(name, value)| (name == query.name.as_str()).then(|| value.into_owned()));
                if sent.as_deref() != Some(value.as_str()) {
                    return Err(format!(
                        "the request's {} parameter is {sent:?}, expected {value:?}",
                        query.name
                    ));
                }
            }
            Ok::<(), String>(())
        }
    };
    check_request(first_access.clone()).await?;

    // Refresh: the refresh token sent, the rotated one kept.
    if let Some(refresh) = &emulation.refresh {
        let old_refresh =
            credential(&account, "refresh_token").ok_or("the token response's refresh token was not stored")?;
        let before = requests_to(&refresh.url).await.len();
        let refreshed = hub.refresh(&id).await.map_err(|e| format!("refreshing: {e}"))?;
        let sent = requests_to(&refresh.url).await;
        let request = sent
            .get(before)
            .ok_or(format!("no refresh request reached {}", refresh.url))?;
        let parameters = parameters_of(request);
        if parameters.get("grant_type").map(String::as_str) != Some("refresh_token")
            || parameters.get("refresh_token") != Some(&old_refresh)
        {
            return Err("the refresh request does not carry grant_type=refresh_token and the refresh token".into());
        }
        let new_refresh = credential(&refreshed, "refresh_token");
        let rotated = new_refresh.as_ref() != Some(&old_refresh);
        if rotated != refresh.rotates {
            return Err(format!(
                "after a refresh the stored refresh token {}",
                if refresh.rotates {
                    "should be the new one"
                } else {
                    "should stay the old one"
                }
            ));
        }
        let new_access = credential(&refreshed, "access_token").ok_or("no access token after the refresh")?;
        if new_access == first_access {
            return Err("the refresh stored no new access token".into());
        }
        check_request(new_access).await?;
    }

    // Revoke, where the provider has it.
    if let Some(revoke) = &emulation.revoke {
        let before = hub.store().get(&id).await.map_err(|e| e.to_string())?;
        let tokens: Vec<String> = ["access_token", "refresh_token"]
            .iter()
            .filter_map(|name| credential(&before, name))
            .collect();
        let outcome = hub.disconnect(&id).await.map_err(|e| format!("disconnecting: {e}"))?;
        if !outcome.failures.is_empty() || outcome.revoked.is_empty() {
            return Err(format!("revoking: {:?}", outcome.failures));
        }
        let revocations = requests_to(&revoke.url).await;
        let first = revocations
            .first()
            .ok_or(format!("no revoke request reached {}", revoke.url))?;
        let method = revoke.method.as_deref().unwrap_or("POST");
        if first.method.as_str() != method {
            return Err(format!("the revoke request is a {}, expected {method}", first.method));
        }
        let bearer = first
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_owned);
        let carried = parameters_of(first)
            .into_values()
            .chain(bearer)
            .any(|value| tokens.contains(&value));
        if !carried {
            return Err("the revoke request carries none of the account's tokens".into());
        }
        for header in &revoke.headers {
            let sent = first.headers.get(header.name.as_str()).and_then(|v| v.to_str().ok());
            if sent != Some(header.value.as_str()) {
                return Err(format!(
                    "the revoke request's {} header is {sent:?}, expected {:?}",
                    header.name, header.value
                ));
            }
        }
    }
    Ok(())
}

fn emulations() -> Vec<(String, String)> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("emulations");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&directory)
        .expect("emulations/")
        .filter_map(|file| {
            let path = file.ok()?.path();
            let key = path.file_name()?.to_str()?.strip_suffix(".toml")?.to_owned();
            Some((key, std::fs::read_to_string(&path).ok()?))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_oauth2_and_custom_token_entry_has_an_emulation() {
    let emulated: Vec<String> = emulations().into_iter().map(|(key, _)| key).collect();
    for entry in integrations::catalog::entries() {
        let needs = matches!(entry.auth_type().as_str(), "oauth2" | "custom_token");
        assert_eq!(
            emulated.iter().any(|key| key == entry.key),
            needs,
            "entry `{}` ({}) {} an emulation in emulations/",
            entry.key,
            entry.auth_type(),
            if needs { "needs" } else { "has no use for" }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_behaves_as_its_provider_documents() {
    integrations::register_methods();
    let mut failures = Vec::new();
    let mut count = 0;
    for (key, text) in emulations() {
        count += 1;
        let outcome = match toml::from_str::<Emulation>(&text) {
            Ok(emulation) => emulate(&key, emulation).await,
            Err(error) => Err(format!("emulations/{key}.toml: {error}")),
        };
        if let Err(failure) = outcome {
            failures.push(format!("{key}: {failure}"));
        }
    }
    assert!(count > 0, "no emulations found");
    assert!(
        failures.is_empty(),
        "{} of {count} emulations failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
