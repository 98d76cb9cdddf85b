//! One account's OAuth 2.0 client: authorization, token requests, revocation.

use std::fmt;

use integration_core::definition::{Integration, SecretSource};

use crate::definition::Scope;
use crate::{GrantType, OAuth2};
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::template::Escape;
use integration_core::{AccountId, AccountStore, ConnectedAccount, Error, ErrorKind, Result};
use integration_http::{AccountClient, HttpClient};
use url::Url;

use crate::token_endpoint::TokenEndpoint;

/// The OAuth 2.0 settings of one account, rendered with its parameter
/// values and its client secret resolved.
pub struct OAuth2Client {
    pub(crate) account: AccountId,
    pub(crate) integration: String,
    pub(crate) config: OAuth2,
    /// The integration, to check the values its provider gives.
    pub(crate) definition: Integration,
    pub(crate) store: AccountStore,
    pub(crate) token: TokenEndpoint,
    pub(crate) authorization_endpoint: Option<Url>,
    pub(crate) revoke_endpoint: Option<Url>,
    /// The connection lookup's URL.
    pub(crate) lookup: Option<Url>,
    pub(crate) scope: String,
    pub(crate) authorization_parameters: Vec<(String, String)>,
}

impl OAuth2Client {
    /// The client for `account` of an `oauth2` integration.
    pub fn new(
        account: &ConnectedAccount,
        integration: &Integration,
        store: AccountStore,
        http: HttpClient,
    ) -> Result<Self> {
        let error = |kind: ErrorKind, message: String| {
            Error::new(kind, message)
                .with_context("account", account.id())
                .with_context("integration", &integration.key)
        };
        let Some(config) = integration.auth.definition::<OAuth2>() else {
            return Err(error(ErrorKind::InvalidInput, "not an oauth2 integration".to_owned()));
        };
        let values = account.parameter_values();
        let url = |field: &str, template: &integration_core::template::UrlTemplate| -> Result<Url> {
            let text = template
                .render(&values)
                .map_err(|e| error(ErrorKind::InvalidInput, format!("{e} (in {field})")))?;
            let url = Url::parse(&text).map_err(|e| error(ErrorKind::InvalidInput, format!("{field}: {e}")))?;
            integration_http::check_destination(&url, template, integration)
                .map_err(|refusal| error(ErrorKind::Refused, format!("{field}: {refusal}")))?;
            Ok(url)
        };
        let text = |field: &str, template: &integration_core::template::Template| -> Result<String> {
            template
                .render(Escape::Plain, &values)
                .map_err(|e| error(ErrorKind::InvalidInput, format!("{e} (in {field})")))
        };
        let source = |field: &str, source: &SecretSource| -> Result<SecretString> {
            Ok(match source {
                SecretSource::Template(template) => SecretString::from(text(field, template)?),
                SecretSource::Env { env } => SecretString::from(std::env::var(env).map_err(|_| {
                    error(
                        ErrorKind::Config,
                        format!("environment variable {env} ({field}) is not set or not UTF-8"),
                    )
                })?),
            })
        };
        let client_secret = source("auth.client_secret", &config.client_secret)?;
        let extra = config
            .token_parameters
            .iter()
            .map(|(name, template)| {
                text(&format!("auth.token_parameters.{name}"), template)
                    .map(|value| (name.clone(), SecretString::from(value)))
            })
            .collect::<Result<Vec<_>>>()?;
        let authorization_parameters = config
            .authorization_parameters
            .iter()
            .map(|(name, template)| {
                text(&format!("auth.authorization_parameters.{name}"), template).map(|value| (name.clone(), value))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            account: account.id().clone(),
            integration: integration.key.clone(),
            store,
            token: TokenEndpoint {
                endpoints: AccountClient::endpoints(account, integration, http)?,
                url: url("auth.access_token_endpoint", &config.access_token_endpoint)?,
                refresh_url: config
                    .refresh_token_endpoint
                    .as_ref()
                    .map(|template| url("auth.refresh_token_endpoint", template))
                    .transpose()?,
                verb: config.access_token_verb,
                format: config.token_request_format(),
                client_id: source("auth.client_id", &config.client_id)?.expose_secret().to_owned(),
                client_secret,
                authentication: config.client_authentication(),
                extra,
                response: config.token_response.clone(),
                saved: config
                    .token_response_parameters
                    .iter()
                    .map(|(name, pointer)| (name.clone(), pointer.clone()))
                    .collect(),
            },
            authorization_endpoint: config
                .authorization_endpoint
                .as_ref()
                .map(|template| url("auth.authorization_endpoint", template))
                .transpose()?,
            revoke_endpoint: config
                .revoke_token_endpoint
                .as_ref()
                .map(|template| url("auth.revoke_token_endpoint", template))
                .transpose()?,
            lookup: config
                .connection_lookup
                .as_ref()
                .map(|lookup| url("auth.connection_lookup.url", &lookup.url))
                .transpose()?,
            scope: match &config.scope {
                Scope::Text(scope) => text("auth.scope", scope)?,
                Scope::List(scopes) => scopes
                    .iter()
                    .enumerate()
                    .map(|(i, scope)| text(&format!("auth.scope[{i}]"), scope))
                    .collect::<Result<Vec<_>>>()?
                    .join(config.scope_separator()),
            },
            authorization_parameters,
            config: config.clone(),
            definition: integration.clone(),
        })
    }

    /// The account id.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The grant the integration uses.
    pub fn grant_type(&self) -> GrantType {
        self.config.grant_type
    }

    pub(crate) fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind, message.into())
            .with_context("account", &self.account)
            .with_context("integration", &self.integration)
    }

    /// The client secret, for the revoke endpoint.
    pub(crate) fn client_secret(&self) -> &str {
        self.token.client_secret.expose_secret()
    }
}

impl fmt::Debug for OAuth2Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Client")
            .field("account", &self.account)
            .field("integration", &self.integration)
            .field("grant_type", &self.config.grant_type)
            .field("token_endpoint_host", &self.token.url.host_str())
            .field("client_id", &self.token.client_id)
            .finish_non_exhaustive()
    }
}
