//! Against OpenSSH's sshd on loopback: logins, host keys, every operation,
//! a 100 MiB round trip, broken and stalled connections.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use integration_core::definition::Format;
use integration_core::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, ErrorKind, NewAccount, Secrets};
use integration_sftp::{ACCEPT_ANY, FileKind, SftpClient, SftpSettings, WriteOptions};
use integration_sftp_test_server::{PASSPHRASE, Proxy, Sshd, UserKey, password_login_or_skip, start_or_skip};
use integration_storage_memory::MemoryStorage;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An `sftp` account on 127.0.0.1:`port` with `credentials`.
async fn client(
    port: u16,
    credentials: &[(&str, &str)],
    settings: SftpSettings,
) -> integration_core::Result<SftpClient> {
    integration_core::method::register::<integration_sftp::Sftp>();
    let definitions = Definitions::from_str(
        r#"
        [[integration]]
        key = "files"
        name = "Files"
        [integration.auth]
        type = "sftp"
        host = "127.0.0.1"
        "#,
        Format::Toml,
    )
    .expect("valid definition");
    let integration = definitions.get("files").expect("files");
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let mut secrets = Secrets::new();
    secrets.insert("port", SecretString::from(port.to_string()));
    for (name, value) in credentials {
        secrets.insert(*name, SecretString::from((*value).to_owned()));
    }
    let account = store
        .create(
            integration,
            NewAccount {
                id: AccountId::new("files1").expect("id"),
                parameters: Secrets::new(),
                credentials: secrets,
            },
        )
        .await?;
    SftpClient::new(integration, &account, settings)
}

async fn key_client(sshd: &Sshd, key: UserKey, settings: SftpSettings) -> SftpClient {
    key_client_on(sshd, sshd.port(), key, settings).await
}

async fn key_client_on(sshd: &Sshd, port: u16, key: UserKey, settings: SftpSettings) -> SftpClient {
    let private_key = sshd.user_key(key);
    let host_key = sshd.host_public_key();
    let mut credentials = vec![
        ("username", sshd.user()),
        ("private_key", private_key.as_str()),
        ("host_key", host_key.as_str()),
    ];
    if key.is_encrypted() {
        credentials.push(("passphrase", PASSPHRASE));
    }
    client(port, &credentials, settings).await.expect("client")
}

fn path(sshd: &Sshd, name: &str) -> String {
    format!("{}/{name}", sshd.files().display())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_format_logs_in() {
    let Some(sshd) = start_or_skip() else { return };
    for key in UserKey::ALL {
        let sftp = key_client(&sshd, key, SftpSettings::default()).await;
        let info = sftp.stat(&sshd.files().display().to_string()).await;
        assert!(info.is_ok_and(|info| info.is_dir()), "{key:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_pasted_without_its_line_breaks_still_logs_in() {
    let Some(sshd) = start_or_skip() else { return };
    let one_line = sshd.user_key(UserKey::RsaPem).replace('\n', " ");
    let host_key = sshd.host_public_key();
    let sftp = client(
        sshd.port(),
        &[
            ("username", sshd.user()),
            ("private_key", &one_line),
            ("host_key", &host_key),
        ],
        SftpSettings::default(),
    )
    .await
    .expect("repaired key");
    sftp.connect().await.expect("login");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_passphrase_is_named() {
    let Some(sshd) = start_or_skip() else { return };
    let key = sshd.user_key(UserKey::Ed25519Encrypted);
    let host_key = sshd.host_public_key();
    let mut credentials = vec![
        ("username", sshd.user()),
        ("private_key", key.as_str()),
        ("host_key", &host_key),
    ];
    let error = client(sshd.port(), &credentials, SftpSettings::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("is encrypted: give its `passphrase`"),
        "{error}"
    );
    credentials.push(("passphrase", "wrong"));
    let error = client(sshd.port(), &credentials, SftpSettings::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("`passphrase` does not decrypt"), "{error}");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_host_key_form_pins_the_server() {
    let Some(sshd) = start_or_skip() else { return };
    let key = sshd.user_key(UserKey::Ed25519);
    for host_key in [sshd.host_public_key(), sshd.host_key_fingerprint(), sshd.known_hosts()] {
        let sftp = client(
            sshd.port(),
            &[
                ("username", sshd.user()),
                ("private_key", &key),
                ("host_key", &host_key),
            ],
            SftpSettings::default(),
        )
        .await
        .expect("client");
        sftp.connect()
            .await
            .unwrap_or_else(|error| panic!("{host_key}: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_host_key_is_refused_with_both_fingerprints() {
    let Some(sshd) = start_or_skip() else { return };
    let Some(other) = start_or_skip() else { return };
    let key = sshd.user_key(UserKey::Ed25519);
    let pinned = other.host_public_key();
    let sftp = client(
        sshd.port(),
        &[("username", sshd.user()), ("private_key", &key), ("host_key", &pinned)],
        SftpSettings::default(),
    )
    .await
    .expect("client");
    let error = sftp.list(&sshd.files().display().to_string()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Refused);
    let message = error.to_string();
    assert!(message.contains("host key mismatch"), "{message}");
    assert!(
        message.contains(&other.host_key_fingerprint()),
        "expected fingerprint: {message}"
    );
    assert!(
        message.contains(&sshd.host_key_fingerprint()),
        "presented fingerprint: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn accepting_any_host_key_takes_an_explicit_opt_in() {
    let Some(sshd) = start_or_skip() else { return };
    let key = sshd.user_key(UserKey::Ed25519);
    let sftp = client(
        sshd.port(),
        &[
            ("username", sshd.user()),
            ("private_key", &key),
            ("host_key", ACCEPT_ANY),
        ],
        SftpSettings::default(),
    )
    .await
    .expect("client");
    // Every connection logs the unchecked key as a warning.
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::WARN)
        .finish();
    // Global: the check runs on russh's session task, on any worker thread.
    // Lines are told apart by this server's fingerprint.
    tracing::subscriber::set_global_default(subscriber).expect("the only test that sets one");
    for _ in 0..2 {
        sftp.connect().await.expect("accepted");
        sftp.close().await;
    }
    let text = logs.text();
    let fingerprint = sshd.host_key_fingerprint();
    let warnings = text
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("unchecked") && line.contains(&fingerprint))
        .count();
    assert_eq!(warnings, 2, "{text}");
    let error = client(
        sshd.port(),
        &[("username", sshd.user()), ("private_key", &key)],
        SftpSettings::default(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("missing credential `host_key`"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_a_clear_error() {
    let Some(sshd) = start_or_skip() else { return };
    let host_key = sshd.host_public_key();
    let sftp = client(
        sshd.port(),
        &[
            ("username", sshd.user()),
            ("password", "not-the-password"),
            ("host_key", &host_key),
        ],
        SftpSettings::default(),
    )
    .await
    .expect("client");
    let error = sftp.connect().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Refused);
    let message = error.to_string();
    assert!(
        message.contains("refused the password of the account's user"),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(
        !message.contains(sshd.user()),
        "the username is a credential: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn password_login_and_every_operation() {
    let Some((sshd, login)) = password_login_or_skip() else {
        return;
    };
    let host_key = sshd.host_public_key();
    let sftp = client(
        sshd.port(),
        &[
            ("username", &login.user),
            ("password", &login.password),
            ("host_key", &host_key),
        ],
        SftpSettings::default(),
    )
    .await
    .expect("client");
    let root = format!("{}/ops-{}", login.home.display(), std::process::id());
    every_operation(&sftp, &root).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_with_a_key() {
    let Some(sshd) = start_or_skip() else { return };
    let sftp = key_client(&sshd, UserKey::Ed25519, SftpSettings::default()).await;
    every_operation(&sftp, &path(&sshd, "ops")).await;
}

async fn every_operation(sftp: &SftpClient, root: &str) {
    assert!(!sftp.exists(root).await.unwrap());
    sftp.mkdir(&format!("{root}/a/b/c"), true).await.expect("mkdir -p");
    sftp.mkdir(&format!("{root}/a/b/c"), true)
        .await
        .expect("mkdir -p on an existing directory");
    let error = sftp.mkdir(&format!("{root}/a"), false).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
    assert!(sftp.stat(&format!("{root}/a/b")).await.unwrap().is_dir());

    let file = format!("{root}/a/hello.txt");
    let written = sftp
        .write_from(&file, &mut &b"hello, sftp\n"[..], WriteOptions::default())
        .await
        .expect("write");
    assert_eq!(written, 12);
    let info = sftp.stat(&file).await.expect("stat");
    assert_eq!((info.kind, info.size), (FileKind::File, Some(12)));
    assert!(sftp.exists(&file).await.unwrap());

    let mut read = Vec::new();
    assert_eq!(sftp.read_to(&file, &mut read).await.expect("read"), 12);
    assert_eq!(read, b"hello, sftp\n");

    let entries = sftp.list(&format!("{root}/a")).await.expect("list");
    let names: Vec<(&str, FileKind)> = entries
        .iter()
        .map(|entry| (entry.name.as_str(), entry.info.kind))
        .collect();
    assert_eq!(names, [("b", FileKind::Directory), ("hello.txt", FileKind::File)]);

    // Atomic write replaces the file in one step and leaves no temporary file.
    sftp.write_from(&file, &mut &b"replaced"[..], WriteOptions { atomic: true })
        .await
        .expect("atomic write");
    let mut read = Vec::new();
    sftp.read_to(&file, &mut read).await.unwrap();
    assert_eq!(read, b"replaced");
    assert_eq!(sftp.list(&format!("{root}/a")).await.unwrap().len(), 2);

    let moved = format!("{root}/a/b/moved.txt");
    sftp.rename(&file, &moved).await.expect("rename");
    assert!(!sftp.exists(&file).await.unwrap());
    let error = sftp.stat(&file).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert!(error.to_string().contains(&file), "{error}");

    let error = sftp.rmdir(&format!("{root}/a/b")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict, "not empty: {error}");
    sftp.remove(&moved).await.expect("remove");
    for dir in ["a/b/c", "a/b", "a", ""] {
        sftp.rmdir(format!("{root}/{dir}").trim_end_matches('/'))
            .await
            .expect("rmdir");
    }
    assert!(!sftp.exists(root).await.unwrap());
    let error = sftp.read_to(&file, &mut Vec::new()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
}

/// Deterministic bytes, produced as they are read.
struct Pattern {
    remaining: u64,
    state: u64,
}

impl AsyncRead for Pattern {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.remaining) as usize;
        let mut bytes = Vec::with_capacity(n);
        while bytes.len() < n {
            // xorshift64
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            bytes.extend_from_slice(&self.state.to_le_bytes()[..(n - bytes.len()).min(8)]);
        }
        buf.put_slice(&bytes);
        self.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

/// Hashes what is written to it.
#[derive(Default)]
struct Hasher(Sha256, u64);

impl AsyncWrite for Hasher {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_round_trip_keeps_every_byte() {
    let Some(sshd) = start_or_skip() else { return };
    let sftp = key_client(&sshd, UserKey::Ed25519, SftpSettings::default()).await;
    let remote = path(&sshd, "big.bin");
    let size = 100 * MIB;

    let mut expected = Hasher::default();
    tokio::io::copy(
        &mut Pattern {
            remaining: size,
            state: 7,
        },
        &mut expected,
    )
    .await
    .unwrap();
    let sent = sftp
        .write_from(
            &remote,
            &mut Pattern {
                remaining: size,
                state: 7,
            },
            WriteOptions { atomic: true },
        )
        .await
        .expect("upload");
    assert_eq!(sent, size);
    assert_eq!(std::fs::metadata(sshd.files().join("big.bin")).unwrap().len(), size);

    let mut received = Hasher::default();
    assert_eq!(sftp.read_to(&remote, &mut received).await.expect("download"), size);
    assert_eq!(received.1, size);
    assert_eq!(received.0.finalize(), expected.0.finalize());
    // What sshd wrote to disk is the same too.
    let on_disk = Sha256::digest(std::fs::read(sshd.files().join("big.bin")).unwrap());
    assert_eq!(
        on_disk,
        Sha256::digest({
            let mut bytes = Vec::new();
            tokio::io::copy(
                &mut Pattern {
                    remaining: size,
                    state: 7,
                },
                &mut bytes,
            )
            .await
            .unwrap();
            bytes
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_is_reused_reopened_after_a_drop_and_closed_when_idle() {
    let Some(sshd) = start_or_skip() else { return };
    let proxy = Proxy::start(sshd.port()).await;
    let settings = SftpSettings {
        idle_timeout: Duration::from_millis(400),
        ..SftpSettings::default()
    };
    let sftp = key_client_on(&sshd, proxy.port(), UserKey::Ed25519, settings).await;
    let dir = sshd.files().display().to_string();
    let calls: Vec<_> = (0..8).map(|_| sftp.list(&dir)).collect();
    for outcome in futures_util::future::join_all(calls).await {
        outcome.expect("list");
    }
    sftp.stat(&dir).await.unwrap();
    assert_eq!(proxy.connections(), 1, "one connection for every call");

    proxy.cut();
    sftp.stat(&dir).await.expect("reconnects after the connection dropped");
    assert_eq!(proxy.connections(), 2);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    sftp.stat(&dir).await.expect("reconnects after the idle close");
    assert_eq!(proxy.connections(), 3, "the idle connection was closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_going_away_mid_transfer_is_an_error_not_a_hang() {
    let Some(sshd) = start_or_skip() else { return };
    std::fs::write(sshd.files().join("source.bin"), vec![7u8; (64 * MIB) as usize]).unwrap();
    let proxy = Proxy::start(sshd.port()).await;
    let sftp = key_client_on(&sshd, proxy.port(), UserKey::Ed25519, SftpSettings::default()).await;

    // Download: cut after the first bytes arrive.
    let mut sink = CutAfter {
        proxy: &proxy,
        after: 4 * MIB,
        seen: 0,
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        sftp.read_to(&path(&sshd, "source.bin"), &mut sink),
    )
    .await;
    let error = outcome.expect("no hang").unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Transport | ErrorKind::Timeout),
        "{error}"
    );
    assert!(sink.seen < 64 * MIB);

    // Upload into an atomic write: the connection is reopened, then cut.
    let source = Pattern {
        remaining: 64 * MIB,
        state: 1,
    };
    let mut source = CutWhileReading {
        inner: source,
        proxy: &proxy,
        after: 4 * MIB,
        read: 0,
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        sftp.write_from(&path(&sshd, "target.bin"), &mut source, WriteOptions { atomic: true }),
    )
    .await;
    let error = outcome.expect("no hang").unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Transport | ErrorKind::Timeout),
        "{error}"
    );
    assert!(
        !sshd.files().join("target.bin").exists(),
        "no partial file under the final name"
    );

    // The next call works again on a new connection.
    sftp.stat(&path(&sshd, "source.bin")).await.expect("reconnected");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_times_out() {
    let Some(sshd) = start_or_skip() else { return };
    std::fs::write(sshd.files().join("source.bin"), vec![7u8; (16 * MIB) as usize]).unwrap();
    let proxy = Proxy::start(sshd.port()).await;
    let settings = SftpSettings {
        request_timeout: Duration::from_secs(2),
        keepalive_interval: Duration::from_secs(1),
        ..SftpSettings::default()
    };
    let sftp = key_client_on(&sshd, proxy.port(), UserKey::Ed25519, settings).await;
    sftp.connect().await.unwrap();
    proxy.stall();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        sftp.read_to(&path(&sshd, "source.bin"), &mut Hasher::default()),
    )
    .await;
    let error = outcome.expect("no hang").unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Timeout | ErrorKind::Transport),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_process_dying_mid_download_is_an_error() {
    let Some(mut sshd) = start_or_skip() else { return };
    std::fs::write(sshd.files().join("source.bin"), vec![7u8; (256 * MIB) as usize]).unwrap();
    let sftp = key_client(&sshd, UserKey::Ed25519, SftpSettings::default()).await;
    sftp.connect().await.unwrap();
    let file = path(&sshd, "source.bin");
    let mut sink = Hasher::default();
    let download = sftp.read_to(&file, &mut sink);
    tokio::pin!(download);
    tokio::select! {
        outcome = &mut download => panic!("256 MiB arrived before the server was stopped: {outcome:?}"),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    sshd.stop();
    let outcome = tokio::time::timeout(Duration::from_secs(60), download).await;
    let error = outcome.expect("no hang").unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Transport | ErrorKind::Timeout),
        "{error}"
    );
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// A sink that cuts the proxy once `after` bytes arrived.
struct CutAfter<'a> {
    proxy: &'a Proxy,
    after: u64,
    seen: u64,
}

impl AsyncWrite for CutAfter<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.seen += buf.len() as u64;
        if self.seen >= self.after {
            self.proxy.cut();
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A source that cuts the proxy once `after` bytes were read from it.
struct CutWhileReading<'a> {
    inner: Pattern,
    proxy: &'a Proxy,
    after: u64,
    read: u64,
}

impl AsyncRead for CutWhileReading<'_> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let outcome = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        if self.read >= self.after {
            self.proxy.cut();
        }
        outcome
    }
}

#[tokio::test]
async fn debug_output_never_shows_a_credential() {
    let sftp = client(
        2222,
        &[
            ("username", "user-s3cret"),
            ("password", "password-s3cret"),
            ("host_key", "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"),
        ],
        SftpSettings::default(),
    )
    .await
    .expect("client");
    let shown = format!("{sftp:?}");
    assert!(shown.contains("127.0.0.1") && shown.contains("password"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}
