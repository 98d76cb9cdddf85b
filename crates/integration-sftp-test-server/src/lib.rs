#![doc = include_str!("../README.md")]

use std::fmt::Write as _;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const SSHD: &str = "/usr/sbin/sshd";

/// The passphrase of the encrypted user keys.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// The user keys [`Sshd`] generates and authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKey {
    /// Ed25519 in the OpenSSH format.
    Ed25519,
    /// RSA 3072 in the PEM (PKCS#1) format.
    RsaPem,
    /// ECDSA P-256 in the PKCS#8 format.
    EcdsaPkcs8,
    /// Ed25519 in the OpenSSH format, encrypted with [`PASSPHRASE`].
    Ed25519Encrypted,
    /// RSA 2048 in the PEM format, encrypted (AES-128-CBC) with [`PASSPHRASE`].
    RsaPemEncrypted,
}

impl UserKey {
    /// Every kind.
    pub const ALL: [UserKey; 5] = [
        Self::Ed25519,
        Self::RsaPem,
        Self::EcdsaPkcs8,
        Self::Ed25519Encrypted,
        Self::RsaPemEncrypted,
    ];

    fn file_name(self) -> &'static str {
        match self {
            Self::Ed25519 => "id_ed25519",
            Self::RsaPem => "id_rsa_pem",
            Self::EcdsaPkcs8 => "id_ecdsa_pkcs8",
            Self::Ed25519Encrypted => "id_ed25519_encrypted",
            Self::RsaPemEncrypted => "id_rsa_pem_encrypted",
        }
    }

    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            Self::Ed25519 | Self::Ed25519Encrypted => &["-t", "ed25519"],
            Self::RsaPem => &["-t", "rsa", "-b", "3072", "-m", "PEM"],
            Self::EcdsaPkcs8 => &["-t", "ecdsa", "-b", "256", "-m", "PKCS8"],
            Self::RsaPemEncrypted => &["-t", "rsa", "-b", "2048", "-m", "PEM"],
        }
    }

    /// Whether the key is encrypted with [`PASSPHRASE`].
    pub fn is_encrypted(self) -> bool {
        matches!(self, Self::Ed25519Encrypted | Self::RsaPemEncrypted)
    }
}

/// A running `sshd` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct Sshd {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    user: String,
}

impl Sshd {
    /// Generates keys and starts `sshd` on a free loopback port; the reason
    /// when it cannot.
    pub fn start() -> Result<Sshd, String> {
        if !Path::new(SSHD).exists() {
            return Err(format!(
                "{SSHD} is not installed (Debian: apt-get install openssh-server)"
            ));
        }
        let user = current_user()?;
        let dir = tempfile::Builder::new()
            .prefix("integrations-sshd-")
            .tempdir()
            .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
        keygen(&dir.path().join("host_ed25519"), &["-t", "ed25519"], "")?;
        let mut authorized = String::new();
        for key in UserKey::ALL {
            let path = dir.path().join(key.file_name());
            keygen(
                &path,
                key.keygen_args(),
                if key.is_encrypted() { PASSPHRASE } else { "" },
            )?;
            authorized.push_str(&read(&path.with_extension("pub"))?);
        }
        std::fs::write(dir.path().join("authorized_keys"), authorized).map_err(|error| error.to_string())?;
        std::fs::create_dir(dir.path().join("files")).map_err(|error| error.to_string())?;
        if is_root() {
            // Debian's sshd refuses to start without its privilege separation directory.
            std::fs::create_dir_all("/run/sshd").map_err(|error| format!("cannot create /run/sshd: {error}"))?;
        }

        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            match spawn(dir.path(), port) {
                Ok(child) => {
                    return Ok(Sshd {
                        child: Some(child),
                        dir,
                        port,
                        user,
                    });
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user the [`UserKey`]s log in as: the one running the tests.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// A directory the user can write to, empty at start.
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// The host's public key, `ssh-ed25519 AAAA… comment`.
    pub fn host_public_key(&self) -> String {
        read(&self.dir.path().join("host_ed25519.pub"))
            .expect("host key")
            .trim()
            .to_owned()
    }

    /// The host key's fingerprint as OpenSSH prints it, `SHA256:…`.
    pub fn host_key_fingerprint(&self) -> String {
        let output = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(self.dir.path().join("host_ed25519.pub"))
            .output()
            .expect("ssh-keygen -l");
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_whitespace().nth(1).expect("fingerprint").to_owned()
    }

    /// The private key text of `key`.
    pub fn user_key(&self, key: UserKey) -> String {
        read(&self.user_key_path(key)).expect("user key")
    }

    /// The private key file of `key` (mode 0600, as `ssh` wants it).
    pub fn user_key_path(&self, key: UserKey) -> PathBuf {
        self.dir.path().join(key.file_name())
    }

    /// `known_hosts` lines that pin the host key for this server.
    pub fn known_hosts(&self) -> String {
        let key = self.host_public_key();
        let mut fields = key.split_whitespace();
        let (algorithm, base64) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
        let mut lines = String::new();
        writeln!(lines, "[127.0.0.1]:{} {algorithm} {base64}", self.port).expect("write to a String");
        lines
    }

    /// Kills the server and every session it serves.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Sessions run in processes forked from the listener, each in its own session.
            for pid in descendants(child.id()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The running server, or `None` after printing why it cannot run; panics
/// instead when `INTEGRATIONS_REQUIRE_PEERS=1`.
pub fn start_or_skip() -> Option<Sshd> {
    match Sshd::start() {
        Ok(sshd) => Some(sshd),
        Err(reason) => {
            skip(&format!("sshd cannot run: {reason}"));
            None
        }
    }
}

/// A user who logs in with a password, from `INTEGRATIONS_TEST_SFTP_USER`
/// and `INTEGRATIONS_TEST_SFTP_PASSWORD` (`.ci/run` creates one), and the
/// running server; `None` after printing why not, as [`start_or_skip`].
pub fn password_login_or_skip() -> Option<(Sshd, PasswordLogin)> {
    let (Ok(user), Ok(password)) = (
        std::env::var("INTEGRATIONS_TEST_SFTP_USER"),
        std::env::var("INTEGRATIONS_TEST_SFTP_PASSWORD"),
    ) else {
        skip("no password user: set INTEGRATIONS_TEST_SFTP_USER and INTEGRATIONS_TEST_SFTP_PASSWORD");
        return None;
    };
    if !is_root() {
        skip("sshd checks passwords only when it runs as root");
        return None;
    }
    let home = Command::new("getent")
        .args(["passwd", &user])
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|line| line.split(':').nth(5).map(PathBuf::from));
    let Some(home) = home else {
        skip(&format!("user {user} does not exist"));
        return None;
    };
    let sshd = start_or_skip()?;
    Some((sshd, PasswordLogin { user, password, home }))
}

/// A user who logs in with a password.
#[derive(Debug, Clone)]
pub struct PasswordLogin {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
    /// The user's home directory, writable by the user.
    pub home: PathBuf,
}

fn skip(reason: &str) {
    integration_test_peers::skip("sftp", reason);
}

fn spawn(dir: &Path, port: u16) -> Result<Child, String> {
    let config = format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {dir}/host_ed25519\n\
         PidFile none\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin yes\n\
         MaxStartups 200\n\
         MaxSessions 64\n\
         Subsystem sftp internal-sftp\n\
         LogLevel ERROR\n",
        dir = dir.display()
    );
    let config_path = dir.join("sshd_config");
    std::fs::write(&config_path, config).map_err(|error| error.to_string())?;
    let log = std::fs::File::create(dir.join("sshd.log")).map_err(|error| error.to_string())?;
    let mut child = Command::new(SSHD)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|error| format!("cannot start {SSHD}: {error}"))?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
            let log = read(&dir.join("sshd.log")).unwrap_or_default();
            return Err(format!("sshd exited ({status}): {}", log.trim()));
        }
        if banner(port) {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    Err("sshd did not answer within 10 s".to_owned())
}

/// The processes below `root`, read from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces; the fields after its `)` do not.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

fn banner(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = [0; 8];
    stream.read_exact(&mut greeting).is_ok() && greeting.starts_with(b"SSH-2.0")
}

fn keygen(path: &Path, args: &[&str], passphrase: &str) -> Result<(), String> {
    let output = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-C", "integrations-test", "-N", passphrase, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run ssh-keygen: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "ssh-keygen {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|error| error.to_string())?;
    Ok(listener.local_addr().map_err(|error| error.to_string())?.port())
}

fn current_user() -> Result<String, String> {
    let output = Command::new("id")
        .arg("-un")
        .output()
        .map_err(|error| format!("cannot run id: {error}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn is_root() -> bool {
    current_user().is_ok_and(|user| user == "root")
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// A TCP proxy on loopback in front of a server, to break connections
/// on purpose: [`cut`](Proxy::cut) closes the open ones, [`stall`](Proxy::stall)
/// keeps them open but forwards nothing more. It counts the connections
/// it accepted.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    state: Arc<watch::Sender<State>>,
    accepted: Arc<AtomicUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// Bumped by each cut; a connection lives while it is the one it began in.
    epoch: u64,
    stalled: bool,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target_port`.
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(
            watch::channel(State {
                epoch: 0,
                stalled: false,
            })
            .0,
        );
        let accepted = Arc::new(AtomicUsize::new(0));
        let (sender, counter) = (Arc::clone(&state), Arc::clone(&accepted));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, target_port)).await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let epoch = sender.borrow().epoch;
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, sender.subscribe(), epoch));
                tokio::spawn(pump(server_read, client_write, sender.subscribe(), epoch));
            }
        });
        Proxy { port, state, accepted }
    }

    /// The port to connect to instead of the server's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection now; later ones are forwarded.
    pub fn cut(&self) {
        self.state.send_modify(|state| {
            state.epoch += 1;
            state.stalled = false;
        });
    }

    /// Stops forwarding: connections stay open, silent.
    pub fn stall(&self) {
        self.state.send_modify(|state| state.stalled = true);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    epoch: u64,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let current = *state.borrow_and_update();
        if current.epoch != epoch {
            return;
        }
        if current.stalled {
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            },
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}
