//! The `oauth2` definition table.

use std::collections::BTreeMap;
use std::sync::Arc;

use integration_core::definition::{
    BodyFormat, Integration, SecretSource, TemplateField, TokenInjection, TokenResponse, UrlTemplateField, Verb,
    is_env_name,
};
use integration_core::method::{AccountContext, AuthDefinition, CredentialField, MethodTable, Problems, Revocation};
use integration_core::template::{Placement, Template, UrlTemplate};
use integration_core::{AccountStatus, Result, Secrets, async_trait};
use integration_http::{Authenticator, HttpClient};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{OAuth2Authenticator, OAuth2Client};

/// OAuth 2.0 configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    /// Authorization Grant Type.
    pub grant_type: GrantType,
    /// Authorization Endpoint; required for the authorization code grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<UrlTemplateField>,
    /// Access Token Endpoint.
    pub access_token_endpoint: UrlTemplateField,
    /// Access Token Verb.
    pub access_token_verb: Verb,
    /// How a POST token request sends its parameters: `form` (the
    /// standard, and the default) or `json` (Notion, some others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_request_format: Option<BodyFormat>,
    /// Where refresh token requests go, when not to the access token
    /// endpoint (Figma).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_endpoint: Option<UrlTemplateField>,
    /// Revoke Token Endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_token_endpoint: Option<UrlTemplateField>,
    /// OAuth Scope: one string (`"repo read:user"`), or a list of scopes
    /// joined with `scope_separator`.
    pub scope: Scope,
    /// What joins a list of scopes: a space (the standard, and the
    /// default), or `,` for providers that want commas (Slack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_separator: Option<String>,
    /// Client ID.
    pub client_id: TemplateField,
    /// Client Secret: a template (usually `{client_secret}` over a secret
    /// parameter) or `{ env = "NAME" }`.
    pub client_secret: SecretSource,
    /// PKCE (S256) on the authorization code grant; on unless set to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkce: Option<bool>,
    /// How the client authenticates to the token and revoke endpoints:
    /// `basic` (HTTP Basic, the default) or `body` (in the request body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authentication: Option<ClientAuthentication>,
    /// Extra parameters of the authorization URL, e.g. `{ prompt = "consent" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorization_parameters: BTreeMap<String, TemplateField>,
    /// Extra parameters of every token request, e.g. `{ audience = "{tenant}" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token_parameters: BTreeMap<String, TemplateField>,
    /// Where the tokens and their lifetime are read from the token response,
    /// for providers that nest them or leave out `expires_in`.
    #[serde(default)]
    pub token_response: TokenResponse,
    /// Auth Token: how the access token goes on each request.
    pub token: TokenInjection,
}

/// The scope an integration asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scope {
    /// The scope as sent, e.g. `"repo read:user"`.
    Text(TemplateField),
    /// Scopes to join with `scope_separator`.
    List(Vec<TemplateField>),
}

impl OAuth2 {
    /// What joins a list of scopes.
    pub fn scope_separator(&self) -> &str {
        self.scope_separator.as_deref().unwrap_or(" ")
    }

    /// How a POST token request sends its parameters.
    pub fn token_request_format(&self) -> BodyFormat {
        self.token_request_format.unwrap_or_default()
    }

    /// Whether PKCE is used on the authorization code grant.
    pub fn uses_pkce(&self) -> bool {
        self.pkce.unwrap_or(true)
    }

    /// How the client authenticates.
    pub fn client_authentication(&self) -> ClientAuthentication {
        self.client_authentication.unwrap_or_default()
    }
}

/// How an OAuth 2.0 client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthentication {
    /// `Authorization: Basic` with the client id and secret (RFC 6749 2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the request body.
    Body,
}

/// Authorization Grant Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// Authorization Code.
    AuthorizationCode,
    /// Client Credentials.
    ClientCredentials,
}

#[async_trait]
impl AuthDefinition for OAuth2 {
    fn check_definition(&self, integration: &Integration, problems: &mut Problems) {
        if self.grant_type == GrantType::AuthorizationCode && self.authorization_endpoint.is_none() {
            problems.at(
                "auth",
                "missing required field `authorization_endpoint` (the authorization_code grant needs it)",
            );
        }
        if self.access_token_verb == Verb::Get && self.token_request_format.is_some() {
            problems.at(
                "auth.token_request_format",
                "a GET token request sends its parameters in the query; token_request_format applies to POST only",
            );
        }
        match (&self.scope, &self.scope_separator) {
            (Scope::Text(_), Some(_)) => problems.at(
                "auth.scope_separator",
                "scope_separator joins a list of scopes, and `scope` is one string here: write it as a list",
            ),
            (Scope::List(_), Some(separator)) if separator.is_empty() || separator.chars().any(char::is_control) => {
                problems.at(
                    "auth.scope_separator",
                    "scope_separator must be a space, a comma or the like",
                )
            }
            _ => {}
        }
        self.token_response.check("auth.token_response", problems);
        if self.token_response.token_header.is_some() {
            problems.at(
                "auth.token_response.token_header",
                "OAuth 2.0 tokens come in the response body; token_header applies to custom_token only",
            );
        }
        if let SecretSource::Env { env } = &self.client_secret
            && !is_env_name(env)
        {
            problems.at(
                "auth.client_secret.env",
                format!("`{env}` is not an environment variable name"),
            );
        }
        // The client secret goes to the token and revoke endpoints. When it
        // is the integration's own (an `env` variable or a literal), an
        // account must not choose where those endpoints are.
        let secret_of_each_account = match &self.client_secret {
            SecretSource::Template(template) => template.parameters().any(|name| {
                integration
                    .parameters
                    .iter()
                    .any(|parameter| parameter.secret && parameter.name == name)
            }),
            SecretSource::Env { .. } => false,
        };
        let endpoints = [
            ("auth.access_token_endpoint", Some(&self.access_token_endpoint)),
            ("auth.refresh_token_endpoint", self.refresh_token_endpoint.as_ref()),
            ("auth.revoke_token_endpoint", self.revoke_token_endpoint.as_ref()),
        ];
        for (field, endpoint) in endpoints {
            if let Some(endpoint) = endpoint
                && !secret_of_each_account
                && let Some((parameter, _)) = endpoint
                    .parameters()
                    .find(|(_, placement)| *placement == Placement::Host)
            {
                problems.at(
                    field,
                    format!(
                        "its host comes from parameter `{parameter}`, so whoever creates an account would \
                         choose where the integration's client secret goes; write the host in the definition, \
                         or make client_secret a secret parameter of each account (`{{client_secret}}`)"
                    ),
                );
            }
        }
    }

    fn endpoints(&self) -> Vec<(&'static str, &UrlTemplate)> {
        [
            ("auth.authorization_endpoint", self.authorization_endpoint.as_deref()),
            ("auth.access_token_endpoint", Some(&*self.access_token_endpoint)),
            ("auth.refresh_token_endpoint", self.refresh_token_endpoint.as_deref()),
            ("auth.revoke_token_endpoint", self.revoke_token_endpoint.as_deref()),
        ]
        .into_iter()
        .filter_map(|(field, template)| Some((field, template?)))
        .collect()
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        let mut templates = vec![("auth.client_id".to_owned(), &*self.client_id)];
        match &self.scope {
            Scope::Text(scope) => templates.push(("auth.scope".to_owned(), &**scope)),
            Scope::List(scopes) => {
                for (i, scope) in scopes.iter().enumerate() {
                    templates.push((format!("auth.scope[{i}]"), &**scope));
                }
            }
        }
        for (name, template) in &self.authorization_parameters {
            templates.push((format!("auth.authorization_parameters.{name}"), &**template));
        }
        for (name, template) in &self.token_parameters {
            templates.push((format!("auth.token_parameters.{name}"), &**template));
        }
        if let SecretSource::Template(secret) = &self.client_secret {
            templates.push(("auth.client_secret".to_owned(), &**secret));
        }
        templates
    }

    fn token(&self) -> Option<&TokenInjection> {
        Some(&self.token)
    }

    fn credential_fields(&self) -> Vec<CredentialField> {
        vec![
            CredentialField::optional(
                "access_token",
                "an access token to import; normally obtained by the grant",
            ),
            CredentialField::optional(
                "refresh_token",
                "a refresh token to import; normally obtained by the grant",
            ),
        ]
    }

    fn initial_status(&self, credentials: &Secrets) -> AccountStatus {
        let imported = credentials.contains("refresh_token") || credentials.contains("access_token");
        if self.grant_type == GrantType::AuthorizationCode && !imported {
            AccountStatus::Pending
        } else {
            AccountStatus::Connected
        }
    }

    fn authenticator(&self, context: &AccountContext<'_>) -> Result<Arc<dyn Authenticator>> {
        Ok(Arc::new(OAuth2Authenticator::new(client(context)?, context.account)))
    }

    async fn revoke(&self, context: &AccountContext<'_>) -> Revocation {
        match client(context) {
            Ok(client) => client.revoke(context.account).await,
            Err(error) => Revocation {
                failures: vec![error],
                ..Revocation::default()
            },
        }
    }
}

impl MethodTable for OAuth2 {
    const TYPE: &'static str = "oauth2";
}

/// The OAuth 2.0 client of the context's account, its token calls sent
/// through the runtime's HTTP client.
pub fn client(context: &AccountContext<'_>) -> Result<OAuth2Client> {
    let http = context.services.require::<HttpClient>("HTTP client")?;
    OAuth2Client::new(
        context.account,
        context.integration,
        context.store.clone(),
        http.clone(),
    )
}
