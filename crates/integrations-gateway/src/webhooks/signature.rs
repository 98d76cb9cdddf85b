//! Standard Webhooks signatures: `webhook-signature: v1,<base64 of
//! HMAC-SHA256("{id}.{timestamp}.{body}")>`, one per secret while a secret
//! is rotated, with a timestamp that a receiver checks to refuse replays.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use integrations::crypto::random_bytes;
use ring::hmac;
use zeroize::Zeroizing;

/// The prefix of a secret written down.
const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a secret made here: 256 bits.
const GENERATED_SECRET_BYTES: usize = 32;
/// The fewest bytes a secret given from outside may have (the
/// specification allows 24 to 64).
const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;
/// The signature scheme's version tag.
const VERSION: &str = "v1";

/// A signing secret: `whsec_` and the base64 of its bytes. Debug output
/// shows nothing of it.
#[derive(Clone)]
pub struct WebhookSecret {
    key: hmac::Key,
    text: Zeroizing<String>,
}

impl WebhookSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let bytes = Zeroizing::new(random_bytes::<GENERATED_SECRET_BYTES>());
        Self::from_bytes(bytes.as_slice())
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            text: Zeroizing::new(format!("{SECRET_PREFIX}{}", BASE64.encode(bytes))),
        }
    }

    /// Reads `whsec_<base64>`; the prefix may be left out, as the
    /// specification's libraries allow.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.trim().strip_prefix(SECRET_PREFIX).unwrap_or(text.trim());
        let bytes = Zeroizing::new(BASE64.decode(encoded).map_err(|_| SignatureError::InvalidSecret)?);
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SignatureError::InvalidSecret);
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// The secret as it is written down (`whsec_…`), to show once.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not `whsec_` and the base64 of 24 to 64 bytes.
    #[error("a webhook secret is `whsec_` followed by the base64 of 24 to 64 bytes")]
    InvalidSecret,
    /// `webhook-timestamp` is not a number of seconds.
    #[error("`webhook-timestamp` is not a Unix time in seconds")]
    InvalidTimestamp,
    /// The timestamp is further from now than the tolerance: a replay, or
    /// a clock far off.
    #[error("`webhook-timestamp` is too far from now ({seconds} s)")]
    OutsideTolerance {
        /// How far, in seconds.
        seconds: i64,
    },
    /// No `v1` signature matches any secret.
    #[error("no `webhook-signature` matches")]
    NoMatch,
}

/// The signature of one message with one secret: `v1,<base64>`.
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = hmac::sign(&secret.key, &signed_content(id, timestamp, body));
    format!("{VERSION},{}", BASE64.encode(tag.as_ref()))
}

/// The `webhook-signature` header: one signature per secret, separated by
/// spaces (several while a secret is rotated, so that receivers holding
/// either verify).
pub fn signature_header(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a message as a receiver does: its timestamp within `tolerance`
/// seconds of `now`, and one of the header's `v1` signatures made with one
/// of `secrets` (compared in constant time).
pub fn verify(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| SignatureError::InvalidTimestamp)?;
    let off = now.saturating_sub(timestamp);
    if off.saturating_abs() > tolerance {
        return Err(SignatureError::OutsideTolerance { seconds: off });
    }
    let content = signed_content(id, timestamp, body);
    let presented: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|signature| signature.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
        .collect();
    let matches = secrets.iter().any(|secret| {
        presented
            .iter()
            .any(|tag| hmac::verify(&secret.key, &content, tag).is_ok())
    });
    if matches { Ok(()) } else { Err(SignatureError::NoMatch) }
}

/// `{id}.{timestamp}.{body}`.
fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + 22 + body.len());
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_published_test_vector_is_reproduced() {
        let secret = WebhookSecret::parse(SECRET).expect("the vector's secret");
        assert_eq!(sign(&secret, ID, TIMESTAMP, BODY), SIGNATURE);
        verify(&[secret], ID, "1614265330", SIGNATURE, BODY, TIMESTAMP, 300).expect("verifies");
        let unprefixed = WebhookSecret::parse(SECRET.trim_start_matches("whsec_")).expect("no prefix");
        assert_eq!(sign(&unprefixed, ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_old_one_and_either_verifies() {
        let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
        let header = signature_header(&[new.clone(), old.clone()], ID, TIMESTAMP, BODY);
        assert_eq!(header.split(' ').count(), 2);
        for receiver in [old, new] {
            verify(&[receiver], ID, &TIMESTAMP.to_string(), &header, BODY, TIMESTAMP, 300).expect("verifies");
        }
    }

    #[test]
    fn altered_replayed_or_foreign_messages_are_refused() {
        let secret = WebhookSecret::parse(SECRET).expect("secret");
        let check = |id: &str, timestamp: &str, signatures: &str, body: &[u8], now: i64| {
            verify(std::slice::from_ref(&secret), id, timestamp, signatures, body, now, 300)
        };
        assert_eq!(
            check(ID, "1614265330", SIGNATURE, br#"{"test": 1}"#, TIMESTAMP),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check("msg_other", "1614265330", SIGNATURE, BODY, TIMESTAMP),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check(ID, "1614265330", SIGNATURE, BODY, TIMESTAMP + 301),
            Err(SignatureError::OutsideTolerance { seconds: 301 })
        );
        assert_eq!(
            check(ID, "soon", SIGNATURE, BODY, TIMESTAMP),
            Err(SignatureError::InvalidTimestamp)
        );
        let other = WebhookSecret::generate();
        let foreign = sign(&other, ID, TIMESTAMP, BODY);
        assert_eq!(
            check(ID, "1614265330", &foreign, BODY, TIMESTAMP),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check(ID, "1614265330", &SIGNATURE.replace("v1,", "v2,"), BODY, TIMESTAMP),
            Err(SignatureError::NoMatch),
            "another scheme's tag is not taken for v1"
        );
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let secret = WebhookSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(
            WebhookSecret::parse(secret.expose()).map(|parsed| sign(&parsed, ID, 1, b"")),
            Ok(sign(&secret, ID, 1, b""))
        );
        assert_eq!(format!("{secret:?}"), "WebhookSecret(..)");
        for bad in ["whsec_", "whsec_!!!", "whsec_c2hvcnQ=", ""] {
            assert_eq!(
                WebhookSecret::parse(bad).err(),
                Some(SignatureError::InvalidSecret),
                "{bad:?}"
            );
        }
    }
}
