//! One authenticated GET through the library against a loopback server,
//! beside the same GET by plain reqwest with a hand-set header and the same
//! client settings, in the same run.
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use integrations::definition::Format;
use integrations::http::{HttpClient, Method};
use integrations::secrecy::SecretString;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, Integrations, NewAccount};

fn server() -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new().route("/api/ping", axum::routing::get(|| async { "pong" }));
    runtime.spawn(async move { axum::serve(listener, app).await });
    (runtime, format!("http://{address}"))
}

fn authenticated_get(c: &mut Criterion) {
    let (_server, base) = server();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    integrations::register_methods();
    let definitions = Definitions::from_str(
        &format!(
            r#"
            [[integration]]
            key = "bench"
            name = "Bench"
            base_url = "{base}/api"
            auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
            "#
        ),
        Format::Toml,
    )
    .expect("valid definition");
    let http = HttpClient::new().expect("http client");
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let id = AccountId::new("bench").expect("id");
    let account = client.block_on(async {
        store
            .create(
                definitions.get("bench").expect("bench"),
                NewAccount {
                    id: id.clone(),
                    parameters: Default::default(),
                    credentials: [("token", SecretString::from("bench-token"))].into_iter().collect(),
                },
            )
            .await
            .expect("create");
        let hub = Integrations::with_http_client(definitions, store, http.clone());
        hub.client(&id).await.expect("account")
    });
    let plain = http.reqwest().clone();
    let url = format!("{base}/api/ping");

    let mut group = c.benchmark_group("authenticated_get");
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("integrations", |b| {
        b.iter_custom(|iterations| {
            client.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let response = account.request(Method::GET, "ping").send().await.expect("sent");
                    assert!(response.status().is_success());
                    response.bytes().await.expect("body");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("plain_reqwest", |b| {
        b.iter_custom(|iterations| {
            client.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let response = plain
                        .get(&url)
                        .header("Authorization", "Bearer bench-token")
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .expect("sent");
                    assert!(response.status().is_success());
                    response.bytes().await.expect("body");
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    // Loopback latency drifts on a shared machine, so the ratio is taken
    // from requests interleaved one by one; `cargo test` runs benches once
    // without `--bench`, and skips this.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    const PAIRS: u32 = 20_000;
    let (ours, theirs) = client.block_on(async {
        let (mut ours, mut theirs) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..PAIRS {
            let start = Instant::now();
            let response = account.request(Method::GET, "ping").send().await.expect("sent");
            response.bytes().await.expect("body");
            ours += start.elapsed();
            let start = Instant::now();
            let response = plain
                .get(&url)
                .header("Authorization", "Bearer bench-token")
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .expect("sent");
            response.bytes().await.expect("body");
            theirs += start.elapsed();
        }
        (ours / PAIRS, theirs / PAIRS)
    });
    eprintln!(
        "authenticated_get interleaved over {PAIRS} pairs: integrations {ours:?}, plain reqwest {theirs:?}, ratio {:.3}",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}

criterion_group!(benches, authenticated_get);
criterion_main!(benches);
