//! Reading a token and its lifetime out of a token endpoint's response.

use std::time::Duration;

use super::{BodyError, read_body, refusal};
use integration_core::ErrorKind;
use integration_core::definition::TokenResponse;
use integration_core::secrecy::SecretString;
use integration_core::time::OffsetDateTime;
use integration_core::time::format_description::well_known::Rfc3339;
use serde_json::Value;

/// The largest token response read; anything longer is refused.
const MAX_BODY: usize = 256 * 1024;

/// A token as the endpoint gave it.
pub struct ObtainedToken {
    /// The token.
    pub token: SecretString,
    /// When it expires; `None` when the response and the definition say
    /// nothing, and the token is used until it is refused.
    pub expires_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for ObtainedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObtainedToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a token response cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its kind.
    pub kind: ErrorKind,
    /// What went wrong, quoting no secret.
    pub message: String,
    /// A code for account health and events: the provider's error code,
    /// `http_STATUS` when it gave none, `invalid_response` when the answer
    /// cannot be used, `transport` when it broke off.
    pub code: String,
}

/// Reads the token, and when it expires, from a token endpoint's response
/// as `config` says; a refusal quotes the status and the provider's error
/// code only.
pub async fn read_token(response: reqwest::Response, config: &TokenResponse) -> Result<ObtainedToken, Failure> {
    let status = response.status();
    let header_token = config
        .token_header
        .as_ref()
        .and_then(|name| response.headers().get(name.as_str()))
        .map(|value| value.to_str().map(str::to_owned));
    let body = read_body(response, MAX_BODY).await.map_err(|error| match error {
        BodyError::Broken => Failure {
            kind: ErrorKind::Transport,
            message: "the token response broke off".to_owned(),
            code: "transport".to_owned(),
        },
        BodyError::TooLarge(limit) => provider(format!("the token response is larger than {limit} bytes")),
    })?;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let (message, code) = refusal(status, json.as_ref());
        return Err(Failure {
            kind: ErrorKind::Provider,
            message,
            code: code.unwrap_or_else(|| format!("http_{}", status.as_u16())),
        });
    }

    let token = match (&config.token_header, header_token) {
        (Some(name), None) => return Err(provider(format!("the token response has no `{name}` header"))),
        (Some(name), Some(Err(_))) => return Err(provider(format!("the `{name}` header is not valid text"))),
        (Some(_), Some(Ok(token))) => token,
        (None, _) => {
            let json = json
                .as_ref()
                .ok_or_else(|| provider("the token response is not JSON".to_owned()))?;
            let pointers: Vec<String> = match &config.token {
                Some(pointer) => vec![normalize(pointer)],
                None => vec!["/access_token".to_owned(), "/token".to_owned()],
            };
            let found = pointers.iter().find_map(|pointer| json.pointer(pointer));
            match found {
                Some(Value::String(token)) => token.clone(),
                Some(_) => {
                    return Err(provider(format!(
                        "the token at {} is not a string",
                        pointers.join(" or ")
                    )));
                }
                None => {
                    return Err(provider(format!(
                        "the token response has no token at {}",
                        pointers.join(" or ")
                    )));
                }
            }
        }
    };
    if token.is_empty() {
        return Err(provider("the token response holds an empty token".to_owned()));
    }
    let expires_at = lifetime(json.as_ref(), config)?;
    Ok(ObtainedToken {
        token: SecretString::from(token),
        expires_at,
    })
}

/// When the token expires: the response's `expires_at` or `expires_in`
/// (configured, or `/expires_in` by default), else the definition's fixed
/// lifetime, else never.
fn lifetime(json: Option<&Value>, config: &TokenResponse) -> Result<Option<OffsetDateTime>, Failure> {
    let now = OffsetDateTime::now_utc();
    if let Some(pointer) = &config.expires_at {
        let pointer = normalize(pointer);
        let value = json
            .and_then(|json| json.pointer(&pointer))
            .ok_or_else(|| provider(format!("the token response has no expiry at {pointer}")))?;
        return absolute_time(value)
            .map(Some)
            .ok_or_else(|| provider(format!("the expiry at {pointer} is neither RFC 3339 nor Unix seconds")));
    }
    let (pointer, required) = match &config.expires_in {
        Some(pointer) => (normalize(pointer), true),
        None => ("/expires_in".to_owned(), false),
    };
    match json.and_then(|json| json.pointer(&pointer)) {
        Some(value) => {
            let seconds = seconds(value)
                .ok_or_else(|| provider(format!("the lifetime at {pointer} is not a number of seconds")))?;
            Ok(Some(now + seconds))
        }
        None if required => Err(provider(format!("the token response has no lifetime at {pointer}"))),
        None => Ok(config
            .lifetime_seconds
            .map(|seconds| now + Duration::from_secs(seconds))),
    }
}

/// Seconds as a JSON number or a numeric string.
fn seconds(value: &Value) -> Option<Duration> {
    let seconds = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// RFC 3339 text, or Unix seconds as a number or numeric string.
fn absolute_time(value: &Value) -> Option<OffsetDateTime> {
    if let Value::String(text) = value
        && let Ok(time) = OffsetDateTime::parse(text.trim(), &Rfc3339)
    {
        return Some(time);
    }
    let unix = match value {
        Value::Number(number) => number.as_i64()?,
        Value::String(text) => text.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    OffsetDateTime::from_unix_timestamp(unix).ok()
}

/// A JSON pointer from a pointer or a bare field name.
fn normalize(pointer: &str) -> String {
    if pointer.starts_with('/') {
        pointer.to_owned()
    } else {
        format!("/{pointer}")
    }
}

fn provider(message: String) -> Failure {
    Failure {
        kind: ErrorKind::Provider,
        message,
        code: "invalid_response".to_owned(),
    }
}
