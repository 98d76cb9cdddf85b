//! schemathesis (PyPI) against the running gateway's `/v1/openapi.json`:
//! generated requests to every route must get no server error and no
//! response that breaks the document.

mod common;

use std::process::Command;

use common::{Gateway, api_key, integrations};
use integration_oauth2_test_server::{Config, TestServer};
use integration_test_peers::skip;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn schemathesis() -> Option<String> {
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".to_owned());
    match Command::new(&program).arg("--version").output() {
        Ok(output) if output.status.success() => Some(program),
        _ => {
            skip(
                "schemathesis",
                &format!("schemathesis cannot run: no `{program}` on PATH (pip install schemathesis)"),
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_find_no_server_error_and_no_schema_violation() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    // Working peers, so that success responses are checked too: an upstream
    // that answers every proxied request, an OAuth 2.0 server, and sshd with
    // a user that is not root (the generated uploads land in its home).
    let upstream = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "ok": true })))
        .mount(&upstream)
        .await;
    let provider = TestServer::start(Config::default()).await;
    let sshd = integration_sftp_test_server::password_login_or_skip();

    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = dir.path().join("definitions.toml");
    std::fs::write(
        &definitions,
        format!(
            r#"
            [[integration]]
            key = "weather"
            name = "Weather"
            base_url = "{upstream}"
            auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}

            [[integration]]
            key = "files"
            name = "Files"
            auth = {{ type = "sftp", host = "127.0.0.1" }}
            {provider}
            "#,
            upstream = upstream.uri(),
            provider = provider.definition(r#""test-secret""#),
        ),
    )
    .expect("definitions");
    let definitions = definitions.to_str().expect("utf-8").to_owned();
    let data = dir.path().join("data");
    let key = api_key(&data);
    let mut accounts = vec![
        vec!["weather", "--id", "w1", "--credential", "token=t0ken"],
        vec!["provider", "--id", "p1"],
    ];
    let sftp_credentials;
    if let Some((sshd, login)) = &sshd {
        sftp_credentials = [
            format!("username={}", login.user),
            format!("password={}", login.password),
            format!("port={}", sshd.port()),
            format!("host_key={}", sshd.host_public_key()),
        ];
        let mut files = vec!["files", "--id", "f1"];
        for credential in &sftp_credentials {
            files.extend(["--credential", credential.as_str()]);
        }
        accounts.push(files);
    }
    for account in accounts {
        let mut args = vec!["--definitions", definitions.as_str(), "accounts", "add"];
        args.extend(account);
        let added = integrations(&data, &args);
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    }

    let gateway = Gateway::start(&definitions, &data).await;
    let report = dir.path().join("report");
    let run = tokio::task::spawn_blocking({
        let (base, key, report) = (gateway.base.clone(), key.clone(), report.clone());
        let workdir = dir.path().to_path_buf();
        move || {
            Command::new(schemathesis)
                // Its `.schemathesis` cache goes there, not into the source tree.
                .current_dir(workdir)
                .arg("run")
                .arg(format!("{base}/v1/openapi.json"))
                .args(["--header", &format!("Authorization: Bearer {key}")])
                // Every check but positive_data_acceptance: a request the schema allows
                // may still be refused for the account's kind (SFTP on an HTTP account,
                // a connect of a non-OAuth account), and that 400 is the right answer.
                .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
                .args(["--max-examples", "25", "--request-timeout", "30"])
                .args(["--generation-deterministic", "--no-color"])
                .arg("--report-dir")
                .arg(report)
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .expect("schemathesis");
    drop(gateway);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Print the summary (cases run, operations covered) with the test's output.
    eprintln!(
        "{}",
        stdout
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
