//! What an auth method hands to the request path.

use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use secrecy::{ExposeSecret, SecretString};

use crate::Result;

/// A credential to put on requests: a token that goes where the
/// integration's auth token settings say, or a ready header (HTTP Basic).
pub struct Credential {
    kind: Kind,
    /// The token rendered into its header or query parameter, made once on
    /// first use by the account it belongs to.
    placed: OnceLock<Placed>,
}

enum Kind {
    Token(SecretString),
    Header(HeaderName, HeaderValue),
    None,
}

/// A token rendered into the place it goes on requests.
pub enum Placed {
    /// A header, its value marked sensitive.
    Header(HeaderName, HeaderValue),
    /// A query parameter.
    Query(String, SecretString),
}

impl fmt::Debug for Placed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(name, _) => write!(f, "Placed::Header({name}: ..)"),
            Self::Query(name, _) => write!(f, "Placed::Query({name}=..)"),
        }
    }
}

impl Credential {
    /// A token, placed by the integration's `token` settings.
    pub fn token(token: SecretString) -> Self {
        Self {
            kind: Kind::Token(token),
            placed: OnceLock::new(),
        }
    }

    /// A header used as it is (marked sensitive, so it never shows in
    /// Debug output).
    pub fn header(name: HeaderName, mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        Self {
            kind: Kind::Header(name, value),
            placed: OnceLock::new(),
        }
    }

    /// No credential: for calls to an integration's own endpoints (token,
    /// revoke), which carry the client's credentials themselves.
    pub fn none() -> Self {
        Self {
            kind: Kind::None,
            placed: OnceLock::new(),
        }
    }

    /// The token, for a credential made with [`Credential::token`].
    pub fn expose_token(&self) -> Option<&str> {
        match &self.kind {
            Kind::Token(token) => Some(token.expose_secret()),
            Kind::Header(..) | Kind::None => None,
        }
    }

    /// The header, for a credential made with [`Credential::header`].
    pub fn ready_header(&self) -> Option<(&HeaderName, &HeaderValue)> {
        match &self.kind {
            Kind::Header(name, value) => Some((name, value)),
            Kind::Token(_) | Kind::None => None,
        }
    }

    /// The token as the request path placed it, once it has.
    pub fn placed(&self) -> Option<&Placed> {
        self.placed.get()
    }

    /// Keeps where the token goes, so that later requests do not render it
    /// again; the first placement kept wins.
    pub fn place(&self, placed: Placed) -> &Placed {
        let _ = self.placed.set(placed);
        self.placed.get().unwrap_or_else(|| unreachable!("set above"))
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Token(_) => f.write_str("Credential::Token(..)"),
            Kind::Header(name, _) => write!(f, "Credential::Header({name}: ..)"),
            Kind::None => f.write_str("Credential::None"),
        }
    }
}

/// One attempt of a request as it will be sent, for a method that signs
/// requests: everything but the signature.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URL, request parameters and a token in the query included.
    pub url: &'a url::Url,
    /// The headers, the credential's included.
    pub headers: &'a HeaderMap,
    /// The body, unless it streams.
    pub body: Option<&'a [u8]>,
    /// Whether the body streams, so that it cannot be seen before it is sent.
    pub streamed: bool,
}

/// The auth method of one account, as the request path sees it.
///
/// # Behavior
///
/// - `credential` returns what to put on the next request; a method that
///   obtains tokens returns a cached one while it is valid, and renews it
///   ahead of expiry, one renewal at a time however many requests wait.
/// - `rejected` is called once when a request carrying `credential` got
///   401; it returns whether a retry with a fresh credential can help (and
///   drops the rejected one if so). A request is retried at most once for
///   this, so a provider that keeps answering 401 cannot cause a loop.
/// - A method whose `signs_requests` is true gets `sign` called for every
///   attempt, retries included, and the headers it returns are sent with
///   that attempt; a request that sets one of them itself is refused.
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// The credential for the next request.
    async fn credential(&self) -> Result<Arc<Credential>>;

    /// The provider refused `credential`; whether a new one is worth a retry.
    async fn rejected(&self, credential: &Arc<Credential>) -> Result<bool> {
        let _ = credential;
        Ok(false)
    }

    /// Whether [`sign`](Self::sign) adds headers to each request.
    fn signs_requests(&self) -> bool {
        false
    }

    /// Headers that depend on the request itself, such as a signature over
    /// its method, URL and body.
    fn sign(&self, request: &Outgoing<'_>) -> Result<Vec<(HeaderName, HeaderValue)>> {
        let _ = request;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_credential() {
        let token = Credential::token(SecretString::from("tok-s3cret".to_owned()));
        let header = Credential::header(http::header::AUTHORIZATION, HeaderValue::from_static("Basic czNjcmV0"));
        let placed = token.place(Placed::Query(
            "key".to_owned(),
            SecretString::from("tok-s3cret".to_owned()),
        ));
        let shown = format!("{token:?} {header:?} {placed:?}");
        assert_eq!(
            shown,
            "Credential::Token(..) Credential::Header(authorization: ..) Placed::Query(key=..)"
        );
        assert!(header.ready_header().is_some_and(|(_, value)| value.is_sensitive()));
    }
}
