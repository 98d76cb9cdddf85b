//! The connect page in headless Chromium: an operator walks every action
//! (an empty state, paging, filters, search, a new account, Connect through
//! a provider's login page, Refresh, Revoke, Remove, dark mode), with a
//! screenshot of each state kept in `target/tmp/screenshots/connect-page`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Gateway, api_key};
use integration_oauth2_test_server::{Config, TestServer};
use integration_test_peers::skip;

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e")
}

/// Why the browser test cannot run here, if it cannot.
fn missing_peer() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium} (apt-get install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".to_owned());
    }
    if !e2e_dir().join("node_modules/playwright-core").exists() {
        return Some("playwright-core is not installed (npm ci --prefix tests/e2e)".to_owned());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_walks_every_action_of_the_connect_page() {
    if let Some(reason) = missing_peer() {
        skip("browser", &format!("the browser test cannot run: {reason}"));
        return;
    }
    let provider = TestServer::start(Config {
        interactive_login: true,
        require_pkce: true,
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = dir.path().join("provider.toml");
    std::fs::write(
        &definitions,
        format!(
            "{}\n[[integration]]\nkey = \"legacy\"\nname = \"Legacy ERP\"\nbase_url = \"https://erp.example\"\n\
             [integration.auth]\ntype = \"basic\"\n",
            provider.definition(r#""test-secret""#)
        ),
    )
    .expect("write definition");
    let definitions = definitions.to_str().expect("utf-8").to_owned();
    let data = dir.path().join("data");
    let key = api_key(&data);
    let gateway = Gateway::start(&definitions, &data).await;
    let base = gateway.base.clone();
    let http = reqwest::Client::new();
    for n in 0..30 {
        let created = http
            .post(format!("{base}/v1/accounts"))
            .bearer_auth(&key)
            .json(&serde_json::json!({
                "id": format!("bulk-{n:02}"),
                "integration": "legacy",
                "credentials": { "username": "user", "password": "pw" }
            }))
            .send()
            .await
            .expect("create");
        assert!(
            created.status().is_success(),
            "{}",
            created.text().await.unwrap_or_default()
        );
    }
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots/connect-page");

    let browser = tokio::task::spawn_blocking({
        let (base, key, screenshots) = (base.clone(), key.clone(), screenshots.clone());
        move || {
            Command::new("node")
                .arg(e2e_dir().join("connect.mjs"))
                .arg(&base)
                .arg(&key)
                .arg(&screenshots)
                .output()
                .expect("run node")
        }
    })
    .await
    .expect("browser");
    drop(gateway);
    assert!(
        browser.status.success(),
        "the browser walk failed:\n{}\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );
    assert_eq!(provider.token_calls("authorization_code"), 1);
    assert_eq!(provider.token_calls("refresh_token"), 1);
    for shot in [
        "01-empty-state",
        "05-confirm-connect",
        "06-connected",
        "09-removed",
        "10-dark-mode",
    ] {
        let path = screenshots.join(format!("{shot}.png"));
        assert!(
            std::fs::metadata(&path).is_ok_and(|file| file.len() > 1000),
            "{} was not taken",
            path.display()
        );
    }
}

/// An upstream whose `/v1/me` accepts the token `right-token` only.
async fn checking_upstream() -> String {
    let app = axum::Router::new().route(
        "/v1/me",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            if headers.get("x-key").is_some_and(|key| key == "right-token") {
                axum::http::StatusCode::OK
            } else {
                axum::http::StatusCode::UNAUTHORIZED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_user_connects_accounts_from_a_product_page() {
    if let Some(reason) = missing_peer() {
        skip("browser", &format!("the browser test cannot run: {reason}"));
        return;
    }
    let provider = TestServer::start(Config {
        interactive_login: true,
        ..Config::default()
    })
    .await;
    let upstream = checking_upstream().await;
    let sshd = integration_sftp_test_server::start_or_skip();
    let files = sshd.as_ref().map_or_else(String::new, |sshd| {
        format!(
            "[[integration]]\nkey = \"files\"\nname = \"Partner Files\"\nallow_ip_hosts = true\n\
             auth = {{ type = \"sftp\", host = \"127.0.0.1\", port = {} }}\n",
            sshd.port()
        )
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = dir.path().join("definitions.toml");
    std::fs::write(
        &definitions,
        format!(
            r#"{}
            [[integration]]
            key = "ticket"
            name = "Ticket Desk"
            base_url = "{upstream}/v1"
            parameters = [{{ name = "team", description = "your team's name in Ticket Desk" }}]
            health_check = {{ path = "/me" }}
            auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
            {files}"#,
            provider.definition(r#""test-secret""#)
        ),
    )
    .expect("write definition");
    let definitions = definitions.to_str().expect("utf-8").to_owned();
    let data = dir.path().join("data");
    let key = api_key(&data);
    let gateway = Gateway::start(&definitions, &data).await;
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots/connect-sessions");

    let sftp_login = sshd.as_ref().map(|sshd| {
        (
            sshd.user().to_owned(),
            sshd.user_key(integration_sftp_test_server::UserKey::Ed25519),
        )
    });
    let browser = tokio::task::spawn_blocking({
        let (base, key, screenshots) = (gateway.base.clone(), key.clone(), screenshots.clone());
        move || {
            let mut node = Command::new("node");
            node.arg(e2e_dir().join("connect-sessions.mjs"))
                .arg(&base)
                .arg(&key)
                .arg(&screenshots);
            if let Some((user, private_key)) = sftp_login {
                node.env("SFTP_USER", user).env("SFTP_KEY", private_key);
            }
            node.output().expect("run node")
        }
    })
    .await
    .expect("browser");
    drop(gateway);
    assert!(
        browser.status.success(),
        "the browser walk failed:\n{}\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );
    assert_eq!(provider.token_calls("authorization_code"), 1);
    for shot in [
        "01-form",
        "02-wrong-token",
        "03-connected",
        "04-continue-to-provider",
        "05-provider-connected",
        "06-link-used",
        "07-dark-mode",
    ]
    .into_iter()
    .chain(sshd.is_some().then_some("08-sftp-host-key"))
    {
        let path = screenshots.join(format!("{shot}.png"));
        assert!(
            std::fs::metadata(&path).is_ok_and(|file| file.len() > 1000),
            "{} was not taken",
            path.display()
        );
    }
}
