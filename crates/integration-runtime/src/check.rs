//! Checking an account's credentials with the provider before they are
//! stored: an end user who typed a wrong token hears it at once, and
//! nothing is saved.

use integration_core::{ConnectedAccount, Result};
#[cfg(feature = "http")]
use integration_core::{Error, ErrorKind};

use crate::Integrations;

/// How [`Integrations::check_credentials`] checked an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialCheck {
    /// The integration's `health_check` request answered.
    HealthCheck,
    /// The Custom Token endpoint gave a token.
    TokenCall,
    /// The SFTP server accepted the login.
    Login,
    /// Nothing tells whether they work (no `health_check`): they are taken
    /// as given.
    Unchecked,
}

impl Integrations {
    /// Checks that the credentials of `account` (stored or not) work,
    /// without storing anything: the auth method's own checks, then
    ///
    /// - Custom Token: a call to its access token endpoint;
    /// - SFTP: a login to the server;
    /// - API Token, Basic and the like: the integration's `health_check`,
    ///   where a 401 or 403 means they do not work.
    ///
    /// OAuth 2.0 accounts get their credentials from their authorization,
    /// and are not checked here. A refusal is an error of kind
    /// [`Refused`](ErrorKind::Refused); a provider that cannot say (a 5xx,
    /// a timeout) an error of its kind.
    pub async fn check_credentials(&self, account: &ConnectedAccount) -> Result<CredentialCheck> {
        let integration = self.integration(account.integration())?;
        let services = self.services(integration)?;
        integration
            .auth
            .check_account(&self.context(account, integration, &services))
            .await?;
        match integration.auth.type_name() {
            #[cfg(feature = "auth-custom-token")]
            "custom_token" => {
                let authenticator = integration_auth_custom_token::CustomTokenAuthenticator::new(
                    account,
                    integration,
                    self.store.clone(),
                    self.http_for(integration)?,
                )?;
                authenticator.obtain().await.map_err(|error| {
                    if error.kind() == ErrorKind::Provider {
                        Error::new(
                            ErrorKind::Refused,
                            format!("the credentials do not work: {}", error.message()),
                        )
                    } else {
                        error
                    }
                })?;
                Ok(CredentialCheck::TokenCall)
            }
            #[cfg(feature = "sftp")]
            "sftp" => {
                let client =
                    integration_sftp::client(std::sync::Arc::new(integration.as_ref().clone()), account.clone())
                        .await?;
                let connected = client.connect().await;
                client.close().await;
                connected?;
                Ok(CredentialCheck::Login)
            }
            "oauth2" => Ok(CredentialCheck::Unchecked),
            _ => self.run_health_check(account).await,
        }
    }

    #[cfg(feature = "http")]
    async fn run_health_check(&self, account: &ConnectedAccount) -> Result<CredentialCheck> {
        let integration = self.integration(account.integration())?;
        let Some(check) = &integration.health_check else {
            return Ok(CredentialCheck::Unchecked);
        };
        let method = match check.method {
            integration_core::definition::HealthCheckMethod::Get => integration_http::Method::GET,
            integration_core::definition::HealthCheckMethod::Head => integration_http::Method::HEAD,
        };
        let client = self.compile(account)?;
        let status = client.request(method.clone(), &check.path).send().await?.status();
        let answered = format!("the health check {method} {} answered {}", check.path, status.as_u16());
        if status == integration_http::StatusCode::UNAUTHORIZED || status == integration_http::StatusCode::FORBIDDEN {
            return Err(Error::new(
                ErrorKind::Refused,
                format!("the credentials do not work: {answered}"),
            ));
        }
        if !(status.is_success() || status.is_redirection()) {
            return Err(Error::new(
                ErrorKind::Provider,
                format!("the credentials cannot be checked now: {answered}"),
            ));
        }
        Ok(CredentialCheck::HealthCheck)
    }

    #[cfg(not(feature = "http"))]
    async fn run_health_check(&self, _account: &ConnectedAccount) -> Result<CredentialCheck> {
        Ok(CredentialCheck::Unchecked)
    }
}
