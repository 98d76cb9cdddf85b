#![doc = include_str!("../README.md")]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use integration_core::definition::Integration;
use integration_core::method::{AccountContext, AuthDefinition, CredentialField, MethodTable};
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::{ConnectedAccount, Error, ErrorKind, Result, Secrets, async_trait};
use integration_http::header::{AUTHORIZATION, HeaderValue};
use integration_http::{Authenticator, Credential};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// HTTP Basic Auth configuration. The account's credentials are `username`
/// and `password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Basic {}

impl AuthDefinition for Basic {
    fn credential_fields(&self) -> Vec<CredentialField> {
        vec![
            CredentialField::required("username", "the user name (no `:`)").shown(),
            CredentialField::required("password", "the password"),
        ]
    }

    fn check_credentials(&self, credentials: &Secrets) -> Vec<String> {
        let value = |name| {
            credentials
                .get(name)
                .map(ExposeSecret::expose_secret)
                .unwrap_or_default()
        };
        problem(value("username"), value("password"))
            .map(str::to_owned)
            .into_iter()
            .collect()
    }

    fn authenticator(&self, context: &AccountContext<'_>) -> Result<Arc<dyn Authenticator>> {
        Ok(Arc::new(BasicAuthenticator::new(context.account, context.integration)?))
    }
}

impl MethodTable for Basic {
    const TYPE: &'static str = "basic";
}

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
        if !integration.auth.is::<Basic>() {
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
    if let Some(problem) = problem(username, password) {
        return Err(problem);
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

/// Why RFC 7617 cannot carry this user name and password, if it cannot.
fn problem(username: &str, password: &str) -> Option<&'static str> {
    if username.contains(':') {
        return Some("credential `username` must not contain `:` (RFC 7617)");
    }
    if username.chars().chain(password.chars()).any(char::is_control) {
        return Some("credentials `username` and `password` must not contain control characters (RFC 7617)");
    }
    None
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
