//! The local socket: a gateway's store used through it keeps the whole
//! `Storage` and `WebhookStorage` contract, and the socket is the owner's
//! only.
#![cfg(unix)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use integrations::definition::Format;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountStore, Cipher, Definitions, EncryptionKey, Integrations};
use integrations_gateway::local::{GatewayStatus, LocalGateway, LocalService, LocalSocket, SocketStorage};

const DEFINITIONS: &str = r#"
[[integration]]
key = "weather"
name = "Weather"
base_url = "https://api.weather.example"

[integration.auth]
type = "api_token"
token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
"#;

/// A fresh socket path (short: a socket's path is at most 107 bytes).
fn socket_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "gw-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A gateway lending a fresh memory store on a socket of its own, served
/// for as long as the runtime runs; the store as a command sees it.
async fn served_store() -> Arc<SocketStorage> {
    integrations::register_methods();
    let definitions = Definitions::from_str(DEFINITIONS, Format::Toml).expect("valid");
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let integrations = Integrations::new(definitions, store).expect("integrations");
    let path = socket_path();
    let mut socket = LocalSocket::bind(&path).expect("bind");
    let listener = socket.take_listener().expect("listener");
    let service = LocalService::new(GatewayStatus::of_this_process(
        "http://127.0.0.1:0".to_owned(),
        "memory".to_owned(),
    ))
    .with_store(integrations);
    tokio::spawn(async move {
        // The socket's file goes when the server ends with the runtime.
        let _socket = socket;
        let _ = integrations_gateway::local::serve(listener, service).await;
    });
    let (gateway, status) = LocalGateway::find(&path).await.expect("the gateway answers");
    assert!(status.store_shared);
    Arc::new(gateway.storage())
}

integration_storage_tests::conformance_tests!(served_store);
integration_storage_tests::webhook_storage_tests!(served_store);

#[tokio::test]
async fn the_socket_is_the_owner_s_only_and_a_live_one_is_not_taken_over() {
    use std::os::unix::fs::PermissionsExt;

    let path = socket_path();
    let mut socket = LocalSocket::bind(&path).expect("bind");
    let mode = std::fs::metadata(&path).expect("socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let listener = socket.take_listener().expect("listener");
    let status = GatewayStatus::of_this_process("http://127.0.0.1:8400".to_owned(), "memory".to_owned());
    tokio::spawn(integrations_gateway::local::serve(
        listener,
        LocalService::new(status.clone()),
    ));

    let taken = LocalSocket::bind(&path).expect_err("a live socket is kept");
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    let (gateway, found) = LocalGateway::find(&path).await.expect("answers");
    assert_eq!(found, status);
    assert!(!found.store_shared, "a status-only gateway lends no store");
    let refused = integrations::storage::Storage::check(&gateway.storage())
        .await
        .expect_err("no store lent");
    assert!(refused.to_string().contains("does not lend its store"), "{refused}");

    drop(socket);
    assert!(!path.exists(), "removed when the gateway stops");
    assert!(LocalGateway::find(&path).await.is_none());

    // A file left by a gateway that died is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    assert!(path.exists());
    assert!(
        LocalGateway::find(&path).await.is_none(),
        "nobody answers a stale socket"
    );
    let replaced = LocalSocket::bind(&path).expect("a stale socket is replaced");
    drop(replaced);
}
