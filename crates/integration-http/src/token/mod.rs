//! Pieces every token-based auth method shares: the cached token, and
//! reading a token endpoint's answer. Token calls themselves go through
//! [`AccountClient::endpoints`](crate::AccountClient::endpoints), the
//! request path of every other call.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use integration_core::Secrets;
use integration_core::time::OffsetDateTime;
use integration_core::time::format_description::well_known::Rfc3339;
use reqwest::{Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::Credential;

mod response;

pub use response::{Failure, ObtainedToken, read_token};

/// A token held in memory, with when to renew it.
#[derive(Debug, Clone)]
pub struct CachedToken {
    /// The credential requests carry.
    pub credential: Arc<Credential>,
    /// When to get a new one; `None` when the token does not expire.
    pub renew_at: Option<OffsetDateTime>,
}

/// The credential an obtained access token is kept under in storage.
pub const ACCESS_TOKEN: &str = "access_token";
/// When the stored access token expires, RFC 3339; absent when it does not.
pub const ACCESS_TOKEN_EXPIRES_AT: &str = "access_token_expires_at";

impl CachedToken {
    /// The access token stored in `credentials` (by a previous run, or
    /// another process), if it has not expired. It is renewed as
    /// [`renew_at`](crate::renew_at) says of what is left of its lifetime:
    /// `margin` before its expiry, or halfway there when less is left. A
    /// token that a short-lived provider issued for less than `margin` is
    /// then used, rather than renewed again by every process that reads it.
    pub fn from_stored(credentials: &Secrets, margin: Duration) -> Option<Self> {
        let token = credentials.get(ACCESS_TOKEN)?;
        let expires_at = match credentials.get(ACCESS_TOKEN_EXPIRES_AT) {
            Some(at) => Some(OffsetDateTime::parse(at.expose_secret(), &Rfc3339).ok()?),
            None => None,
        };
        if expires_at.is_some_and(|at| OffsetDateTime::now_utc() >= at) {
            return None;
        }
        let renew_at = crate::renew_at(expires_at, margin);
        Some(Self {
            credential: Arc::new(Credential::token(token.clone())),
            renew_at,
        })
    }
}

/// One account's current token, read by every request and replaced by the
/// one task that renews it.
#[derive(Debug, Default)]
pub struct TokenCache {
    current: RwLock<Option<CachedToken>>,
}

impl TokenCache {
    /// A cache holding `initial`.
    pub fn new(initial: Option<CachedToken>) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    /// The token, unless it is due for renewal.
    pub fn fresh(&self) -> Option<Arc<Credential>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let cached = current.as_ref()?;
        match cached.renew_at {
            Some(at) if OffsetDateTime::now_utc() >= at => None,
            _ => Some(Arc::clone(&cached.credential)),
        }
    }

    /// The token text held, fresh or not.
    pub fn current_token(&self) -> Option<String> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref()?.credential.expose_token().map(str::to_owned)
    }

    /// Replaces the token; returns its credential.
    pub fn set(&self, cached: Option<CachedToken>) -> Option<Arc<Credential>> {
        let credential = cached.as_ref().map(|cached| Arc::clone(&cached.credential));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = cached;
        credential
    }

    /// Marks `credential` due for renewal, if no one has replaced it yet.
    /// Its text is kept, so a copy of it found in storage is known stale.
    pub fn expire(&self, credential: &Arc<Credential>) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = current.as_mut()
            && Arc::ptr_eq(&cached.credential, credential)
        {
            cached.renew_at = Some(OffsetDateTime::UNIX_EPOCH);
        }
    }
}

/// Why a token response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The connection broke while reading.
    Broken,
    /// Larger than the limit.
    TooLarge(usize),
}

/// Reads a token endpoint's body, refusing one larger than `limit` bytes.
pub async fn read_body(mut response: Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| BodyError::Broken)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The message for a refused token request, and the provider's `error`
/// code when it is a plain identifier. Never quotes the rest of the body:
/// it may echo the credentials that were sent.
pub fn refusal(status: StatusCode, json: Option<&Value>) -> (String, Option<String>) {
    let code = json
        .and_then(|json| json.get("error"))
        .and_then(Value::as_str)
        .filter(|code| code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
    let message = match code {
        Some(code) => format!("the token endpoint answered {status} with error `{code}`"),
        None => format!("the token endpoint answered {status}"),
    };
    (message, code.map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(expires_in: time::Duration) -> Secrets {
        let expires_at = (OffsetDateTime::now_utc() + expires_in)
            .format(&Rfc3339)
            .expect("format");
        [
            (ACCESS_TOKEN, secrecy::SecretString::from("t")),
            (ACCESS_TOKEN_EXPIRES_AT, secrecy::SecretString::from(expires_at)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn a_stored_token_is_used_until_it_is_due_and_never_once_expired() {
        let margin = Duration::from_secs(60);
        let now = OffsetDateTime::now_utc();
        let long = CachedToken::from_stored(&stored(time::Duration::hours(1)), margin).expect("usable");
        let renew_at = long.renew_at.expect("expires");
        assert!(renew_at > now + time::Duration::minutes(58) && renew_at < now + time::Duration::minutes(60));
        // Issued for less than the margin (or read late): used until
        // halfway through what is left, not renewed by every reader.
        let short = CachedToken::from_stored(&stored(time::Duration::seconds(4)), margin).expect("usable");
        let renew_at = short.renew_at.expect("expires");
        assert!(renew_at > now + time::Duration::seconds(1) && renew_at < now + time::Duration::seconds(3));
        assert!(CachedToken::from_stored(&stored(time::Duration::seconds(-1)), margin).is_none());
    }

    #[test]
    fn refusals_quote_the_code_only() {
        let json = serde_json::json!({ "error": "invalid_client", "error_description": "bad secret hunter2" });
        let (message, code) = refusal(StatusCode::UNAUTHORIZED, Some(&json));
        assert_eq!(
            message,
            "the token endpoint answered 401 Unauthorized with error `invalid_client`"
        );
        assert_eq!(code.as_deref(), Some("invalid_client"));
        let odd = serde_json::json!({ "error": "echo: hunter2 <script>" });
        assert_eq!(
            refusal(StatusCode::BAD_REQUEST, Some(&odd)).0,
            "the token endpoint answered 400 Bad Request"
        );
    }
}
