//! The `custom_token` definition table.

use std::collections::BTreeMap;
use std::sync::Arc;

use integration_core::Result;
pub use integration_core::definition::BodyFormat;
use integration_core::definition::{Integration, TemplateField, TokenInjection, TokenResponse, UrlTemplateField, Verb};
use integration_core::method::{AccountContext, AuthDefinition, CredentialField, MethodTable, Problems};
use integration_core::template::{Template, UrlTemplate};
use integration_http::{Authenticator, HttpClient};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::CustomTokenAuthenticator;

/// Custom Token configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomToken {
    /// Access Token Endpoint.
    pub access_token_endpoint: UrlTemplateField,
    /// Access Token Verb.
    pub access_token_verb: Verb,
    /// How a POST sends the access token parameters: `form` (default) or
    /// `json`. A GET sends them in the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_body: Option<BodyFormat>,
    /// Access Token Parameters: sent with the token request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub access_token_parameters: BTreeMap<String, TemplateField>,
    /// Where the token and its lifetime are read from the response.
    #[serde(default)]
    pub token_response: TokenResponse,
    /// Auth Token: how the token goes on each request.
    pub token: TokenInjection,
}

impl AuthDefinition for CustomToken {
    fn check_definition(&self, _: &Integration, problems: &mut Problems) {
        if self.access_token_verb == Verb::Get && self.access_token_body.is_some() {
            problems.at(
                "auth.access_token_body",
                "a GET token request sends its parameters in the query; access_token_body applies to POST only",
            );
        }
        self.token_response.check("auth.token_response", problems);
        if self.token_response.refresh_token.is_some() {
            problems.at(
                "auth.token_response.refresh_token",
                "custom tokens are not refreshed; refresh_token applies to oauth2 only",
            );
        }
    }

    fn endpoints(&self) -> Vec<(&'static str, &UrlTemplate)> {
        vec![("auth.access_token_endpoint", &*self.access_token_endpoint)]
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        self.access_token_parameters
            .iter()
            .map(|(name, template)| (format!("auth.access_token_parameters.{name}"), &**template))
            .collect()
    }

    fn token(&self) -> Option<&TokenInjection> {
        Some(&self.token)
    }

    fn credential_fields(&self) -> Vec<CredentialField> {
        Vec::new()
    }

    fn authenticator(&self, context: &AccountContext<'_>) -> Result<Arc<dyn Authenticator>> {
        let http = context.services.require::<HttpClient>("HTTP client")?;
        Ok(Arc::new(CustomTokenAuthenticator::new(
            context.account,
            context.integration,
            context.store.clone(),
            http.clone(),
        )?))
    }
}

impl MethodTable for CustomToken {
    const TYPE: &'static str = "custom_token";
}
