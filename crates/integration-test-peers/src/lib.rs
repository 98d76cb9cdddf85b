#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;
use std::io::Write;

/// Set to `1`, a missing peer fails the test instead of skipping it.
pub const REQUIRE_PEERS: &str = "INTEGRATIONS_REQUIRE_PEERS";

/// The file each skip is appended to, one line each: the peer, the reason
/// and the test, separated by tabs.
pub const SKIP_LOG: &str = "INTEGRATIONS_SKIP_LOG";

/// Whether missing peers fail the tests (`INTEGRATIONS_REQUIRE_PEERS=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_PEERS).as_deref() == Ok("1")
}

/// Skips the calling test for want of `peer` (a short name such as `sftp`
/// or `browser`), because of `reason`: panics when peers are
/// [`required`], and otherwise prints the reason and logs it for the
/// suite's summary. The caller then returns.
pub fn skip(peer: &str, reason: &str) {
    assert!(!required(), "{REQUIRE_PEERS}=1 but {reason}");
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("skipped ({peer}): {reason}");
    if let Some(log) = std::env::var_os(SKIP_LOG) {
        // One short write with O_APPEND: lines of concurrent tests do not mix.
        let line = format!("{}\t{}\t{}\n", clean(peer), clean(reason), clean(&test));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(error) = written {
            eprintln!("cannot log the skip to {}: {error}", log.to_string_lossy());
        }
    }
}

/// The summary line of a skip log's `lines`: how many tests skipped, and
/// each reason with its peer (and how many tests, when more than one);
/// `None` when none did.
pub fn skipped(lines: &str) -> Option<String> {
    // Reasons in the order they first came, with their peer and count.
    let mut reasons: Vec<(String, String)> = Vec::new();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut total = 0;
    for line in lines.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.split('\t');
        let peer = fields.next().unwrap_or_default().to_owned();
        let reason = fields.next().unwrap_or_default().to_owned();
        let key = (peer, reason);
        if !counts.contains_key(&key) {
            reasons.push(key.clone());
        }
        *counts.entry(key).or_default() += 1;
        total += 1;
    }
    if total == 0 {
        return None;
    }
    let listed: Vec<String> = reasons
        .iter()
        .map(|key| match counts.get(key).copied().unwrap_or_default() {
            1 => format!("{} ({})", key.1, key.0),
            count => format!("{} ({}, {count} tests)", key.1, key.0),
        })
        .collect();
    Some(format!("{total} skipped: {}", listed.join(", ")))
}

/// A field without the tabs and line breaks that separate them.
fn clean(field: &str) -> String {
    field.replace(['\t', '\n', '\r'], " ")
}
