//! Token revocation (RFC 7009).

use integration_core::secrecy::ExposeSecret;
use integration_core::{ConnectedAccount, ErrorKind};
use integration_http::Method;
use integration_http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use crate::store::{ACCESS_TOKEN, REFRESH_TOKEN};
use crate::{GrantType, OAuth2Client, Revocation};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

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
    /// most providers), then the access token.
    pub async fn revoke(&self, account: &ConnectedAccount) -> Revocation {
        let Some(endpoint) = &self.revoke_endpoint else {
            return Revocation::default();
        };
        let mut outcome = Revocation {
            endpoint: true,
            ..Revocation::default()
        };
        for (kind, hint) in [(REFRESH_TOKEN, "refresh_token"), (ACCESS_TOKEN, "access_token")] {
            let Some(token) = account.credentials().get(kind) else {
                continue;
            };
            let mut pairs = vec![("token", token.expose_secret()), ("token_type_hint", hint)];
            let basic = match self.config.client_authentication() {
                crate::ClientAuthentication::Body => {
                    pairs.push(("client_id", self.token.client_id.as_str()));
                    pairs.push(("client_secret", self.client_secret()));
                    None
                }
                crate::ClientAuthentication::Basic => {
                    let id: String = url::form_urlencoded::byte_serialize(self.token.client_id.as_bytes()).collect();
                    let secret: String =
                        url::form_urlencoded::byte_serialize(self.client_secret().as_bytes()).collect();
                    let mut value =
                        HeaderValue::from_str(&format!("Basic {}", BASE64.encode(format!("{id}:{secret}"))))
                            .unwrap_or_else(|_| HeaderValue::from_static(""));
                    value.set_sensitive(true);
                    Some(value)
                }
            };
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&pairs)
                .finish();
            let mut request = self
                .token
                .endpoints
                .request(Method::POST, endpoint.as_str())
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
                .body(body);
            if let Some(basic) = basic {
                request = request.header(AUTHORIZATION, basic);
            }
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
}
