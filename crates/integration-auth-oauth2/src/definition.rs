//! The `oauth2` definition table.

use std::collections::BTreeMap;
use std::sync::Arc;

use integration_core::definition::{
    BodyFormat, Integration, SecretSource, TemplateField, TokenInjection, TokenResponse, UrlTemplateField, Verb,
    is_env_name, is_header_name,
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
    /// How the revoke endpoint takes a token, for providers that do not
    /// follow RFC 7009 (a form with `token` and `token_type_hint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_token_request: Option<RevokeRequest>,
    /// OAuth Scope: one string (`"repo read:user"`), or a list of scopes
    /// joined with `scope_separator`.
    pub scope: Scope,
    /// What joins a list of scopes: a space (the standard, and the
    /// default), or `,` for providers that want commas (Slack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_separator: Option<String>,
    /// Client ID: a template, or `{ env = "NAME" }` to read it from the
    /// process environment (catalog entries do, so that one app's id is
    /// set once per deployment).
    pub client_id: SecretSource,
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
    /// Values of the token response saved on the account as parameters,
    /// by name: JSON pointers such as `{ instance_url = "/instance_url" }`.
    /// Updated by each refresh whose response has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token_response_parameters: BTreeMap<String, String>,
    /// Query parameters of the authorization callback saved on the account
    /// as parameters of the same name, such as QuickBooks' `realmId`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callback_parameters: Vec<String>,
    /// A request made with the new access token right after the code
    /// exchange, whose JSON answer gives more parameters (Atlassian's
    /// cloud id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_lookup: Option<ConnectionLookup>,
    /// Auth Token: how the access token goes on each request.
    pub token: TokenInjection,
}

/// How a revoke endpoint takes a token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// `POST` (the default), `DELETE` or `GET`.
    #[serde(default)]
    pub verb: RevokeVerb,
    /// Where the token goes: `form` (RFC 7009, the default), `json`,
    /// `query`, or `bearer` (`Authorization: Bearer`, the token revoking
    /// itself).
    #[serde(default)]
    pub token_placement: RevokePlacement,
    /// The token's name in the form, JSON body or query; `token` unless
    /// set (GitHub: `access_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_field: Option<String>,
    /// How the client authenticates: `basic`, `body` or `none`; the token
    /// endpoint's way unless set, none with `bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authentication: Option<RevokeAuthentication>,
    /// The tokens revoked, in order: the refresh token then the access
    /// token unless set; with `bearer`, the access token alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<RevokedToken>>,
    /// Headers the endpoint wants, such as Notion's `Notion-Version`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// The verb of a revoke request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RevokeVerb {
    /// `POST`.
    #[default]
    Post,
    /// `DELETE`.
    Delete,
    /// `GET`.
    Get,
}

/// Where a revoke request carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokePlacement {
    /// A form body with `token_type_hint` (RFC 7009).
    #[default]
    Form,
    /// A JSON object.
    Json,
    /// The query string.
    Query,
    /// `Authorization: Bearer`, with no body.
    Bearer,
}

/// How the client authenticates to the revoke endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokeAuthentication {
    /// HTTP Basic with the client id and secret.
    Basic,
    /// `client_id` and `client_secret` with the token.
    Body,
    /// None.
    None,
}

/// A token a revoke request revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokedToken {
    /// The refresh token.
    RefreshToken,
    /// The access token.
    AccessToken,
}

impl RevokeRequest {
    /// How the client authenticates.
    pub fn client_authentication(&self, token_endpoint: ClientAuthentication) -> RevokeAuthentication {
        match (self.client_authentication, self.token_placement) {
            (Some(chosen), _) => chosen,
            (None, RevokePlacement::Bearer) => RevokeAuthentication::None,
            (None, _) => match token_endpoint {
                ClientAuthentication::Basic => RevokeAuthentication::Basic,
                ClientAuthentication::Body => RevokeAuthentication::Body,
            },
        }
    }

    /// The tokens revoked, in order.
    pub fn tokens(&self) -> Vec<RevokedToken> {
        match (&self.tokens, self.token_placement) {
            (Some(tokens), _) => tokens.clone(),
            (None, RevokePlacement::Bearer) => vec![RevokedToken::AccessToken],
            (None, _) => vec![RevokedToken::RefreshToken, RevokedToken::AccessToken],
        }
    }

    fn check(&self, endpoint: bool, token_endpoint: ClientAuthentication, problems: &mut Problems) {
        let field = "auth.revoke_token_request";
        if !endpoint {
            problems.at(field, "there is no revoke_token_endpoint to send it to");
        }
        // A query ends up in access logs along the way: no client secret there.
        if self.token_placement == RevokePlacement::Query
            && self.client_authentication(token_endpoint) == RevokeAuthentication::Body
        {
            problems.at(
                format!("{field}.client_authentication"),
                "with `query` the client secret would go in the URL: use `basic` (or `none`)",
            );
        }
        if self.verb == RevokeVerb::Get && matches!(self.token_placement, RevokePlacement::Form | RevokePlacement::Json)
        {
            problems.at(
                format!("{field}.token_placement"),
                "a GET has no body: use `query` or `bearer`",
            );
        }
        let bearer = self.token_placement == RevokePlacement::Bearer;
        match &self.token_field {
            Some(_) if bearer => problems.at(format!("{field}.token_field"), "a bearer token has no field name"),
            Some(name) if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) => {
                problems.at(format!("{field}.token_field"), "expected a field name such as `token`")
            }
            _ => {}
        }
        for (name, value) in &self.headers {
            let set_by_the_request = [
                "authorization",
                "content-type",
                "content-length",
                "host",
                "transfer-encoding",
            ]
            .iter()
            .any(|own| name.eq_ignore_ascii_case(own));
            if !is_header_name(name) || set_by_the_request {
                problems.at(
                    format!("{field}.headers"),
                    format!("`{name}` is not a header the request may set"),
                );
            } else if value.chars().any(char::is_control) {
                problems.at(
                    format!("{field}.headers.{name}"),
                    "a header value cannot hold a control character",
                );
            }
        }
        if bearer
            && matches!(
                self.client_authentication,
                Some(RevokeAuthentication::Basic | RevokeAuthentication::Body)
            )
        {
            problems.at(
                format!("{field}.client_authentication"),
                "with `bearer` the token is the credential: the client authentication is `none`",
            );
        }
        if let Some(tokens) = &self.tokens {
            if tokens.is_empty() {
                problems.at(format!("{field}.tokens"), "name at least one token");
            }
            if bearer && tokens.contains(&RevokedToken::RefreshToken) {
                problems.at(
                    format!("{field}.tokens"),
                    "a refresh token is no bearer credential: with `bearer`, only the access token revokes itself",
                );
            }
        }
    }
}

/// A GET made with the new access token right after the code exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLookup {
    /// URL template; the token goes where `token` says.
    pub url: UrlTemplateField,
    /// Values of its JSON answer saved on the account as parameters, by
    /// name: JSON pointers such as `{ cloud_id = "/0/id" }`.
    pub parameters: BTreeMap<String, String>,
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

impl OAuth2 {
    fn check_provided_parameters(&self, integration: &Integration, problems: &mut Problems) {
        let pointers = self
            .token_response_parameters
            .iter()
            .map(|(name, pointer)| (format!("auth.token_response_parameters.{name}"), pointer))
            .chain(self.connection_lookup.iter().flat_map(|lookup| {
                lookup
                    .parameters
                    .iter()
                    .map(|(name, pointer)| (format!("auth.connection_lookup.parameters.{name}"), pointer))
            }));
        for (field, pointer) in pointers {
            if pointer.is_empty() || pointer.contains(char::is_whitespace) {
                problems.at(
                    field,
                    "expected a JSON pointer such as `/instance_url`, or a field name",
                );
            }
        }
        let after_a_code = self.grant_type == GrantType::AuthorizationCode;
        if !after_a_code && !self.callback_parameters.is_empty() {
            problems.at(
                "auth.callback_parameters",
                "the client_credentials grant has no authorization callback",
            );
        }
        if let Some(lookup) = &self.connection_lookup {
            if !after_a_code {
                problems.at(
                    "auth.connection_lookup",
                    "the connection lookup follows the exchange of an authorization code; the \
                     client_credentials grant has none",
                );
            }
            if let Some((name, _)) = lookup
                .url
                .parameters()
                .find(|(name, _)| lookup.parameters.contains_key(*name))
            {
                problems.at(
                    "auth.connection_lookup.url",
                    format!("`{name}` is what the lookup gives, so its own URL cannot use it"),
                );
            }
        }
        // The client is made before the account connects: what it renders
        // cannot wait for the provider's values.
        let provided = self.provided_parameters();
        let is_provided = |name: &str| provided.iter().any(|(_, provided)| *provided == name);
        let used_early = self
            .endpoints()
            .into_iter()
            .map(|(field, url)| (field.to_owned(), url.template()))
            .chain(self.templates());
        for (field, template) in used_early {
            if let Some(name) = template.parameters().find(|name| is_provided(name)) {
                problems.at(
                    field,
                    format!(
                        "`{name}` is given by the provider while the account connects, after this is used; \
                         base_url, request parameters and the token's value template may use it"
                    ),
                );
            }
        }
        for (i, host) in integration.allowed_hosts.iter().enumerate() {
            if let Some(name) = host.parameters().find(|name| is_provided(name)) {
                problems.at(
                    format!("allowed_hosts[{i}]"),
                    format!("`{name}` is given by the provider: it may not choose the allowed hosts"),
                );
            }
        }
        // Whoever follows the redirect can change its query: a callback
        // value may choose a path segment, never where requests go.
        let mut urls: Vec<(&str, &UrlTemplate)> = self.endpoints();
        if let Some(base_url) = integration.base_url.as_deref() {
            urls.push(("base_url", base_url));
        }
        for (field, url) in urls {
            if let Some((name, _)) = url.parameters().find(|(name, placement)| {
                (placement.chooses_host() || *placement == Placement::Port)
                    && self.callback_parameters.iter().any(|callback| callback == *name)
            }) {
                problems.at(
                    field,
                    format!(
                        "`{name}` comes from the authorization callback, whose query whoever follows the \
                         redirect can change: it may not choose the host"
                    ),
                );
            }
        }
    }
}

/// Whether the parameters in `endpoint`'s host only choose subdomains of a
/// domain of two labels or more written in the definition
/// (`{shop}.myshopify.com`), so that any value keeps the host within it.
fn under_a_fixed_domain(endpoint: &UrlTemplate) -> bool {
    let origin = endpoint
        .parameters()
        .any(|(_, placement)| placement == Placement::Origin);
    let labels = endpoint
        .host_suffix()
        .and_then(|suffix| suffix.strip_prefix('.'))
        .map(|domain| domain.split('.').collect::<Vec<_>>());
    !origin && labels.is_some_and(|labels| labels.len() >= 2 && labels.iter().all(|label| !label.is_empty()))
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
        if let Some(grant_type) = self.token_parameters.get("grant_type")
            && grant_type.parameters().next().is_some()
        {
            problems.at(
                "auth.token_parameters.grant_type",
                "a grant type is written in the definition, never chosen by an account's parameter",
            );
        }
        for name in self.token_parameters.keys() {
            let reserved = match name.as_str() {
                "grant_type" => self.grant_type != GrantType::ClientCredentials,
                "code" | "code_verifier" | "redirect_uri" | "refresh_token" | "client_id" | "client_secret" => true,
                _ => false,
            };
            if reserved {
                problems.at(
                    format!("auth.token_parameters.{name}"),
                    format!(
                        "`{name}` is set by the grant itself; only a client_credentials grant may replace \
                         its `grant_type` (as Zoom's `account_credentials`)"
                    ),
                );
            }
        }
        self.token_response.check("auth.token_response", problems);
        self.check_provided_parameters(integration, problems);
        if let Some(request) = &self.revoke_token_request {
            request.check(
                self.revoke_token_endpoint.is_some(),
                self.client_authentication(),
                problems,
            );
        }
        if self.token_response.token_header.is_some() {
            problems.at(
                "auth.token_response.token_header",
                "OAuth 2.0 tokens come in the response body; token_header applies to custom_token only",
            );
        }
        for (field, source) in [
            ("auth.client_id.env", &self.client_id),
            ("auth.client_secret.env", &self.client_secret),
        ] {
            if let SecretSource::Env { env } = source
                && !is_env_name(env)
            {
                problems.at(field, format!("`{env}` is not an environment variable name"));
            }
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
                && !under_a_fixed_domain(endpoint)
                && let Some((parameter, _)) = endpoint.parameters().find(|(_, placement)| placement.chooses_host())
            {
                problems.at(
                    field,
                    format!(
                        "its host comes from parameter `{parameter}`, so whoever creates an account would \
                         choose where the integration's client secret goes; write the host in the definition \
                         (a parameter may stand for subdomains of a fixed domain: `https://{{shop}}.myshopify.com`), \
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
            (
                "auth.connection_lookup.url",
                self.connection_lookup.as_ref().map(|lookup| &*lookup.url),
            ),
        ]
        .into_iter()
        .filter_map(|(field, template)| Some((field, template?)))
        .collect()
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        let mut templates = Vec::new();
        if let SecretSource::Template(client_id) = &self.client_id {
            templates.push(("auth.client_id".to_owned(), &**client_id));
        }
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

    fn provided_parameters(&self) -> Vec<(String, &str)> {
        let from_response = self
            .token_response_parameters
            .keys()
            .map(|name| (format!("auth.token_response_parameters.{name}"), name.as_str()));
        let from_callback = self
            .callback_parameters
            .iter()
            .enumerate()
            .map(|(i, name)| (format!("auth.callback_parameters[{i}]"), name.as_str()));
        let from_lookup = self.connection_lookup.iter().flat_map(|lookup| {
            lookup
                .parameters
                .keys()
                .map(|name| (format!("auth.connection_lookup.parameters.{name}"), name.as_str()))
        });
        from_response.chain(from_callback).chain(from_lookup).collect()
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
