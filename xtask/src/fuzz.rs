//! `cargo xtask fuzz [--seconds N]`: every cargo-fuzz target in `fuzz/`,
//! for N seconds each, starting from its committed seed corpus.
//!
//! On the stable toolchain: `RUSTC_BOOTSTRAP=1` lets cargo-fuzz pass its
//! unstable flags, and `--sanitizer none` needs no sanitizer runtime. New
//! inputs go to a temporary corpus, so the committed seeds stay as they
//! are; a crash fails the task and leaves its input in `fuzz/artifacts/`.

use std::path::Path;
use std::process::Command;

/// The targets, as `fuzz/Cargo.toml` names them.
const TARGETS: [&str; 5] = ["definitions", "templates", "request_head", "response", "sealed"];

pub(crate) fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let seconds: u64 = match args {
        [] => 30,
        [flag, seconds] if flag == "--seconds" => seconds
            .parse()
            .map_err(|_| format!("--seconds takes a whole number, not `{seconds}`"))?,
        _ => return Err("usage: cargo xtask fuzz [--seconds N]".to_owned()),
    };
    fuzz_all(root, seconds, Build::Release)
}

/// How the targets are built.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    /// Optimised, for runs long enough to search deep.
    Release,
    /// Unoptimised: built in less than half the time, for the short runs of
    /// CI, which catch shallow crashes.
    Dev,
}

/// [`run`] for `cargo xtask ci`, on dev builds: skipped, with the reason
/// printed, where cargo-fuzz is not installed, unless
/// `INTEGRATIONS_REQUIRE_PEERS=1`.
pub(crate) fn run_if_installed(root: &Path, seconds: u64) -> Result<(), String> {
    let installed = Command::new(crate::cargo_binary())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        let reason = "fuzzing needs cargo-fuzz (cargo install cargo-fuzz)";
        if std::env::var("INTEGRATIONS_REQUIRE_PEERS").as_deref() == Ok("1") {
            return Err(format!("INTEGRATIONS_REQUIRE_PEERS=1 but {reason}"));
        }
        eprintln!("skipped: {reason}");
        return Ok(());
    }
    fuzz_all(root, seconds, Build::Dev)
}

fn fuzz_all(root: &Path, seconds: u64, build: Build) -> Result<(), String> {
    let fuzz = root.join("fuzz");
    let scratch = std::env::temp_dir().join(format!("integrations-fuzz-{}", std::process::id()));
    for target in TARGETS {
        let corpus = scratch.join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
        eprintln!("$ cargo fuzz run {target} ({seconds} s)");
        let status = Command::new(crate::cargo_binary())
            .current_dir(&fuzz)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .args((build == Build::Dev).then_some("--dev"))
            .arg(&corpus)
            .arg(fuzz.join("corpus").join(target))
            .args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"])
            .status()
            .map_err(|e| format!("cannot run cargo fuzz (cargo install cargo-fuzz): {e}"))?;
        if !status.success() {
            return Err(format!(
                "fuzz target `{target}` failed ({status}); its input is in fuzz/artifacts/{target}/"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
