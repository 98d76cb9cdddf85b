//! The signature checks `docs/events.md` gives in Rust, Python and
//! JavaScript, run as written against the Standard Webhooks test vector and
//! a delivery signed by the gateway. A missing Python or Node.js skips its
//! check, unless `INTEGRATIONS_REQUIRE_PEERS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use integrations_gateway::webhooks::{WebhookSecret, sign};

const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
const VECTOR_BODY: &str = r#"{"test": 2432232314}"#;
const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// The code block of `language` under the heading `heading`.
fn snippet(heading: &str, language: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.md");
    let text = std::fs::read_to_string(&path).expect("docs/events.md");
    let section = text.split_once(&format!("\n{heading}\n")).expect("the heading").1;
    let block = section.split_once(&format!("```{language}\n")).expect("the block").1;
    block.split_once("\n```").expect("the block's end").0.to_owned()
}

/// The cases each language checks: (secret, id, timestamp, signatures,
/// body, now, expected).
fn cases() -> Vec<(String, String, String, String, String, i64, bool)> {
    let secret = WebhookSecret::generate();
    // Longer than one SHA-256 block, with text outside ASCII.
    let body = format!(
        r#"{{"type":"account.created","data":{{"account":"{}","note":"é"}}}}"#,
        "a".repeat(200)
    );
    let id = "evt_0193a5f0c2a87b1e4c3d2f10a9b8c7d6";
    let gateway_signature = sign(&secret, id, 1_800_000_000, body.as_bytes());
    let case = |secret: &str, id: &str, timestamp: i64, signatures: &str, body: &str, now: i64, expected: bool| {
        (
            secret.to_owned(),
            id.to_owned(),
            timestamp.to_string(),
            signatures.to_owned(),
            body.to_owned(),
            now,
            expected,
        )
    };
    vec![
        case(
            VECTOR_SECRET,
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            true,
        ),
        case(
            VECTOR_SECRET,
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            &format!("v1,bm90IGl0 {VECTOR_SIGNATURE}"),
            VECTOR_BODY,
            VECTOR_TIMESTAMP + 299,
            true,
        ),
        case(
            VECTOR_SECRET,
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            VECTOR_SIGNATURE,
            r#"{"test": 2432232315}"#,
            VECTOR_TIMESTAMP,
            false,
        ),
        case(
            VECTOR_SECRET,
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            VECTOR_TIMESTAMP + 301,
            false,
        ),
        case(
            VECTOR_SECRET,
            "msg_other",
            VECTOR_TIMESTAMP,
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            false,
        ),
        case(
            secret.expose(),
            id,
            1_800_000_000,
            &gateway_signature,
            &body,
            1_800_000_010,
            true,
        ),
        case(
            VECTOR_SECRET,
            id,
            1_800_000_000,
            &gateway_signature,
            &body,
            1_800_000_010,
            false,
        ),
    ]
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("integrations-docs-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn expect_ok(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "{what}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether `program` runs; when it does not, says so and skips, unless
/// peers are required.
fn available(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        integration_test_peers::skip(program, &format!("`{program}` cannot be run"));
    }
    found
}

#[test]
fn the_rust_check_verifies() {
    let mut program = snippet("### Rust", "rust");
    program.push_str("\nfn main() {\n");
    for (secret, id, timestamp, signatures, body, now, expected) in cases() {
        program.push_str(&format!(
            "    assert_eq!(verify({secret:?}, {id:?}, {timestamp:?}, {signatures:?}, {body:?}.as_bytes(), {now}), {expected}, {id:?});\n"
        ));
    }
    program.push_str("    println!(\"ok\");\n}\n");
    let source = scratch("verify.rs");
    std::fs::write(&source, program).expect("write");
    let binary = scratch("verify");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let compiled = Command::new(rustc)
        .args(["--edition", "2021", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("run rustc");
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    expect_ok(&mut Command::new(&binary), "the Rust check");
}

#[test]
fn the_python_check_verifies() {
    if !available("python3") {
        return;
    }
    let mut program = snippet("### Python", "python");
    program.push('\n');
    for (secret, id, timestamp, signatures, body, now, expected) in cases() {
        let expected = if expected { "True" } else { "False" };
        program.push_str(&format!(
            "assert verify({secret:?}, {id:?}, {timestamp:?}, {signatures:?}, {body:?}.encode(), {now}) is {expected}, {id:?}\n"
        ));
    }
    program.push_str("print('ok')\n");
    expect_ok(Command::new("python3").arg("-c").arg(program), "the Python check");
}

#[test]
fn the_javascript_check_verifies() {
    if !available("node") {
        return;
    }
    let mut program = snippet("### JavaScript (Node.js)", "js");
    program.push_str("\nconst assert = require('node:assert');\n");
    for (secret, id, timestamp, signatures, body, now, expected) in cases() {
        program.push_str(&format!(
            "assert.strictEqual(verify({secret:?}, {id:?}, {timestamp:?}, {signatures:?}, Buffer.from({body:?}), {now}), {expected}, {id:?});\n"
        ));
    }
    program.push_str("console.log('ok');\n");
    expect_ok(Command::new("node").arg("-e").arg(program), "the JavaScript check");
}
