//! `cargo xtask bench-store [--accounts N]`: the gateway on sled and on
//! PostgreSQL side by side, in one run: accounts created per second through
//! the API, start to ready with N accounts stored, the p99 of a page of
//! `GET /v1/accounts`, memory after proxying through 10,000 accounts, and
//! proxy throughput, interleaved.
//!
//! PostgreSQL is `INTEGRATIONS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the run works in a schema of
//! its own, made and dropped with `psql`.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::bench_proxy::{free_port, wait_for, wrk_results};
use crate::bench_writes::Served;

const DEFAULT_ACCOUNTS: usize = 100_000;
/// Accounts the memory run proxies through, each once or more.
const DISTINCT_FOR_MEMORY: usize = 10_000;
const PROXY_ROUNDS: usize = 3;
const STARTS: usize = 5;
/// A fixed key: both gateways of one backend seal and open with it.
const ENCRYPTION_KEY: &str = "YmVuY2gtc3RvcmUta2V5LTMyLWJ5dGVzLWxvbmchISE=";

/// Creates `bench-000000`, `bench-000001`, … up to `BENCH_ACCOUNTS`, then
/// asks for `/healthz` until wrk is stopped. wrk calls `request` once
/// before the load (to see whether it changes): that call takes -1.
const CREATE: &str = r#"
local counter = -2
local total = tonumber(os.getenv("BENCH_ACCOUNTS"))
local key = os.getenv("BENCH_API_KEY")
request = function()
  counter = counter + 1
  if counter >= total then
    return wrk.format("GET", "/healthz")
  end
  local body = string.format('{"integration":"bench","id":"bench-%06d","credentials":{"token":"bench-token"}}', counter)
  return wrk.format("POST", "/v1/accounts", { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }, body)
end
"#;

/// A page of 100 after a random account.
const PAGE: &str = r#"
local total = tonumber(os.getenv("BENCH_ACCOUNTS"))
local key = os.getenv("BENCH_API_KEY")
request = function()
  local path = string.format("/v1/accounts?limit=100&after=bench-%06d", math.random(0, total - 1))
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. key })
end
"#;

/// Proxied requests through `BENCH_DISTINCT` accounts in turn.
const SPREAD: &str = r#"
local counter = -1
local distinct = tonumber(os.getenv("BENCH_DISTINCT"))
local key = os.getenv("BENCH_API_KEY")
request = function()
  counter = (counter + 1) % distinct
  return wrk.format("GET", string.format("/v1/accounts/bench-%06d/proxy/ping", counter), { ["Authorization"] = "Bearer " .. key })
end
"#;

/// One backend's gateway setup.
struct Backend {
    name: &'static str,
    data: PathBuf,
    /// `--database-url`, for PostgreSQL.
    database: Option<String>,
}

impl Backend {
    fn command(&self, binary: &Path, dir: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--definitions")
            .arg(dir.join("bench.toml"))
            .env("INTEGRATIONS_ENCRYPTION_KEY", ENCRYPTION_KEY)
            .env("INTEGRATIONS_LOG", "warn");
        match &self.database {
            Some(url) => command.env("INTEGRATIONS_DATABASE_URL", url),
            None => command.env_remove("INTEGRATIONS_DATABASE_URL"),
        };
        command
    }

    fn run(&self, binary: &Path, dir: &Path, args: &[&str]) -> Result<String, String> {
        let output = self
            .command(binary, dir)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!("{}: {}", self.name, String::from_utf8_lossy(&output.stderr)));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Starts the gateway on `port`; returns it and how long it took to
    /// answer `/healthz`.
    fn serve(&self, binary: &Path, dir: &Path, port: u16) -> Result<(Served, Duration), String> {
        let started = Instant::now();
        let child = self
            .command(binary, dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let served = Served(child);
        let deadline = started + Duration::from_secs(30);
        while !healthy(port) {
            if Instant::now() > deadline {
                return Err(format!("{}: the gateway did not come up", self.name));
            }
            sleep(Duration::from_micros(500));
        }
        Ok((served, started.elapsed()))
    }
}

/// Whether `GET /healthz` answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut status = [0; 12];
    stream.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
        && stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .is_ok()
        && stream.read_exact(&mut status).is_ok()
        && status.starts_with(b"HTTP/1.1 200")
}

/// Whether account `id` exists (`GET /v1/accounts/{id}` is 200).
fn exists(port: u16, key: &str, id: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = format!(
        "GET /v1/accounts/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    let mut status = [0; 12];
    stream.set_read_timeout(Some(Duration::from_secs(5))).is_ok()
        && stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut status).is_ok()
        && status.starts_with(b"HTTP/1.1 200")
}

/// A wrk run's requests/s, p99 in ms and request count.
struct Load {
    per_second: f64,
    p99: f64,
    requests: u64,
}

fn wrk(args: &[&str], script: Option<&Path>, url: &str, envs: &[(&str, &str)]) -> Result<Load, String> {
    let mut command = Command::new("wrk");
    command.args(args).arg("--latency");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(url)
        .envs(envs.iter().copied())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (per_second, p99) = wrk_results(&text).map_err(|error| format!("{url}: {error}"))?;
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Load {
        per_second,
        p99,
        requests,
    })
}

/// The resident memory of process `pid`, in MiB.
fn resident_mib(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn psql(url: &str, sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .map_err(|e| format!("`psql` is needed: {e}"))?;
    if !output.status.success() {
        return Err(format!("psql: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(())
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let accounts = match args {
        [] => DEFAULT_ACCOUNTS,
        [flag, count] if flag == "--accounts" => count.parse().map_err(|_| "--accounts takes a number")?,
        _ => return Err("usage: cargo xtask bench-store [--accounts N]".to_owned()),
    };
    for tool in ["wrk", "nginx", "psql"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Err(format!(
                "`{tool}` is needed: apt-get install wrk nginx-light postgresql-client"
            ));
        }
    }
    let postgres = std::env::var("INTEGRATIONS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    crate::cargo(&["build", "--release", "--package", "integrations-cli"], &[])?;
    let binary = root.join("target/release/integrations");
    let dir = std::env::temp_dir().join(format!("integrations-bench-store-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let schema = format!("integrations_bench_{}", std::process::id());
    psql(&postgres, &format!("CREATE SCHEMA {schema}"))?;
    let outcome = measure(&binary, &dir, &postgres, &schema, accounts);
    let _ = psql(&postgres, &format!("DROP SCHEMA {schema} CASCADE"));
    let _ = fs::remove_dir_all(&dir);
    outcome
}

fn measure(binary: &Path, dir: &Path, postgres: &str, schema: &str, accounts: usize) -> Result<(), String> {
    let upstream = free_port()?;
    // The upstream: nginx answering `pong`, as in bench-proxy.
    let conf = dir.join("upstream.conf");
    fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {dir}/upstream.pid;\nerror_log {dir}/upstream-error.log;\n\
             events {{ worker_connections 4096; }}\nhttp {{ access_log off;\n  \
             server {{ listen 127.0.0.1:{upstream}; location / {{ return 200 \"pong\"; }} }} }}\n",
            dir = dir.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let _nginx = Served(
        Command::new("nginx")
            .args(["-e", "stderr", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    wait_for(upstream)?;
    fs::write(
        dir.join("bench.toml"),
        format!(
            "[[integration]]\nkey = \"bench\"\nname = \"Bench\"\nbase_url = \"http://127.0.0.1:{upstream}\"\n\
             auth = {{ type = \"api_token\", token = {{ parameter_type = \"header\", parameter_name = \"Authorization\", value_template = \"Bearer {{token}}\" }} }}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    for (name, script) in [("create.lua", CREATE), ("page.lua", PAGE), ("spread.lua", SPREAD)] {
        fs::write(dir.join(name), script).map_err(|e| e.to_string())?;
    }
    let separator = if postgres.contains('?') { '&' } else { '?' };
    let backends = [
        Backend {
            name: "sled",
            data: dir.join("sled"),
            database: None,
        },
        Backend {
            name: "PostgreSQL",
            data: dir.join("postgres"),
            database: Some(format!("{postgres}{separator}options[search_path]={schema}")),
        },
    ];
    let count = accounts.to_string();
    let distinct = DISTINCT_FOR_MEMORY.min(accounts).to_string();
    let mut report = Vec::new();
    let mut gateways = Vec::new();
    for backend in &backends {
        let key = backend.run(binary, dir, &["keys", "create", "--name", "bench"])?;
        let port = free_port()?;
        let (served, _) = backend.serve(binary, dir, port)?;
        let envs = [("BENCH_API_KEY", key.as_str()), ("BENCH_ACCOUNTS", count.as_str())];
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        // Until the last account is there (16 creations are in flight at
        // most, so the others are too a moment later).
        let mut creating = Served(
            Command::new("wrk")
                .args(["-t1", "-c16", "-d3600s", "--timeout=10s", "-s"])
                .arg(dir.join("create.lua"))
                .arg(&base)
                .envs(envs)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?,
        );
        let last = format!("bench-{:06}", accounts - 1);
        while !exists(port, &key, &last) {
            if matches!(creating.0.try_wait(), Ok(Some(_))) {
                return Err(format!(
                    "{}: wrk stopped before every account was created",
                    backend.name
                ));
            }
            sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        sleep(Duration::from_millis(200));
        let _ = creating.0.kill();
        drop(creating);
        if !exists(port, &key, "bench-000000") {
            return Err(format!("{}: the first account is missing", backend.name));
        }
        let per_second = accounts as f64 / took.as_secs_f64();
        eprintln!(
            "{}: created {accounts} accounts in {:.1} s: {per_second:.0} accounts/s",
            backend.name,
            took.as_secs_f64()
        );
        drop(served);

        let mut starts: Vec<Duration> = Vec::new();
        for _ in 0..STARTS {
            let (served, took) = backend.serve(binary, dir, port)?;
            starts.push(took);
            drop(served);
        }
        starts.sort();
        let start = starts[STARTS / 2];
        eprintln!(
            "{}: start to ready with {accounts} accounts: median {start:.1?} of {STARTS}",
            backend.name
        );

        let (served, _) = backend.serve(binary, dir, port)?;
        let page = wrk(
            &["-t1", "-c4", "-d10s", "--timeout=5s"],
            Some(&dir.join("page.lua")),
            &base,
            &envs,
        )?;
        eprintln!(
            "{}: GET /v1/accounts?limit=100&after=<random>: {:.0}/s, p99 {:.2} ms",
            backend.name, page.per_second, page.p99
        );
        let before = resident_mib(served.0.id()).unwrap_or(f64::NAN);
        let spread_envs = [("BENCH_API_KEY", key.as_str()), ("BENCH_DISTINCT", distinct.as_str())];
        let spread = wrk(
            &["-t1", "-c16", "-d15s", "--timeout=5s"],
            Some(&dir.join("spread.lua")),
            &base,
            &spread_envs,
        )?;
        let after = resident_mib(served.0.id()).unwrap_or(f64::NAN);
        eprintln!(
            "{}: proxied {} requests over {distinct} accounts ({:.0}/s); resident memory {before:.0} MiB -> {after:.0} MiB",
            backend.name, spread.requests, spread.per_second
        );
        report.push((backend.name, per_second, start, page.p99, before, after));
        gateways.push((backend.name, served, key, base));
    }

    // Proxy throughput on one account, the two gateways taking turns.
    let mut proxy: Vec<Vec<f64>> = vec![Vec::new(); gateways.len()];
    for round in 1..=PROXY_ROUNDS {
        for (index, (name, _, key, base)) in gateways.iter().enumerate() {
            let auth = format!("Authorization: Bearer {key}");
            let load = wrk(
                &["-t1", "-c32", "-d10s", "--timeout=5s", "-H", &auth],
                None,
                &format!("{base}/v1/accounts/bench-000000/proxy/ping"),
                &[],
            )?;
            eprintln!(
                "round {round}: {name:<10} proxy {:>8.0} requests/s  p99 {:.2} ms",
                load.per_second, load.p99
            );
            proxy[index].push(load.per_second);
        }
    }
    let medians: Vec<f64> = proxy
        .iter()
        .map(|values| {
            let mut values = values.clone();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        })
        .collect();

    eprintln!("\n{accounts} accounts, one run, the release build:");
    eprintln!(
        "{:<10} {:>12} {:>10} {:>12} {:>18} {:>14}",
        "", "creates/s", "start", "page p99", "memory (10k accts)", "proxy req/s"
    );
    for ((name, creates, start, page, before, after), proxy) in report.iter().zip(&medians) {
        eprintln!(
            "{name:<10} {creates:>12.0} {:>8.1}ms {page:>10.2}ms {:>8.0} -> {after:>3.0} MiB {proxy:>14.0}",
            start.as_secs_f64() * 1000.0,
            before
        );
    }
    if let [sled, postgres] = medians[..] {
        eprintln!("proxy throughput, PostgreSQL / sled: {:.3}", postgres / sled);
    }
    Ok(())
}
