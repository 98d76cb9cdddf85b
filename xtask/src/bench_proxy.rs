//! `cargo xtask bench-proxy`: requests per second and p99 latency of the
//! same GET straight to an upstream, through nginx adding the auth header,
//! and through the gateway's proxy, in one run of interleaved rounds.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const WRK_ARGS: [&str; 5] = ["-t1", "-c32", "-d10s", "--latency", "--timeout=5s"];
const ROUNDS: usize = 3;

struct Guard(Vec<Child>);

impl Drop for Guard {
    /// SIGTERM, not SIGKILL: nginx's master then stops its workers instead
    /// of leaving them behind, and the gateway shuts down as it should.
    fn drop(&mut self) {
        for child in &mut self.0 {
            let terminated = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if !terminated {
                let _ = child.kill();
            }
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

pub(crate) fn run(root: &Path) -> Result<(), String> {
    for tool in ["wrk", "nginx"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Err(format!("`{tool}` is needed: apt-get install wrk nginx-light"));
        }
    }
    crate::cargo(&["build", "--release", "--package", "integrations-cli"], &[])?;
    let binary = root.join("target/release/integrations");
    let dir = std::env::temp_dir().join(format!("integrations-bench-proxy-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let [upstream, nginx_proxy] = [free_port()?, free_port()?];

    // The upstream runs in nginx processes of its own, apart from nginx the
    // proxy: each proxy then hands every request to another process, as the
    // gateway does. One nginx serving both would answer its own upstream
    // requests within the same event loop, which no proxy of a remote API
    // can.
    let nginx = |name: &str, server: String| -> Result<std::path::PathBuf, String> {
        let path = dir.join(format!("{name}.conf"));
        fs::write(
            &path,
            format!(
                "worker_processes auto;\ndaemon off;\npid {dir}/{name}.pid;\nerror_log {dir}/{name}-error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  {server}\n}}\n",
                dir = dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(path)
    };
    let upstream_conf = nginx(
        "upstream",
        format!("server {{ listen 127.0.0.1:{upstream}; location / {{ return 200 \"pong\"; }} }}"),
    )?;
    let proxy_conf = nginx(
        "proxy",
        format!(
            "upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n  \
             server {{ listen 127.0.0.1:{nginx_proxy}; location / {{ proxy_pass http://backend; proxy_http_version 1.1;\n    \
             proxy_set_header Connection \"\"; proxy_set_header Authorization \"Bearer bench-token\"; }} }}"
        ),
    )?;
    fs::write(
        dir.join("bench.toml"),
        format!(
            "[[integration]]\nkey = \"bench\"\nname = \"Bench\"\nbase_url = \"http://127.0.0.1:{upstream}\"\n\
             auth = {{ type = \"api_token\", token = {{ parameter_type = \"header\", parameter_name = \"Authorization\", value_template = \"Bearer {{token}}\" }} }}\n"
        ),
    )
    .map_err(|e| e.to_string())?;

    let mut children = Guard(Vec::new());
    for conf in [&upstream_conf, &proxy_conf] {
        children
            .0
            .push(spawn(Command::new("nginx").args(["-e", "stderr", "-c"]).arg(conf))?);
    }
    // One gateway per configuration, each with a data directory of its own
    // (sled has one owner): the default (metrics and the access log), without
    // the access log, and without either, to tell what each costs.
    let configurations: [(&str, &[&str], &str); 3] = [
        ("integrations proxy", &[], "info"),
        ("  without the access log", &["--no-access-log"], "info"),
        ("  without metrics or log", &["--no-access-log", "--no-metrics"], "info"),
    ];
    let mut targets = vec![
        ("upstream, direct", format!("http://127.0.0.1:{upstream}/ping"), None),
        (
            "nginx adding the header",
            format!("http://127.0.0.1:{nginx_proxy}/ping"),
            None,
        ),
    ];
    let mut ports = vec![upstream, nginx_proxy];
    for (index, (name, args, log)) in configurations.iter().enumerate() {
        let data = dir.join(format!("data-{index}"));
        let integrations = |args: &[&str]| -> Result<String, String> {
            let output = Command::new(&binary)
                .args(["--data-dir"])
                .arg(&data)
                .args(["--definitions"])
                .arg(dir.join("bench.toml"))
                .args(args)
                .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
                .output()
                .map_err(|e| e.to_string())?;
            if !output.status.success() {
                return Err(String::from_utf8_lossy(&output.stderr).into_owned());
            }
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        };
        let key = integrations(&["keys", "create", "--name", "bench"])?;
        integrations(&[
            "accounts",
            "add",
            "bench",
            "--id",
            "bench",
            "--credential",
            "token=bench-token",
        ])?;
        let gateway = free_port()?;
        children.0.push(spawn(
            Command::new(&binary)
                .args(["--data-dir"])
                .arg(&data)
                .args(["--definitions"])
                .arg(dir.join("bench.toml"))
                .args(["serve", "--listen", &format!("127.0.0.1:{gateway}")])
                .args(*args)
                .env("INTEGRATIONS_LOG", log),
        )?);
        ports.push(gateway);
        targets.push((
            name,
            format!("http://127.0.0.1:{gateway}/v1/accounts/bench/proxy/ping"),
            Some(format!("Authorization: Bearer {key}")),
        ));
    }
    for port in ports {
        wait_for(port)?;
    }
    let runs: Vec<(&str, String, Option<&str>)> = targets
        .iter()
        .map(|(name, url, header)| (*name, url.clone(), header.as_deref()))
        .collect();
    // Rounds interleave the targets, so a slow spell of the machine
    // falls on all of them; the medians are reported.
    let mut rounds: Vec<Vec<(f64, f64)>> = vec![Vec::new(); runs.len()];
    for round in 1..=ROUNDS {
        for (index, (name, url, header)) in runs.iter().enumerate() {
            let mut command = Command::new("wrk");
            command.args(WRK_ARGS);
            if let Some(header) = header {
                command.args(["-H", header]);
            }
            let output = command.arg(url).output().map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let (rps, p99) = wrk_results(&text).map_err(|error| format!("{name}: {error}"))?;
            eprintln!("round {round}: {name:<26} {rps:>10.0} requests/s  p99 {p99:.2} ms");
            rounds[index].push((rps, p99));
        }
    }
    eprintln!(
        "\nwrk {} on loopback, median of {ROUNDS} interleaved rounds:",
        WRK_ARGS.join(" ")
    );
    eprintln!("{:<26} {:>12} {:>10}", "", "requests/s", "p99");
    let mut medians = Vec::new();
    for ((name, _, _), results) in runs.iter().zip(&rounds) {
        let rps = median(results.iter().map(|(rps, _)| *rps));
        let p99 = median(results.iter().map(|(_, p99)| *p99));
        eprintln!("{name:<26} {rps:>12.0} {p99:>8.2}ms");
        medians.push(rps);
    }
    if let [_, _, default, without_log, without_either] = medians[..] {
        eprintln!(
            "\nmetrics cost: {:.3} (requests/s without the access log / without metrics either)\n\
             access log cost: {:.3} (requests/s with it / without it)",
            without_log / without_either,
            default / without_log
        );
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

fn spawn(command: &mut Command) -> Result<Child, String> {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))
}

pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| e.to_string())
}

pub(crate) fn wait_for(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on port {port}"))
}

pub(crate) fn field(text: &str, label: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_owned())
}

/// Requests per second and p99 latency (ms) from the output of `wrk
/// --latency`; an error when a request failed.
pub(crate) fn wrk_results(text: &str) -> Result<(f64, f64), String> {
    if let Some(errors) = text
        .lines()
        .find(|line| line.contains("Non-2xx") || line.contains("Socket errors"))
    {
        return Err(errors.trim().to_owned());
    }
    let rps = field(text, "Requests/sec:")
        .and_then(|value| value.parse::<f64>().ok())
        .ok_or_else(|| format!("no requests/s in wrk's output:\n{text}"))?;
    let p99 = text
        .lines()
        .find(|line| line.trim_start().starts_with("99%"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(milliseconds)
        .ok_or_else(|| format!("no p99 in wrk's output:\n{text}"))?;
    Ok((rps, p99))
}

/// wrk's latency (`812.00us`, `1.30ms`, `2.01s`) in milliseconds.
fn milliseconds(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(number) = text.strip_suffix("us") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|value| value * factor)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
