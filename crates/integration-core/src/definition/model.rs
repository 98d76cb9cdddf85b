//! The definition format: the structs a definition file deserializes into.
//!
//! Field names are the spec's property names in snake_case. The JSON Schema
//! published for editors is generated from these types, and the loader
//! checks files against that same schema, so the three never disagree.

use std::borrow::Cow;
use std::fmt;

use std::any::Any;
use std::sync::Arc;

use integration_template::{Template, UrlTemplate};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::method::AuthDefinition;
use crate::method::registry::method as registry_method;

/// One integration: the spec's properties for one auth method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Integration {
    /// Unique identifier: ASCII letters and digits only.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Base of relative request URLs, e.g. `https://{subdomain}.acme.example/api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<UrlTemplateField>,
    /// The integration parameters, filled per connected account and
    /// referenced as `{name}` in any template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<ParameterDeclaration>,
    /// The auth method and its configuration.
    pub auth: Auth,
    /// Sent with every HTTP request made through an account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_parameters: Vec<RequestParameter>,
    /// More hosts that requests through an account may go to, beside those
    /// of `base_url` and the endpoints: host name templates, or `*.domain`
    /// for any subdomain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<TemplateField>,
    /// The time limit of each HTTP call, in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001, max = 3600.0))]
    pub timeout_seconds: Option<f64>,
    /// How failed HTTP requests are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The catalog entry this definition starts from (`integrations catalog
    /// list`): its fields are the entry's, with those given here set or
    /// replaced (tables field by field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// How the provider says "rate limited" beyond a 429 with
    /// `Retry-After`: which statuses, and which header tells when to try
    /// again. The retry policy honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Allows plain `http://` to hosts other than loopback in `base_url`,
    /// the endpoints and absolute request URLs: credentials then cross the
    /// network in clear. For lab setups only; a warning is logged when
    /// the definition is loaded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
    /// Allows a parameter to make a URL's host an IP address (the value
    /// `10.0.0.5` for `https://{host}/api`). Off by default: an account
    /// could otherwise point credentials at internal addresses. Link-local
    /// and cloud metadata addresses are refused whatever this says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_ip_hosts: bool,
    /// A PEM file of CA certificates that this integration's HTTPS calls
    /// trust beside the platform's: an internal API's own CA. Its calls then
    /// go over connections of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<std::path::PathBuf>,
    /// A cheap request that tells whether an account's credentials still
    /// work, such as `{ method = "GET", path = "/me" }`. The gateway's
    /// scheduler makes it now and then; a 401 or 403 marks the account
    /// `needs_reauth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// The request of an integration's `health_check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `GET` (the default) or `HEAD`: a check changes nothing.
    #[serde(default)]
    pub method: HealthCheckMethod,
    /// The path, relative to `base_url`, such as `/me`.
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
}

/// The method of a health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HealthCheckMethod {
    /// `GET`.
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// `HEAD`.
    #[serde(rename = "HEAD")]
    Head,
}

/// How a provider signals rate limits, e.g. GitHub's:
/// `{ statuses = [403], when = { name = "x-ratelimit-remaining", value = "0" },
/// reset_header = "x-ratelimit-reset", reset_unit = "epoch_seconds" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Statuses that mean "rate limited" besides 429, such as 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
    /// Such a status means "rate limited" only when this header has this
    /// value (a 403 without it is a refusal). 429 always does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<HeaderMatch>,
    /// The header that tells when to try again, read before `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_header: Option<String>,
    /// What `reset_header` holds.
    #[serde(default)]
    pub reset_unit: ResetUnit,
}

/// A response header and the value it must have (compared ignoring ASCII
/// case and surrounding spaces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// The header's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// What a rate-limit reset header holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetUnit {
    /// Seconds to wait, as `Retry-After` (the default).
    #[default]
    Seconds,
    /// The Unix time, in seconds, when the limit resets (GitHub).
    EpochSeconds,
    /// The Unix time, in milliseconds.
    EpochMilliseconds,
    /// An HTTP date.
    HttpDate,
}

/// How failed HTTP requests are retried: 429 and 503 after their
/// `Retry-After`, other 5xx and connection errors with exponential backoff
/// and jitter, for idempotent methods only, within a total time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: u32,
    /// The first backoff, in seconds; it doubles on each retry.
    #[serde(default = "default_initial_backoff")]
    #[schemars(range(min = 0.0, max = 60.0))]
    pub initial_backoff_seconds: f64,
    /// The longest single backoff, in seconds.
    #[serde(default = "default_max_backoff")]
    #[schemars(range(min = 0.0, max = 600.0))]
    pub max_backoff_seconds: f64,
    /// No retry starts after this many seconds from the first attempt.
    #[serde(default = "default_max_total")]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub max_total_seconds: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff_seconds: default_initial_backoff(),
            max_backoff_seconds: default_max_backoff(),
            max_total_seconds: default_max_total(),
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}

fn default_initial_backoff() -> f64 {
    0.2
}

fn default_max_backoff() -> f64 {
    5.0
}

fn default_max_total() -> f64 {
    30.0
}

impl Integration {
    /// The auth method's name, as written in `auth.type`.
    pub fn auth_type(&self) -> &'static str {
        self.auth.type_name()
    }

    /// The declaration of parameter `name`, if there is one.
    pub fn parameter(&self, name: &str) -> Option<&ParameterDeclaration> {
        self.parameters.iter().find(|parameter| parameter.name == name)
    }
}

/// An integration parameter.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParameterDeclaration {
    /// Name, referenced as `{name}`: ASCII letters, digits and `_`.
    pub name: String,
    /// Shown to whoever fills in the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A secret value is encrypted at rest and never shown.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
    /// Used when an account gives no value. A parameter without a default
    /// must be given a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The values an account may give, when only some are right (a
    /// provider's production and demo hosts); any value when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

impl fmt::Debug for ParameterDeclaration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The default of a secret parameter is itself a secret.
        let default = self
            .default
            .as_ref()
            .map(|value| if self.secret { "..." } else { value.as_str() });
        f.debug_struct("ParameterDeclaration")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("secret", &self.secret)
            .field("default", &default)
            .field("choices", &self.choices)
            .finish()
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

/// The auth method and its table, read through the method registered for
/// its `type` (see [`crate::method`]).
#[derive(Clone)]
pub struct Auth {
    type_name: &'static str,
    definition: Arc<dyn AuthDefinition>,
}

impl Auth {
    /// An auth table of method `type_name`.
    pub fn new(type_name: &'static str, definition: Arc<dyn AuthDefinition>) -> Self {
        Self { type_name, definition }
    }

    /// The name written in `type`.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The method's table, as the contract sees it.
    pub fn method(&self) -> &dyn AuthDefinition {
        &*self.definition
    }

    /// The method's table as its own type, when it is a `T`.
    pub fn definition<T: AuthDefinition>(&self) -> Option<&T> {
        (&*self.definition as &dyn Any).downcast_ref::<T>()
    }

    /// Whether the method's table is a `T`.
    pub fn is<T: AuthDefinition>(&self) -> bool {
        self.definition::<T>().is_some()
    }

    /// The auth-token injection, for the methods that have one.
    pub fn token(&self) -> Option<&TokenInjection> {
        self.definition.token()
    }
}

impl std::ops::Deref for Auth {
    type Target = dyn AuthDefinition;

    fn deref(&self) -> &Self::Target {
        &*self.definition
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("type", &self.type_name)
            .field("table", &self.definition)
            .finish()
    }
}

impl PartialEq for Auth {
    fn eq(&self, other: &Self) -> bool {
        self.type_name == other.type_name && self.definition.table_json() == other.definition.table_json()
    }
}

impl Serialize for Auth {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut table = match self.definition.table_json() {
            Value::Object(table) => table,
            _ => Map::new(),
        };
        table.insert("type".to_owned(), Value::String(self.type_name.to_owned()));
        table.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Auth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = Map::<String, Value>::deserialize(deserializer)?;
        let type_name = match table.remove("type") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(D::Error::custom("`type` must be a string")),
            None => return Err(D::Error::missing_field("type")),
        };
        let method = registry_method(&type_name).ok_or_else(|| D::Error::custom(unknown_type(&type_name)))?;
        let definition = method.parse(Value::Object(table)).map_err(D::Error::custom)?;
        Ok(Self::new(method.type_name(), definition))
    }
}

/// Why `type_name` cannot be read: left out of this build, or unknown.
pub(crate) fn unknown_type(type_name: &str) -> String {
    if let Some(reason) = crate::method::unavailable(type_name) {
        return format!("`{type_name}` is not in this build: {reason}");
    }
    let known = crate::method::registered();
    if known.is_empty() {
        return format!(
            "unknown auth type `{type_name}`: no auth method is registered; call \
             `integrations::register_methods()` (or `integration_core::method::register`) first"
        );
    }
    let known: Vec<String> = known.iter().map(|name| format!("`{name}`")).collect();
    format!("unknown auth type `{type_name}`; expected one of {}", known.join(", "))
}

impl JsonSchema for Auth {
    fn schema_name() -> Cow<'static, str> {
        "Auth".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let variants: Vec<Value> = crate::method::registry::methods()
            .iter()
            .map(|method| {
                let mut table = method.table_schema();
                if let Some(object) = table.as_object_mut() {
                    let properties = object.entry("properties").or_insert_with(|| Value::Object(Map::new()));
                    if let Some(properties) = properties.as_object_mut() {
                        properties.insert("type".to_owned(), json!({ "const": method.type_name() }));
                    }
                    let required = object.entry("required").or_insert_with(|| json!([]));
                    if let Some(required) = required.as_array_mut() {
                        required.insert(0, json!("type"));
                    }
                }
                table
            })
            .collect();
        json_schema!({
            "description": "The auth method, chosen by `type`, and its configuration.",
            "oneOf": variants,
        })
    }
}

/// Where a token endpoint's response keeps the token and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenResponse {
    /// JSON pointer to the token, e.g. `/data/token` (a bare name is a
    /// top-level field). Default: `/access_token`, then `/token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// OAuth 2.0 only: JSON pointer to the refresh token. Default
    /// `/refresh_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Read the token from this response header instead of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_header: Option<String>,
    /// JSON pointer to the lifetime in seconds, a number or a string.
    /// Default: `/expires_in`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// JSON pointer to the absolute expiry: RFC 3339 text or Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// A fixed lifetime in seconds, for responses that give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub lifetime_seconds: Option<u64>,
    /// Get a new token this many seconds before the old one expires
    /// (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_margin_seconds: Option<u64>,
}

/// The body format of a POST token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded`.
    #[default]
    Form,
    /// `application/json`, an object of strings.
    Json,
}

/// The spec's Auth Token: where and how a token goes on each request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInjection {
    /// Token Parameter Type.
    pub parameter_type: ParameterType,
    /// Token Parameter Name, e.g. `Authorization`.
    pub parameter_name: String,
    /// Token Parameter Value Template, e.g. `Bearer {token}`.
    pub value_template: TokenTemplateField,
}

/// A request parameter sent with every HTTP request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestParameter {
    /// Header or URL parameter.
    #[serde(rename = "type")]
    pub parameter_type: ParameterType,
    /// Header or query parameter name.
    pub name: String,
    /// Value template.
    pub value: TemplateField,
}

/// The HTTP verb of a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Verb {
    /// GET: parameters in the query.
    #[serde(rename = "GET")]
    Get,
    /// POST: parameters in the body.
    #[serde(rename = "POST")]
    Post,
}

/// Where a token or request parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParameterType {
    /// An HTTP header.
    Header,
    /// A URL query parameter.
    UrlParameter,
}

/// A secret taken from a template or from an environment variable.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    /// A template, usually `{client_secret}` over a secret parameter.
    Template(TemplateField),
    /// An environment variable of the process, read when it is needed.
    Env {
        /// The variable's name.
        env: String,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A template may be a literal secret: show only its references.
            Self::Template(template) => f
                .debug_struct("Template")
                .field("parameters", &template.parameters().collect::<Vec<_>>())
                .finish_non_exhaustive(),
            Self::Env { env } => f.debug_struct("Env").field("env", env).finish(),
        }
    }
}

macro_rules! template_field {
    ($(#[$meta:meta])* $name:ident($inner:ty), $kind:literal, $description:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name($inner);

        impl $name {
            /// Parses `source`.
            pub fn parse(source: &str) -> Result<Self, integration_template::ParseError> {
                <$inner>::parse(source).map(Self)
            }

            /// The parsed template.
            pub fn template(&self) -> &$inner {
                &self.0
            }

            /// The text it was parsed from.
            pub fn source(&self) -> &str {
                self.0.source()
            }
        }

        impl std::ops::Deref for $name {
            type Target = $inner;

            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.source(), f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.0.source())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let source = Cow::<'de, str>::deserialize(deserializer)?;
                Self::parse(&source).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "description": $description,
                    (TEMPLATE_KEYWORD): $kind,
                })
            }
        }
    };
}

/// The schema keyword that marks a string as a template, with its kind:
/// `text`, `url` or `token`.
pub const TEMPLATE_KEYWORD: &str = "x-template";

template_field!(
    /// A text template: `{parameter}` references, `{{` and `}}` for braces.
    TemplateField(Template),
    "text",
    "A template: {parameter} references a declared integration parameter; {{ and }} are literal braces."
);

template_field!(
    /// A URL template: an absolute `http(s)://` URL whose parameters are
    /// escaped for the component they stand in.
    UrlTemplateField(UrlTemplate),
    "url",
    "A URL template: an absolute http(s) URL; {parameter} references a declared integration parameter."
);

template_field!(
    /// A token value template such as `Bearer {token}`: the one place where
    /// `{token}` may appear.
    TokenTemplateField(Template),
    "token",
    "The token value template, e.g. `Bearer {token}`; it must contain {token}."
);
