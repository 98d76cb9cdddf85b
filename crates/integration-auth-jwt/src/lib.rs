#![doc = include_str!("../README.md")]

mod definition;
mod key;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use integration_core::definition::{TokenResponse, Verb};
use integration_core::method::AccountContext;
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::template::Escape;
use integration_core::time::OffsetDateTime;
use integration_core::{AccountId, Error, ErrorKind, Result, async_trait};
use integration_http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use integration_http::token::{CachedToken, ObtainedToken, TokenCache};
use integration_http::{
    AccountClient, Authenticator, Credential, DEFAULT_RENEWAL_MARGIN, HttpClient, Method, renew_at,
};
use serde_json::{Map, Value};
use url::Url;

pub use crate::definition::{Algorithm, Exchange, Jwt, JwtPresentation};
use crate::key::SigningKey;

/// The grant type of RFC 7523's JWT bearer grant.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// JWT auth for one account: signs a JWT with its private key, uses it as
/// the token or exchanges it for one, keeps the token in memory and gets a
/// new one ahead of expiry or once after a 401, one at a time however many
/// requests wait.
pub struct JwtAuthenticator {
    account: AccountId,
    integration: String,
    key: SigningKey,
    /// The JWT's header, encoded once.
    header: String,
    /// The claims rendered with the account's values, without `iat` and `exp`.
    claims: Map<String, Value>,
    lifetime: Duration,
    clock_skew: Duration,
    exchange: Option<TokenExchange>,
    margin: Duration,
    cache: TokenCache,
    renewal: tokio::sync::Mutex<()>,
}

/// The token endpoint a JWT is exchanged at, rendered for the account.
struct TokenExchange {
    /// The request path of the integration's own endpoints.
    endpoints: AccountClient,
    url: Url,
    verb: Verb,
    presentation: JwtPresentation,
    parameters: Vec<(String, SecretString)>,
    response: TokenResponse,
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("account", &self.account)
            .field("integration", &self.integration)
            .field("key", &self.key)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field(
                "exchange",
                &self.exchange.as_ref().map(|exchange| exchange.url.host_str()),
            )
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// The authenticator of the context's account, whose integration uses
    /// `jwt`; token exchanges go through `http`.
    pub fn new(context: &AccountContext<'_>, jwt: &Jwt, http: HttpClient) -> Result<Self> {
        let (account, integration) = (context.account, context.integration);
        let invalid = |message: String| context.error(ErrorKind::InvalidInput, message);
        let private_key = account
            .credentials()
            .get("private_key")
            .ok_or_else(|| invalid("the account has no `private_key` credential".to_owned()))?;
        let key = SigningKey::from_pem(private_key.expose_secret(), jwt.algorithm).map_err(invalid)?;
        let values = account.parameter_values();
        let render = |field: String, template: &integration_core::template::Template| {
            template
                .render(Escape::Plain, &values)
                .map_err(|error| invalid(format!("{error} (in {field})")))
        };
        let mut header = Map::new();
        header.insert("alg".to_owned(), Value::from(jwt.algorithm.name()));
        header.insert("typ".to_owned(), Value::from("JWT"));
        if let Some(key_id) = &jwt.key_id {
            header.insert("kid".to_owned(), Value::from(render("auth.key_id".to_owned(), key_id)?));
        }
        let claims = jwt
            .claims
            .iter()
            .map(|(name, template)| {
                Ok((
                    name.clone(),
                    Value::from(render(format!("auth.claims.{name}"), template)?),
                ))
            })
            .collect::<Result<Map<_, _>>>()?;
        let exchange = match &jwt.exchange {
            None => None,
            Some(exchange) => {
                let text = exchange
                    .endpoint
                    .render(&values)
                    .map_err(|error| invalid(format!("{error} (in auth.exchange.endpoint)")))?;
                let url = Url::parse(&text).map_err(|error| invalid(format!("auth.exchange.endpoint: {error}")))?;
                let parameters = exchange
                    .parameters
                    .iter()
                    .map(|(name, template)| {
                        Ok((
                            name.clone(),
                            SecretString::from(render(format!("auth.exchange.parameters.{name}"), template)?),
                        ))
                    })
                    .collect::<Result<_>>()?;
                Some(TokenExchange {
                    endpoints: AccountClient::endpoints(account, integration, http)?,
                    url,
                    verb: exchange.verb.unwrap_or(Verb::Post),
                    presentation: exchange.send_jwt_as,
                    parameters,
                    response: exchange.token_response.clone(),
                })
            }
        };
        let margin = jwt
            .exchange
            .as_ref()
            .and_then(|exchange| exchange.token_response.refresh_margin_seconds)
            .map_or(DEFAULT_RENEWAL_MARGIN, Duration::from_secs);
        Ok(Self {
            account: account.id().clone(),
            integration: integration.key.clone(),
            key,
            header: BASE64URL.encode(Value::Object(header).to_string()),
            claims,
            lifetime: jwt.lifetime_seconds.map_or(DEFAULT_LIFETIME, Duration::from_secs),
            clock_skew: jwt.clock_skew_seconds.map_or(DEFAULT_CLOCK_SKEW, Duration::from_secs),
            exchange,
            margin,
            cache: TokenCache::default(),
            renewal: tokio::sync::Mutex::new(()),
        })
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind, message.into())
            .with_context("account", &self.account)
            .with_context("integration", &self.integration)
    }

    /// A JWT signed now, and when it expires.
    pub fn sign(&self) -> Result<(SecretString, OffsetDateTime)> {
        let now = OffsetDateTime::now_utc();
        let expires_at = now + self.lifetime;
        let mut claims = self.claims.clone();
        claims.insert("iat".to_owned(), Value::from((now - self.clock_skew).unix_timestamp()));
        claims.insert("exp".to_owned(), Value::from(expires_at.unix_timestamp()));
        let mut jwt = format!(
            "{}.{}",
            self.header,
            BASE64URL.encode(Value::Object(claims).to_string())
        );
        let signature = self
            .key
            .sign(jwt.as_bytes())
            .map_err(|message| self.error(ErrorKind::Config, message))?;
        jwt.push('.');
        jwt.push_str(&BASE64URL.encode(signature));
        Ok((SecretString::from(jwt), expires_at))
    }

    /// A new token: the JWT itself, or what the token endpoint gave for it.
    pub async fn obtain(&self) -> Result<ObtainedToken> {
        let (jwt, expires_at) = self.sign()?;
        let Some(exchange) = &self.exchange else {
            return Ok(ObtainedToken {
                token: jwt,
                expires_at: Some(expires_at),
            });
        };
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if exchange.presentation == JwtPresentation::Assertion {
            pairs.push(("grant_type", JWT_BEARER_GRANT));
            pairs.push(("assertion", jwt.expose_secret()));
        }
        pairs.extend(
            exchange
                .parameters
                .iter()
                .map(|(name, value)| (name.as_str(), value.expose_secret())),
        );
        let mut request = match exchange.verb {
            Verb::Get => {
                let mut url = exchange.url.clone();
                if !pairs.is_empty() {
                    url.query_pairs_mut().extend_pairs(&pairs);
                }
                exchange.endpoints.request(Method::GET, url.as_str())
            }
            Verb::Post => {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&pairs)
                    .finish();
                exchange
                    .endpoints
                    .request(Method::POST, exchange.url.as_str())
                    .header(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    )
                    .body(body)
            }
        };
        if exchange.presentation == JwtPresentation::Bearer {
            let mut bearer = HeaderValue::from_str(&format!("Bearer {}", jwt.expose_secret()))
                .map_err(|_| self.error(ErrorKind::Config, "the JWT is not a valid header value"))?;
            bearer.set_sensitive(true);
            request = request.header(AUTHORIZATION, bearer);
        }
        let response = request
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .send()
            .await?;
        integration_http::token::read_token(response, &exchange.response)
            .await
            .map_err(|failure| self.error(failure.kind, failure.message))
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn credential(&self) -> Result<Arc<Credential>> {
        if let Some(credential) = self.cache.fresh() {
            return Ok(credential);
        }
        // One token at a time: whoever waited here finds the new one.
        let _renewal = self.renewal.lock().await;
        if let Some(credential) = self.cache.fresh() {
            return Ok(credential);
        }
        let token = self.obtain().await?;
        let credential = Arc::new(Credential::token(token.token));
        self.cache.set(Some(CachedToken {
            credential: Arc::clone(&credential),
            renew_at: renew_at(token.expires_at, self.margin),
        }));
        tracing::debug!(account = %self.account, exchanged = self.exchange.is_some(), "signed a new JWT");
        Ok(credential)
    }

    async fn rejected(&self, credential: &Arc<Credential>) -> Result<bool> {
        let _renewal = self.renewal.lock().await;
        self.cache.expire(credential);
        Ok(true)
    }
}
