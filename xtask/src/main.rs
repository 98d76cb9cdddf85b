//! `cargo xtask <task>`: the checks CI runs, benchmarks and generated files.

mod bench_proxy;
mod bench_store;
mod bench_writes;
mod fuzz;
mod peers;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci       cargo fmt --check, clippy -D warnings, the whole test suite, docs,
           then each fuzz target for 15 s, built unoptimised (skipped without cargo-fuzz, unless
           INTEGRATIONS_REQUIRE_PEERS=1)
  test     the whole test suite only, ending with the tests skipped for a
           missing peer and why
  peers    set up the outside programs some tests need (sshd, PostgreSQL,
           Chromium, schemathesis...): installs or starts those that need
           no root, and says what needs root
  bench    every benchmark; `bench -- WORD` runs only the bench targets named
           WORD or holding a benchmark of that name, filtered by it
  bench-proxy  wrk load through the gateway's proxy, straight to the upstream,
           and through nginx adding the same header (needs wrk and nginx)
  bench-writes [--compare BINARY]
           accounts created per second through the gateway on sled with
           1, 4, 16 and 64 clients, beside another build if given (needs wrk)
  bench-store [--accounts N]
           the gateway on sled and on PostgreSQL side by side with N accounts
           (default 100000): creates/s, start to ready, page p99, memory after
           10,000 accounts, proxy throughput (needs wrk, nginx, psql)
  fuzz [--seconds N]
           run every cargo-fuzz target in fuzz/ for N seconds (default 30),
           from its committed seed corpus (needs `cargo install cargo-fuzz`)
  schema   regenerate the definition format's JSON Schema from the model
           (docs/definition.schema.json), as a default build assembles it";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("schema") => schema(),
        Some("bench-proxy") => bench_proxy::run(&root()),
        Some("bench-writes") => bench_writes::run(&root(), &args[1..]),
        Some("bench-store") => bench_store::run(&root(), &args[1..]),
        Some("fuzz") => fuzz::run(&root(), &args[1..]),
        Some("peers") => peers::run(&root()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(&["fmt", "--manifest-path", "tests/trimmed/Cargo.toml", "--check"], &[])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    test()?;
    cargo(&["doc", "--workspace", "--no-deps"], &[("RUSTDOCFLAGS", "-D warnings")])?;
    fuzz::run_if_installed(&root(), CI_FUZZ_SECONDS)
}

/// How long `ci` runs each fuzz target.
const CI_FUZZ_SECONDS: u64 = 15;

/// The whole suite, ending with a line that lists each test skipped for a
/// missing peer and why (`integration-test-peers` logs them).
fn test() -> Result<(), String> {
    let log = root().join("target").join("skipped-tests.log");
    let _ = std::fs::remove_file(&log);
    let outcome = run_tests(&log);
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    match integration_test_peers::skipped(&lines) {
        Some(summary) => eprintln!(
            "{summary} (peers missing: `cargo xtask peers` installs those it can; \
             INTEGRATIONS_REQUIRE_PEERS=1 makes them fail)"
        ),
        None => eprintln!("no test skipped for a missing peer"),
    }
    outcome
}

fn run_tests(log: &Path) -> Result<(), String> {
    let log = log.to_str().ok_or("the target directory's path is not UTF-8")?;
    let envs = [(integration_test_peers::SKIP_LOG, log)];
    cargo(&["test", "--workspace", "--all-targets"], &envs)?;
    cargo(&["test", "--workspace", "--doc"], &envs)?;
    // A user's crate on a trimmed build: a workspace of its own, so that
    // its features are not unified with the repository's.
    cargo(
        &[
            "test",
            "--manifest-path",
            "tests/trimmed/Cargo.toml",
            "--target-dir",
            "target/trimmed",
        ],
        &envs,
    )
}

/// Every benchmark, or with a filter only the bench targets it names or
/// whose source mentions it (a criterion group or function): the filter
/// is then passed to those alone, since other bench binaries refuse it.
fn bench(args: &[String]) -> Result<(), String> {
    let filter: Vec<&str> = args.iter().map(String::as_str).filter(|arg| *arg != "--").collect();
    if filter.is_empty() {
        return cargo(&["bench", "--workspace"], &[]);
    }
    let targets = bench_targets(&root())?;
    let selected = select_benches(&targets, &filter);
    if selected.is_empty() {
        let names: Vec<&str> = targets.iter().map(|target| target.name.as_str()).collect();
        return Err(format!(
            "no benchmark matches `{}`; the bench targets are {}",
            filter.join(" "),
            names.join(", ")
        ));
    }
    for target in selected {
        let mut command = vec!["bench", "--package", &target.package, "--bench", &target.name, "--"];
        command.extend(&filter);
        cargo(&command, &[])?;
    }
    Ok(())
}

/// A `[[bench]]` target of a workspace crate.
#[derive(Debug)]
struct BenchTarget {
    package: String,
    name: String,
    source: String,
}

/// The `[[bench]]` targets of `crates/*`, read off their manifests.
fn bench_targets(root: &Path) -> Result<Vec<BenchTarget>, String> {
    let crates = root.join("crates");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .map_err(|error| format!("cannot read {}: {error}", crates.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    dirs.sort();
    let mut targets = Vec::new();
    for dir in dirs {
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let quoted_name = |line: &str| {
            line.strip_prefix("name = \"")
                .and_then(|rest| rest.strip_suffix('"'))
                .map(str::to_owned)
        };
        let Some(package) = manifest.lines().find_map(quoted_name) else {
            continue;
        };
        let mut in_bench = false;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bench = line == "[[bench]]";
            } else if in_bench && let Some(name) = quoted_name(line) {
                let path = dir.join("benches").join(format!("{name}.rs"));
                let source = std::fs::read_to_string(&path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
                targets.push(BenchTarget {
                    package: package.clone(),
                    name,
                    source,
                });
            }
        }
    }
    Ok(targets)
}

/// The targets a filter names, or whose source holds one of its words.
fn select_benches<'a>(targets: &'a [BenchTarget], filter: &[&str]) -> Vec<&'a BenchTarget> {
    targets
        .iter()
        .filter(|target| {
            filter
                .iter()
                .any(|word| target.name == *word || target.source.contains(&format!("\"{word}")))
        })
        .collect()
}

fn schema() -> Result<(), String> {
    let output = Command::new(cargo_binary())
        .current_dir(root())
        .args(["run", "--quiet", "--package", "integrations-cli", "--", "schema"])
        .output()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    // Published for editors; the loader assembles its own from the
    // methods registered in its process.
    let path = root().join("docs/definition.schema.json");
    std::fs::write(&path, &output.stdout).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

pub(crate) fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo_binary())
        .current_dir(root())
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn cargo_binary() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_filter_picks_the_targets_that_hold_it() {
        let targets = bench_targets(&root()).expect("bench targets");
        assert!(targets.len() >= 5, "{targets:?}");
        let picked = |filter: &[&str]| -> Vec<String> {
            select_benches(&targets, filter)
                .iter()
                .map(|target| format!("{}/{}", target.package, target.name))
                .collect()
        };
        assert_eq!(picked(&["authenticated_get"]), ["integrations/request"]);
        assert_eq!(picked(&["render"]), ["integration-template/render"]);
        assert_eq!(picked(&["url_template_3_params"]), ["integration-template/render"]);
        assert!(picked(&["no_such_benchmark"]).is_empty());
    }
}
