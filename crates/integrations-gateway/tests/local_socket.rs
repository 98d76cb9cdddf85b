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

/// A private directory for the tests' sockets (short: a socket's path is
/// at most 107 bytes).
fn private_dir() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sockets");
    std::fs::create_dir_all(&dir).expect("sockets directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("private");
    dir
}

/// A fresh socket path.
fn socket_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    private_dir().join(format!(
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
    let (gateway, status) = LocalGateway::find(&path)
        .await
        .expect("no error")
        .expect("the gateway answers");
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
    let (gateway, found) = LocalGateway::find(&path).await.expect("no error").expect("answers");
    assert_eq!(found, status);
    assert!(!found.store_shared, "a status-only gateway lends no store");
    let refused = integrations::storage::Storage::check(&gateway.storage())
        .await
        .expect_err("no store lent");
    assert!(refused.to_string().contains("does not lend its store"), "{refused}");

    drop(socket);
    assert!(!path.exists(), "removed when the gateway stops");
    assert!(LocalGateway::find(&path).await.expect("no error").is_none());

    // A file left by a gateway that died is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    assert!(path.exists());
    assert!(
        LocalGateway::find(&path).await.expect("no error").is_none(),
        "nobody answers a stale socket"
    );
    let replaced = LocalSocket::bind(&path).expect("a stale socket is replaced");
    drop(replaced);
}

#[tokio::test]
async fn nothing_but_a_stale_socket_is_replaced_and_only_private_directories_hold_one() {
    use std::os::unix::fs::PermissionsExt;

    // A file, or a symlink, at the socket's path is left as it is.
    let path = socket_path();
    std::fs::write(&path, "not a socket").expect("file");
    let refused = LocalSocket::bind(&path).expect_err("a file is not replaced");
    assert!(refused.to_string().contains("is not a socket"), "{refused}");
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), "not a socket");
    std::fs::remove_file(&path).expect("clean up");
    let target = socket_path();
    std::fs::write(&target, "the target").expect("target");
    std::os::unix::fs::symlink(&target, &path).expect("symlink");
    assert!(
        LocalSocket::bind(&path).is_err(),
        "a symlink is not followed nor replaced"
    );
    assert_eq!(std::fs::read_to_string(&target).expect("kept"), "the target");
    std::fs::remove_file(&path).expect("clean up");
    std::fs::remove_file(&target).expect("clean up");

    // A directory others may enter holds no socket.
    let open = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).expect("open");
    let refused = LocalSocket::bind(&open.path().join("gateway.sock")).expect_err("not private");
    assert!(refused.to_string().contains("not a private directory"), "{refused}");

    // A socket that another gateway took over is not removed by this one.
    let path = socket_path();
    let first = LocalSocket::bind(&path).expect("bind");
    std::fs::remove_file(&path).expect("taken over");
    let second = LocalSocket::bind(&path).expect("bind again");
    drop(first);
    assert!(path.exists(), "the other gateway's socket stays");
    drop(second);
    assert!(!path.exists());
}

#[tokio::test]
async fn a_gateway_of_another_protocol_is_refused_by_name() {
    let path = socket_path();
    let mut socket = LocalSocket::bind(&path).expect("bind");
    let listener = socket.take_listener().expect("listener");
    let mut status = GatewayStatus::of_this_process("http://127.0.0.1:8400".to_owned(), "memory".to_owned());
    status.protocol = integrations_gateway::local::PROTOCOL + 1;
    status.version = "9.9.9".to_owned();
    tokio::spawn(integrations_gateway::local::serve(listener, LocalService::new(status)));
    let refused = LocalGateway::find(&path).await.expect_err("another protocol");
    assert!(refused.to_string().contains("version 9.9.9"), "{refused}");
    assert!(refused.to_string().contains("speaks another protocol"), "{refused}");
}
