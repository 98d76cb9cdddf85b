#![doc = include_str!("../README.md")]

use std::sync::Arc;

use integration_core::definition::{Auth, Integration};
use integration_core::{ConnectedAccount, Error, ErrorKind, Result, async_trait};
use integration_http::{Authenticator, Credential};

/// The API Token of one account: its `token` credential, sent where the
/// integration's `token` settings say.
#[derive(Debug)]
pub struct ApiTokenAuthenticator {
    credential: Arc<Credential>,
}

impl ApiTokenAuthenticator {
    /// The authenticator for `account` of an `api_token` integration.
    pub fn new(account: &ConnectedAccount, integration: &Integration) -> Result<Self> {
        let error = |message: &'static str| {
            Error::new(ErrorKind::InvalidInput, message)
                .with_context("account", account.id())
                .with_context("integration", &integration.key)
        };
        if !matches!(integration.auth, Auth::ApiToken(_)) {
            return Err(error("not an api_token integration"));
        }
        let token = account
            .credentials()
            .get("token")
            .ok_or_else(|| error("the account has no `token` credential"))?;
        Ok(Self {
            credential: Arc::new(Credential::token(token.clone())),
        })
    }
}

#[async_trait]
impl Authenticator for ApiTokenAuthenticator {
    async fn credential(&self) -> Result<Arc<Credential>> {
        Ok(Arc::clone(&self.credential))
    }

    // A refused API token cannot be renewed: the 401 goes back to the caller.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let authenticator = ApiTokenAuthenticator {
            credential: Arc::new(Credential::token(integration_core::secrecy::SecretString::from(
                "tok-s3cret".to_owned(),
            ))),
        };
        assert!(!format!("{authenticator:?}").contains("s3cret"));
    }
}
