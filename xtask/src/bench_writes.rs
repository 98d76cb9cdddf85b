//! `cargo xtask bench-writes [--compare BINARY]`: accounts created per
//! second through `POST /v1/accounts` of a gateway on the embedded sled
//! store, with 1, 4, 16 and 64 concurrent clients (wrk, keep-alive). With
//! `--compare`, another build of `integrations` runs the same load,
//! interleaved, in the same run.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::bench_proxy::{field, free_port, wait_for};

const CLIENTS: [usize; 4] = [1, 4, 16, 64];
const DURATION: &str = "5s";
/// A creation not answered within this counts as a timeout: healthy ones
/// take milliseconds.
const TIMEOUT: &str = "--timeout=10s";

/// wrk's Lua script: unique account ids from one counter (`-t1`, one Lua
/// state), the API key from the environment.
const SCRIPT: &str = r#"
local counter = 0
local key = os.getenv("BENCH_API_KEY")
request = function()
  counter = counter + 1
  local body = '{"integration":"bench","id":"bench-' .. counter .. '","credentials":{"token":"bench-token"}}'
  return wrk.format("POST", "/v1/accounts", { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }, body)
end
"#;

/// A process under load (a gateway, wrk); stopped with SIGTERM, then
/// SIGKILL if it does not finish within 5 s (a hung store, say).
pub(crate) struct Served(pub(crate) Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let compare = match args {
        [] => None,
        [flag, binary] if flag == "--compare" => Some(PathBuf::from(binary)),
        _ => return Err("usage: cargo xtask bench-writes [--compare BINARY]".to_owned()),
    };
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("`wrk` is needed: apt-get install wrk".to_owned());
    }
    crate::cargo(&["build", "--release", "--package", "integrations-cli"], &[])?;
    let mut binaries = vec![("this tree".to_owned(), root.join("target/release/integrations"))];
    if let Some(binary) = compare {
        binaries.push((binary.display().to_string(), binary));
    }
    let dir = std::env::temp_dir().join(format!("integrations-bench-writes-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    fs::write(dir.join("create.lua"), SCRIPT).map_err(|e| e.to_string())?;
    fs::write(
        dir.join("bench.toml"),
        "[[integration]]\nkey = \"bench\"\nname = \"Bench\"\nbase_url = \"http://127.0.0.1:9\"\n\
         auth = { type = \"api_token\", token = { parameter_type = \"header\", parameter_name = \"Authorization\", value_template = \"Bearer {token}\" } }\n",
    )
    .map_err(|e| e.to_string())?;

    let mut results = Vec::new();
    // Interleaved: each client count runs on every binary before the next.
    for clients in CLIENTS {
        for (name, binary) in &binaries {
            let outcome = load(binary, &dir, clients)?;
            eprintln!("{name:<40} {clients:>3} clients  {outcome}");
            results.push((name.clone(), clients, outcome));
        }
    }
    eprintln!("\naccounts created per second, wrk -t1 -d{DURATION} {TIMEOUT}, a fresh data directory each:");
    for (name, clients, outcome) in &results {
        eprintln!("{name:<40} {clients:>3} clients  {outcome}");
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// What one load run saw.
struct Outcome {
    created_per_second: f64,
    created: u64,
    timeouts: u64,
    /// No answer to one more creation after the load.
    hung: bool,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} accounts/s ({} created",
            self.created_per_second, self.created
        )?;
        if self.timeouts > 0 {
            write!(f, ", {} requests timed out", self.timeouts)?;
        }
        if self.hung {
            write!(f, ", then no answer to any write: hung")?;
        }
        write!(f, ")")
    }
}

fn load(binary: &Path, dir: &Path, clients: usize) -> Result<Outcome, String> {
    let data = dir.join(format!("data-{clients}-{}", unique_suffix()));
    let integrations = |args: &[&str]| -> Result<String, String> {
        let output = Command::new(binary)
            .arg("--data-dir")
            .arg(&data)
            .arg("--definitions")
            .arg(dir.join("bench.toml"))
            .args(args)
            .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let key = integrations(&["keys", "create", "--name", "bench"])?;
    let port = free_port()?;
    let served = Served(
        Command::new(binary)
            .arg("--data-dir")
            .arg(&data)
            .arg("--definitions")
            .arg(dir.join("bench.toml"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("INTEGRATIONS_LOG", "warn")
            .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?,
    );
    wait_for(port)?;
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{clients}"), &format!("-d{DURATION}"), TIMEOUT, "-s"])
        .arg(dir.join("create.lua"))
        .arg(format!("http://127.0.0.1:{port}"))
        .env("BENCH_API_KEY", &key)
        .output()
        .map_err(|e| e.to_string())?;
    let hung = !answers_a_write(port, &key);
    drop(served);
    let _ = fs::remove_dir_all(&data);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if let Some(line) = text.lines().find(|line| line.contains("Non-2xx")) {
        return Err(format!("{clients} clients: {} (ids must be unique)", line.trim()));
    }
    let created = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.parse::<u64>().ok())
        .ok_or_else(|| format!("no request count in wrk's output:\n{text}"))?;
    let created_per_second = field(&text, "Requests/sec:")
        .and_then(|value| value.parse::<f64>().ok())
        .ok_or_else(|| format!("no requests/s in wrk's output:\n{text}"))?;
    let timeouts = field(&text, "Socket errors:")
        .and_then(|errors| {
            errors
                .split_once("timeout ")
                .and_then(|(_, count)| count.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    Ok(Outcome {
        created_per_second,
        created,
        timeouts,
        hung,
    })
}

/// Whether the gateway still answers one more account creation, on a
/// connection of its own, within 10 s of the load's end.
fn answers_a_write(port: u16, key: &str) -> bool {
    let body = r#"{"integration":"bench","id":"after-the-load","credentials":{"token":"bench-token"}}"#;
    let request = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut status = [0; 12];
    stream.set_read_timeout(Some(Duration::from_secs(10))).is_ok()
        && stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut status).is_ok()
        && status.starts_with(b"HTTP/1.1 201")
}

/// Tells the data directories of one run's loads apart.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
}
