//! The `jwt` definition table.

use std::collections::BTreeMap;
use std::sync::Arc;

use integration_core::definition::{Integration, TemplateField, TokenInjection, TokenResponse, UrlTemplateField, Verb};
use integration_core::method::{AccountContext, AuthDefinition, CredentialField, MethodTable, Problems};
use integration_core::secrecy::ExposeSecret;
use integration_core::template::{Template, UrlTemplate};
use integration_core::{Result, Secrets};
use integration_http::{Authenticator, HttpClient};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::JwtAuthenticator;
use crate::key::SigningKey;

/// JWT: a JSON Web Token signed with the account's `private_key` (PEM),
/// its claims from templates. Used as the token itself (GitHub App calls
/// to `/app`, Google's self-signed JWT access), or exchanged for one at a
/// token endpoint (`exchange`: RFC 7523's JWT bearer grant, GitHub's
/// installation tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// The signature algorithm: `RS256` or `ES256`.
    pub algorithm: Algorithm,
    /// The claims, each a template: `iss`, `sub`, `aud`, `scope` and any
    /// other. `iat` and `exp` are set when the JWT is signed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, TemplateField>,
    /// The `kid` header, a template: which of the issuer's keys signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<TemplateField>,
    /// How long each JWT is valid, in seconds (default 600, GitHub's
    /// longest; Google takes up to 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub lifetime_seconds: Option<u64>,
    /// How far `iat` is set in the past, in seconds, for servers whose
    /// clock runs behind (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 3600))]
    pub clock_skew_seconds: Option<u64>,
    /// Exchange the JWT for an access token at a token endpoint; without
    /// it, requests carry the JWT itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Exchange>,
    /// Auth Token: how the token (the JWT, or the token it was exchanged
    /// for) goes on each request.
    pub token: TokenInjection,
}

/// The signature algorithm of a JWT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, an RSA key (PKCS#1 or PKCS#8 PEM).
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA with P-256 and SHA-256, an EC key (PKCS#8 PEM).
    #[serde(rename = "ES256")]
    Es256,
}

impl Algorithm {
    /// The name in the JWT's `alg` header.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

/// Where and how a JWT is exchanged for an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    /// The token endpoint, e.g. `https://oauth2.googleapis.com/token` or
    /// `https://api.github.com/app/installations/{installation_id}/access_tokens`.
    pub endpoint: UrlTemplateField,
    /// How the JWT goes: `assertion`, the RFC 7523 grant (a form with
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and
    /// `assertion`), or `bearer`, an `Authorization: Bearer` header.
    pub send_jwt_as: JwtPresentation,
    /// The verb: `POST` (default) or `GET`, for `bearer` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<Verb>,
    /// More parameters of the token request: in a POST's form body, or a
    /// GET's query. Each is a template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, TemplateField>,
    /// Where the token and its lifetime are read from the response, e.g.
    /// `{ token = "/token", expires_at = "/expires_at" }` for GitHub.
    #[serde(default)]
    pub token_response: TokenResponse,
}

/// How a JWT goes to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JwtPresentation {
    /// RFC 7523: form parameters `grant_type` and `assertion`.
    Assertion,
    /// `Authorization: Bearer <JWT>`.
    Bearer,
}

/// The claims set when a JWT is signed.
const SET_CLAIMS: [&str; 2] = ["iat", "exp"];

impl AuthDefinition for Jwt {
    fn check_definition(&self, _: &Integration, problems: &mut Problems) {
        for claim in SET_CLAIMS {
            if self.claims.contains_key(claim) {
                problems.at(
                    format!("auth.claims.{claim}"),
                    format!("`{claim}` is set when the JWT is signed; use lifetime_seconds and clock_skew_seconds"),
                );
            }
        }
        if let Some(exchange) = &self.exchange {
            if exchange.send_jwt_as == JwtPresentation::Assertion && exchange.verb == Some(Verb::Get) {
                problems.at(
                    "auth.exchange.verb",
                    "the JWT bearer grant (RFC 7523) is a POST; GET applies to `send_jwt_as = \"bearer\"` only",
                );
            }
            if exchange.send_jwt_as == JwtPresentation::Assertion {
                for reserved in ["grant_type", "assertion"] {
                    if exchange.parameters.contains_key(reserved) {
                        problems.at(
                            format!("auth.exchange.parameters.{reserved}"),
                            format!("`{reserved}` is set by the JWT bearer grant"),
                        );
                    }
                }
            }
            exchange.token_response.check("auth.exchange.token_response", problems);
            if exchange.token_response.refresh_token.is_some() {
                problems.at(
                    "auth.exchange.token_response.refresh_token",
                    "a JWT is signed again instead of refreshed; refresh_token applies to oauth2 only",
                );
            }
        }
    }

    fn endpoints(&self) -> Vec<(&'static str, &UrlTemplate)> {
        self.exchange
            .iter()
            .map(|exchange| ("auth.exchange.endpoint", &*exchange.endpoint))
            .collect()
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        let mut templates: Vec<(String, &Template)> = self
            .claims
            .iter()
            .map(|(name, template)| (format!("auth.claims.{name}"), &**template))
            .collect();
        if let Some(key_id) = &self.key_id {
            templates.push(("auth.key_id".to_owned(), &**key_id));
        }
        if let Some(exchange) = &self.exchange {
            for (name, template) in &exchange.parameters {
                templates.push((format!("auth.exchange.parameters.{name}"), &**template));
            }
        }
        templates
    }

    fn token(&self) -> Option<&TokenInjection> {
        Some(&self.token)
    }

    fn credential_fields(&self) -> Vec<CredentialField> {
        vec![CredentialField::required(
            "private_key",
            match self.algorithm {
                Algorithm::Rs256 => "the RSA private key that signs, PEM (PKCS#1 or PKCS#8), unencrypted",
                Algorithm::Es256 => "the P-256 private key that signs, PEM (PKCS#8), unencrypted",
            },
        )]
    }

    fn check_credentials(&self, credentials: &Secrets) -> Vec<String> {
        credentials
            .get("private_key")
            .filter(|key| !key.expose_secret().is_empty())
            .and_then(|key| SigningKey::from_pem(key.expose_secret(), self.algorithm).err())
            .into_iter()
            .collect()
    }

    fn authenticator(&self, context: &AccountContext<'_>) -> Result<Arc<dyn Authenticator>> {
        let http = context.services.require::<HttpClient>("HTTP client")?;
        Ok(Arc::new(JwtAuthenticator::new(context, self, http.clone())?))
    }
}

impl MethodTable for Jwt {
    const TYPE: &'static str = "jwt";
}
