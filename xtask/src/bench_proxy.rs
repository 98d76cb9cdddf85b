//! `cargo xtask bench-proxy`: requests per second and p99 latency of the
//! same GET straight to an upstream, through nginx adding the auth header,
//! and through the gateway's proxy, in one run.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const WRK_ARGS: [&str; 5] = ["-t1", "-c32", "-d10s", "--latency", "--timeout=5s"];

struct Guard(Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
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
    let [upstream, nginx_proxy, gateway] = [free_port()?, free_port()?, free_port()?];

    fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes auto;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{upstream}; location / {{ return 200 \"pong\"; }} }}\n\
               server {{ listen 127.0.0.1:{nginx_proxy}; location / {{ proxy_pass http://backend; proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\"; proxy_set_header Authorization \"Bearer bench-token\"; }} }}\n}}\n",
            dir = dir.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    fs::write(
        dir.join("bench.toml"),
        format!(
            "[[integration]]\nkey = \"bench\"\nname = \"Bench\"\nbase_url = \"http://127.0.0.1:{upstream}\"\n\
             auth = {{ type = \"api_token\", token = {{ parameter_type = \"header\", parameter_name = \"Authorization\", value_template = \"Bearer {{token}}\" }} }}\n"
        ),
    )
    .map_err(|e| e.to_string())?;

    let mut children = Guard(Vec::new());
    children.0.push(spawn(
        Command::new("nginx")
            .args(["-e", "stderr", "-c"])
            .arg(dir.join("nginx.conf")),
    )?);
    let data = dir.join("data");
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
    children.0.push(spawn(
        Command::new(&binary)
            .args(["--data-dir"])
            .arg(&data)
            .args(["--definitions"])
            .arg(dir.join("bench.toml"))
            .args(["serve", "--listen", &format!("127.0.0.1:{gateway}")])
            .env("INTEGRATIONS_LOG", "warn"),
    )?);
    for port in [upstream, nginx_proxy, gateway] {
        wait_for(port)?;
    }

    let auth = format!("Authorization: Bearer {key}");
    let runs = [
        ("upstream, direct", format!("http://127.0.0.1:{upstream}/ping"), None),
        (
            "nginx adding the header",
            format!("http://127.0.0.1:{nginx_proxy}/ping"),
            None,
        ),
        (
            "integrations proxy",
            format!("http://127.0.0.1:{gateway}/v1/accounts/bench/proxy/ping"),
            Some(auth.as_str()),
        ),
    ];
    let mut results = Vec::new();
    for (name, url, header) in &runs {
        let mut command = Command::new("wrk");
        command.args(WRK_ARGS);
        if let Some(header) = header {
            command.args(["-H", header]);
        }
        let output = command.arg(url).output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let rps = field(&text, "Requests/sec:").unwrap_or_else(|| "?".to_owned());
        let p99 = text
            .lines()
            .find(|line| line.trim_start().starts_with("99%"))
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned();
        let errors = text
            .lines()
            .find(|line| line.contains("Non-2xx") || line.contains("Socket errors"));
        results.push((name, rps, p99, errors.map(str::to_owned)));
    }
    eprintln!("\nwrk {} on loopback, one run:", WRK_ARGS.join(" "));
    eprintln!("{:<26} {:>14} {:>10}", "", "requests/s", "p99");
    for (name, rps, p99, errors) in &results {
        eprintln!("{name:<26} {rps:>14} {p99:>10}");
        if let Some(errors) = errors {
            eprintln!("  {errors}");
        }
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

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| e.to_string())
}

fn wait_for(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on port {port}"))
}

fn field(text: &str, label: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_owned())
}
