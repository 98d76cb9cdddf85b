//! `cargo xtask peers`: the outside programs some tests need, installed or
//! started where a developer can do it without root, and what needs root
//! said plainly.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The schemathesis release `.ci/run` installs.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Where a PostgreSQL started here listens (5432 is left to a system one).
const OWN_POSTGRES_PORT: u16 = 5433;

/// Checks one peer, and installs or starts it where it can.
type SetUp = fn(&Path) -> Outcome;

/// What became of one peer.
enum Outcome {
    Ready(String),
    Done(String),
    NeedsRoot(String),
    Failed(String),
}

pub(crate) fn run(root: &Path) -> Result<(), String> {
    let peers: [(&str, &str, SetUp); 7] = [
        ("sshd", "the SFTP tests", sshd),
        ("openssl", "the JWT method's signature checks", openssl),
        ("chromium", "the connect page's browser test", chromium),
        ("playwright-core", "the browser test's driver", playwright),
        ("schemathesis", "the OpenAPI contract test", schemathesis),
        ("postgres", "the PostgreSQL backend and several gateways", postgres),
        ("cargo-fuzz", "the fuzz targets", cargo_fuzz),
    ];
    let mut failed = 0;
    for (peer, used_by, check) in peers {
        let (label, detail) = match check(root) {
            Outcome::Ready(detail) => ("ready", detail),
            Outcome::Done(detail) => ("done", detail),
            Outcome::NeedsRoot(detail) => ("needs root", detail),
            Outcome::Failed(detail) => {
                failed += 1;
                ("failed", detail)
            }
        };
        println!("{label:>10}  {peer} ({used_by}): {detail}");
    }
    println!(
        "{:>10}  SFTP password tests: a user that sshd checks a password for, which needs sshd running as root: \
         set INTEGRATIONS_TEST_SFTP_USER and INTEGRATIONS_TEST_SFTP_PASSWORD (`.ci/run` creates one)",
        "needs root"
    );
    if failed > 0 {
        return Err(format!("{failed} peer(s) could not be set up"));
    }
    Ok(())
}

fn sshd(_: &Path) -> Outcome {
    match (
        Path::new("/usr/sbin/sshd").exists(),
        runs("ssh-keygen", &["-V"]) || found("ssh-keygen"),
    ) {
        (true, true) => Outcome::Ready("/usr/sbin/sshd and ssh-keygen".to_owned()),
        _ => Outcome::NeedsRoot("apt-get install openssh-server openssh-client".to_owned()),
    }
}

fn openssl(_: &Path) -> Outcome {
    if runs("openssl", &["version"]) {
        Outcome::Ready("openssl".to_owned())
    } else {
        Outcome::NeedsRoot("apt-get install openssl".to_owned())
    }
}

fn chromium(_: &Path) -> Outcome {
    match std::env::var("CHROMIUM").ok().filter(|path| !path.is_empty()) {
        Some(path) => Outcome::Ready(format!("$CHROMIUM ({path})")),
        None if Path::new("/usr/bin/chromium").exists() => Outcome::Ready("/usr/bin/chromium".to_owned()),
        None => Outcome::NeedsRoot("apt-get install chromium (or set CHROMIUM to a Chromium binary)".to_owned()),
    }
}

fn playwright(root: &Path) -> Outcome {
    let e2e = root.join("tests/e2e");
    if e2e.join("node_modules/playwright-core").exists() {
        return Outcome::Ready("tests/e2e/node_modules".to_owned());
    }
    if !found("npm") {
        return Outcome::NeedsRoot("npm is missing: apt-get install npm".to_owned());
    }
    let installed = Command::new("npm")
        .args(["ci", "--prefix"])
        .arg(&e2e)
        .args(["--no-audit", "--no-fund", "--loglevel=error"])
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        Outcome::Done("npm ci --prefix tests/e2e".to_owned())
    } else {
        Outcome::Failed("npm ci --prefix tests/e2e failed".to_owned())
    }
}

fn schemathesis(_: &Path) -> Outcome {
    if let Some(path) = std::env::var("SCHEMATHESIS").ok().filter(|path| !path.is_empty()) {
        return Outcome::Ready(format!("$SCHEMATHESIS ({path})"));
    }
    if found("st") {
        return Outcome::Ready("st".to_owned());
    }
    let user_bin = home().map(|home| home.join(".local/bin/st"));
    if user_bin.as_ref().is_some_and(|path| path.exists()) {
        return Outcome::Ready(format!(
            "{} (not on PATH: export SCHEMATHESIS={0})",
            user_bin.unwrap_or_default().display()
        ));
    }
    let installed = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--user",
            "--quiet",
            "--disable-pip-version-check",
            SCHEMATHESIS,
        ])
        .status()
        .is_ok_and(|status| status.success());
    match (installed, user_bin) {
        (true, Some(path)) => Outcome::Done(format!(
            "pip install --user {SCHEMATHESIS}; export SCHEMATHESIS={}",
            path.display()
        )),
        _ => Outcome::Failed(format!(
            "python3 -m pip install --user {SCHEMATHESIS} failed (a system Python may need a virtualenv: \
             python3 -m venv ~/.venvs/st && ~/.venvs/st/bin/pip install {SCHEMATHESIS}, then export \
             SCHEMATHESIS=~/.venvs/st/bin/st)"
        )),
    }
}

fn postgres(root: &Path) -> Outcome {
    let url = std::env::var("INTEGRATIONS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if listening(5432) || listening(OWN_POSTGRES_PORT) {
        let port = if listening(5432) { 5432 } else { OWN_POSTGRES_PORT };
        let hint = if port == OWN_POSTGRES_PORT {
            format!("; export INTEGRATIONS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:{OWN_POSTGRES_PORT}/test")
        } else {
            String::new()
        };
        return Outcome::Ready(format!("listening on 127.0.0.1:{port} (the tests use {url}){hint}"));
    }
    let Some(bin) = postgres_bin() else {
        return Outcome::NeedsRoot(
            "apt-get install postgresql, or run a PostgreSQL server and set INTEGRATIONS_TEST_POSTGRES_URL".to_owned(),
        );
    };
    let data = root.join("target/peers/postgres");
    let log = root.join("target/peers/postgres.log");
    if !data.join("PG_VERSION").exists() {
        let initialised = Command::new(bin.join("initdb"))
            .args(["--username", "postgres", "--auth", "trust", "--pgdata"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !initialised {
            return Outcome::Failed(format!("{}/initdb failed", bin.display()));
        }
    }
    let started = Command::new(bin.join("pg_ctl"))
        .arg("--pgdata")
        .arg(&data)
        .arg("--log")
        .arg(&log)
        .args([
            "--options",
            &format!("-p {OWN_POSTGRES_PORT} -k /tmp -c listen_addresses=127.0.0.1"),
        ])
        .args(["--wait", "start"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !started {
        return Outcome::Failed(format!("pg_ctl start failed; see {}", log.display()));
    }
    let _ = Command::new(bin.join("createdb"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &OWN_POSTGRES_PORT.to_string(),
            "-U",
            "postgres",
            "test",
        ])
        .stderr(std::process::Stdio::null())
        .status();
    Outcome::Done(format!(
        "started in target/peers/postgres on 127.0.0.1:{OWN_POSTGRES_PORT}; export \
         INTEGRATIONS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:{OWN_POSTGRES_PORT}/test \
         (stop it with {}/pg_ctl --pgdata target/peers/postgres stop)",
        bin.display()
    ))
}

fn cargo_fuzz(_: &Path) -> Outcome {
    if runs("cargo", &["fuzz", "--version"]) {
        return Outcome::Ready("cargo fuzz".to_owned());
    }
    let installed = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked", "--quiet"])
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        Outcome::Done("cargo install cargo-fuzz".to_owned())
    } else {
        Outcome::Failed("cargo install cargo-fuzz failed".to_owned())
    }
}

/// PostgreSQL's server programs: on PATH, or Debian's versioned directory.
fn postgres_bin() -> Option<PathBuf> {
    if found("initdb") && found("pg_ctl") {
        return which("initdb").and_then(|path| path.parent().map(Path::to_path_buf));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(300)).is_ok()
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn found(program: &str) -> bool {
    which(program).is_some()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}
