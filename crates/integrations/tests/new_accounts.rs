//! A new account is checked against its integration and auth method:
//! parameters, credentials, and where the values land.

use std::sync::Arc;

use integrations::definition::Format;
use integrations::secrecy::SecretString;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, NewAccount, Secrets};

const DEFINITIONS: &str = r#"
    [[integration]]
    key = "crm"
    name = "CRM"
    base_url = "https://{subdomain}.crm.example/api"
    parameters = [{ name = "subdomain" }, { name = "client_secret", secret = true }, { name = "region", default = "eu" }]
    [integration.auth]
    type = "oauth2"
    grant_type = "authorization_code"
    authorization_endpoint = "https://{subdomain}.crm.example/authorize"
    access_token_endpoint = "https://{subdomain}.crm.example/token?region={region}"
    access_token_verb = "POST"
    scope = "read"
    client_id = "id"
    client_secret = "{client_secret}"
    token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }

    [[integration]]
    key = "erp"
    name = "ERP"
    parameters = [{ name = "company" }]
    auth = { type = "basic" }
    request_parameters = [{ type = "header", name = "X-Company", value = "{company}" }]

    [[integration]]
    key = "files"
    name = "Files"
    auth = { type = "sftp" }

    [[integration]]
    key = "onprem"
    name = "On-prem"
    base_url = "https://{host}/api"
    parameters = [{ name = "host" }]
    auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }

    [[integration]]
    key = "drop"
    name = "Drop"
    parameters = [{ name = "server" }]
    auth = { type = "sftp", host = "{server}" }

    [[integration]]
    key = "signing"
    name = "Signing"
    base_url = "https://{server}.signing.example/api"
    parameters = [{ name = "server", default = "account", choices = ["account", "account-d"] }]
    auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }

    [[integration]]
    key = "lab"
    name = "Lab"
    base_url = "https://{host}/api"
    parameters = [{ name = "host" }]
    allow_ip_hosts = true
    auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }
"#;

fn definitions() -> Definitions {
    integrations::register_methods();
    Definitions::from_str(DEFINITIONS, Format::Toml).expect("valid definitions")
}

fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    pairs
        .iter()
        .map(|(name, value)| (*name, SecretString::from((*value).to_owned())))
        .collect()
}

fn check(key: &str, parameters: &[(&str, &str)], credentials: &[(&str, &str)]) -> String {
    let definitions = definitions();
    let integration = definitions.get(key).expect("defined");
    let new = NewAccount {
        id: AccountId::new("acct").expect("valid id"),
        parameters: secrets(parameters),
        credentials: secrets(credentials),
    };
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let created = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(store.create(integration, new));
    match created {
        Ok(account) => format!(
            "ok {}; plain {:?}; secret {:?}",
            account.status(),
            account.parameters(),
            account.secret_parameters().names().collect::<Vec<_>>()
        ),
        Err(error) => format!("error: {error}"),
    }
}

#[test]
fn parameters_are_split_and_defaults_filled() {
    assert_eq!(
        check("crm", &[("subdomain", "eu1"), ("client_secret", "s3cret")], &[]),
        r#"ok pending; plain {"region": "eu", "subdomain": "eu1"}; secret ["client_secret"]"#
    );
    assert_eq!(
        check(
            "crm",
            &[("subdomain", "eu1"), ("client_secret", "s"), ("region", "us")],
            &[("refresh_token", "r")]
        ),
        r#"ok connected; plain {"region": "us", "subdomain": "eu1"}; secret ["client_secret"]"#
    );
}

#[test]
fn every_problem_with_a_new_account_is_named() {
    let message = check("crm", &[("tenant", "x")], &[("password", "p")]);
    assert!(
        message.contains("unknown parameter `tenant`; declared: subdomain, client_secret, region"),
        "{message}"
    );
    assert!(message.contains("missing parameter `subdomain`"), "{message}");
    assert!(message.contains("missing parameter `client_secret`"), "{message}");
    assert!(
        message.contains("unknown credential `password` for oauth2 accounts"),
        "{message}"
    );
    assert!(message.contains("(account `acct`, integration `crm`)"), "{message}");
}

#[test]
fn values_are_checked_where_they_land() {
    let message = check("crm", &[("subdomain", "evil.example/"), ("client_secret", "s")], &[]);
    assert!(
        message.contains("parameter {subdomain}: value is not a valid host name"),
        "{message}"
    );
    assert!(
        message.contains("in base_url, auth.authorization_endpoint, auth.access_token_endpoint"),
        "{message}"
    );
    let message = check(
        "erp",
        &[("company", "A\r\nX-Injected: 1")],
        &[("username", "u"), ("password", "p")],
    );
    assert!(message.contains("control character"), "{message}");
    assert!(message.contains("request_parameters[0].value"), "{message}");
    assert!(!message.contains("Injected"), "the value must not be echoed: {message}");
}

#[test]
fn credentials_follow_the_auth_method() {
    let message = check("erp", &[("company", "A")], &[("username", "a:b")]);
    assert!(message.contains("missing credential `password`"), "{message}");
    assert!(message.contains("must not contain `:` (RFC 7617)"), "{message}");
    let message = check("files", &[], &[("username", "u")]);
    assert!(message.contains("missing credential `host`"), "{message}");
    assert!(message.contains("missing credential `host_key`"), "{message}");
    assert!(
        message.contains("need credential `password` or `private_key`"),
        "{message}"
    );
    let message = check(
        "files",
        &[],
        &[
            ("username", "u"),
            ("host", "a/b"),
            ("password", "p"),
            ("passphrase", "x"),
            ("port", "70000"),
        ],
    );
    assert!(message.contains("`port` is not a port number: `70000`"), "{message}");
    let header = check("crm", &[("company", "A")], &[("access_token", "t\r\nX-Injected: 1")]);
    assert!(
        header.contains("credential `access_token` has a control character"),
        "{header}"
    );
    assert!(!header.contains("X-Injected"), "the value is never quoted: {header}");
    assert!(
        message.contains("credential `host` is not a valid host name"),
        "{message}"
    );
    assert!(
        message.contains("`passphrase` is only used with `private_key`"),
        "{message}"
    );
    assert_eq!(
        check(
            "files",
            &[],
            &[
                ("username", "u"),
                ("host", "sftp.example.com"),
                ("private_key", "k"),
                ("host_key", "insecure-accept-any"),
                ("port", "2222")
            ]
        ),
        "ok connected; plain {}; secret []"
    );
}

#[test]
fn ip_hosts_need_the_opt_in_and_metadata_addresses_are_refused() {
    for ip in ["10.0.0.5", "2130706433", "127.0.0.1"] {
        let message = check("onprem", &[("host", ip)], &[("token", "t")]);
        assert!(
            message.contains("parameter `host` makes the host an IP address") && message.contains("(in base_url)"),
            "{ip}: {message}"
        );
        assert!(!message.contains(ip), "the value is not quoted: {message}");
        assert_eq!(
            check("lab", &[("host", ip)], &[("token", "t")]),
            format!("ok connected; plain {{\"host\": \"{ip}\"}}; secret []")
        );
    }
    for integration in ["onprem", "lab"] {
        let message = check(integration, &[("host", "169.254.169.254")], &[("token", "t")]);
        assert!(message.contains("cloud metadata address"), "{integration}: {message}");
    }
    assert!(check("onprem", &[("host", "api.example")], &[("token", "t")]).starts_with("ok"));
    let sftp = [
        ("username", "u"),
        ("password", "p"),
        ("host_key", "insecure-accept-any"),
    ];
    let message = check("drop", &[("server", "10.0.0.5")], &sftp);
    assert!(
        message.contains("parameter `server` makes the host an IP address") && message.contains("(in auth.host)"),
        "{message}"
    );
    assert!(check("drop", &[("server", "sftp.example")], &sftp).starts_with("ok"));
}

#[test]
fn a_parameter_with_choices_takes_one_of_them() {
    assert!(
        check("signing", &[], &[("token", "t")]).starts_with("ok"),
        "the default"
    );
    assert!(
        check("signing", &[("server", "account-d")], &[("token", "t")]).contains(r#""server": "account-d""#),
        "a choice"
    );
    let refused = check("signing", &[("server", "www")], &[("token", "t")]);
    assert!(
        refused.contains("parameter `server` must be one of: account, account-d"),
        "{refused}"
    );
}
