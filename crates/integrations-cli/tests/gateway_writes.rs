//! Many clients writing through `integrations serve` at once, on the
//! embedded sled store: every write is answered, and every acknowledged
//! account is still there after the process is killed and started again.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Gateway, api_key};

const CLIENTS: usize = 64;
const ACCOUNTS_PER_CLIENT: usize = 8;
/// Far above a healthy answer's time (milliseconds); a hung store never
/// answers at all.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_account_creations_are_all_answered_and_survive_a_kill() {
    let data = tempfile::tempdir().expect("temp dir");
    let key = api_key(data.path());
    let gateway = Gateway::start(&examples(), data.path()).await;

    let mut clients = Vec::with_capacity(CLIENTS);
    for client_index in 0..CLIENTS {
        // A client of its own per task: its own keep-alive connection.
        let client = reqwest::Client::builder()
            .timeout(ANSWER_WITHIN)
            .build()
            .expect("client");
        let url = format!("{}/v1/accounts", gateway.base);
        let key = key.clone();
        clients.push(tokio::spawn(async move {
            for n in 0..ACCOUNTS_PER_CLIENT {
                let id = format!("load-{client_index:02}-{n}");
                let body = serde_json::json!({
                    "integration": "weather",
                    "id": id,
                    "credentials": { "token": format!("token-of-{id}") },
                });
                let response = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("creating {id}: no answer ({error})"));
                assert_eq!(response.status(), reqwest::StatusCode::CREATED, "creating {id}");
            }
        }));
    }
    for client in clients {
        client.await.expect("a client failed");
    }

    // SIGKILL: nothing is flushed on the way out.
    drop(gateway);
    let gateway = Gateway::start(&examples(), data.path()).await;
    let listed = reqwest::Client::new()
        .get(format!("{}/v1/accounts?limit=1000", gateway.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("list accounts");
    assert_eq!(listed.status(), reqwest::StatusCode::OK);
    let page: serde_json::Value = serde_json::from_str(&listed.text().await.expect("body")).expect("a JSON page");
    let mut ids: Vec<&str> = page["accounts"]
        .as_array()
        .expect("a list of accounts")
        .iter()
        .map(|account| account["id"].as_str().expect("an id"))
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<String> = (0..CLIENTS)
        .flat_map(|client| (0..ACCOUNTS_PER_CLIENT).map(move |n| format!("load-{client:02}-{n}")))
        .collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every acknowledged account must be there after a kill");
}
