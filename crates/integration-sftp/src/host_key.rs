//! The server's host key, checked against what the account pins.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use integration_core::{Error, ErrorKind, Result};
use russh::keys::HashAlg;
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, KnownHosts, Marker};
use russh::keys::ssh_key::{Fingerprint, PublicKey};
use sha1::Sha1;

/// The `host_key` value that accepts any key the server presents.
pub const ACCEPT_ANY: &str = "insecure-accept-any";

/// What the account trusts as the server's host key, parsed from its
/// `host_key` credential: one item per line, each a public key
/// (`ssh-ed25519 AAAA…`), a fingerprint (`SHA256:…`) or a `known_hosts`
/// line; or [`ACCEPT_ANY`] alone.
#[derive(Clone)]
pub enum HostKeyPolicy {
    /// Keys the server may present.
    Trusted(Vec<Trusted>),
    /// Any key, logged as a warning on every connection.
    AcceptAny,
}

/// One trusted host key.
#[derive(Clone)]
pub enum Trusted {
    /// A key given in full.
    Key(PublicKey),
    /// A key's SHA256 fingerprint.
    Fingerprint(Fingerprint),
    /// A `known_hosts` entry: applies when its host patterns match.
    KnownHost(Box<Entry>),
}

/// Why a host key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyMismatch {
    /// Fingerprints the account trusts for this host.
    pub expected: Vec<String>,
    /// The fingerprint the server presented.
    pub presented: String,
    /// Whether the key is listed as `@revoked`.
    pub revoked: bool,
}

impl fmt::Display for HostKeyMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.revoked {
            return write!(f, "the server presented a revoked host key ({})", self.presented);
        }
        if self.expected.is_empty() {
            write!(
                f,
                "no trusted host key applies to this host; the server presented {}",
                self.presented
            )
        } else {
            write!(
                f,
                "host key mismatch: expected {}, the server presented {} (the key changed, or someone is in between)",
                self.expected.join(" or "),
                self.presented
            )
        }
    }
}

impl HostKeyPolicy {
    /// Parses a `host_key` credential.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |line: usize, why: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("credential `host_key` line {line}: {why}"),
            )
        };
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "credential `host_key` is empty: give the server's public key, its SHA256 fingerprint or \
                     known_hosts lines (`ssh-keyscan -p PORT HOST` prints them), or `{ACCEPT_ANY}`"
                ),
            ));
        }
        if lines.iter().any(|(_, line)| *line == ACCEPT_ANY) {
            if lines.len() > 1 {
                return Err(invalid(
                    lines[0].0,
                    &format!("`{ACCEPT_ANY}` cannot be combined with trusted keys"),
                ));
            }
            return Ok(Self::AcceptAny);
        }
        let mut trusted = Vec::with_capacity(lines.len());
        for (number, line) in lines {
            if line.starts_with("SHA256:") {
                let fingerprint = Fingerprint::from_str(line)
                    .map_err(|_| invalid(number, "not a SHA256 fingerprint (`SHA256:` and 43 base64 characters)"))?;
                trusted.push(Trusted::Fingerprint(fingerprint));
            } else if is_key_algorithm(line.split_whitespace().next().unwrap_or_default()) {
                let key = PublicKey::from_openssh(line).map_err(|_| invalid(number, "not a valid public key"))?;
                trusted.push(Trusted::Key(key));
            } else {
                let entry = KnownHosts::new(line)
                    .next()
                    .and_then(|entry| entry.ok())
                    .ok_or_else(|| {
                        invalid(
                            number,
                            "neither a public key, a SHA256 fingerprint nor a known_hosts line",
                        )
                    })?;
                if entry.marker() == Some(&Marker::CertAuthority) {
                    return Err(invalid(number, "host certificates (@cert-authority) are not supported"));
                }
                trusted.push(Trusted::KnownHost(Box::new(entry)));
            }
        }
        Ok(Self::Trusted(trusted))
    }

    /// Checks the key `host:port` presented.
    pub fn check(&self, host: &str, port: u16, presented: &PublicKey) -> Result<(), HostKeyMismatch> {
        let Self::Trusted(trusted) = self else {
            return Ok(());
        };
        let presented_fingerprint = presented.fingerprint(HashAlg::Sha256);
        let mut expected = Vec::new();
        let mut revoked = false;
        let mut accepted = false;
        for item in trusted {
            match item {
                Trusted::Key(key) => {
                    accepted |= same_key(key, presented);
                    expected.push(key.fingerprint(HashAlg::Sha256).to_string());
                }
                Trusted::Fingerprint(fingerprint) => {
                    accepted |= *fingerprint == presented_fingerprint;
                    expected.push(fingerprint.to_string());
                }
                Trusted::KnownHost(entry) => {
                    if !matches_host(entry.host_patterns(), host, port) {
                        continue;
                    }
                    let same = same_key(entry.public_key(), presented);
                    if entry.marker() == Some(&Marker::Revoked) {
                        revoked |= same;
                    } else {
                        accepted |= same;
                        expected.push(entry.public_key().fingerprint(HashAlg::Sha256).to_string());
                    }
                }
            }
        }
        if accepted && !revoked {
            return Ok(());
        }
        expected.dedup();
        Err(HostKeyMismatch {
            expected,
            presented: presented_fingerprint.to_string(),
            revoked,
        })
    }
}

impl fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AcceptAny => f.write_str("AcceptAny"),
            Self::Trusted(trusted) => f.debug_tuple("Trusted").field(&trusted.len()).finish(),
        }
    }
}

/// The SHA256 fingerprint of `key`, as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    // Comments do not take part.
    a.key_data() == b.key_data()
}

fn is_key_algorithm(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-sha2-") || word.starts_with("sk-")
}

/// Whether `patterns` name `host:port` the way OpenSSH matches them: the
/// name alone on port 22, `[name]:port` otherwise; `*` and `?` globs, `!`
/// negation, hashed names.
fn matches_host(patterns: &HostPatterns, host: &str, port: u16) -> bool {
    let name = if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    };
    match patterns {
        HostPatterns::HashedName { salt, hash } => Hmac::<Sha1>::new_from_slice(salt)
            .map(|mac| mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok())
            .unwrap_or(false),
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for pattern in patterns {
                let pattern = pattern.to_ascii_lowercase();
                if let Some(negated) = pattern.strip_prefix('!') {
                    if glob(negated.as_bytes(), name.as_bytes()) {
                        return false;
                    }
                } else if glob(pattern.as_bytes(), name.as_bytes()) {
                    matched = true;
                }
            }
            matched
        }
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..])),
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn pinned_key_fingerprint_and_known_hosts_accept_the_key() {
        let presented = key(ED25519);
        let fingerprint = fingerprint(&presented);
        for (policy, port) in [
            (format!("{ED25519} comment"), 2222),
            (fingerprint.clone(), 2222),
            (format!("[sftp.example.com]:2222 {ED25519}"), 2222),
            (format!("sftp.example.com,10.0.0.1 {ED25519}"), 22),
            (format!("*.example.com {ED25519}"), 22),
            (format!("# pinned on 2026-11-27\n\n{OTHER}\n{ED25519}"), 22),
        ] {
            let parsed = HostKeyPolicy::parse(&policy).unwrap();
            assert!(parsed.check("sftp.example.com", port, &presented).is_ok(), "{policy}");
        }
    }

    #[test]
    fn hashed_known_hosts_names_match() {
        // `|1|salt|hash` for "[localhost]:13265", from OpenSSH's format.
        let line = "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= \
                    ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";
        let policy = HostKeyPolicy::parse(line).unwrap();
        let presented = key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF");
        let matches = ["example.com", "localhost", "127.0.0.1"]
            .iter()
            .flat_map(|host| [22, 13265].map(|port| (host, port)))
            .filter(|(host, port)| policy.check(host, *port, &presented).is_ok())
            .count();
        assert_eq!(matches, 1);
    }

    #[test]
    fn a_changed_key_shows_expected_and_presented_fingerprints() {
        let policy = HostKeyPolicy::parse(ED25519).unwrap();
        let mismatch = policy.check("h", 22, &key(OTHER)).unwrap_err();
        assert_eq!(mismatch.expected, vec![fingerprint(&key(ED25519))]);
        assert_eq!(mismatch.presented, fingerprint(&key(OTHER)));
        let message = mismatch.to_string();
        assert!(message.contains(&mismatch.expected[0]) && message.contains(&mismatch.presented));
    }

    #[test]
    fn known_hosts_lines_for_other_hosts_and_negations_do_not_apply() {
        let presented = key(ED25519);
        for line in [
            format!("other.example.com {ED25519}"),
            format!("sftp.example.com {ED25519}"), // port 22 only
            format!("*.example.com,!sftp.example.com {ED25519}"),
        ] {
            let policy = HostKeyPolicy::parse(&line).unwrap();
            let mismatch = policy.check("sftp.example.com", 2222, &presented).unwrap_err();
            assert!(mismatch.to_string().contains("no trusted host key applies"), "{line}");
        }
    }

    #[test]
    fn revoked_keys_are_refused_even_when_also_trusted() {
        let text = format!("{ED25519}\n@revoked * {ED25519}");
        let policy = HostKeyPolicy::parse(&text).unwrap();
        let mismatch = policy.check("h", 22, &key(ED25519)).unwrap_err();
        assert!(mismatch.revoked);
        assert!(mismatch.to_string().contains("revoked"));
    }

    #[test]
    fn accept_any_is_explicit_and_alone() {
        assert!(matches!(
            HostKeyPolicy::parse(ACCEPT_ANY).unwrap(),
            HostKeyPolicy::AcceptAny
        ));
        let error = HostKeyPolicy::parse(&format!("{ACCEPT_ANY}\n{ED25519}")).unwrap_err();
        assert!(error.to_string().contains("cannot be combined"), "{error}");
        let error = HostKeyPolicy::parse("  \n# nothing\n").unwrap_err();
        assert!(error.to_string().contains("ssh-keyscan"), "{error}");
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        for (text, why) in [
            ("SHA256:short", "line 1: not a SHA256 fingerprint"),
            ("ssh-ed25519 not-base64", "line 1: not a valid public key"),
            ("# c\nhello", "line 2: neither a public key"),
            (&format!("@cert-authority *.example.com {ED25519}"), "not supported"),
        ] {
            let error = HostKeyPolicy::parse(text).unwrap_err();
            assert!(error.to_string().contains(why), "{text}: {error}");
        }
    }
}
