//! Uploads and downloads a 256 MiB file through this library and through
//! OpenSSH's `sftp` client, to the same loopback sshd in the same run,
//! connection set-up included; prints each throughput and the ratios.
//!
//! `cargo bench -p integration-sftp --bench transfer` (needs openssh-server
//! and openssh-client). `SFTP_BENCH_MIB` and `SFTP_BENCH_ROUNDS` change the
//! size and the number of rounds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_core::definition::Format;
use integration_core::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, NewAccount, Secrets};
use integration_sftp::{SftpClient, SftpSettings, WriteOptions};
use integration_sftp_test_server::{Sshd, UserKey};
use integration_storage_memory::MemoryStorage;
use secrecy::SecretString;

const MIB: u64 = 1024 * 1024;
/// The cipher the library prefers, to compare OpenSSH on the same one too.
const AES_GCM: &str = "aes256-gcm@openssh.com";

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        // `cargo test --all-targets` runs benches once as tests; this one takes minutes.
        eprintln!("transfer: run with `cargo bench -p integration-sftp --bench transfer`");
        return;
    }
    let size_mib: u64 = env_number("SFTP_BENCH_MIB", 256);
    let rounds: usize = env_number("SFTP_BENCH_ROUNDS", 3);
    let sshd = Sshd::start().unwrap_or_else(|reason| panic!("sshd cannot run: {reason}"));
    let local = tempfile::tempdir().expect("temporary directory");
    let source = local.path().join("source.bin");
    write_file(&source, size_mib * MIB);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results: [Vec<Duration>; 6] = Default::default();
    for round in 0..rounds {
        let remote = sshd.files().join(format!("up-{round}.bin"));
        results[0].push(runtime.block_on(library_upload(&sshd, &source, &remote)));
        let downloaded = local.path().join(format!("down-{round}.bin"));
        results[1].push(runtime.block_on(library_download(&sshd, &remote, &downloaded)));
        assert_eq!(
            std::fs::metadata(&downloaded).expect("downloaded").len(),
            size_mib * MIB
        );
        std::fs::remove_file(&downloaded).ok();
        std::fs::remove_file(&remote).ok();

        for (slot, cipher) in [(2, None), (4, Some(AES_GCM))] {
            let put = format!("put {} {}", source.display(), remote.display());
            results[slot].push(openssh(&sshd, &put, cipher));
            let get = format!("get {} {}", remote.display(), downloaded.display());
            results[slot + 1].push(openssh(&sshd, &get, cipher));
            assert_eq!(
                std::fs::metadata(&downloaded).expect("downloaded").len(),
                size_mib * MIB
            );
            std::fs::remove_file(&downloaded).ok();
            std::fs::remove_file(&remote).ok();
        }
    }

    let rate = |durations: &[Duration]| {
        let mut rates: Vec<f64> = durations
            .iter()
            .map(|duration| size_mib as f64 / duration.as_secs_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let [library_up, library_down, openssh_up, openssh_down, gcm_up, gcm_down] =
        results.each_ref().map(|durations| rate(durations));
    println!("{size_mib} MiB, median of {rounds} rounds, connection set-up included (MiB/s):");
    println!("            integrations   OpenSSH sftp (its default cipher)   OpenSSH sftp -c {AES_GCM}");
    for (direction, library, openssh, gcm) in [
        ("upload", library_up, openssh_up, gcm_up),
        ("download", library_down, openssh_down, gcm_down),
    ] {
        println!(
            "  {direction:<9} {library:8.1}   {openssh:8.1} (ratio {:.2})              {gcm:8.1} (ratio {:.2})",
            library / openssh,
            library / gcm
        );
    }
}

async fn client(sshd: &Sshd) -> SftpClient {
    integration_core::method::register::<integration_sftp::Sftp>();
    let definitions = Definitions::from_str(
        "[[integration]]\nkey = \"files\"\nname = \"Files\"\nauth = { type = \"sftp\", host = \"127.0.0.1\" }\n",
        Format::Toml,
    )
    .expect("definition");
    let integration = definitions.get("files").expect("files");
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let mut credentials = Secrets::new();
    for (name, value) in [
        ("username", sshd.user().to_owned()),
        ("port", sshd.port().to_string()),
        ("private_key", sshd.user_key(UserKey::Ed25519)),
        ("host_key", sshd.host_public_key()),
    ] {
        credentials.insert(name, SecretString::from(value));
    }
    let account = store
        .create(
            integration,
            NewAccount {
                id: AccountId::new("bench").expect("id"),
                parameters: Secrets::new(),
                credentials,
            },
        )
        .await
        .expect("account");
    SftpClient::new(integration, &account, SftpSettings::default()).expect("client")
}

async fn library_upload(sshd: &Sshd, source: &Path, remote: &Path) -> Duration {
    let started = Instant::now();
    let sftp = client(sshd).await;
    let mut file = tokio::fs::File::open(source).await.expect("source");
    sftp.write_from(&remote.display().to_string(), &mut file, WriteOptions::default())
        .await
        .expect("upload");
    sftp.close().await;
    started.elapsed()
}

async fn library_download(sshd: &Sshd, remote: &Path, local: &Path) -> Duration {
    let started = Instant::now();
    let sftp = client(sshd).await;
    let mut file = tokio::fs::File::create(local).await.expect("target");
    sftp.read_to(&remote.display().to_string(), &mut file)
        .await
        .expect("download");
    file.sync_data().await.ok();
    sftp.close().await;
    started.elapsed()
}

/// One `sftp -b` session running `command`, timed from start to exit;
/// `cipher` overrides OpenSSH's choice.
fn openssh(sshd: &Sshd, command: &str, cipher: Option<&str>) -> Duration {
    let known_hosts = sshd.files().join("../bench_known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts()).expect("known_hosts");
    let started = Instant::now();
    let mut child = Command::new("sftp")
        .arg("-q")
        .arg("-b")
        .arg("-")
        .arg("-P")
        .arg(sshd.port().to_string())
        .arg("-i")
        .arg(sshd.user_key_path(UserKey::Ed25519))
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(cipher.map(|cipher| format!("-oCiphers={cipher}")))
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("OpenSSH sftp");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{command}\n").as_bytes())
        .expect("batch");
    let status = child.wait().expect("sftp");
    assert!(status.success(), "sftp {command}: {status}");
    started.elapsed()
}

fn write_file(path: &Path, size: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("source"));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut block = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block).expect("write");
    }
    file.flush().expect("flush");
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
