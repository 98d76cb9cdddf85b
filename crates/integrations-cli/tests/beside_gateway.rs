//! The commands beside a running gateway: while `integrations serve` holds
//! the embedded store, every account, key, webhook and request command goes
//! through the gateway's socket, and the gateway sees each change at once.
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Gateway, api_key};
use integration_oauth2_test_server::{Config, TestServer};
use reqwest::StatusCode;
use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `integrations ARGS` on `data`, with the provider's client secret.
fn run(data: &Path, definitions: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_integrations"))
        .arg("--definitions")
        .arg(definitions)
        .args(args)
        .env("INTEGRATIONS_DATA_DIR", data)
        .env("PROVIDER_CLIENT_SECRET", "test-secret")
        .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run integrations")
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

async fn get(gateway: &Gateway, key: &str, path: &str) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", gateway.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("response");
    (response.status(), response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_while_the_gateway_holds_the_store() {
    let provider = TestServer::start(Config::default()).await;
    let weather = MockServer::start().await;
    for token in ["first-token", "second-token"] {
        Mock::given(method("GET"))
            .and(path("/forecast"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_string(format!("sunny for {token}")))
            .mount(&weather)
            .await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = dir.path().join("definitions.toml");
    std::fs::write(
        &definitions,
        format!(
            "{}\n[[integration]]\nkey = \"weather\"\nname = \"Weather\"\nbase_url = \"{}\"\n\
             [integration.auth]\ntype = \"api_token\"\ntoken = {{ parameter_type = \"header\", parameter_name = \
             \"Authorization\", value_template = \"Bearer {{token}}\" }}\n",
            provider.definition(r#"{ env = "PROVIDER_CLIENT_SECRET" }"#),
            weather.uri()
        ),
    )
    .expect("write definitions");
    let definitions = definitions.to_str().expect("utf-8");
    let data = dir.path().join("data");
    let key = api_key(&data);
    let gateway = Gateway::start_with(definitions, &data, &[], &[("PROVIDER_CLIENT_SECRET", "test-secret")]).await;

    let status = succeeded(&run(&data, definitions, &["status"]));
    assert!(status.starts_with("a gateway runs on "), "{status}");
    assert!(status.contains(&format!("address:  {}", gateway.base)), "{status}");
    assert!(status.contains("commands use it through the gateway"), "{status}");
    let json: Value = serde_json::from_str(&succeeded(&run(&data, definitions, &["status", "--json"]))).expect("json");
    assert_eq!(json["running"], true);
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));

    // A command with other keys than the gateway's is refused: each would
    // write records the other cannot open.
    let other_keys = Command::new(env!("CARGO_BIN_EXE_integrations"))
        .args(["--definitions", definitions, "accounts", "list"])
        .env("INTEGRATIONS_DATA_DIR", &data)
        .env("INTEGRATIONS_ENCRYPTION_KEY", "a".repeat(64))
        .output()
        .expect("run integrations");
    assert_eq!(other_keys.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&other_keys.stderr);
    assert!(stderr.contains("seals with key"), "{stderr}");

    // API token accounts: added, listed, shown, used, changed, removed.
    let added = succeeded(&run(
        &data,
        definitions,
        &[
            "accounts",
            "add",
            "weather",
            "--id",
            "w1",
            "--credential",
            "token=first-token",
        ],
    ));
    assert!(added.contains("added account w1"), "{added}");
    assert!(succeeded(&run(&data, definitions, &["accounts", "list"])).contains("w1"));
    let shown = succeeded(&run(&data, definitions, &["accounts", "show", "w1"]));
    assert!(shown.contains("status:       connected"), "{shown}");
    assert_eq!(
        get(&gateway, &key, "/v1/accounts/w1/proxy/forecast").await,
        (StatusCode::OK, "sunny for first-token".to_owned()),
        "the gateway uses the account the command added"
    );
    assert_eq!(
        succeeded(&run(
            &data,
            definitions,
            &["request", "w1", "GET", "forecast", "--fail"]
        )),
        "sunny for first-token"
    );
    succeeded(&run(
        &data,
        definitions,
        &[
            "accounts",
            "set-credentials",
            "w1",
            "--credential",
            "token=second-token",
        ],
    ));
    assert_eq!(
        get(&gateway, &key, "/v1/accounts/w1/proxy/forecast").await,
        (StatusCode::OK, "sunny for second-token".to_owned()),
        "the gateway dropped its copy of the changed account"
    );

    // OAuth 2.0: connected through the gateway, refreshed, used and
    // revoked by commands.
    succeeded(&run(&data, definitions, &["accounts", "add", "provider", "--id", "p1"]));
    let response = reqwest::Client::new()
        .post(format!("{}/v1/accounts/p1/connect", gateway.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("connect");
    assert_eq!(response.status(), StatusCode::OK);
    let started: Value = response.json().await.expect("json");
    let page = reqwest::get(started["authorization_url"].as_str().expect("url"))
        .await
        .expect("the browser follows the redirects");
    assert!(page.status().is_success());
    let refreshed = succeeded(&run(&data, definitions, &["accounts", "refresh", "p1"]));
    assert!(refreshed.starts_with("refreshed account p1"), "{refreshed}");
    assert_eq!(provider.token_calls("refresh_token"), 1);
    assert_eq!(
        succeeded(&run(&data, definitions, &["request", "p1", "GET", "me", "--fail"])),
        r#"{"user":"tester"}"#
    );
    let revoked = succeeded(&run(&data, definitions, &["accounts", "revoke", "p1"]));
    assert!(revoked.contains("account p1 is disconnected"), "{revoked}");
    let (status, body) = get(&gateway, &key, "/v1/accounts/p1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""status":"pending""#), "{body}");

    let removed = succeeded(&run(&data, definitions, &["accounts", "remove", "w1"]));
    assert!(removed.contains("removed account w1"), "{removed}");
    assert_eq!(
        get(&gateway, &key, "/v1/accounts/w1/proxy/forecast").await.0,
        StatusCode::NOT_FOUND,
        "no request goes out with a removed account"
    );

    // A connect link: the session is stored through the gateway, which
    // then opens it for the end user.
    let link = Command::new(env!("CARGO_BIN_EXE_integrations"))
        .args([
            "--definitions",
            definitions,
            "connect-link",
            "--integration",
            "provider",
        ])
        .env("INTEGRATIONS_DATA_DIR", &data)
        .env("INTEGRATIONS_PUBLIC_URL", &gateway.base)
        .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("connect-link");
    let link = succeeded(&link);
    let token = link
        .trim()
        .split_once('#')
        .expect("a token in the fragment")
        .1
        .to_owned();
    let (status, session) = get(&gateway, &token, "/v1/connect/session").await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert!(session.contains("\"status\":\"open\""), "{session}");

    // Keys and webhooks.
    let second = succeeded(&run(&data, definitions, &["keys", "create", "--name", "second"]));
    let second = second.trim();
    assert!(succeeded(&run(&data, definitions, &["keys", "list"])).contains("second"));
    let mut accepted = false;
    for _ in 0..50 {
        if get(&gateway, second, "/v1/accounts").await.0 == StatusCode::OK {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted, "the gateway takes the new key");
    let id = second.split('_').nth(1).expect("key id");
    succeeded(&run(&data, definitions, &["keys", "revoke", id]));
    succeeded(&run(
        &data,
        definitions,
        &["webhooks", "add", "https://hooks.example/in"],
    ));
    assert!(succeeded(&run(&data, definitions, &["webhooks", "list"])).contains("https://hooks.example/in"));

    // The key rotated by a command: the gateway takes the new keyring, and
    // commands sealing with the new key are still let through.
    succeeded(&run(&data, definitions, &["encryption", "rotate"]));
    let mut listed = run(&data, definitions, &["accounts", "list"]);
    for _ in 0..30 {
        if listed.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        listed = run(&data, definitions, &["accounts", "list"]);
    }
    assert!(succeeded(&listed).contains("p1"));

    // A second gateway on the same data directory is refused, by name.
    let second_gateway = run(&data, definitions, &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(second_gateway.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second_gateway.stderr);
    assert!(
        stderr.contains("a gateway already runs on this data directory"),
        "{stderr}"
    );

    // Once it stops, the commands open the store themselves.
    drop(gateway);
    let stopped = run(&data, definitions, &["status"]);
    assert_eq!(stopped.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&stopped.stdout).starts_with("no gateway runs on "));
    assert!(succeeded(&run(&data, definitions, &["accounts", "list"])).contains("p1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_commands_work_while_the_gateway_holds_the_store() {
    let Some(sshd) = integration_sftp_test_server::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = dir.path().join("files.toml");
    std::fs::write(
        &definitions,
        "[[integration]]\nkey = \"files\"\nname = \"Files\"\nauth = { type = \"sftp\", host = \"127.0.0.1\" }\n",
    )
    .expect("definition");
    let definitions = definitions.to_str().expect("utf-8");
    let host_key = dir.path().join("host_key");
    std::fs::write(&host_key, sshd.known_hosts()).expect("known_hosts");
    let data = dir.path().join("data");
    let key = api_key(&data);
    let gateway = Gateway::start(definitions, &data).await;

    let key_file = sshd.user_key_path(integration_sftp_test_server::UserKey::Ed25519);
    succeeded(&run(
        &data,
        definitions,
        &[
            "accounts",
            "add",
            "files",
            "--id",
            "f1",
            "--credential",
            &format!("username={}", sshd.user()),
            "--credential",
            &format!("port={}", sshd.port()),
            "--credential-file",
            &format!("private_key={}", key_file.display()),
            "--credential-file",
            &format!("host_key={}", host_key.display()),
        ],
    ));
    let remote = sshd.files().display().to_string();
    let local = dir.path().join("hello.txt");
    std::fs::write(&local, "hello beside the gateway\n").expect("local file");
    succeeded(&run(
        &data,
        definitions,
        &[
            "sftp",
            "f1",
            "put",
            local.to_str().expect("utf-8"),
            &format!("{remote}/hello.txt"),
        ],
    ));
    let listing = succeeded(&run(&data, definitions, &["sftp", "f1", "ls", &remote]));
    assert!(listing.contains(" hello.txt\n"), "{listing}");
    let (status, entries) = get(&gateway, &key, &format!("/v1/accounts/f1/sftp/entries?path={remote}")).await;
    assert_eq!(status, StatusCode::OK, "{entries}");
    assert!(
        entries.contains("hello.txt"),
        "the gateway uses the account the command added: {entries}"
    );
}
