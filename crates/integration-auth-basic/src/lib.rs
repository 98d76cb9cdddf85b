#![doc = include_str!("../README.md")]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use integration_core::definition::{Auth, Integration};
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::{ConnectedAccount, Error, ErrorKind, Result, async_trait};
use integration_http::header::{AUTHORIZATION, HeaderValue};
use integration_http::{Authenticator, Credential};

/// HTTP Basic Auth for one account: `Authorization: Basic ...` built once
/// from its `username` and `password` credentials.
#[derive(Debug)]
pub struct BasicAuthenticator {
    credential: Arc<Credential>,
}

impl BasicAuthenticator {
    /// The authenticator for `account` of a `basic` integration.
    pub fn new(account: &ConnectedAccount, integration: &Integration) -> Result<Self> {
        let error = |message: &'static str| {
            Error::new(ErrorKind::InvalidInput, message)
                .with_context("account", account.id())
                .with_context("integration", &integration.key)
        };
        if !matches!(integration.auth, Auth::Basic(_)) {
            return Err(error("not a basic integration"));
        }
        let credential = |name| account.credentials().get(name).map(ExposeSecret::expose_secret);
        let username = credential("username").ok_or_else(|| error("the account has no `username` credential"))?;
        let password = credential("password").ok_or_else(|| error("the account has no `password` credential"))?;
        let value = authorization(username, password).map_err(error)?;
        let header = HeaderValue::from_str(value.expose_secret()).map_err(|_| error("invalid credentials"))?;
        Ok(Self {
            credential: Arc::new(Credential::header(AUTHORIZATION, header)),
        })
    }
}

/// The `Authorization` value of RFC 7617, with the UTF-8 charset: the
/// user-id and password joined by `:` and base64-encoded.
pub fn authorization(username: &str, password: &str) -> Result<SecretString, &'static str> {
    if username.contains(':') {
        return Err("the username cannot contain `:` (RFC 7617)");
    }
    if username.chars().chain(password.chars()).any(char::is_control) {
        return Err("the username and password cannot contain control characters (RFC 7617)");
    }
    let mut pair = String::with_capacity(username.len() + password.len() + 1);
    pair.push_str(username);
    pair.push(':');
    pair.push_str(password);
    let encoded = SecretString::from(format!("Basic {}", BASE64.encode(pair.as_bytes())));
    // Wipe the plain pair: String's buffer is not zeroed on drop.
    drop(SecretString::from(pair));
    Ok(encoded)
}

#[async_trait]
impl Authenticator for BasicAuthenticator {
    async fn credential(&self) -> Result<Arc<Credential>> {
        Ok(Arc::clone(&self.credential))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7617_examples() {
        // RFC 7617 section 2 and section 2.1 (UTF-8).
        assert_eq!(
            authorization("Aladdin", "open sesame").expect("valid").expose_secret(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(
            authorization("test", "123£").expect("valid").expose_secret(),
            "Basic dGVzdDoxMjPCow=="
        );
        assert!(authorization("a:b", "x").is_err());
        assert!(authorization("a", "x\r\ny").is_err());
        // A colon in the password is allowed.
        assert!(authorization("a", "x:y").is_ok());
    }

    #[test]
    fn debug_hides_the_credential() {
        let mut value = HeaderValue::from_static("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        value.set_sensitive(true);
        let authenticator = BasicAuthenticator {
            credential: Arc::new(Credential::header(AUTHORIZATION, value)),
        };
        let debug = format!("{authenticator:?}");
        assert!(!debug.contains("QWxh"), "{debug}");
    }
}
