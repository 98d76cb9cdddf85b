#![doc = include_str!("../README.md")]

mod definition;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use integration_core::definition::{Integration, Verb};
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::template::Escape;
use integration_core::time::OffsetDateTime;
use integration_core::time::format_description::well_known::Rfc3339;
use integration_core::{
    AccountHealth, AccountId, AccountStore, ConnectedAccount, Error, ErrorKind, Result, Secrets, Update, async_trait,
};
use integration_http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use integration_http::token::{CachedToken, TokenCache};
use integration_http::{
    AccountClient, Authenticator, Credential, DEFAULT_RENEWAL_MARGIN, HttpClient, Method, renew_at,
};
use url::Url;

pub use crate::definition::{BodyFormat, CustomToken};
pub use integration_http::token::ObtainedToken;

/// The credential names a custom token is kept under in storage.
pub use integration_http::token::{ACCESS_TOKEN, ACCESS_TOKEN_EXPIRES_AT};

/// Custom Token auth for one account: calls the access token endpoint,
/// keeps the token in memory and in storage, and gets a new one ahead of
/// expiry or once after a 401, one call at a time however many requests
/// wait.
pub struct CustomTokenAuthenticator {
    account: AccountId,
    integration: String,
    store: AccountStore,
    /// The request path of the integration's own endpoints.
    endpoints: AccountClient,
    endpoint: Url,
    config: CustomToken,
    parameters: Vec<(String, SecretString)>,
    margin: Duration,
    cache: TokenCache,
    renewal: tokio::sync::Mutex<()>,
}

impl CustomTokenAuthenticator {
    /// The authenticator for `account` of a `custom_token` integration. A
    /// token kept in storage by an earlier run is used until it expires.
    pub fn new(
        account: &ConnectedAccount,
        integration: &Integration,
        store: AccountStore,
        http: HttpClient,
    ) -> Result<Self> {
        let error = |message: String| {
            Error::new(ErrorKind::InvalidInput, message)
                .with_context("account", account.id())
                .with_context("integration", &integration.key)
        };
        let Some(config) = integration.auth.definition::<CustomToken>() else {
            return Err(error("not a custom_token integration".to_owned()));
        };
        let values = account.parameter_values();
        let endpoint = config
            .access_token_endpoint
            .render(&values)
            .map_err(|e| error(format!("{e} (in auth.access_token_endpoint)")))?;
        let endpoint = Url::parse(&endpoint).map_err(|e| error(format!("auth.access_token_endpoint: {e}")))?;
        integration_http::check_destination(&endpoint, &config.access_token_endpoint, integration)
            .map_err(|refusal| error(format!("auth.access_token_endpoint: {refusal}")))?;
        let parameters = config
            .access_token_parameters
            .iter()
            .map(|(name, template)| {
                template
                    .render(Escape::Plain, &values)
                    .map(|value| (name.clone(), SecretString::from(value)))
                    .map_err(|e| error(format!("{e} (in auth.access_token_parameters.{name})")))
            })
            .collect::<Result<_>>()?;
        let margin = config
            .token_response
            .refresh_margin_seconds
            .map_or(DEFAULT_RENEWAL_MARGIN, Duration::from_secs);
        let stored = CachedToken::from_stored(account.credentials(), margin);
        Ok(Self {
            account: account.id().clone(),
            integration: integration.key.clone(),
            store,
            endpoints: AccountClient::endpoints(account, integration, http)?,
            endpoint,
            config: config.clone(),
            parameters,
            margin,
            cache: TokenCache::new(stored),
            renewal: tokio::sync::Mutex::new(()),
        })
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind, message.into())
            .with_context("account", &self.account)
            .with_context("integration", &self.integration)
    }

    /// Calls the access token endpoint.
    pub async fn obtain(&self) -> Result<ObtainedToken> {
        self.obtain_or_code().await.map_err(|(error, _)| error)
    }

    /// [`obtain`](Self::obtain), a failure with its code for the account's
    /// health.
    async fn obtain_or_code(&self) -> std::result::Result<ObtainedToken, (Error, String)> {
        let parameters = self
            .parameters
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose_secret()));
        let request = match (
            self.config.access_token_verb,
            self.config.access_token_body.unwrap_or_default(),
        ) {
            (Verb::Get, _) => {
                let mut url = self.endpoint.clone();
                if !self.parameters.is_empty() {
                    url.query_pairs_mut().extend_pairs(parameters);
                }
                self.endpoints.request(Method::GET, url.as_str())
            }
            (Verb::Post, BodyFormat::Form) => {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(parameters)
                    .finish();
                self.endpoints
                    .request(Method::POST, self.endpoint.as_str())
                    .header(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    )
                    .body(body)
            }
            (Verb::Post, BodyFormat::Json) => {
                let object: serde_json::Map<String, serde_json::Value> = parameters
                    .map(|(name, value)| (name.to_owned(), serde_json::Value::String(value.to_owned())))
                    .collect();
                self.endpoints
                    .request(Method::POST, self.endpoint.as_str())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(serde_json::Value::Object(object).to_string())
            }
        };
        let obtained = match request
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .send()
            .await
        {
            Ok(response) => integration_http::token::read_token(response, &self.config.token_response)
                .await
                .map_err(|failure| (self.error(failure.kind, failure.message), failure.code)),
            Err(error) => {
                let code = match error.kind() {
                    ErrorKind::Timeout => "timeout",
                    _ => "transport",
                };
                Err((error, code.to_owned()))
            }
        };
        let outcome = match &obtained {
            Ok(_) => "success",
            Err((error, _)) if error.kind() == ErrorKind::Provider => "refused",
            Err(_) => "error",
        };
        integration_http::metrics::token_request(&self.integration, outcome);
        obtained
    }

    /// Stores `token` with the account, so that other processes and later
    /// runs reuse it, and counts the renewal in its health (an
    /// `account.recovered` event after failures). A write lost to a
    /// concurrent change is tried again on the newer record.
    async fn persist(&self, token: &ObtainedToken) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        self.update(|credentials, health| {
            credentials.insert(ACCESS_TOKEN, token.token.clone());
            match token.expires_at.and_then(|at| at.format(&Rfc3339).ok()) {
                Some(at) => credentials.insert(ACCESS_TOKEN_EXPIRES_AT, SecretString::from(at)),
                None => drop(credentials.remove(ACCESS_TOKEN_EXPIRES_AT)),
            }
            health.succeeded(now);
        })
        .await
    }

    /// Counts a failed token call in the account's health, with its code
    /// (an `account.refresh_failed` event).
    async fn record_failure(&self, code: &str) {
        let now = OffsetDateTime::now_utc();
        if let Err(error) = self.update(|_, health| health.failed(code, now)).await {
            tracing::warn!(account = %self.account, %error, "cannot record the failed token call");
        }
    }

    /// Applies `change` to the account's credentials and health as stored
    /// now, retried over a record that changed meanwhile.
    async fn update(&self, change: impl Fn(&mut Secrets, &mut AccountHealth)) -> Result<()> {
        let mut account = self.store.get(&self.account).await?;
        for _ in 0..5 {
            let mut credentials = account.credentials().clone();
            let mut health = account.health().clone();
            change(&mut credentials, &mut health);
            match self
                .store
                .update_account(
                    &account,
                    credentials,
                    account.status(),
                    account.status_reason().map(str::to_owned),
                    health,
                )
                .await?
            {
                Update::Updated(_) => return Ok(()),
                Update::Conflict(current) => account = current,
            }
        }
        Err(self.error(
            ErrorKind::Storage,
            "the account kept changing while the token was stored",
        ))
    }
}

#[async_trait]
impl Authenticator for CustomTokenAuthenticator {
    async fn credential(&self) -> Result<Arc<Credential>> {
        if let Some(credential) = self.cache.fresh() {
            return Ok(credential);
        }
        // One token call at a time: whoever waited here finds the new token.
        let _renewal = self.renewal.lock().await;
        if let Some(credential) = self.cache.fresh() {
            return Ok(credential);
        }
        let token = match self.obtain_or_code().await {
            Ok(token) => token,
            Err((error, code)) => {
                self.record_failure(&code).await;
                return Err(error);
            }
        };
        if let Err(error) = self.persist(&token).await {
            // The token works even if it could not be stored; the next run
            // gets a new one.
            tracing::warn!(account = %self.account, %error, "cannot store the new custom token");
        }
        let credential = Arc::new(Credential::token(token.token));
        self.cache.set(Some(CachedToken {
            credential: Arc::clone(&credential),
            renew_at: renew_at(token.expires_at, self.margin),
        }));
        tracing::debug!(account = %self.account, "obtained a new custom token");
        Ok(credential)
    }

    async fn rejected(&self, credential: &Arc<Credential>) -> Result<bool> {
        let _renewal = self.renewal.lock().await;
        self.cache.expire(credential);
        Ok(true)
    }
}

impl fmt::Debug for CustomTokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomTokenAuthenticator")
            .field("account", &self.account)
            .field("integration", &self.integration)
            .field("endpoint_host", &self.endpoint.host_str())
            .field(
                "parameters",
                &self.parameters.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use integration_core::definition::Format;
    use integration_core::{AccountStore, Cipher, Definitions, EncryptionKey, NewAccount, Secrets};
    use integration_storage_memory::MemoryStorage;

    use super::*;

    #[tokio::test]
    async fn debug_never_shows_a_secret() {
        integration_core::method::register::<crate::CustomToken>();
        let definitions = Definitions::from_str(
            r#"
            [[integration]]
            key = "partner"
            name = "Partner"
            parameters = [{ name = "password", secret = true }]
            [integration.auth]
            type = "custom_token"
            access_token_endpoint = "https://partner.example/session"
            access_token_verb = "POST"
            access_token_parameters = { password = "{password}" }
            token = { parameter_type = "header", parameter_name = "X-Session", value_template = "{token}" }
            "#,
            Format::Toml,
        )
        .expect("valid");
        let integration = definitions.get("partner").expect("partner");
        let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
        let mut parameters = Secrets::new();
        parameters.insert("password", SecretString::from("pw-s3cret".to_owned()));
        let account = store
            .create(
                integration,
                NewAccount {
                    id: AccountId::new("acct").expect("id"),
                    parameters,
                    credentials: Secrets::new(),
                },
            )
            .await
            .expect("create");
        let authenticator =
            CustomTokenAuthenticator::new(&account, integration, store, HttpClient::new().expect("client"))
                .expect("new");
        let obtained = ObtainedToken {
            token: SecretString::from("tok-s3cret".to_owned()),
            expires_at: None,
        };
        let shown = format!("{authenticator:?} {obtained:?}");
        assert!(
            shown.contains("partner.example") && shown.contains("password"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
