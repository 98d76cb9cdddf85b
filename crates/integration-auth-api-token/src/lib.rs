#![doc = include_str!("../README.md")]

use std::sync::Arc;

use integration_core::definition::{Integration, TokenInjection};
use integration_core::method::{AccountContext, AuthDefinition, CredentialField, MethodTable};
use integration_core::{ConnectedAccount, Error, ErrorKind, Result, async_trait};
use integration_http::{Authenticator, Credential};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API Token configuration. The account's credential is `token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Auth Token: how the token goes on each request.
    pub token: TokenInjection,
}

impl AuthDefinition for ApiToken {
    fn token(&self) -> Option<&TokenInjection> {
        Some(&self.token)
    }

    fn credential_fields(&self) -> Vec<CredentialField> {
        vec![CredentialField::required("token", "the API token")]
    }

    fn authenticator(&self, context: &AccountContext<'_>) -> Result<Arc<dyn Authenticator>> {
        Ok(Arc::new(ApiTokenAuthenticator::new(
            context.account,
            context.integration,
        )?))
    }
}

impl MethodTable for ApiToken {
    const TYPE: &'static str = "api_token";
}

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
        if !integration.auth.is::<ApiToken>() {
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
