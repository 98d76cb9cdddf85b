//! The connect page in headless Chromium: an operator connects an OAuth 2.0
//! account through a provider's login page, end to end.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Gateway, api_key, integrations, skip};
use integration_oauth2_test_server::{Config, TestServer};

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
async fn an_operator_connects_an_account_from_the_connect_page() {
    if let Some(reason) = missing_peer() {
        skip(&format!("the browser test cannot run: {reason}"));
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
    std::fs::write(&definitions, provider.definition(r#""test-secret""#)).expect("write definition");
    let definitions = definitions.to_str().expect("utf-8").to_owned();
    let data = dir.path().join("data");
    let key = api_key(&data);
    let added = integrations(
        &data,
        &[
            "--definitions",
            &definitions,
            "accounts",
            "add",
            "provider",
            "--id",
            "p1",
        ],
    );
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

    let gateway = Gateway::start(&definitions, &data).await;
    let base = gateway.base.clone();

    let browser = tokio::task::spawn_blocking({
        let (base, key) = (base.clone(), key.clone());
        move || {
            Command::new("node")
                .arg(e2e_dir().join("connect.mjs"))
                .args([&base, &key, "p1"])
                .output()
                .expect("run node")
        }
    })
    .await
    .expect("browser");
    let account = reqwest::Client::new()
        .get(format!("{base}/v1/accounts/p1"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("account")
        .text()
        .await
        .expect("body");
    let account: serde_json::Value = serde_json::from_str(&account).expect("json");
    drop(gateway);
    assert!(
        browser.status.success(),
        "the browser flow failed:\n{}\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );
    assert_eq!(account["status"], "connected", "{account}");
    assert_eq!(provider.token_calls("authorization_code"), 1);
}
