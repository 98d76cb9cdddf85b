//! Requests to the token endpoint, and reading what it answers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use integration_core::definition::{BodyFormat, TokenResponse, Verb};

use crate::ClientAuthentication;
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::time::OffsetDateTime;
use integration_core::time::format_description::well_known::Rfc3339;
use integration_core::{Error, ErrorKind};
use integration_http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use integration_http::token::{self, BodyError};
use integration_http::{AccountClient, Method, RequestBuilder};
use serde_json::Value;
use url::Url;

/// The largest token response read.
const MAX_BODY: usize = 256 * 1024;

/// Tokens as a token endpoint gave them.
pub struct TokenSet {
    /// The access token.
    pub access_token: SecretString,
    /// The refresh token, when the provider sent one.
    pub refresh_token: Option<SecretString>,
    /// When the access token expires; `None` when neither the provider nor
    /// the definition says.
    pub expires_at: Option<OffsetDateTime>,
    /// Parameters the provider gave: values of the token response the
    /// definition saves (`token_response_parameters`), and of the callback
    /// and connection lookup after a code exchange.
    pub parameters: BTreeMap<String, String>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| ".."))
            .field("expires_at", &self.expires_at)
            .field("parameters", &self.parameters)
            .finish_non_exhaustive()
    }
}

/// Why a token request failed.
#[derive(Debug)]
pub(crate) enum TokenFailure {
    /// The provider refused the grant (`invalid_grant`): the refresh token
    /// or code is spent, revoked or expired. Retrying cannot help.
    InvalidGrant(String),
    /// The provider answered with another error: its OAuth 2.0 error code,
    /// or `http_STATUS` when it gave none.
    Refused { error: Error, code: String },
    /// Anything else: transport, malformed answers.
    Other(Error),
}

/// The token endpoint of one account, with its client credentials.
pub(crate) struct TokenEndpoint {
    /// The request path of the integration's own endpoints.
    pub(crate) endpoints: AccountClient,
    pub(crate) url: Url,
    /// Where refresh requests go, when not to `url`.
    pub(crate) refresh_url: Option<Url>,
    pub(crate) verb: Verb,
    pub(crate) format: BodyFormat,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) authentication: ClientAuthentication,
    pub(crate) extra: Vec<(String, SecretString)>,
    pub(crate) response: TokenResponse,
    /// `token_response_parameters`: names and JSON pointers.
    pub(crate) saved: Vec<(String, String)>,
}

impl TokenEndpoint {
    /// Sends a refresh token request with `grant` parameters, to the
    /// refresh endpoint when there is one.
    pub(crate) async fn refresh(&self, grant: &[(&str, &str)]) -> Result<TokenSet, TokenFailure> {
        self.request_at(self.refresh_url.as_ref().unwrap_or(&self.url), grant)
            .await
    }

    /// Sends a token request with `grant` parameters and reads the tokens.
    pub(crate) async fn request(&self, grant: &[(&str, &str)]) -> Result<TokenSet, TokenFailure> {
        self.request_at(&self.url, grant).await
    }

    async fn request_at(&self, url: &Url, grant: &[(&str, &str)]) -> Result<TokenSet, TokenFailure> {
        // A token parameter replaces the grant's own of that name: a
        // client_credentials grant may say `grant_type = "account_credentials"`.
        let mut pairs: Vec<(&str, &str)> = grant
            .iter()
            .filter(|(name, _)| !self.extra.iter().any(|(extra, _)| extra == name))
            .copied()
            .collect();
        pairs.extend(
            self.extra
                .iter()
                .map(|(name, value)| (name.as_str(), value.expose_secret())),
        );
        if self.authentication == ClientAuthentication::Body {
            pairs.push(("client_id", &self.client_id));
            pairs.push(("client_secret", self.client_secret.expose_secret()));
        }
        let request = match (self.verb, self.format) {
            (Verb::Get, _) => {
                let mut url = url.clone();
                url.query_pairs_mut().extend_pairs(&pairs);
                self.endpoints.request(Method::GET, url.as_str())
            }
            (Verb::Post, BodyFormat::Form) => form_body(self.endpoints.request(Method::POST, url.as_str()), &pairs),
            (Verb::Post, BodyFormat::Json) => json_body(self.endpoints.request(Method::POST, url.as_str()), &pairs),
        };
        let mut request = request.header(ACCEPT, HeaderValue::from_static("application/json"));
        if self.authentication == ClientAuthentication::Basic {
            request = request.header(AUTHORIZATION, self.basic_authorization()?);
        }
        let outcome = match request.send().await {
            Ok(response) => read(response, &self.response, &self.saved).await,
            Err(error) => Err(TokenFailure::Other(error)),
        };
        let label = match &outcome {
            Ok(_) => "success",
            Err(TokenFailure::InvalidGrant(_)) => "invalid_grant",
            Err(TokenFailure::Refused { .. }) => "refused",
            Err(TokenFailure::Other(_)) => "error",
        };
        integration_http::metrics::token_request(self.endpoints.integration(), label);
        outcome
    }

    /// RFC 6749 section 2.3.1: id and secret form-encoded, then joined.
    pub(crate) fn basic_authorization(&self) -> Result<HeaderValue, TokenFailure> {
        let id: String = url::form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect();
        let secret: String =
            url::form_urlencoded::byte_serialize(self.client_secret.expose_secret().as_bytes()).collect();
        let encoded = SecretString::from(format!("Basic {}", BASE64.encode(format!("{id}:{secret}"))));
        let mut value = HeaderValue::from_str(encoded.expose_secret())
            .map_err(|_| TokenFailure::Other(Error::new(ErrorKind::Config, "invalid client credentials")))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// `pairs` as an `application/x-www-form-urlencoded` body.
pub(crate) fn form_body(request: RequestBuilder, pairs: &[(&str, &str)]) -> RequestBuilder {
    request
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish(),
        )
}

/// `pairs` as a JSON object of strings.
pub(crate) fn json_body(request: RequestBuilder, pairs: &[(&str, &str)]) -> RequestBuilder {
    let object: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Value::String((*value).to_owned())))
        .collect();
    request
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Value::Object(object).to_string())
}

async fn read(
    response: reqwest::Response,
    config: &TokenResponse,
    saved: &[(String, String)],
) -> Result<TokenSet, TokenFailure> {
    let status = response.status();
    let body = token::read_body(response, MAX_BODY)
        .await
        .map_err(|error| match error {
            BodyError::Broken => {
                TokenFailure::Other(Error::new(ErrorKind::Transport, "the token response broke off").temporary())
            }
            BodyError::TooLarge(limit) => other(
                ErrorKind::Provider,
                format!("the token response is larger than {limit} bytes"),
            ),
        })?;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let (message, code) = token::refusal(status, json.as_ref());
        if code.as_deref() == Some("invalid_grant") {
            return Err(TokenFailure::InvalidGrant(message));
        }
        let error = Error::new(ErrorKind::Provider, message);
        let error = if status.is_server_error() || status.as_u16() == 429 {
            error.temporary()
        } else {
            error
        };
        // Only a plain code is kept: it goes into events and the record.
        let code = code
            .filter(|code| {
                (1..=64).contains(&code.len())
                    && code
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"_.-".contains(&byte))
            })
            .unwrap_or_else(|| format!("http_{}", status.as_u16()));
        return Err(TokenFailure::Refused { error, code });
    }
    let json = json.ok_or_else(|| other(ErrorKind::Provider, "the token response is not JSON".to_owned()))?;
    let string_at = |pointer: &str| -> Result<Option<String>, TokenFailure> {
        match json.pointer(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
            Some(_) => Err(other(
                ErrorKind::Provider,
                format!("the value at {pointer} is not a token"),
            )),
        }
    };
    let access_pointer = pointer(config.token.as_deref(), "/access_token");
    let access_token = string_at(&access_pointer)?.ok_or_else(|| {
        other(
            ErrorKind::Provider,
            format!("the token response has no access token at {access_pointer}"),
        )
    })?;
    let refresh_token = string_at(&pointer(config.refresh_token.as_deref(), "/refresh_token"))?;
    Ok(TokenSet {
        access_token: SecretString::from(access_token),
        refresh_token: refresh_token.map(SecretString::from),
        expires_at: expiry(&json, config)?,
        parameters: saved_values(&json, saved, "token response")?,
    })
}

/// The values at `saved`'s pointers in `json`, as parameter values: a
/// string, number or boolean, of at most 2048 characters without control
/// characters. A pointer that finds nothing is left out.
pub(crate) fn saved_values(
    json: &Value,
    saved: &[(String, String)],
    source: &str,
) -> Result<BTreeMap<String, String>, TokenFailure> {
    let mut values = BTreeMap::new();
    for (name, configured) in saved {
        let at = pointer(Some(configured), "");
        let value = match json.pointer(&at) {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) => text.clone(),
            Some(value @ (Value::Number(_) | Value::Bool(_))) => value.to_string(),
            Some(_) => {
                return Err(other(
                    ErrorKind::Provider,
                    format!("the {source}'s value at {at} (parameter `{name}`) is not a string or a number"),
                ));
            }
        };
        if value.len() > 2048 || value.chars().any(char::is_control) {
            return Err(other(
                ErrorKind::Provider,
                format!("the {source}'s value at {at} (parameter `{name}`) is too long or holds control characters"),
            ));
        }
        values.insert(name.clone(), value);
    }
    Ok(values)
}

fn expiry(json: &Value, config: &TokenResponse) -> Result<Option<OffsetDateTime>, TokenFailure> {
    let now = OffsetDateTime::now_utc();
    if let Some(at) = &config.expires_at {
        let at = pointer(Some(at), "");
        let value = json
            .pointer(&at)
            .ok_or_else(|| other(ErrorKind::Provider, format!("the token response has no expiry at {at}")))?;
        let time = match value {
            Value::String(text) => OffsetDateTime::parse(text.trim(), &Rfc3339).ok().or_else(|| {
                text.trim()
                    .parse::<i64>()
                    .ok()
                    .and_then(|u| OffsetDateTime::from_unix_timestamp(u).ok())
            }),
            Value::Number(number) => number
                .as_i64()
                .and_then(|u| OffsetDateTime::from_unix_timestamp(u).ok()),
            _ => None,
        };
        return time.map(Some).ok_or_else(|| {
            other(
                ErrorKind::Provider,
                format!("the expiry at {at} is neither RFC 3339 nor Unix seconds"),
            )
        });
    }
    let expires_in = pointer(config.expires_in.as_deref(), "/expires_in");
    let seconds = match json.pointer(&expires_in) {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => number.as_f64(),
        Some(Value::String(text)) => Some(text.trim().parse::<f64>().map_err(|_| {
            other(
                ErrorKind::Provider,
                format!("the lifetime at {expires_in} is not a number of seconds"),
            )
        })?),
        Some(_) => {
            return Err(other(
                ErrorKind::Provider,
                format!("the lifetime at {expires_in} is not a number of seconds"),
            ));
        }
    };
    // A lifetime of 0 says "never expires" (Mailchimp): no token is issued
    // already expired.
    let lifetime = match seconds.filter(|seconds| *seconds != 0.0) {
        Some(seconds) => Duration::try_from_secs_f64(seconds).ok(),
        None => config.lifetime_seconds.map(Duration::from_secs),
    };
    Ok(lifetime.map(|lifetime| now + lifetime))
}

fn pointer(configured: Option<&str>, default: &str) -> String {
    match configured {
        Some(pointer) if pointer.starts_with('/') => pointer.to_owned(),
        Some(name) => format!("/{name}"),
        None => default.to_owned(),
    }
}

fn other(kind: ErrorKind, message: String) -> TokenFailure {
    TokenFailure::Other(Error::new(kind, message))
}

impl TokenFailure {
    /// As an error of the account.
    pub(crate) fn into_error(self) -> Error {
        match self {
            Self::InvalidGrant(message) => Error::new(ErrorKind::Provider, message),
            Self::Refused { error, .. } | Self::Other(error) => error,
        }
    }

    /// What failed, in a word that holds no secret: the provider's error
    /// code, `http_STATUS`, `timeout`, `transport` or `provider`.
    pub(crate) fn code(&self) -> String {
        match self {
            Self::InvalidGrant(_) => "invalid_grant".to_owned(),
            Self::Refused { code, .. } => code.clone(),
            Self::Other(error) => match error.kind() {
                ErrorKind::Timeout => "timeout",
                ErrorKind::Transport => "transport",
                ErrorKind::Config => "config",
                _ => "provider",
            }
            .to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_token() {
        let tokens = TokenSet {
            access_token: SecretString::from("access-s3cret".to_owned()),
            refresh_token: Some(SecretString::from("refresh-s3cret".to_owned())),
            expires_at: None,
            parameters: BTreeMap::new(),
        };
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn saved_values_are_plain_text_or_refused() {
        let json = serde_json::json!({
            "instance_url": "https://eu12.my.salesforce.com",
            "team": { "id": "T123" },
            "hub_id": 42,
            "nested": { "a": 1 },
            "line": "a\nb",
        });
        let saved = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
        };
        let values = saved_values(
            &json,
            &saved(&[
                ("instance_url", "instance_url"),
                ("team_id", "/team/id"),
                ("hub_id", "/hub_id"),
                ("absent", "/absent"),
            ]),
            "token response",
        )
        .expect("values");
        assert_eq!(
            values.get("instance_url").map(String::as_str),
            Some("https://eu12.my.salesforce.com")
        );
        assert_eq!(values.get("team_id").map(String::as_str), Some("T123"));
        assert_eq!(values.get("hub_id").map(String::as_str), Some("42"));
        assert!(!values.contains_key("absent"));
        for pointer in ["/nested", "/line"] {
            let Err(TokenFailure::Other(error)) = saved_values(&json, &saved(&[("x", pointer)]), "token response")
            else {
                panic!("{pointer} is refused");
            };
            assert!(error.to_string().contains("parameter `x`"), "{error}");
        }
    }

    #[test]
    fn pointers_accept_bare_names() {
        assert_eq!(pointer(Some("data/token"), "/x"), "/data/token");
        assert_eq!(pointer(Some("/data/token"), "/x"), "/data/token");
        assert_eq!(pointer(None, "/access_token"), "/access_token");
    }
}
