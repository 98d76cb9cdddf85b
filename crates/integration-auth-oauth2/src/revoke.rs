//! Token revocation: RFC 7009, or the provider's own request.

use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::{ConnectedAccount, ErrorKind};
use integration_http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use integration_http::{Method, RequestBuilder};
use url::Url;

use crate::store::{ACCESS_TOKEN, REFRESH_TOKEN};
use crate::token_endpoint::{form_body, json_body};
use crate::{
    GrantType, OAuth2Client, Revocation, RevokeAuthentication, RevokePlacement, RevokeRequest, RevokeVerb, RevokedToken,
};

impl OAuth2Client {
    /// Revokes the account's tokens and forgets them: an authorization code
    /// account goes back to `pending`. A provider failure is reported in the
    /// outcome and does not stop the tokens from being forgotten.
    pub async fn disconnect(&self) -> integration_core::Result<Revocation> {
        let account = self.store.get(&self.account).await?;
        let revocation = self.revoke(&account).await;
        let status = match self.grant_type() {
            GrantType::AuthorizationCode => integration_core::AccountStatus::Pending,
            GrantType::ClientCredentials => integration_core::AccountStatus::Connected,
        };
        crate::store::update_credentials(self, account, |_, credentials, _| {
            for name in [
                ACCESS_TOKEN,
                REFRESH_TOKEN,
                crate::ACCESS_TOKEN_EXPIRES_AT,
                crate::REFRESH_LEASE,
            ] {
                credentials.remove(name);
            }
            (status, None)
        })
        .await?;
        Ok(revocation)
    }

    /// Revokes the account's tokens at the revoke endpoint, the refresh
    /// token first (revoking it also ends the access tokens it issued at
    /// most providers), then the access token; as RFC 7009 says, or as the
    /// definition's `revoke_token_request` does.
    pub async fn revoke(&self, account: &ConnectedAccount) -> Revocation {
        self.revoke_tokens(
            account.credentials().get(ACCESS_TOKEN),
            account.credentials().get(REFRESH_TOKEN),
        )
        .await
    }

    /// Revokes `access` and `refresh`, as [`revoke`](Self::revoke) does.
    pub(crate) async fn revoke_tokens(
        &self,
        access: Option<&SecretString>,
        refresh: Option<&SecretString>,
    ) -> Revocation {
        let Some(endpoint) = &self.revoke_endpoint else {
            return Revocation::default();
        };
        let mut outcome = Revocation {
            endpoint: true,
            ..Revocation::default()
        };
        let shape = self.config.revoke_token_request.clone().unwrap_or_default();
        for token_kind in shape.tokens() {
            let (kind, hint) = match token_kind {
                RevokedToken::RefreshToken => (REFRESH_TOKEN, "refresh_token"),
                RevokedToken::AccessToken => (ACCESS_TOKEN, "access_token"),
            };
            let held = if kind == ACCESS_TOKEN { access } else { refresh };
            let Some(token) = held else {
                continue;
            };
            let request = match self.revoke_request(endpoint, &shape, token.expose_secret(), hint) {
                Ok(request) => request,
                Err(error) => {
                    outcome.failures.push(error);
                    continue;
                }
            };
            match request.send().await {
                Ok(response) if response.status().is_success() => outcome.revoked.push(hint),
                // Most providers end the access tokens of a refresh token
                // revoked just before, and some then call them invalid
                // (Google answers 400 `invalid_token`): ended either way.
                Ok(response)
                    if kind == ACCESS_TOKEN
                        && outcome.revoked.contains(&"refresh_token")
                        && response.status().as_u16() == 400 =>
                {
                    let body = integration_http::token::read_body(response, 16 * 1024)
                        .await
                        .unwrap_or_default();
                    let code = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|json| json.get("error")?.as_str().map(str::to_owned));
                    if code.as_deref() == Some("invalid_token") {
                        outcome.revoked.push(hint);
                    } else {
                        outcome.failures.push(self.error(
                            ErrorKind::Provider,
                            format!("the revoke endpoint answered 400 Bad Request for the {hint}"),
                        ));
                    }
                }
                Ok(response) => outcome.failures.push(self.error(
                    ErrorKind::Provider,
                    format!("the revoke endpoint answered {} for the {hint}", response.status()),
                )),
                Err(error) => outcome.failures.push(error),
            }
        }
        outcome
    }

    /// The request that revokes `token` (a `hint`) as `shape` says.
    fn revoke_request(
        &self,
        endpoint: &Url,
        shape: &RevokeRequest,
        token: &str,
        hint: &str,
    ) -> integration_core::Result<RequestBuilder> {
        let field = shape.token_field.as_deref().unwrap_or("token");
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        match shape.token_placement {
            RevokePlacement::Form => pairs.extend([(field, token), ("token_type_hint", hint)]),
            RevokePlacement::Json | RevokePlacement::Query => pairs.push((field, token)),
            RevokePlacement::Bearer => {}
        }
        let authentication = shape.client_authentication(self.config.client_authentication());
        if authentication == RevokeAuthentication::Body {
            pairs.push(("client_id", self.token.client_id.as_str()));
            pairs.push(("client_secret", self.client_secret()));
        }
        let method = match shape.verb {
            RevokeVerb::Post => Method::POST,
            RevokeVerb::Delete => Method::DELETE,
            RevokeVerb::Get => Method::GET,
        };
        let mut url = endpoint.clone();
        if shape.token_placement == RevokePlacement::Query {
            url.query_pairs_mut().extend_pairs(&pairs);
        }
        let mut request = self.token.endpoints.request(method, url.as_str());
        request = match shape.token_placement {
            RevokePlacement::Form => form_body(request, &pairs),
            RevokePlacement::Json => json_body(request, &pairs),
            RevokePlacement::Query => request,
            RevokePlacement::Bearer => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| self.error(ErrorKind::Provider, "the token cannot go in a header"))?;
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
        };
        for (name, value) in &shape.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.error(ErrorKind::Config, "a revoke header name is not valid"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| self.error(ErrorKind::Config, "a revoke header value is not valid"))?;
            request = request.header(name, value);
        }
        if authentication == RevokeAuthentication::Basic {
            let basic = self
                .token
                .basic_authorization()
                .map_err(|failure| failure.into_error())?;
            request = request.header(AUTHORIZATION, basic);
        }
        Ok(request)
    }
}
