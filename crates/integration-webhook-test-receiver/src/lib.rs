#![doc = include_str!("../README.md")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// Every `v1,…` signature of `webhook-signature`.
    pub signatures: Vec<String>,
    /// The body as JSON.
    pub body: Value,
    /// The body as sent.
    pub raw: Vec<u8>,
    /// The status it was answered.
    pub answered: u16,
}

impl Received {
    /// Whether one of the signatures is the one `secret` (`whsec_…`) makes.
    pub fn signed_with(&self, secret: &str) -> bool {
        let expected = signature(secret, &self.id, self.timestamp, &self.raw);
        self.signatures.contains(&expected)
    }

    /// The event's type.
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

/// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the
/// decoded bytes of `secret` (`whsec_…`), as the specification says.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(key) = BASE64.decode(secret.strip_prefix("whsec_").unwrap_or(secret)) else {
        return String::new();
    };
    let Ok(mut mac) = Hmac::<sha2_independent::Sha256>::new_from_slice(&key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Statuses to answer, in turn; 204 once they are spent.
    script: VecDeque<u16>,
}

/// A receiver listening on loopback until dropped.
pub struct Receiver {
    address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("address")).await
    }

    /// Listens on `address` (to come back on a port a test chose).
    pub async fn start_on(address: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind the receiver");
        let address = listener.local_addr().expect("address");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { address, inner, task }
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers the next requests with `statuses`, in turn, then 204.
    pub fn answer(&self, statuses: &[u16]) {
        self.inner().script.extend(statuses);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner().received.clone()
    }

    /// Waits until `count` requests were answered 2xx; panics after `within`.
    pub async fn wait_for_delivered(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let delivered: Vec<_> = self
                .received()
                .into_iter()
                .filter(|received| (200..300).contains(&received.answered))
                .collect();
            if delivered.len() >= count {
                return delivered;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("expected {count} deliveries, got {:#?}", self.received());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut inner = inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let answered = inner.script.pop_front().unwrap_or(204);
    inner.received.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or_default(),
        signatures: header("webhook-signature").split(' ').map(str::to_owned).collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        answered,
    });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::NO_CONTENT)
}
