//! The connection lookup: a request made with the new access token right
//! after the code exchange, whose JSON answer gives more parameters
//! (Atlassian's cloud id, Xero's tenant id).

use std::collections::BTreeMap;

use integration_core::definition::ParameterType;
use integration_core::secrecy::ExposeSecret;
use integration_core::template::{Chain, Escape};
use integration_core::{ErrorKind, Result};
use integration_http::Method;
use integration_http::header::{ACCEPT, HeaderName, HeaderValue};
use integration_http::token::{self, BodyError};
use serde_json::Value;

use crate::OAuth2Client;
use crate::token_endpoint::{TokenSet, saved_values};

/// The largest lookup answer read.
const MAX_BODY: usize = 256 * 1024;

impl OAuth2Client {
    /// Makes the connection lookup with `tokens` and reads every parameter
    /// it gives: each must be in the answer.
    pub(crate) async fn look_up(&self, tokens: &TokenSet) -> Result<BTreeMap<String, String>> {
        let (Some(url), Some(lookup)) = (&self.lookup, &self.config.connection_lookup) else {
            return Ok(BTreeMap::new());
        };
        let account = self.store.get(&self.account).await?;
        let placement = &self.config.token;
        // The query builder encodes a URL parameter's value itself.
        let escape = match placement.parameter_type {
            ParameterType::Header => Escape::Header,
            ParameterType::UrlParameter => Escape::Plain,
        };
        let values = Chain(
            [("token", tokens.access_token.expose_secret())],
            account.parameter_values(),
        );
        let value = placement
            .value_template
            .render(escape, &values)
            .map_err(|e| self.error(ErrorKind::InvalidInput, format!("{e} (in auth.token.value_template)")))?;
        let mut request = self
            .token
            .endpoints
            .request(Method::GET, url.as_str())
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        match placement.parameter_type {
            ParameterType::Header => {
                let name = HeaderName::from_bytes(placement.parameter_name.as_bytes())
                    .map_err(|_| self.error(ErrorKind::Config, "auth.token.parameter_name is not a header name"))?;
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| self.error(ErrorKind::Provider, "the access token cannot go in a header"))?;
                value.set_sensitive(true);
                request = request.header(name, value);
            }
            ParameterType::UrlParameter => {
                request = request.query(&[(placement.parameter_name.as_str(), value.as_str())]);
            }
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.error(ErrorKind::Provider, format!("the connection lookup answered {status}")));
        }
        let body = token::read_body(response, MAX_BODY)
            .await
            .map_err(|error| match error {
                BodyError::Broken => self.error(ErrorKind::Transport, "the connection lookup's answer broke off"),
                BodyError::TooLarge(limit) => self.error(
                    ErrorKind::Provider,
                    format!("the connection lookup's answer is larger than {limit} bytes"),
                ),
            })?;
        let json: Value = serde_json::from_slice(&body)
            .map_err(|_| self.error(ErrorKind::Provider, "the connection lookup's answer is not JSON"))?;
        let saved: Vec<(String, String)> = lookup
            .parameters
            .iter()
            .map(|(name, pointer)| (name.clone(), pointer.clone()))
            .collect();
        let found = saved_values(&json, &saved, "connection lookup")
            .map_err(|failure| failure.into_error().with_context("account", &self.account))?;
        if let Some((name, pointer)) = saved.iter().find(|(name, _)| !found.contains_key(name)) {
            return Err(self.error(
                ErrorKind::Provider,
                format!("the connection lookup's answer has no value at {pointer} (parameter `{name}`)"),
            ));
        }
        Ok(found)
    }
}
