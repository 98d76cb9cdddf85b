//! Access tokens for requests: cached, renewed ahead of expiry and after a
//! 401, one renewal at a time in a process and one across processes that
//! share a store.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::GrantType;
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::time::OffsetDateTime;
use integration_core::time::format_description::well_known::Rfc3339;
use integration_core::{AccountStatus, ConnectedAccount, ErrorKind, Result, async_trait};
use integration_http::token::{CachedToken, TokenCache};
use integration_http::{Authenticator, Credential, DEFAULT_RENEWAL_MARGIN, renew_at};

use crate::OAuth2Client;
use crate::store::{
    ACCESS_TOKEN, ACCESS_TOKEN_EXPIRES_AT, REFRESH_LEASE, REFRESH_TOKEN, store_tokens, update_credentials,
};
use crate::token_endpoint::TokenFailure;

/// How long a lease outlasts the token request's time limit, so that it
/// expires only after its holder has surely given up or died.
const LEASE_SLACK: Duration = Duration::from_secs(5);
const LEASE_POLL: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// OAuth 2.0 access tokens for one account's requests.
pub struct OAuth2Authenticator {
    client: OAuth2Client,
    holder: String,
    margin: Duration,
    cache: TokenCache,
    renewal: tokio::sync::Mutex<()>,
    failures: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    count: u32,
    retry_after: Option<OffsetDateTime>,
}

/// The outcome of one attempt to take the refresh lease.
enum Lease {
    Taken(Box<ConnectedAccount>),
    /// Another process holds it, or the record changed: look again.
    Busy,
}

impl OAuth2Authenticator {
    /// The authenticator for the account of `client`, starting from the
    /// tokens stored with `account`.
    pub fn new(client: OAuth2Client, account: &ConnectedAccount) -> Self {
        let margin = client
            .config
            .token_response
            .refresh_margin_seconds
            .map_or(DEFAULT_RENEWAL_MARGIN, Duration::from_secs);
        let current = CachedToken::from_stored(account.credentials(), margin);
        let holder = format!("{:016x}", fastrand::u64(..));
        Self {
            client,
            holder,
            margin,
            cache: TokenCache::new(current),
            renewal: tokio::sync::Mutex::new(()),
            failures: Mutex::new(Failures::default()),
        }
    }

    /// The account's OAuth 2.0 client.
    pub fn client(&self) -> &OAuth2Client {
        &self.client
    }

    /// Gets new tokens now (refresh, or a new client credentials token),
    /// whatever the cached one's expiry.
    pub async fn refresh(&self) -> Result<ConnectedAccount> {
        let _renewal = self.renewal.lock().await;
        self.cache.set(None);
        self.renew(true).await
    }

    /// Renews the tokens, or adopts ones another process stored meanwhile.
    /// Returns the account as stored afterwards.
    async fn renew(&self, forced: bool) -> Result<ConnectedAccount> {
        if let Some(until) = self.failures.lock().unwrap_or_else(|p| p.into_inner()).retry_after
            && OffsetDateTime::now_utc() < until
            && !forced
        {
            return Err(self
                .client
                .error(
                    ErrorKind::Provider,
                    "the last token request failed; waiting before the next one",
                )
                .temporary());
        }
        let rejected = self.cache.current_token();
        loop {
            let account = self.client.store.get(&self.client.account).await?;
            if account.status() == AccountStatus::NeedsReauth {
                let reason = account.status_reason().unwrap_or("its authorization was refused");
                return Err(self.client.error(
                    ErrorKind::Conflict,
                    format!("the account needs to be connected again: {reason}"),
                ));
            }
            // Another process may have stored newer tokens.
            if !forced
                && let Some(cached) = CachedToken::from_stored(account.credentials(), self.margin)
                && cached.credential.expose_token() != rejected.as_deref()
            {
                self.cache.set(Some(cached));
                return Ok(account);
            }
            match self.take_lease(account).await? {
                Lease::Busy => tokio::time::sleep(LEASE_POLL).await,
                Lease::Taken(leased) => return self.call_provider(*leased).await,
            }
        }
    }

    async fn take_lease(&self, account: ConnectedAccount) -> Result<Lease> {
        let now = OffsetDateTime::now_utc();
        if let Some((holder, until)) = lease(&account)
            && holder != self.holder
            && until > now
        {
            return Ok(Lease::Busy);
        }
        // Long enough for the whole call, its retries included.
        let lease = self.client.token.endpoints.longest_call() + LEASE_SLACK;
        let until = (now + lease).format(&Rfc3339).unwrap_or_default();
        let mut credentials = account.credentials().clone();
        credentials.insert(REFRESH_LEASE, SecretString::from(format!("{} {until}", self.holder)));
        let status = account.status();
        let reason = account.status_reason().map(str::to_owned);
        match self
            .client
            .store
            .update_credentials(&account, credentials, status, reason)
            .await?
        {
            integration_core::Update::Updated(leased) => Ok(Lease::Taken(Box::new(leased))),
            integration_core::Update::Conflict(_) => Ok(Lease::Busy),
        }
    }

    async fn call_provider(&self, leased: ConnectedAccount) -> Result<ConnectedAccount> {
        let refresh_token = leased
            .credentials()
            .get(REFRESH_TOKEN)
            .map(|t| t.expose_secret().to_owned());
        let scope = self.client.scope.clone();
        let result = match self.client.grant_type() {
            GrantType::ClientCredentials => {
                let mut grant = vec![("grant_type", "client_credentials")];
                if !scope.is_empty() {
                    grant.push(("scope", scope.as_str()));
                }
                self.client.token.request(&grant).await
            }
            GrantType::AuthorizationCode => match &refresh_token {
                Some(refresh_token) => {
                    self.client
                        .token
                        .refresh(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
                        .await
                }
                None => {
                    let reason = "no refresh token: connect the account again";
                    self.mark_needs_reauth(leased, "no_refresh_token", reason, None).await?;
                    return Err(self.client.error(ErrorKind::Conflict, reason));
                }
            },
        };
        match result {
            Ok(tokens) => {
                // The rotated refresh token is stored before the new access
                // token is handed to any request.
                let stored = store_tokens(&self.client, &tokens, Some(leased), AccountStatus::Connected, None).await?;
                integration_http::metrics::refresh(&self.client.integration, "success");
                *self.failures.lock().unwrap_or_else(|p| p.into_inner()) = Failures::default();
                self.cache.set(Some(CachedToken {
                    credential: Arc::new(Credential::token(tokens.access_token)),
                    renew_at: renew_at(tokens.expires_at, self.margin),
                }));
                tracing::debug!(account = %self.client.account, "obtained new OAuth 2.0 tokens");
                Ok(stored)
            }
            Err(TokenFailure::InvalidGrant(message)) => {
                integration_http::metrics::refresh(&self.client.integration, "needs_reauth");
                self.mark_needs_reauth(
                    leased,
                    "invalid_grant",
                    &format!("invalid_grant: {message}"),
                    refresh_token.as_deref(),
                )
                .await?;
                Err(self.client.error(
                    ErrorKind::Provider,
                    format!("{message}: the account needs to be connected again"),
                ))
            }
            Err(failure) => {
                integration_http::metrics::refresh(&self.client.integration, "failure");
                let code = failure.code();
                let error = failure.into_error();
                self.record_failure(leased, &code).await;
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                failures.count += 1;
                let backoff = Duration::from_secs(1u64 << failures.count.min(6)).min(MAX_BACKOFF);
                failures.retry_after = Some(OffsetDateTime::now_utc() + backoff);
                Err(error.with_context("account", &self.client.account))
            }
        }
    }

    /// Marks the account `needs_reauth` and drops its refresh token, which
    /// the provider refused, unless another process rotated it meanwhile.
    async fn mark_needs_reauth(
        &self,
        leased: ConnectedAccount,
        code: &str,
        reason: &str,
        used: Option<&str>,
    ) -> Result<()> {
        let current = self.client.store.get(&self.client.account).await?;
        let rotated_elsewhere =
            used.is_some() && current.credentials().get(REFRESH_TOKEN).map(|t| t.expose_secret()) != used;
        if rotated_elsewhere {
            return Ok(());
        }
        tracing::warn!(account = %self.client.account, reason, "the account needs to be connected again");
        self.cache.set(None);
        drop(leased);
        let now = OffsetDateTime::now_utc();
        update_credentials(&self.client, current, |_, credentials, health| {
            health.failed(code, now);
            credentials.remove(REFRESH_TOKEN);
            credentials.remove(ACCESS_TOKEN);
            credentials.remove(ACCESS_TOKEN_EXPIRES_AT);
            credentials.remove(REFRESH_LEASE);
            (AccountStatus::NeedsReauth, Some(reason.to_owned()))
        })
        .await
        .map(drop)
    }

    /// Counts a failed refresh in the account's health (an
    /// `account.refresh_failed` event) and releases the lease.
    async fn record_failure(&self, leased: ConnectedAccount, code: &str) {
        let holder = self.holder.clone();
        let now = OffsetDateTime::now_utc();
        let released = update_credentials(&self.client, leased, |account, credentials, health| {
            let ours = credentials
                .get(REFRESH_LEASE)
                .is_some_and(|lease| lease.expose_secret().starts_with(&holder));
            if ours {
                credentials.remove(REFRESH_LEASE);
            }
            health.failed(code, now);
            (account.status(), account.status_reason().map(str::to_owned))
        })
        .await;
        if let Err(error) = released {
            tracing::warn!(account = %self.client.account, %error, "cannot release the refresh lease; it expires by itself");
        }
    }
}

fn lease(account: &ConnectedAccount) -> Option<(String, OffsetDateTime)> {
    let lease = account.credentials().get(REFRESH_LEASE)?;
    let (holder, until) = lease.expose_secret().split_once(' ')?;
    Some((holder.to_owned(), OffsetDateTime::parse(until, &Rfc3339).ok()?))
}

#[async_trait]
impl Authenticator for OAuth2Authenticator {
    async fn credential(&self) -> Result<Arc<Credential>> {
        if let Some(credential) = self.cache.fresh() {
            return Ok(credential);
        }
        let _renewal = self.renewal.lock().await;
        if let Some(credential) = self.cache.fresh() {
            return Ok(credential);
        }
        self.renew(false).await?;
        self.cache.fresh().ok_or_else(|| {
            self.client
                .error(ErrorKind::Provider, "the provider gave a token that is already expired")
        })
    }

    async fn rejected(&self, credential: &Arc<Credential>) -> Result<bool> {
        let _renewal = self.renewal.lock().await;
        self.cache.expire(credential);
        Ok(true)
    }
}

impl fmt::Debug for OAuth2Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Authenticator")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}
