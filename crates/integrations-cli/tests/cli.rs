//! The `integrations` binary, run as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn integrations(data_dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_integrations"));
    command
        .args(args)
        .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
        .env_remove("INTEGRATIONS_DEFINITIONS")
        .env("INTEGRATIONS_DATA_DIR", data_dir)
        .envs(envs.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run integrations");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let Output { status, stdout, stderr } = child.wait_with_output().expect("wait");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn run(data_dir: &Path, args: &[&str]) -> Run {
    integrations(data_dir, args, &[], None)
}

#[test]
fn validate_reports_ok_or_every_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = examples();
    let ok = run(dir.path(), &["validate", examples.to_str().expect("utf-8 path")]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.starts_with("ok: 9 integrations"), "{}", ok.stdout);

    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/definitions/broken");
    let failed = run(
        dir.path(),
        &[
            "validate",
            broken.join("unknown-auth-type.toml").to_str().expect("utf-8"),
            broken.join("missing-name.json").to_str().expect("utf-8"),
        ],
    );
    assert_eq!(failed.code, 1);
    assert!(
        failed
            .stderr
            .contains("integration[0].auth.type: unknown auth type `oauth1`"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("integrations[0]: missing required field `name`"),
        "{}",
        failed.stderr
    );
    assert!(failed.stderr.ends_with("2 problems found\n"), "{}", failed.stderr);

    // `serve` lists every problem under its cause, indented; a listen
    // address may name its host.
    let serve = run(
        dir.path(),
        &[
            "--definitions",
            broken.join("unknown-auth-type.toml").to_str().expect("utf-8"),
            "--definitions",
            broken.join("missing-name.json").to_str().expect("utf-8"),
            "serve",
            "--listen",
            "localhost:0",
        ],
    );
    assert_eq!(serve.code, 1, "{}", serve.stderr);
    let report = serve
        .stderr
        .split_once("error: ")
        .map(|(_, report)| report)
        .expect("an error");
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines[0].starts_with("the definitions have 2 problems"), "{report}");
    assert_eq!(lines[1], "  caused by:", "{report}");
    assert!(lines[2..].len() >= 2, "{report}");
    assert!(lines[2..].iter().all(|line| line.starts_with("    ")), "{report}");
}

#[test]
fn accounts_round_trip_through_the_embedded_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = examples();
    let definitions = definitions.to_str().expect("utf-8 path");

    let added = integrations(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "accounts",
            "add",
            "legacyerp",
            "--id",
            "erp1",
            "--param",
            "host=erp.example.com",
            "--param",
            "company=ACME",
            "--credential-env",
            "username=ERP_USER",
            "--credential-stdin",
            "password",
        ],
        &[("ERP_USER", "api-user-s3cret")],
        Some("pass-s3cret\n"),
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert_eq!(
        added.stdout,
        "added account erp1 (integration legacyerp, status connected)\n"
    );

    let weather = run(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "accounts",
            "add",
            "weather",
            "--id",
            "w1",
            "--credential",
            "token=tok-s3cret",
        ],
    );
    assert_eq!(weather.code, 0, "{}", weather.stderr);

    let list = run(dir.path(), &["accounts", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    assert!(lines[0].starts_with("ID    INTEGRATION  STATUS"), "{}", list.stdout);
    assert!(lines[1].starts_with("erp1  legacyerp    connected"), "{}", list.stdout);
    assert!(lines[2].starts_with("w1    weather      connected"), "{}", list.stdout);

    let show = run(dir.path(), &["accounts", "show", "erp1"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(show.stdout.contains("host = erp.example.com"), "{}", show.stdout);
    assert!(show.stdout.contains("password = ********"), "{}", show.stdout);
    let json = run(dir.path(), &["accounts", "show", "erp1", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(value["credentials"]["username"], "********");
    assert_eq!(value["parameters"]["company"], "ACME");

    for output in [&added, &weather, &list, &show, &json] {
        assert!(
            !output.stdout.contains("s3cret") && !output.stderr.contains("s3cret"),
            "a secret leaked"
        );
    }
    // Nothing in the data directory holds a secret in plain text.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).expect("read");
        assert!(
            !bytes.windows(6).any(|w| w == b"s3cret"),
            "{} holds a plaintext secret",
            entry.display()
        );
    }

    let removed = run(dir.path(), &["accounts", "remove", "erp1"]);
    assert_eq!((removed.code, removed.stdout.as_str()), (0, "removed account erp1\n"));
    let again = run(dir.path(), &["accounts", "remove", "erp1"]);
    assert_eq!(again.code, 1);
    assert_eq!(
        again.stderr, "error: no such account (account `erp1`)\n",
        "worded as `accounts show` words it"
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failure_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = examples();
    let definitions = definitions.to_str().expect("utf-8 path");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--definitions", definitions, "accounts", "add", "nosuch", "--id", "a"],
            "error: unknown integration `nosuch`; defined: acmecrm, dropzone, githubapp, googleserviceaccount, httpbin, ledger, legacyerp, partnerapi, weather\n",
        ),
        (
            &[
                "--definitions",
                definitions,
                "accounts",
                "add",
                "weather",
                "--id",
                "bad id",
            ],
            "error: invalid account id \"bad id\": use 1 to 128 ASCII letters, digits, `-`, `_` and `.`, not starting with `.`\n",
        ),
        (
            &[
                "--definitions",
                definitions,
                "accounts",
                "add",
                "weather",
                "--id",
                "w",
                "--credential",
                "s3cret",
            ],
            "error: `--credential` is not NAME=VALUE (the value is not repeated here: it may be a secret)\n",
        ),
        (
            &[
                "--definitions",
                definitions,
                "accounts",
                "add",
                "weather",
                "--id",
                "w",
                "--param",
                "region=eu",
                "--param",
                "foo",
            ],
            "error: the 2nd `--param` is not NAME=VALUE (the value is not repeated here: it may be a secret)\n",
        ),
        (
            &["--definitions", definitions, "accounts", "add", "weather", "--id", "w"],
            "error: cannot add the account\n  caused by: missing credential `token` (the API token) (account `w`, integration `weather`)\n",
        ),
        (
            &["accounts", "add", "weather", "--id", "w"],
            "error: no definitions given: pass --definitions PATH or set INTEGRATIONS_DEFINITIONS\n",
        ),
        (
            &["accounts", "show", "ghost"],
            "error: no such account (account `ghost`)\n",
        ),
        (
            &["accounts", "remove", "ghost"],
            "error: no such account (account `ghost`)\n",
        ),
    ];
    for (args, expected) in cases {
        let outcome = run(dir.path(), args);
        assert_eq!(outcome.code, 1, "{args:?}");
        assert_eq!(&outcome.stderr, expected, "{args:?}");
    }
}

#[test]
fn a_key_from_the_environment_is_used_and_a_wrong_one_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = examples();
    let definitions = definitions.to_str().expect("utf-8 path");
    let key = (
        "INTEGRATIONS_ENCRYPTION_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let added = integrations(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "accounts",
            "add",
            "weather",
            "--id",
            "w1",
            "--credential",
            "token=t",
        ],
        &[key],
        None,
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(
        !dir.path().join("encryption.key").exists(),
        "no key file when the key comes from the environment"
    );

    // Without the variable a new key file is made, which cannot open the record.
    let list = run(dir.path(), &["accounts", "list"]);
    assert_eq!(list.code, 1);
    assert!(
        list.stderr
            .contains("error: cannot decrypt credential `token`: sealed with another encryption key"),
        "{}",
        list.stderr
    );
    assert!(list.stderr.contains("(account `w1`)"), "{}", list.stderr);

    let malformed = integrations(
        dir.path(),
        &["accounts", "list"],
        &[("INTEGRATIONS_ENCRYPTION_KEY", "short")],
        None,
    );
    assert_eq!(malformed.code, 1);
    assert!(
        malformed
            .stderr
            .starts_with("error: cannot get the encryption key\n  caused by: INTEGRATIONS_ENCRYPTION_KEY:"),
        "{}",
        malformed.stderr
    );
}

#[test]
fn help_lists_the_commands() {
    let dir = tempfile::tempdir().expect("temp dir");
    let help = run(dir.path(), &["--help"]);
    for command in ["validate", "schema", "accounts", "request"] {
        assert!(help.stdout.contains(command), "{}", help.stdout);
    }
    let add = run(dir.path(), &["accounts", "add", "--help"]);
    for flag in [
        "--param",
        "--credential",
        "--credential-env",
        "--credential-stdin",
        "--credential-file",
    ] {
        assert!(add.stdout.contains(flag), "{}", add.stdout);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_goes_through_the_account() {
    use wiremock::matchers::{body_string, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .and(query_param("key", "tok-s3cret"))
        .and(header("content-type", "application/json"))
        .and(body_string("{\"id\":7}"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("x-order", "7")
                .set_body_string("created"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_string("no such thing"))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = dir.path().join("shop.toml");
    std::fs::write(
        &definitions,
        format!(
            r#"
            [[integration]]
            key = "shop"
            name = "Shop"
            base_url = "{}/api"
            auth = {{ type = "api_token", token = {{ parameter_type = "url_parameter", parameter_name = "key", value_template = "{{token}}" }} }}
            "#,
            server.uri()
        ),
    )
    .expect("write definition");
    let body = dir.path().join("order.json");
    std::fs::write(&body, "{\"id\":7}").expect("write body");
    let definitions = definitions.to_str().expect("utf-8").to_owned();
    let body_arg = format!("@{}", body.to_str().expect("utf-8"));
    let data = dir.path().join("data");

    let outcome = tokio::task::spawn_blocking(move || {
        let add = run(
            &data,
            &[
                "--definitions",
                &definitions,
                "accounts",
                "add",
                "shop",
                "--id",
                "s1",
                "--credential",
                "token=tok-s3cret",
            ],
        );
        assert_eq!(add.code, 0, "{}", add.stderr);
        let created = run(
            &data,
            &[
                "--definitions",
                &definitions,
                "request",
                "s1",
                "post",
                "orders",
                "-H",
                "Content-Type: application/json",
                "-d",
                &body_arg,
                "--include",
            ],
        );
        let missing = run(
            &data,
            &["--definitions", &definitions, "request", "s1", "GET", "/missing"],
        );
        let failed = run(
            &data,
            &[
                "--definitions",
                &definitions,
                "request",
                "s1",
                "GET",
                "/missing",
                "--fail",
            ],
        );
        let refused = run(
            &data,
            &[
                "--definitions",
                &definitions,
                "request",
                "s1",
                "GET",
                "https://elsewhere.example/x",
            ],
        );
        (created, missing, failed, refused)
    })
    .await
    .expect("cli runs");
    let (created, missing, failed, refused) = outcome;

    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created.stdout.starts_with("HTTP/1.1 201 Created\n"),
        "{}",
        created.stdout
    );
    assert!(created.stdout.contains("x-order: 7\n"), "{}", created.stdout);
    assert!(created.stdout.ends_with("\n\ncreated"), "{}", created.stdout);

    assert_eq!((missing.code, missing.stdout.as_str()), (0, "no such thing"));
    assert_eq!((failed.code, failed.stdout.as_str()), (22, "no such thing"));
    assert_eq!(failed.stderr, "error: the server answered 404 Not Found\n");

    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .starts_with("error: request refused: elsewhere.example:443 is not a host"),
        "{}",
        refused.stderr
    );
    for output in [&created, &missing, &failed, &refused] {
        assert!(!output.stderr.contains("s3cret"), "a secret leaked: {}", output.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refresh_revoke_and_remove_an_oauth2_account() {
    use std::io::{BufRead, BufReader};

    use integration_oauth2_test_server::{Config, TestServer};

    let server = TestServer::start(Config::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = dir.path().join("provider.toml");
    std::fs::write(&definitions, server.definition(r#"{ env = "PROVIDER_CLIENT_SECRET" }"#)).expect("write definition");
    let definitions = definitions.to_str().expect("utf-8").to_owned();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let public_url = format!("http://127.0.0.1:{port}");
    let secret = [("PROVIDER_CLIENT_SECRET", "test-secret")];

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
        &secret,
        None,
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(added.stdout.contains("status pending"), "{}", added.stdout);

    // `connect` prints the URL and waits; a browser follows it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_integrations"))
        .args([
            "--definitions",
            &definitions,
            "connect",
            "p1",
            "--public-url",
            &public_url,
            "--no-browser",
        ])
        .env("INTEGRATIONS_DATA_DIR", &data)
        .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
        .env("PROVIDER_CLIENT_SECRET", "test-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connect");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = tokio::task::spawn_blocking(move || {
        let url = lines
            .by_ref()
            .map(|line| line.expect("line"))
            .find_map(|line| line.trim().strip_prefix("http").map(|rest| format!("http{rest}")))
            .expect("an authorization URL");
        (url, lines)
    })
    .await
    .expect("read URL");
    let (url, lines) = url;
    // A redirect with another state (a stale tab, a forged request) is
    // refused and the command goes on waiting for the real one.
    let forged = reqwest::get(format!(
        "{public_url}/internal/sessions/v1/auth/callback?state=forged&code=stolen"
    ))
    .await
    .expect("forged redirect");
    assert_eq!(forged.status(), reqwest::StatusCode::BAD_REQUEST);
    let page = reqwest::get(&url).await.expect("browser follows the redirects");
    assert!(page.text().await.expect("page").contains("Authorization received"));
    let rest: Vec<String> = tokio::task::spawn_blocking(move || lines.map(|line| line.expect("line")).collect())
        .await
        .expect("rest of output");
    let status = child.wait().expect("connect exits");
    assert!(status.success(), "connect failed: {rest:?}");
    assert!(
        rest.iter()
            .any(|line| line == "connected account p1 (status connected)"),
        "{rest:?}"
    );
    assert_eq!(server.token_calls("authorization_code"), 1);

    let me = integrations(
        &data,
        &["--definitions", &definitions, "request", "p1", "GET", "me", "--fail"],
        &secret,
        None,
    );
    assert_eq!(
        (me.code, me.stdout.as_str()),
        (0, r#"{"user":"tester"}"#),
        "{}",
        me.stderr
    );

    let refreshed = integrations(
        &data,
        &["--definitions", &definitions, "accounts", "refresh", "p1"],
        &secret,
        None,
    );
    assert_eq!(refreshed.code, 0, "{}", refreshed.stderr);
    assert!(
        refreshed
            .stdout
            .starts_with("refreshed account p1, the access token expires at "),
        "{}",
        refreshed.stdout
    );
    assert_eq!(server.token_calls("refresh_token"), 1);

    let revoked = integrations(
        &data,
        &["--definitions", &definitions, "accounts", "revoke", "p1"],
        &secret,
        None,
    );
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert_eq!(
        revoked.stdout,
        "revoked refresh_token, access_token\naccount p1 is disconnected\n"
    );
    assert_eq!(server.revoke_calls(), 2);
    let show = run(&data, &["accounts", "show", "p1"]);
    assert!(show.stdout.contains("status:       pending"), "{}", show.stdout);

    let removed = integrations(
        &data,
        &["--definitions", &definitions, "accounts", "remove", "p1"],
        &secret,
        None,
    );
    assert_eq!(
        (removed.code, removed.stdout.as_str()),
        (0, "removed account p1\n"),
        "{}",
        removed.stderr
    );
    for output in [&added, &me, &refreshed, &revoked, &removed] {
        assert!(!output.stdout.contains("test-secret") && !output.stderr.contains("test-secret"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_with_a_key_and_stops_gracefully() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = examples();
    let created = run(dir.path(), &["keys", "create", "--name", "tests"]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let key = created.stdout.trim().to_owned();
    assert!(key.starts_with("ik_"), "{key}");
    let listed = run(dir.path(), &["keys", "list"]);
    assert!(listed.stdout.contains("  tests\n"), "{}", listed.stdout);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_integrations"))
        .args([
            "--definitions",
            examples.to_str().expect("utf-8"),
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .env("INTEGRATIONS_DATA_DIR", dir.path())
        .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "the gateway did not come up");
    let client = reqwest::Client::new();
    let unauthorized = client
        .get(format!("{base}/v1/integrations"))
        .send()
        .await
        .expect("response");
    assert_eq!(unauthorized.status(), reqwest::StatusCode::UNAUTHORIZED);
    let listed = client
        .get(format!("{base}/v1/integrations"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("response");
    assert_eq!(listed.status(), reqwest::StatusCode::OK);

    let revoked = run(dir.path(), &["keys", "revoke", key.split('_').nth(1).expect("id")]);
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    // A running gateway looks at the key file at most twice a second.
    tokio::time::sleep(integrations_gateway::keys::RELOAD_INTERVAL).await;
    let refused = client
        .get(format!("{base}/v1/integrations"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("response");
    assert_eq!(
        refused.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "a revoked key is refused at once"
    );

    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(terminated.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("exit");
    assert!(output.status.success(), "graceful exit");
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.lines().all(|line| line.starts_with('{')), "JSON logs: {logs}");
    assert!(logs.contains("gateway listening") && logs.contains("stopped"), "{logs}");
    assert!(!logs.contains(&key), "the API key leaked into the logs");
}

#[test]
fn sftp_commands_work_through_an_account() {
    let Some(sshd) = integration_sftp_test_server::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let definitions = dir.path().join("files.toml");
    std::fs::write(
        &definitions,
        "[[integration]]\nkey = \"files\"\nname = \"Files\"\nauth = { type = \"sftp\", host = \"127.0.0.1\" }\n",
    )
    .expect("definition");
    let key_file = sshd.user_key_path(integration_sftp_test_server::UserKey::Ed25519);
    let host_key = dir.path().join("host_key");
    std::fs::write(&host_key, sshd.known_hosts()).expect("known_hosts");
    let definitions = definitions.display().to_string();
    let port = format!("port={}", sshd.port());
    let username = format!("username={}", sshd.user());
    let private_key = format!("private_key={}", key_file.display());
    let host_key = format!("host_key={}", host_key.display());
    let added = run(
        dir.path(),
        &[
            "--definitions",
            &definitions,
            "accounts",
            "add",
            "files",
            "--id",
            "f1",
            "--credential",
            &username,
            "--credential",
            &port,
            "--credential-file",
            &private_key,
            "--credential-file",
            &host_key,
        ],
    );
    assert_eq!(added.code, 0, "{}", added.stderr);

    // A key that cannot be used is refused when the account is added, and nothing is stored.
    let refused = run(
        dir.path(),
        &[
            "--definitions",
            &definitions,
            "accounts",
            "add",
            "files",
            "--id",
            "f2",
            "--credential",
            &username,
            "--credential",
            "private_key=-----BEGIN OPENSSH PRIVATE KEY----- AAAA",
            "--credential",
            "host_key=SHA256:nope",
        ],
    );
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused.stderr,
        "error: cannot add the account\n  caused by: credential `private_key` has no \
         `-----END OPENSSH PRIVATE KEY-----` line: it was cut short (account `f2`)\n"
    );
    assert_eq!(run(dir.path(), &["accounts", "show", "f2"]).code, 1);

    let remote = sshd.files().display().to_string();
    let sftp = |args: &[&str]| {
        let mut all = vec!["--definitions", definitions.as_str(), "sftp", "f1"];
        all.extend_from_slice(args);
        let outcome = run(dir.path(), &all);
        assert_eq!(outcome.code, 0, "{args:?}: {}", outcome.stderr);
        outcome.stdout
    };
    let local = dir.path().join("hello.txt");
    std::fs::write(&local, "hello over sftp\n").expect("local file");
    sftp(&["mkdir", "-p", &format!("{remote}/a/b")]);
    sftp(&["put", &local.display().to_string(), &format!("{remote}/a/b/hello.txt")]);
    let listing = sftp(&["ls", &format!("{remote}/a/b")]);
    assert!(listing.starts_with("-rw"), "{listing}");
    assert!(
        listing.contains(" hello.txt\n") && listing.contains(" 16 "),
        "{listing}"
    );
    let stat: serde_json::Value =
        serde_json::from_str(&sftp(&["stat", "--json", &format!("{remote}/a/b/hello.txt")])).expect("json");
    assert_eq!((stat["kind"].as_str(), stat["size"].as_u64()), (Some("file"), Some(16)));
    sftp(&[
        "mv",
        &format!("{remote}/a/b/hello.txt"),
        &format!("{remote}/a/moved.txt"),
    ]);
    let back = dir.path().join("back.txt");
    sftp(&["get", &format!("{remote}/a/moved.txt"), &back.display().to_string()]);
    assert_eq!(std::fs::read_to_string(&back).expect("downloaded"), "hello over sftp\n");
    assert_eq!(
        sftp(&["get", &format!("{remote}/a/moved.txt"), "-"]),
        "hello over sftp\n"
    );
    sftp(&["rm", &format!("{remote}/a/moved.txt")]);
    sftp(&["rmdir", &format!("{remote}/a/b")]);
    assert_eq!(sftp(&["ls", &format!("{remote}/a")]), "");

    let missing = run(
        dir.path(),
        &[
            "--definitions",
            &definitions,
            "sftp",
            "f1",
            "stat",
            &format!("{remote}/nothing"),
        ],
    );
    assert_eq!(missing.code, 1);
    assert_eq!(missing.stderr, format!("error: stat {remote}/nothing: No such file\n"));
}

#[cfg(unix)]
#[test]
fn an_existing_data_directory_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let listed = integrations(
        &data,
        &["--definitions", examples().to_str().expect("utf-8"), "accounts", "list"],
        &[],
        None,
    );
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let mode = std::fs::metadata(&data).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "mode {mode:o}");
}

#[test]
fn an_unreachable_database_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = examples();
    let definitions = examples.to_str().expect("utf-8");
    // Nothing listens on port 9 of loopback.
    let unreachable = [
        (
            "INTEGRATIONS_DATABASE_URL",
            "postgres://gw:pw-s3cret@127.0.0.1:9/integrations",
        ),
        ("INTEGRATIONS_DATABASE_CONNECT_TIMEOUT", "1"),
        (
            "INTEGRATIONS_ENCRYPTION_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
    ];
    for args in [
        &["--definitions", definitions, "serve", "--listen", "127.0.0.1:0"][..],
        &["keys", "list"],
        &["migrate"],
        &["--definitions", definitions, "accounts", "list"],
    ] {
        let run = integrations(dir.path(), args, &unreachable, None);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr.trim(),
            "error: cannot connect to PostgreSQL at 127.0.0.1:9/integrations: no connection within the connect timeout",
            "{args:?}"
        );
        assert!(!run.stdout.contains("s3cret") && !run.stderr.contains("s3cret"));
    }

    let help = run(dir.path(), &["--help"]);
    assert!(help.stdout.contains("--database-url <URL>"), "{}", help.stdout);
    let not_postgres = integrations(
        dir.path(),
        &["migrate"],
        &[("INTEGRATIONS_DATABASE_URL", "mysql://u:pw-s3cret@h/db")],
        None,
    );
    assert_eq!(not_postgres.code, 1);
    assert!(
        not_postgres
            .stderr
            .contains("--database-url (INTEGRATIONS_DATABASE_URL) must start with postgres://"),
        "{}",
        not_postgres.stderr
    );
    assert!(!not_postgres.stderr.contains("s3cret"), "{}", not_postgres.stderr);
    let nothing = run(dir.path(), &["migrate"]);
    assert_eq!(nothing.code, 1);
    assert!(
        nothing.stderr.contains("nothing to migrate: pass --database-url"),
        "{}",
        nothing.stderr
    );
}

#[test]
fn a_shared_database_needs_the_encryption_key_from_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = examples();
    let run = integrations(
        dir.path(),
        &["--definitions", examples.to_str().expect("utf-8"), "accounts", "list"],
        &[
            ("INTEGRATIONS_DATABASE_URL", "postgres://postgres@127.0.0.1:9/x"),
            ("INTEGRATIONS_DATABASE_CONNECT_TIMEOUT", "1"),
        ],
        None,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("with --database-url, the encryption key comes from INTEGRATIONS_ENCRYPTION_KEY"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_encryption_key_is_rotated_rewrapped_and_retired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = examples();
    let definitions = examples.to_str().expect("utf-8");
    for n in 1..=3 {
        let added = run(
            dir.path(),
            &[
                "--definitions",
                definitions,
                "accounts",
                "add",
                "weather",
                "--id",
                &format!("w{n}"),
                "--credential",
                "token=t-s3cret",
            ],
        );
        assert_eq!(added.code, 0, "{}", added.stderr);
    }
    let first = run(dir.path(), &["encryption", "status"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let old = first
        .stdout
        .lines()
        .nth(1)
        .expect("a key")
        .split_whitespace()
        .next()
        .expect("id")
        .to_owned();
    assert!(
        first
            .stdout
            .contains(&format!("{old}  active               3        0")),
        "{}",
        first.stdout
    );

    let rotated = run(dir.path(), &["encryption", "rotate"]);
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let new = rotated.stdout.trim().to_owned();
    assert_ne!(new, old);
    let keyring = dir.path().join("encryption.keyring");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keyring).expect("keyring").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let status = run(dir.path(), &["encryption", "status"]);
    assert!(
        status.stdout.contains(&format!("{new}  active               0")),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains(&format!("{old}  decrypt-only         3")),
        "{}",
        status.stdout
    );
    // Records sealed with the old key still open.
    let shown = run(dir.path(), &["--definitions", definitions, "accounts", "show", "w1"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);

    let refused = run(dir.path(), &["encryption", "retire", &old]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("still seals 3 accounts"), "{}", refused.stderr);
    let active = run(dir.path(), &["encryption", "retire", &new]);
    assert!(active.stderr.contains("is the active key"), "{}", active.stderr);
    let not_an_id = run(dir.path(), &["encryption", "retire", "nope"]);
    assert!(not_an_id.stderr.contains("is not a key id"), "{}", not_an_id.stderr);

    let rewrapped = run(dir.path(), &["encryption", "rewrap"]);
    assert_eq!(rewrapped.code, 0, "{}", rewrapped.stderr);
    assert!(
        rewrapped
            .stdout
            .contains(&format!("re-sealed 3 of 3 accounts with key {new}")),
        "{}",
        rewrapped.stdout
    );
    let again = run(dir.path(), &["encryption", "rewrap"]);
    assert!(again.stdout.contains("re-sealed 0 of 3"), "{}", again.stdout);

    let retired = run(dir.path(), &["encryption", "retire", &old]);
    assert_eq!(retired.code, 0, "{}", retired.stderr);
    assert!(
        !dir.path().join("encryption.key").exists(),
        "the retired key's file is gone"
    );
    let status = run(dir.path(), &["encryption", "status"]);
    assert_eq!(status.stdout.lines().count(), 2, "one key left: {}", status.stdout);
    for n in 1..=3 {
        let shown = run(
            dir.path(),
            &["--definitions", definitions, "accounts", "show", &format!("w{n}")],
        );
        assert_eq!(shown.code, 0, "every record opens: {}", shown.stderr);
    }
    assert!(!std::fs::read_to_string(&keyring).expect("keyring").is_empty());
    for output in [&first, &rotated, &status, &rewrapped] {
        assert!(!output.stdout.contains("t-s3cret") && !output.stderr.contains("t-s3cret"));
    }
}

#[test]
fn a_keyring_from_the_environment_is_rotated_by_hand() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let env = [("INTEGRATIONS_ENCRYPTION_KEY", key)];
    let rotated = integrations(dir.path(), &["encryption", "rotate"], &env, None);
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let (id, new_key) = rotated.stdout.trim().split_once(':').expect("ID:KEY");
    assert!(
        rotated.stderr.contains("add `") && rotated.stderr.contains("INTEGRATIONS_ENCRYPTION_KEYS"),
        "{}",
        rotated.stderr
    );
    // The pair as printed is what INTEGRATIONS_ENCRYPTION_KEYS takes.
    let pair = format!("{id}:{new_key}");
    let status = integrations(
        dir.path(),
        &["encryption", "status"],
        &[
            ("INTEGRATIONS_ENCRYPTION_KEY", key),
            ("INTEGRATIONS_ENCRYPTION_KEYS", &pair),
        ],
        None,
    );
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains(&format!("{id}  decrypt-only")),
        "{}",
        status.stdout
    );
    let wrong = integrations(
        dir.path(),
        &["encryption", "status"],
        &[
            ("INTEGRATIONS_ENCRYPTION_KEY", key),
            ("INTEGRATIONS_ENCRYPTION_KEYS", &format!("00000000:{new_key}")),
        ],
        None,
    );
    assert_eq!(wrong.code, 1);
    assert!(
        wrong.stderr.contains(&format!("the key's id is {id}")),
        "{}",
        wrong.stderr
    );
    assert!(
        !wrong.stderr.contains(new_key),
        "the key is never in an error: {}",
        wrong.stderr
    );
}

#[test]
fn credentials_are_replaced_from_any_source_and_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = examples();
    let definitions = definitions.to_str().expect("utf-8 path");
    let added = run(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "accounts",
            "add",
            "legacyerp",
            "--id",
            "erp1",
            "--param",
            "host=erp.example.com",
            "--param",
            "company=ACME",
            "--credential",
            "username=u",
            "--credential",
            "password=old-s3cret",
        ],
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let replaced = integrations(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "accounts",
            "set-credentials",
            "erp1",
            "--credential",
            "username=u",
            "--credential-stdin",
            "password",
        ],
        &[],
        Some("new-s3cret\n"),
    );
    assert_eq!(replaced.code, 0, "{}", replaced.stderr);
    assert_eq!(
        replaced.stdout,
        "replaced the credentials of account erp1 (status connected)\n"
    );
    assert!(!replaced.stdout.contains("s3cret") && !replaced.stderr.contains("s3cret"));

    let unknown = run(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "accounts",
            "set-credentials",
            "erp1",
            "--credential",
            "pin=1",
        ],
    );
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("pin"), "{}", unknown.stderr);
    let missing = run(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "accounts",
            "set-credentials",
            "nosuch",
            "--credential",
            "password=x",
        ],
    );
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("nosuch"), "{}", missing.stderr);
}

#[test]
fn a_missing_argument_shows_the_command_s_usage_without_the_global_options() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = examples();
    let missing = integrations(
        dir.path(),
        &["accounts", "show"],
        &[("INTEGRATIONS_DEFINITIONS", examples.to_str().expect("utf-8"))],
        None,
    );
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing.stderr.contains("<ID>"), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("Usage: integrations accounts show <ID>\n"),
        "{}",
        missing.stderr
    );
}

#[test]
fn integrations_log_turns_on_logging_for_every_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = examples();
    let definitions = examples.to_str().expect("utf-8");
    let quiet = run(dir.path(), &["--definitions", definitions, "accounts", "list"]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(
        !quiet.stderr.contains("INFO") && !quiet.stderr.contains("TRACE"),
        "nothing is logged unless asked: {}",
        quiet.stderr
    );
    let logged = integrations(
        dir.path(),
        &["--definitions", definitions, "accounts", "list"],
        &[("INTEGRATIONS_LOG", "trace")],
        None,
    );
    assert_eq!(logged.code, 0, "{}", logged.stderr);
    assert!(
        logged.stderr.contains("TRACE") || logged.stderr.contains("DEBUG"),
        "{}",
        logged.stderr
    );
}

#[test]
fn connect_link_prints_a_single_use_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let definitions = examples();
    let definitions = definitions.to_str().expect("utf-8 path");
    let public = [("INTEGRATIONS_PUBLIC_URL", "https://gateway.example.com")];

    let link = integrations(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "connect-link",
            "--integration",
            "httpbin",
            "--end-user",
            "cust-42",
            "--ttl",
            "7d",
        ],
        &public,
        None,
    );
    assert_eq!(link.code, 0, "{}", link.stderr);
    let url = link.stdout.trim();
    assert!(
        url.starts_with("https://gateway.example.com/connect/session#ics_"),
        "{url}"
    );
    assert!(link.stderr.contains("once, until"), "{}", link.stderr);

    let json = integrations(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "connect-link",
            "customer-7",
            "--integration",
            "httpbin",
            "--json",
        ],
        &public,
        None,
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(json["account"], "customer-7");
    assert_eq!(json["reconnect"], false);

    for (args, envs, names) in [
        (
            vec!["connect-link", "--integration", "httpbin"],
            &[][..],
            "INTEGRATIONS_PUBLIC_URL",
        ),
        (vec!["connect-link", "--integration", "nope"], &public[..], "nope"),
        (
            vec!["connect-link", "--integration", "httpbin", "--ttl", "30s"],
            &public[..],
            "ttl",
        ),
        (
            vec!["connect-link", "--integration", "httpbin", "--ttl", "8d"],
            &public[..],
            "ttl",
        ),
        (vec!["connect-link"], &public[..], "--integration"),
    ] {
        let mut all = vec!["--definitions", definitions];
        all.extend(args.iter().copied());
        let refused = integrations(dir.path(), &all, envs, None);
        assert_ne!(refused.code, 0, "{args:?}");
        assert!(refused.stderr.contains(names), "{args:?}: {}", refused.stderr);
    }
}

#[test]
fn the_catalog_is_listed_shown_and_extended_offline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let list = run(dir.path(), &["catalog", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout
            .lines()
            .any(|line| line.starts_with("stripe ") && line.ends_with("Stripe")),
        "{}",
        list.stdout
    );
    let search = run(dir.path(), &["catalog", "list", "--search", "TWILIO", "--json"]);
    let found: serde_json::Value = serde_json::from_str(&search.stdout).expect("json");
    assert_eq!(
        found,
        serde_json::json!([{ "key": "twilio", "name": "Twilio", "auth_type": "basic" }])
    );
    let show = run(dir.path(), &["catalog", "show", "sendgrid"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(show.stdout.starts_with("# SendGrid") && show.stdout.contains("extends = \"sendgrid\""));
    let missing = run(dir.path(), &["catalog", "show", "sendgird"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("no catalog entry `sendgird`; did you mean `sendgrid`?"),
        "{}",
        missing.stderr
    );

    // A definition extending an entry validates, and an account of it works.
    let definitions = dir.path().join("billing.toml");
    std::fs::write(
        &definitions,
        "[[integration]]\nextends = \"stripe\"\nkey = \"billing\"\n",
    )
    .expect("write");
    let definitions = definitions.to_str().expect("utf-8");
    let validated = run(dir.path(), &["validate", definitions]);
    assert_eq!(validated.code, 0, "{}", validated.stderr);
    let added = integrations(
        dir.path(),
        &[
            "--definitions",
            definitions,
            "accounts",
            "add",
            "billing",
            "--id",
            "b1",
            "--credential-stdin",
            "token",
        ],
        &[],
        Some("sk_test_123"),
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
}
