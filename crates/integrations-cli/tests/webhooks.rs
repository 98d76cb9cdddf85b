//! `integrations webhooks` and the gateway's delivery, end to end on the
//! embedded store: events acknowledged before a SIGKILL are delivered after
//! the restart, and so are deliveries that were waiting for a retry.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Gateway, api_key, integrations};
use integration_webhook_test_receiver::Receiver;
use reqwest::StatusCode;
use serde_json::json;

const DEFINITIONS: &str = r#"
[[integration]]
key = "echo"
name = "Echo"
base_url = "https://echo.example"
[integration.auth]
type = "api_token"
token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
"#;

const WAIT: Duration = Duration::from_secs(15);

fn definitions(dir: &Path) -> String {
    let file = dir.join("echo.toml");
    std::fs::write(&file, DEFINITIONS).expect("write definitions");
    file.to_str().expect("utf-8").to_owned()
}

fn run(data: &Path, args: &[&str]) -> (String, String) {
    let output = integrations(data, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "integrations {args:?}: {stderr}");
    (stdout, stderr)
}

fn refused(data: &Path, args: &[&str]) -> String {
    let output = integrations(data, args);
    assert!(!output.status.success(), "integrations {args:?} must fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn create_account(gateway: &Gateway, key: &str, id: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/accounts", gateway.base))
        .bearer_auth(key)
        .json(&json!({ "id": id, "integration": "echo", "credentials": { "token": "t-s3cret" } }))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[test]
fn endpoints_are_added_listed_rotated_and_removed() {
    let data = tempfile::tempdir().expect("temp dir");
    let (secret, said) = run(
        data.path(),
        &[
            "webhooks",
            "add",
            "https://hooks.example/in",
            "--events",
            "account.needs_reauth,account.recovered",
        ],
    );
    let secret = secret.trim();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(said.contains("shown once"), "{said}");
    let id = said.split_whitespace().nth(2).expect("the id").to_owned();
    assert!(id.starts_with("wh_"), "{said}");

    let (listed, _) = run(data.path(), &["webhooks", "list"]);
    assert!(
        listed.contains(&format!(
            "{id}  https://hooks.example/in  account.needs_reauth,account.recovered  (enabled)"
        )),
        "{listed}"
    );
    assert!(!listed.contains(&secret[6..]), "the secret is shown once");

    let (rotated, said) = run(data.path(), &["webhooks", "rotate-secret", &id, "--overlap", "1h"]);
    assert!(rotated.trim().starts_with("whsec_") && rotated.trim() != secret);
    assert!(said.contains("also signs until"), "{said}");
    let (deliveries, _) = run(data.path(), &["webhooks", "deliveries", &id]);
    assert!(deliveries.is_empty(), "{deliveries}");

    for (args, says) in [
        (vec!["webhooks", "add", "ftp://hooks.example/in"], "`url`"),
        (
            vec!["webhooks", "add", "https://u:pw@hooks.example/in"],
            "no username or password",
        ),
        (
            vec![
                "webhooks",
                "add",
                "https://hooks.example/in",
                "--events",
                "account.exploded",
            ],
            "account.exploded",
        ),
        (vec!["webhooks", "rotate-secret", &id, "--overlap", "30d"], "--overlap"),
        (vec!["webhooks", "remove", "wh_nosuch"], "no such webhook"),
        (vec!["webhooks", "retry", &id, "dlv_nosuch"], "no such delivery"),
    ] {
        let stderr = refused(data.path(), &args);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("pw@"), "{stderr}");
    }
    run(data.path(), &["webhooks", "remove", &id]);
    let (listed, _) = run(data.path(), &["webhooks", "list"]);
    assert!(listed.is_empty(), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_acknowledged_before_a_kill_is_delivered_after_the_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let definitions = definitions(data.path());
    let key = api_key(data.path());
    let receiver = Receiver::start().await;
    let (secret, _) = run(data.path(), &["webhooks", "add", &receiver.url()]);

    // This gateway acknowledges the change and never delivers it.
    let mut first = Gateway::start_with(&definitions, data.path(), &["--no-webhook-delivery"], &[]).await;
    create_account(&first, &key, "e1").await;
    first.kill();
    assert!(receiver.received().is_empty());

    let _second = Gateway::start(&definitions, data.path()).await;
    let delivered = receiver.wait_for_delivered(1, WAIT).await;
    assert_eq!(delivered[0].kind(), "account.created");
    assert_eq!(delivered[0].body["data"]["account"], "e1");
    assert!(delivered[0].signed_with(secret.trim()), "{:?}", delivered[0]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waiting_for_its_retry_is_made_after_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let definitions = definitions(data.path());
    let key = api_key(data.path());
    let receiver = Receiver::start().await;
    receiver.answer(&[503]);
    run(data.path(), &["webhooks", "add", &receiver.url()]);
    let schedule = ["--webhook-retry-schedule", "2s"];

    let mut first = Gateway::start_with(&definitions, data.path(), &schedule, &[]).await;
    create_account(&first, &key, "e1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while receiver.received().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no first attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The failed attempt is recorded, then the gateway dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill();

    let _second = Gateway::start_with(&definitions, data.path(), &schedule, &[]).await;
    let delivered = receiver.wait_for_delivered(1, WAIT).await;
    let all = receiver.received();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(delivered[0].id, all[0].id, "the same event, retried");

    let id = run(data.path(), &["webhooks", "list"])
        .0
        .split_whitespace()
        .next()
        .expect("id")
        .to_owned();
    // The receiver answers before the gateway records the outcome: the
    // record is read once it has.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut deliveries = run(data.path(), &["webhooks", "deliveries", &id]).0;
    while !deliveries.contains("account.created  e1  delivered") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        deliveries = run(data.path(), &["webhooks", "deliveries", &id]).0;
    }
    drop(_second);
    assert!(deliveries.contains("account.created  e1  delivered"), "{deliveries}");
    assert!(
        deliveries.contains("  503  ") && deliveries.contains("  204  "),
        "{deliveries}"
    );
}

#[test]
fn serve_refuses_bad_waits_naming_the_flag() {
    let data = tempfile::tempdir().expect("temp dir");
    let definitions = definitions(data.path());
    for (flag, value) in [
        ("--webhook-retry-schedule", "5s,soon"),
        ("--webhook-retry-schedule", ""),
        ("--idle-refresh", "0s"),
        ("--refresh-ahead", "10x"),
        ("--max-consecutive-failures", "0"),
    ] {
        let stderr = refused(data.path(), &["--definitions", &definitions, "serve", flag, value]);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}
