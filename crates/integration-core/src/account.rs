//! Connected accounts: parameter values and credentials for one use of an
//! integration.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use integration_template::{Chain, Escape, RenderError, RenderErrorKind, Template, UrlTemplate, Values};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::definition::{Integration, ParameterType};
use crate::destination::check_host;
use crate::{Error, ErrorKind, Result};

/// An account id: 1 to 128 ASCII letters, digits, `-`, `_` and `.`,
/// not starting with `.`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// Checks and wraps `id`.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(Self(id))
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "invalid account id {id:?}: use 1 to 128 ASCII letters, digits, `-`, `_` and `.`, not starting with `.`"
                ),
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = Error;

    fn try_from(id: String) -> Result<Self> {
        Self::new(id)
    }
}

impl TryFrom<&str> for AccountId {
    type Error = Error;

    fn try_from(id: &str) -> Result<Self> {
        Self::new(id)
    }
}

impl From<AccountId> for String {
    fn from(id: AccountId) -> Self {
        id.0
    }
}

impl FromStr for AccountId {
    type Err = Error;

    fn from_str(id: &str) -> Result<Self> {
        Self::new(id)
    }
}

impl AsRef<str> for AccountId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AccountStatus {
    /// Waiting for credentials, e.g. an OAuth 2.0 authorization.
    Pending,
    /// Usable.
    Connected,
    /// The provider refused the credentials; someone must authorize again.
    NeedsReauth,
}

impl AccountStatus {
    /// The name used in files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::NeedsReauth => "needs_reauth",
        }
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How renewing an account's credentials has gone: kept on the record,
/// shown by `accounts show` and the API, and used to tell a failure from a
/// recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountHealth {
    /// When its credentials were last renewed (a token refresh).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_refresh_at: Option<OffsetDateTime>,
    /// The last failure, kept after a recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<AccountError>,
    /// Failed renewals since the last success; 0 when healthy.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the background scheduler looks at the account next (to refresh
    /// it ahead of expiry or after idling, or to run its health check);
    /// while it works on it, when its claim ends.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_check_at: Option<OffsetDateTime>,
}

/// A failure to renew an account's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountError {
    /// The provider's error code (`invalid_grant`), or what failed
    /// (`transport`, `http_503`); never a secret.
    pub code: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl AccountHealth {
    /// After a successful renewal at `at`: no failures in a row.
    pub fn succeeded(&mut self, at: OffsetDateTime) {
        self.last_refresh_at = Some(at);
        self.consecutive_failures = 0;
    }

    /// After a failed renewal at `at`, for `code`.
    pub fn failed(&mut self, code: impl Into<String>, at: OffsetDateTime) {
        self.last_error = Some(AccountError { code: code.into(), at });
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
    }
}

/// Named secret values. Debug shows the names only.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, SecretString>);

impl Secrets {
    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name`.
    pub fn insert(&mut self, name: impl Into<String>, value: SecretString) {
        self.0.insert(name.into(), value);
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<SecretString> {
        self.0.remove(name)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.0.get(name)
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Names and values, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>> FromIterator<(K, SecretString)> for Secrets {
    fn from_iter<I: IntoIterator<Item = (K, SecretString)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(name, value)| (name.into(), value)).collect())
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Values for Secrets {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|value| value.expose_secret())
    }
}

/// A connected account, its secrets decrypted in memory.
#[derive(Clone)]
pub struct ConnectedAccount {
    pub(crate) id: AccountId,
    pub(crate) integration: String,
    pub(crate) parameters: BTreeMap<String, String>,
    pub(crate) secret_parameters: Secrets,
    pub(crate) credentials: Secrets,
    pub(crate) status: AccountStatus,
    pub(crate) status_reason: Option<String>,
    pub(crate) health: AccountHealth,
    pub(crate) end_user: Option<EndUser>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) revision: u64,
}

impl ConnectedAccount {
    /// The account id.
    pub fn id(&self) -> &AccountId {
        &self.id
    }

    /// The key of its integration.
    pub fn integration(&self) -> &str {
        &self.integration
    }

    /// Values of the parameters that are not secret.
    pub fn parameters(&self) -> &BTreeMap<String, String> {
        &self.parameters
    }

    /// Values of the secret parameters.
    pub fn secret_parameters(&self) -> &Secrets {
        &self.secret_parameters
    }

    /// Every parameter value, secret or not, for rendering templates.
    pub fn parameter_values(&self) -> impl Values + '_ {
        Chain(&self.parameters, &self.secret_parameters)
    }

    /// The credentials: tokens, username and password, keys...
    pub fn credentials(&self) -> &Secrets {
        &self.credentials
    }

    /// Where the account stands.
    pub fn status(&self) -> AccountStatus {
        self.status
    }

    /// Why it stands there, when that is worth telling (never a secret).
    pub fn status_reason(&self) -> Option<&str> {
        self.status_reason.as_deref()
    }

    /// How renewing its credentials has gone.
    pub fn health(&self) -> &AccountHealth {
        &self.health
    }

    /// When it was created.
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// When it last changed.
    pub fn updated_at(&self) -> OffsetDateTime {
        self.updated_at
    }

    /// The stored revision, for compare-and-swap updates.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The product's end user who connected the account, when it was
    /// connected through a connect session that named one.
    pub fn end_user(&self) -> Option<&EndUser> {
        self.end_user.as_ref()
    }

    /// The same account, to be stored for `end_user`.
    pub fn with_end_user(mut self, end_user: Option<EndUser>) -> Self {
        self.end_user = end_user;
        self
    }
}

/// Who an account belongs to in the product that connected it: the
/// product's own id for its user, and a name to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndUser {
    /// The product's id for its user (1 to 256 characters).
    pub id: String,
    /// A name to show, such as an email address or a company name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl EndUser {
    /// The longest id and display name, in characters.
    pub const MAX_LEN: usize = 256;

    /// An end user, checked: a non-empty id and a display name of at most
    /// [`MAX_LEN`](Self::MAX_LEN) characters, without control characters.
    pub fn new(id: impl Into<String>, display_name: Option<String>) -> Result<Self> {
        let id = id.into();
        let check = |field: &str, value: &str| -> Result<()> {
            if value.is_empty() || value.chars().count() > Self::MAX_LEN || value.chars().any(char::is_control) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "`{field}` must be 1 to {} characters, without control characters",
                        Self::MAX_LEN
                    ),
                ));
            }
            Ok(())
        };
        check("end_user.id", &id)?;
        if let Some(name) = &display_name {
            check("end_user.display_name", name)?;
        }
        Ok(Self { id, display_name })
    }
}

impl fmt::Debug for ConnectedAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectedAccount")
            .field("id", &self.id)
            .field("integration", &self.integration)
            .field("parameters", &self.parameters)
            .field("secret_parameters", &self.secret_parameters)
            .field("credentials", &self.credentials)
            .field("status", &self.status)
            .field("health", &self.health)
            .field("end_user", &self.end_user)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// What it takes to create an account.
#[derive(Clone)]
pub struct NewAccount {
    /// The account id.
    pub id: AccountId,
    /// Parameter values, given as secrets since some of them are; the
    /// definition decides which are stored encrypted.
    pub parameters: Secrets,
    /// Credentials.
    pub credentials: Secrets,
}

impl NewAccount {
    /// An account `id` with no values yet, to fill with
    /// [`parameter`](Self::parameter) and [`credential`](Self::credential).
    ///
    /// ```
    /// use integration_core::{AccountId, NewAccount};
    ///
    /// let new = NewAccount::new(AccountId::new("customer-42")?)
    ///     .parameter("subdomain", "eu1")
    ///     .credential("token", "s3cret");
    /// assert!(new.credentials.contains("token"));
    /// assert!(!format!("{new:?}").contains("s3cret"));
    /// # Ok::<(), integration_core::Error>(())
    /// ```
    pub fn new(id: AccountId) -> Self {
        Self {
            id,
            parameters: Secrets::new(),
            credentials: Secrets::new(),
        }
    }

    /// Adds a parameter value (the definition decides whether it is stored
    /// encrypted).
    pub fn parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.parameters.insert(name, SecretString::from(value.into()));
        self
    }

    /// Adds a credential.
    pub fn credential(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.credentials.insert(name, SecretString::from(value.into()));
        self
    }
}

impl fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("id", &self.id)
            .field("parameters", &self.parameters)
            .field("credentials", &self.credentials)
            .finish()
    }
}

pub use crate::method::CredentialField;

/// The credentials an account of `integration` takes.
pub fn credential_fields(integration: &Integration) -> Vec<CredentialField> {
    integration.auth.credential_fields()
}

/// Checks a new account against its integration: every declared parameter
/// has a value (or a default), no undeclared value is given, each value
/// renders in every template of the integration, and the credentials are the
/// ones the auth method takes.
///
/// Returns the parameter values split into plain and secret, defaults
/// filled in, and the initial status.
pub(crate) fn check_new_account(
    integration: &Integration,
    new: &NewAccount,
) -> Result<(BTreeMap<String, String>, Secrets, AccountStatus)> {
    let invalid = |message: String| {
        Error::new(ErrorKind::InvalidInput, message)
            .with_context("account", &new.id)
            .with_context("integration", &integration.key)
    };
    let mut problems = Vec::new();

    let mut plain = BTreeMap::new();
    let mut secret = Secrets::new();
    let provided = integration.auth.provided_parameters();
    for name in new.parameters.names() {
        if let Some((field, _)) = provided.iter().find(|(_, provided)| *provided == name) {
            problems.push(format!(
                "parameter `{name}` is not given: the provider gives it while the account connects ({field})"
            ));
        } else if integration.parameter(name).is_none() {
            let declared: Vec<&str> = integration.parameters.iter().map(|p| p.name.as_str()).collect();
            problems.push(if declared.is_empty() {
                format!("unknown parameter `{name}`: the integration declares none")
            } else {
                format!("unknown parameter `{name}`; declared: {}", declared.join(", "))
            });
        }
    }
    for declaration in &integration.parameters {
        let value = match (new.parameters.get(&declaration.name), &declaration.default) {
            (Some(value), _) => value.clone(),
            (None, Some(default)) => SecretString::from(default.clone()),
            (None, None) => {
                problems.push(format!("missing parameter `{}`", declaration.name));
                continue;
            }
        };
        if !declaration.choices.is_empty() && !declaration.choices.iter().any(|c| c == value.expose_secret()) {
            problems.push(format!(
                "parameter `{}` must be one of: {}",
                declaration.name,
                declaration.choices.join(", ")
            ));
            continue;
        }
        if declaration.secret {
            secret.insert(declaration.name.clone(), value);
        } else {
            plain.insert(declaration.name.clone(), value.expose_secret().to_owned());
        }
    }

    let fields = credential_fields(integration);
    for name in new.credentials.names() {
        if !fields.iter().any(|field| field.name == name) {
            let accepted: Vec<&str> = fields.iter().map(|field| field.name).collect();
            problems.push(if accepted.is_empty() {
                format!(
                    "unknown credential `{name}`: {} accounts take no credentials when created",
                    integration.auth_type()
                )
            } else {
                format!(
                    "unknown credential `{name}` for {} accounts; accepted: {}",
                    integration.auth_type(),
                    accepted.join(", ")
                )
            });
        }
    }
    for field in fields.iter().filter(|field| field.required) {
        if new
            .credentials
            .get(field.name)
            .is_none_or(|value| value.expose_secret().is_empty())
        {
            problems.push(format!("missing credential `{}` ({})", field.name, field.description));
        }
    }
    problems.extend(method_rules(integration, &new.credentials));

    if problems.is_empty() {
        let values = Chain(&plain, &secret);
        problems.extend(render_problems(integration, &values));
    }
    if !problems.is_empty() {
        return Err(invalid(problems.join("; ")));
    }

    let status = integration.auth.initial_status(&new.credentials);
    Ok((plain, secret, status))
}

/// Checks the values a provider gave while `account` connected
/// (`provided`), as an account's own values are checked when it is made:
/// every template that uses one renders, no host it makes is an IP address
/// (unless `allow_ip_hosts`) or a metadata address, and a host or origin it
/// chooses is reached over https (unless `allow_insecure_http`). One line
/// per problem, naming the parameter and field, never the value.
pub fn provided_value_problems(
    integration: &Integration,
    account: &ConnectedAccount,
    provided: &BTreeMap<String, String>,
) -> Vec<String> {
    let values = Chain(provided, account.parameter_values());
    let mut problems = render_problems(integration, &values);
    let mut urls: Vec<(&str, &UrlTemplate)> = integration.auth.endpoints();
    if let Some(base_url) = integration.base_url.as_deref() {
        urls.push(("base_url", base_url));
    }
    for (field, template) in urls {
        let chosen = template
            .parameters()
            .find(|(name, placement)| placement.chooses_host() && provided.contains_key(*name));
        if let Some((name, _)) = chosen
            && !integration.allow_insecure_http
            && template.render(&values).is_ok_and(|url| {
                !url.get(..8)
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
            })
        {
            problems.push(format!(
                "parameter {{{name}}}: the provider's value leads to plain http (in {field}); \
                 only https is taken from a provider"
            ));
        }
    }
    for (i, pattern) in integration.allowed_hosts.iter().enumerate() {
        if let Some(name) = pattern.parameters().find(|name| provided.contains_key(*name)) {
            problems.push(format!(
                "parameter {{{name}}} comes from the provider and cannot choose allowed_hosts[{i}]"
            ));
        }
    }
    problems
}

fn method_rules(integration: &Integration, credentials: &Secrets) -> Vec<String> {
    let mut problems = integration.auth.check_credentials(credentials);
    // A token that goes in a header: a control character (a line break
    // above all) could never be sent, and is refused now, not at first use.
    if let Some(token) = integration.auth.token()
        && token.parameter_type == ParameterType::Header
    {
        for name in ["token", "access_token"] {
            if credentials
                .get(name)
                .is_some_and(|value| value.expose_secret().chars().any(|c| c.is_control() && c != '\t'))
            {
                problems.push(format!(
                    "credential `{name}` has a control character (such as a line break), \
                     which cannot go in header `{}`",
                    token.parameter_name
                ));
            }
        }
    }
    problems
}

/// Renders every template of `integration` with `values`, the way each is
/// rendered when used, and reports the values that do not fit: one line
/// per problem, listing every field where it occurs.
fn render_problems(integration: &Integration, values: &impl Values) -> Vec<String> {
    let mut failures: Vec<(RenderError, String)> = Vec::new();
    let mut refused_hosts: Vec<String> = Vec::new();
    let mut url = |field: &str, template: Option<&UrlTemplate>| {
        let Some(template) = template else {
            return;
        };
        match template.render(values) {
            Err(error) => failures.push((error, field.to_owned())),
            Ok(rendered) => {
                if let Ok(url) = url::Url::parse(&rendered)
                    && let Err(refusal) = check_host(&url, template, integration.allow_ip_hosts)
                {
                    refused_hosts.push(format!("{refusal} (in {field})"));
                }
            }
        }
    };
    url("base_url", integration.base_url.as_deref());
    for (field, template) in integration.auth.endpoints() {
        url(field, Some(template));
    }
    for (field, host) in integration.auth.hosts() {
        // Parsed as the authority of a URL so that values must be host labels.
        let template = UrlTemplate::parse(&format!("https://{}/", host.source())).ok();
        url(field, template.as_ref());
    }
    for (i, pattern) in integration.allowed_hosts.iter().enumerate() {
        let host = pattern.source().strip_prefix("*.").unwrap_or(pattern.source());
        let template = UrlTemplate::parse(&format!("https://{host}/")).ok();
        url(&format!("allowed_hosts[{i}]"), template.as_ref());
    }
    let mut text = |field: String, template: &Template, escape: Escape| {
        if let Err(error) = template.render(escape, values) {
            failures.push((error, field));
        }
    };
    for (i, parameter) in integration.request_parameters.iter().enumerate() {
        text(
            format!("request_parameters[{i}].value"),
            &parameter.value,
            escape_for(parameter.parameter_type),
        );
    }
    for (field, template) in integration.auth.templates() {
        text(field, template, Escape::Plain);
    }
    if let Some(token) = integration.auth.token() {
        let with_token = Chain([("token", "token")], values);
        if let Err(error) = token
            .value_template
            .render(escape_for(token.parameter_type), &with_token)
        {
            failures.push((error, "auth.token.value_template".to_owned()));
        }
    }

    // Templates that use a parameter the provider gives while the account
    // connects render once it has.
    let provided = integration.auth.provided_parameters();
    failures.retain(|(error, _)| {
        !(error.kind == RenderErrorKind::MissingValue && provided.iter().any(|(_, name)| *name == error.parameter))
    });

    // One line per distinct problem, naming every field it occurs in.
    let mut merged: Vec<(RenderError, Vec<String>)> = Vec::new();
    for (error, field) in failures {
        match merged.iter_mut().find(|(seen, _)| *seen == error) {
            Some((_, fields)) => fields.push(field),
            None => merged.push((error, vec![field])),
        }
    }
    merged
        .into_iter()
        .map(|(error, fields)| format!("{error} (in {})", fields.join(", ")))
        .chain(refused_hosts)
        .collect()
}

fn escape_for(parameter_type: ParameterType) -> Escape {
    match parameter_type {
        ParameterType::Header => Escape::Header,
        ParameterType::UrlParameter => Escape::Query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> Secrets {
        pairs
            .iter()
            .map(|(name, value)| (*name, SecretString::from((*value).to_owned())))
            .collect()
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let new = NewAccount {
            id: AccountId::new("acct").expect("valid id"),
            parameters: secrets(&[("client_secret", "param-s3cret")]),
            credentials: secrets(&[("password", "cred-s3cret")]),
        };
        let account = ConnectedAccount {
            id: new.id.clone(),
            integration: "crm".to_owned(),
            parameters: BTreeMap::new(),
            secret_parameters: new.parameters.clone(),
            credentials: new.credentials.clone(),
            status: AccountStatus::Connected,
            status_reason: None,
            health: AccountHealth::default(),
            end_user: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            revision: 1,
        };
        let shown = format!("{new:?} {account:?} {:#?}", account.credentials());
        assert!(shown.contains("password") && shown.contains("client_secret"), "{shown}");
        assert!(!shown.contains("s3cret"), "a secret leaked: {shown}");
    }

    #[test]
    fn account_ids_are_checked() {
        for good in ["a", "customer-42", "tenant_1.prod", &"x".repeat(128)] {
            assert!(AccountId::new(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "has space", "slash/es", "ünï", &"x".repeat(129)] {
            let error = AccountId::new(bad).expect_err(bad);
            assert_eq!(error.kind(), ErrorKind::InvalidInput);
        }
    }
}
