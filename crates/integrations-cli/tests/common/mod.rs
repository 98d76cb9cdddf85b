//! Helpers the binary's end-to-end tests share.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Runs `integrations ARGS` with its data in `data`.
pub(crate) fn integrations(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_integrations"))
        .args(args)
        .env("INTEGRATIONS_DATA_DIR", data)
        .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
        .output()
        .expect("run integrations")
}

/// Creates an API key and returns it.
pub(crate) fn api_key(data: &Path) -> String {
    let created = integrations(data, &["keys", "create", "--name", "tests"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    String::from_utf8(created.stdout).expect("utf-8").trim().to_owned()
}

/// `integrations serve` on a free loopback port, killed on drop.
pub(crate) struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
}

impl Gateway {
    /// Starts it with `definitions` and its data in `data`, and waits until
    /// `/healthz` answers.
    pub(crate) async fn start(definitions: &str, data: &Path) -> Gateway {
        Self::start_with(definitions, data, &[], &[]).await
    }

    /// The same, with more `serve` arguments and environment variables.
    pub(crate) async fn start_with(definitions: &str, data: &Path, args: &[&str], envs: &[(&str, &str)]) -> Gateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_integrations"))
            .args([
                "--definitions",
                definitions,
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(args)
            .env("INTEGRATIONS_DATA_DIR", data)
            .env_remove("INTEGRATIONS_ENCRYPTION_KEY")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let gateway = Gateway { child, base };
        for _ in 0..200 {
            if reqwest::get(format!("{}/healthz", gateway.base))
                .await
                .is_ok_and(|response| response.status().is_success())
            {
                return gateway;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not come up");
    }
}

impl Gateway {
    /// SIGKILL: the process stops where it is, nothing flushed.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
