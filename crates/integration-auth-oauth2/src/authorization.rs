//! The authorization code grant: the authorization URL with state and
//! PKCE, and the callback.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::GrantType;
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::storage::PendingAuthorization;
use integration_core::time::OffsetDateTime;
use integration_core::{AccountId, AccountStatus, AccountStore, ConnectedAccount, Error, ErrorKind, Result};
use oauth2::{CsrfToken, PkceCodeChallenge};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use crate::OAuth2Client;
use crate::redirect::RedirectUri;
use crate::store::store_tokens;
use crate::token_endpoint::TokenSet;

/// How long an authorization URL can be used.
pub const STATE_LIFETIME: Duration = Duration::from_secs(10 * 60);

const VERIFIER: &str = "pkce_verifier";
const STATE_HASH: &str = "state_hash";
const REDIRECT_URI: &str = "redirect_uri";
const INTEGRATION: &str = "integration";
const TAG: &str = "tag";

/// An authorization in progress: send the user to `url`.
#[derive(Debug, Clone)]
pub struct AuthorizationStart {
    /// The provider's authorization URL, with client id, scope, redirect
    /// URI, state and PKCE challenge.
    pub url: Url,
    /// After this, the callback is refused.
    pub expires_at: OffsetDateTime,
}

/// The query of a callback request, as the provider sent it.
#[derive(Clone, Default)]
pub struct Callback {
    /// `state`.
    pub state: Option<String>,
    /// `code`.
    pub code: Option<String>,
    /// `error`, when the provider or the user refused.
    pub error: Option<String>,
    /// `error_description`.
    pub error_description: Option<String>,
    /// The other query parameters (at most [`MAX_CALLBACK_PARAMETERS`]),
    /// for the integration's `callback_parameters`.
    pub parameters: BTreeMap<String, String>,
}

/// How many query parameters besides the standard ones a callback keeps.
pub const MAX_CALLBACK_PARAMETERS: usize = 32;

impl Callback {
    /// Reads a callback URL's query string.
    pub fn from_query(query: &str) -> Self {
        let mut callback = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "state" => &mut callback.state,
                "code" => &mut callback.code,
                "error" => &mut callback.error,
                "error_description" => &mut callback.error_description,
                _ => {
                    if callback.parameters.len() < MAX_CALLBACK_PARAMETERS {
                        callback.parameters.insert(name.into_owned(), value.into_owned());
                    }
                    continue;
                }
            };
            *slot = Some(value.into_owned());
        }
        callback
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("error", &self.error)
            .field("has_state", &self.state.is_some())
            .field("has_code", &self.code.is_some())
            .field("parameters", &self.parameters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A callback whose state was found, unexpired and unused, and whose code
/// can now be exchanged by the account's client.
pub struct VerifiedCallback {
    account: AccountId,
    /// The account's integration when the authorization started.
    integration: String,
    code: SecretString,
    verifier: Option<SecretString>,
    redirect_uri: String,
    tag: Option<String>,
    parameters: BTreeMap<String, String>,
}

impl VerifiedCallback {
    /// The account the authorization was started for.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The tag the authorization was started with
    /// ([`OAuth2Client::start_tagged_authorization`]).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
}

impl fmt::Debug for VerifiedCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCallback")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

fn state_key(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl OAuth2Client {
    /// Builds the authorization URL and keeps a pending authorization (its
    /// state, PKCE verifier and redirect URI) in storage, single use and
    /// valid for [`STATE_LIFETIME`].
    pub async fn start_authorization(&self, redirect_uri: &RedirectUri) -> Result<AuthorizationStart> {
        self.start_tagged_authorization(redirect_uri, None).await
    }

    /// [`start_authorization`](Self::start_authorization), keeping `tag`
    /// (not secret: the key of what started it, such as a connect session)
    /// with the pending authorization. The callback gives it back, in
    /// [`VerifiedCallback::tag`] or, when it is refused, as the error's
    /// `authorization_tag` context.
    pub async fn start_tagged_authorization(
        &self,
        redirect_uri: &RedirectUri,
        tag: Option<&str>,
    ) -> Result<AuthorizationStart> {
        if self.config.grant_type != GrantType::AuthorizationCode {
            return Err(self.error(
                ErrorKind::InvalidInput,
                "the client credentials grant needs no authorization",
            ));
        }
        let Some(endpoint) = &self.authorization_endpoint else {
            return Err(self.error(ErrorKind::Config, "the integration has no authorization_endpoint"));
        };
        let now = OffsetDateTime::now_utc();
        // Best effort: expired states are refused anyway.
        let _ = self.store.storage().delete_expired_pending_authorizations(now).await;

        let state = CsrfToken::new_random();
        let key = state_key(state.secret());
        let mut url = endpoint.clone();
        let mut data = BTreeMap::from([
            (STATE_HASH.to_owned(), key.clone()),
            (REDIRECT_URI.to_owned(), redirect_uri.as_str().to_owned()),
        ]);
        let mut secrets = BTreeMap::new();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.token.client_id)
                .append_pair("redirect_uri", redirect_uri.as_str())
                .append_pair("state", state.secret());
            if !self.scope.is_empty() {
                query.append_pair("scope", &self.scope);
            }
            if self.config.uses_pkce() {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                query
                    .append_pair("code_challenge", challenge.as_str())
                    .append_pair("code_challenge_method", "S256");
                secrets.insert(
                    VERIFIER.to_owned(),
                    self.store
                        .cipher()
                        .seal(&key, &format!("pending:{VERIFIER}"), verifier.secret().as_bytes()),
                );
            }
            for (name, value) in &self.authorization_parameters {
                query.append_pair(name, value);
            }
        }
        data.insert(INTEGRATION.to_owned(), self.integration.clone());
        if let Some(tag) = tag {
            data.insert(TAG.to_owned(), tag.to_owned());
        }
        let expires_at = now + STATE_LIFETIME;
        self.store
            .storage()
            .insert_pending_authorization(&PendingAuthorization {
                state: key,
                account: self.account.clone(),
                created_at: now,
                expires_at,
                data,
                secrets,
            })
            .await?;
        Ok(AuthorizationStart { url, expires_at })
    }

    /// Exchanges the callback's code for tokens and stores them with the
    /// account, which becomes `connected`. A response without a refresh
    /// token is stored too, logged as a warning and shown in the account's
    /// status reason.
    pub async fn complete_authorization(&self, callback: VerifiedCallback) -> Result<ConnectedAccount> {
        if callback.account != self.account {
            return Err(self.error(ErrorKind::InvalidInput, "the callback belongs to another account"));
        }
        // An account removed and created again under another integration
        // must not receive a code meant for the first one's provider, nor
        // send it to its own token endpoint.
        if callback.integration != self.integration {
            return Err(self.error(
                ErrorKind::Refused,
                "the account belongs to another integration than when its authorization started: start it again",
            ));
        }
        let mut grant = vec![
            ("grant_type", "authorization_code"),
            ("code", callback.code.expose_secret()),
            ("redirect_uri", callback.redirect_uri.as_str()),
        ];
        if let Some(verifier) = &callback.verifier {
            grant.push(("code_verifier", verifier.expose_secret()));
        }
        // Checked before the code is spent.
        let mut from_callback = BTreeMap::new();
        for name in &self.config.callback_parameters {
            if let Some(value) = callback.parameters.get(name) {
                if value.len() > 2048 || value.chars().any(char::is_control) {
                    return Err(self.error(
                        ErrorKind::Refused,
                        format!("the callback's `{name}` is too long or holds control characters"),
                    ));
                }
                from_callback.insert(name.clone(), value.clone());
            }
        }
        let mut tokens = self
            .token
            .request(&grant)
            .await
            .map_err(|failure| failure.into_error().with_context("account", &self.account))?;
        tokens.parameters.extend(from_callback);
        if self.lookup.is_some() {
            match self.look_up(&tokens).await {
                Ok(found) => tokens.parameters.extend(found),
                Err(error) => {
                    self.revoke_unkept(&tokens).await;
                    return Err(error);
                }
            }
        }
        let reason = if tokens.refresh_token.is_none() {
            tracing::warn!(account = %self.account, integration = %self.integration, "the provider sent no refresh token: the account must be connected again when the access token expires");
            Some("the provider sent no refresh token".to_owned())
        } else {
            None
        };
        let stored = store_tokens(self, &tokens, None, AccountStatus::Connected, reason).await;
        // Only a refusal of the provider's values is sure to have stored
        // nothing; a storage error may hide a write that landed.
        if stored.as_ref().is_err_and(|error| error.kind() == ErrorKind::Provider) {
            self.revoke_unkept(&tokens).await;
        }
        stored
    }

    /// Revokes the tokens of a connection that failed after the exchange
    /// and keeps none of them, where the provider has a revoke endpoint:
    /// best effort, so that no live token is left behind unknown.
    async fn revoke_unkept(&self, tokens: &TokenSet) {
        let outcome = self
            .revoke_tokens(Some(&tokens.access_token), tokens.refresh_token.as_ref())
            .await;
        if !outcome.failures.is_empty() {
            tracing::warn!(account = %self.account, integration = %self.integration, "the tokens of a failed connection could not all be revoked");
        }
    }
}

/// Checks a callback: its state must be one this store issued, unused and
/// unexpired (compared in constant time), and the provider must not have
/// answered with an error. The state is used up either way.
pub async fn verify_callback(store: &AccountStore, callback: &Callback) -> Result<VerifiedCallback> {
    let refused = |message: String| Error::new(ErrorKind::Refused, message);
    let Some(state) = &callback.state else {
        return Err(refused("the callback has no state".to_owned()));
    };
    let key = state_key(state);
    let Some(pending) = store.storage().take_pending_authorization(&key).await? else {
        return Err(refused(
            "unknown or already used state: start the authorization again".to_owned(),
        ));
    };
    let stored = pending.data.get(STATE_HASH).map(String::as_bytes).unwrap_or_default();
    if !bool::from(stored.ct_eq(key.as_bytes())) {
        return Err(refused("unknown state".to_owned()));
    }
    let tag = pending.data.get(TAG).cloned();
    let tagged = |error: Error| match &tag {
        Some(tag) => error.with_context("authorization_tag", tag),
        None => error,
    };
    if OffsetDateTime::now_utc() >= pending.expires_at {
        return Err(tagged(
            refused("the authorization expired: start it again".to_owned()).with_context("account", &pending.account),
        ));
    }
    if let Some(code) = &callback.error {
        let code: String = code.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        let description: String = callback
            .error_description
            .as_deref()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let message = if description.is_empty() {
            format!("the provider refused the authorization: {code}")
        } else {
            format!("the provider refused the authorization: {code} ({description})")
        };
        return Err(tagged(
            Error::new(ErrorKind::Provider, message).with_context("account", &pending.account),
        ));
    }
    let Some(code) = &callback.code else {
        return Err(tagged(
            refused("the callback has no code".to_owned()).with_context("account", &pending.account),
        ));
    };
    let verifier = match pending.secrets.get(VERIFIER) {
        Some(sealed) => {
            let plain = store
                .cipher()
                .open(&key, &format!("pending:{VERIFIER}"), sealed)
                .map_err(|e| {
                    tagged(Error::new(
                        ErrorKind::Unreadable,
                        format!("cannot decrypt the PKCE verifier: {e}"),
                    ))
                })?;
            Some(SecretString::from(String::from_utf8_lossy(&plain).into_owned()))
        }
        None => None,
    };
    Ok(VerifiedCallback {
        account: pending.account,
        integration: pending.data.get(INTEGRATION).cloned().unwrap_or_default(),
        code: SecretString::from(code.clone()),
        verifier,
        redirect_uri: pending.data.get(REDIRECT_URI).cloned().unwrap_or_default(),
        tag,
        parameters: callback.parameters.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_parse_and_hide_their_code() {
        let callback = Callback::from_query("code=c0de-s3cret&state=st%20ate&extra=1");
        assert_eq!(callback.state.as_deref(), Some("st ate"));
        assert_eq!(callback.code.as_deref(), Some("c0de-s3cret"));
        assert!(!format!("{callback:?}").contains("s3cret"));
        let denied = Callback::from_query("error=access_denied&error_description=no+thanks&state=x");
        assert_eq!(denied.error.as_deref(), Some("access_denied"));
        assert_eq!(denied.error_description.as_deref(), Some("no thanks"));
    }
}
