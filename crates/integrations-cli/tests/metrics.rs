//! `/metrics` and the access log of `integrations serve`: Prometheus text
//! that a parser reads, counters that move with requests, labels without
//! account ids or paths, and log lines without query or header values.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Gateway, api_key};
use reqwest::StatusCode;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn definitions(dir: &Path, upstream: &str) -> String {
    let file = dir.join("echo.toml");
    std::fs::write(
        &file,
        format!(
            r#"
            [[integration]]
            key = "echo"
            name = "Echo"
            base_url = "{upstream}"
            [integration.auth]
            type = "api_token"
            token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
            "#
        ),
    )
    .expect("write definitions");
    file.to_str().expect("utf-8").to_owned()
}

async fn upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hello"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hi"))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/hello"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&upstream)
        .await;
    upstream
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

async fn scrape(url: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("scrape");
    (response.status(), response.text().await.expect("text"))
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(label, value)| sample.labels.get(label) == Some(*value))
        })
        .map(|sample| match &sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => *value,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |bucket| bucket.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_move_with_requests_and_carry_no_account_or_path() {
    let upstream = upstream().await;
    let data = tempfile::tempdir().expect("temp dir");
    let definitions = definitions(data.path(), &upstream.uri());
    let key = api_key(data.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Gateway::start_with(&definitions, data.path(), &["--metrics-listen", &listen], &[]).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/v1/accounts", gateway.base))
        .bearer_auth(&key)
        .json(&json!({ "id": "customer-e1", "integration": "echo", "credentials": { "token": "t-s3cret" } }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);
    for _ in 0..3 {
        let proxied = client
            .get(format!(
                "{}/v1/accounts/customer-e1/proxy/hello?q=private-value",
                gateway.base
            ))
            .bearer_auth(&key)
            .send()
            .await
            .expect("proxied");
        assert_eq!(proxied.status(), StatusCode::OK);
    }
    let posted = client
        .post(format!("{}/v1/accounts/customer-e1/proxy/hello", gateway.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("proxied");
    assert_eq!(posted.status(), StatusCode::SERVICE_UNAVAILABLE);

    let (status, _) = scrape(&format!("{}/metrics", gateway.base), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the main address needs a key");
    let (status, keyed) = scrape(&format!("{}/metrics", gateway.base), Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, text) = scrape(&format!("http://{listen}/metrics"), None).await;
    assert_eq!(status, StatusCode::OK, "the metrics address needs none");
    for text in [&keyed, &text] {
        let scrape = parse(text);
        let requests = "integrations_proxy_requests_total";
        assert_eq!(
            value(
                &scrape,
                requests,
                &[("integration", "echo"), ("method", "read"), ("status", "2xx")]
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            value(
                &scrape,
                requests,
                &[("integration", "echo"), ("method", "write"), ("status", "5xx")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &scrape,
                "integrations_proxy_request_duration_seconds_count",
                &[("integration", "echo")]
            ),
            Some(4.0)
        );
        assert!(!text.contains("customer-e1") && !text.contains("hello") && !text.contains("private-value"));
    }
    // The gauges follow within their period.
    let mut counted = None;
    for _ in 0..100 {
        let (_, text) = scrape(&format!("http://{listen}/metrics"), None).await;
        counted = value(&parse(&text), "integrations_accounts", &[("status", "connected")]);
        if counted == Some(1.0) {
            assert!(
                value(&parse(&text), "integrations_outbox_events", &[]).is_some(),
                "{text}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_an_access_log_line_without_query_or_header_values() {
    let upstream = upstream().await;
    let data = tempfile::tempdir().expect("temp dir");
    let definitions = definitions(data.path(), &upstream.uri());
    let key = api_key(data.path());
    let key_id = key.split('_').nth(1).expect("key id").to_owned();
    let run = |extra: &[&str]| {
        let port = free_port();
        let log = data.path().join(format!("serve-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_integrations"))
            .args([
                "--definitions",
                &definitions,
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .env("INTEGRATIONS_DATA_DIR", data.path())
            .env("INTEGRATIONS_LOG", "info")
            .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("serve");
        (child, format!("http://127.0.0.1:{port}"), log)
    };
    let requests = async |base: &str| {
        let client = reqwest::Client::new();
        for _ in 0..50 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = client
            .post(format!("{base}/v1/accounts"))
            .bearer_auth(&key)
            .json(&json!({ "id": "customer-e1", "integration": "echo", "credentials": { "token": "t-s3cret" } }))
            .send()
            .await
            .expect("create");
        let proxied = client
            .get(format!("{base}/v1/accounts/customer-e1/proxy/hello?q=private-value"))
            .bearer_auth(&key)
            .header("x-custom", "header-value-private")
            .send()
            .await
            .expect("proxied");
        assert_eq!(proxied.status(), StatusCode::OK);
        let refused = client
            .get(format!("{base}/v1/integrations"))
            .send()
            .await
            .expect("refused");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let (mut child, base, log) = run(&[]);
    requests(&base).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("integrations::access"))
        .collect();
    let proxied = lines
        .iter()
        .find(|line| line.contains("/proxy/"))
        .unwrap_or_else(|| panic!("no proxied line: {text}"));
    for field in [
        format!("key=\"{key_id}\""),
        "account=\"customer-e1\"".to_owned(),
        "integration=\"echo\"".to_owned(),
        "method=GET".to_owned(),
        "status=200".to_owned(),
        "duration_ms=".to_owned(),
    ] {
        assert!(proxied.contains(&field), "{field} in {proxied}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("route=\"/v1/integrations\"") && line.contains("status=401")),
        "a refused request is logged too: {text}"
    );
    for secret in ["private-value", "header-value-private", "t-s3cret", &key] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
    }

    let (mut child, base, log) = run(&["--no-access-log"]);
    requests(&base).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("integrations::access"), "{text}");
}
