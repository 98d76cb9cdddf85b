//! Connected accounts: parameter values and credentials for one use of an
//! integration.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use integration_template::{Chain, Escape, RenderError, Template, UrlTemplate, Values, is_host_name};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::definition::{Auth, GrantType, Integration, ParameterType, SecretSource};
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

/// A credential an auth method takes when an account is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialField {
    /// The credential's name.
    pub name: &'static str,
    /// Whether an account must have it.
    pub required: bool,
    /// What it is.
    pub description: &'static str,
}

const fn field(name: &'static str, required: bool, description: &'static str) -> CredentialField {
    CredentialField {
        name,
        required,
        description,
    }
}

/// The credentials an account of `integration` takes.
pub fn credential_fields(integration: &Integration) -> Vec<CredentialField> {
    match &integration.auth {
        Auth::OAuth2(_) => vec![
            field(
                "access_token",
                false,
                "an access token to import; normally obtained by the grant",
            ),
            field(
                "refresh_token",
                false,
                "a refresh token to import; normally obtained by the grant",
            ),
        ],
        Auth::ApiToken(_) => vec![field("token", true, "the API token")],
        Auth::Basic(_) => vec![
            field("username", true, "the user name (no `:`)"),
            field("password", true, "the password"),
        ],
        Auth::CustomToken(_) => Vec::new(),
        Auth::Sftp(sftp) => {
            let mut fields = vec![
                field("username", true, "the user name"),
                field("password", false, "the password (or a private key)"),
                field("private_key", false, "a private key in OpenSSH, PKCS#8 or PEM format"),
                field("passphrase", false, "the private key's passphrase"),
                field(
                    "host_key",
                    true,
                    "the server's public key, SHA256 fingerprint or known_hosts lines (`ssh-keyscan` prints them); \
                     `insecure-accept-any` to accept any key",
                ),
            ];
            if sftp.host.is_none() {
                fields.push(field("host", true, "the server's host name"));
            }
            fields.push(field("port", false, "the server's port, when not the definition's"));
            fields
        }
    }
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
    for name in new.parameters.names() {
        if integration.parameter(name).is_none() {
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

    let status = match &integration.auth {
        Auth::OAuth2(oauth2)
            if oauth2.grant_type == GrantType::AuthorizationCode
                && !new.credentials.contains("refresh_token")
                && !new.credentials.contains("access_token") =>
        {
            AccountStatus::Pending
        }
        _ => AccountStatus::Connected,
    };
    Ok((plain, secret, status))
}

fn method_rules(integration: &Integration, credentials: &Secrets) -> Vec<String> {
    let mut problems = Vec::new();
    match &integration.auth {
        Auth::Basic(_) => {
            // RFC 7617: the user-id cannot contain a colon.
            if credentials
                .get("username")
                .is_some_and(|u| u.expose_secret().contains(':'))
            {
                problems.push("credential `username` must not contain `:` (RFC 7617)".to_owned());
            }
        }
        Auth::Sftp(_) => {
            let has = |name| {
                credentials
                    .get(name)
                    .is_some_and(|v: &SecretString| !v.expose_secret().is_empty())
            };
            if !has("password") && !has("private_key") {
                problems.push("SFTP accounts need credential `password` or `private_key`".to_owned());
            }
            if has("passphrase") && !has("private_key") {
                problems.push("credential `passphrase` is only used with `private_key`".to_owned());
            }
            if credentials
                .get("host")
                .is_some_and(|host| !is_host_name(host.expose_secret()))
            {
                problems.push("credential `host` is not a valid host name".to_owned());
            }
            if let Some(port) = credentials.get("port").map(|port| port.expose_secret())
                && !port.parse::<u16>().is_ok_and(|port| port > 0)
            {
                problems.push(format!("credential `port` is not a port number: `{port}`"));
            }
        }
        Auth::OAuth2(_) | Auth::ApiToken(_) | Auth::CustomToken(_) => {}
    }
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
    match &integration.auth {
        Auth::OAuth2(oauth2) => {
            url("auth.authorization_endpoint", oauth2.authorization_endpoint.as_deref());
            url("auth.access_token_endpoint", Some(&oauth2.access_token_endpoint));
            url("auth.revoke_token_endpoint", oauth2.revoke_token_endpoint.as_deref());
        }
        Auth::CustomToken(custom) => url("auth.access_token_endpoint", Some(&custom.access_token_endpoint)),
        Auth::Sftp(sftp) => {
            // Parsed as the authority of a URL so that values must be host labels.
            let host = sftp
                .host
                .as_ref()
                .and_then(|host| UrlTemplate::parse(&format!("https://{}/", host.source())).ok());
            url("auth.host", host.as_ref());
        }
        Auth::ApiToken(_) | Auth::Basic(_) => {}
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
    match &integration.auth {
        Auth::OAuth2(oauth2) => {
            text("auth.scope".to_owned(), &oauth2.scope, Escape::Plain);
            text("auth.client_id".to_owned(), &oauth2.client_id, Escape::Plain);
            for (name, template) in &oauth2.authorization_parameters {
                text(format!("auth.authorization_parameters.{name}"), template, Escape::Plain);
            }
            for (name, template) in &oauth2.token_parameters {
                text(format!("auth.token_parameters.{name}"), template, Escape::Plain);
            }
            if let SecretSource::Template(secret) = &oauth2.client_secret {
                text("auth.client_secret".to_owned(), secret, Escape::Plain);
            }
        }
        Auth::CustomToken(custom) => {
            for (name, template) in &custom.access_token_parameters {
                text(format!("auth.access_token_parameters.{name}"), template, Escape::Plain);
            }
        }
        Auth::ApiToken(_) | Auth::Basic(_) | Auth::Sftp(_) => {}
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
    use crate::Definitions;
    use crate::definition::Format;

    const DEFINITIONS: &str = r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "https://{subdomain}.crm.example/api"
        parameters = [{ name = "subdomain" }, { name = "client_secret", secret = true }, { name = "region", default = "eu" }]
        [integration.auth]
        type = "oauth2"
        grant_type = "authorization_code"
        authorization_endpoint = "https://{subdomain}.crm.example/authorize"
        access_token_endpoint = "https://{subdomain}.crm.example/token?region={region}"
        access_token_verb = "POST"
        scope = "read"
        client_id = "id"
        client_secret = "{client_secret}"
        token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }

        [[integration]]
        key = "erp"
        name = "ERP"
        parameters = [{ name = "company" }]
        auth = { type = "basic" }
        request_parameters = [{ type = "header", name = "X-Company", value = "{company}" }]

        [[integration]]
        key = "files"
        name = "Files"
        auth = { type = "sftp" }

        [[integration]]
        key = "onprem"
        name = "On-prem"
        base_url = "https://{host}/api"
        parameters = [{ name = "host" }]
        auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }

        [[integration]]
        key = "drop"
        name = "Drop"
        parameters = [{ name = "server" }]
        auth = { type = "sftp", host = "{server}" }

        [[integration]]
        key = "lab"
        name = "Lab"
        base_url = "https://{host}/api"
        parameters = [{ name = "host" }]
        allow_ip_hosts = true
        auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }
    "#;

    fn definitions() -> Definitions {
        Definitions::from_str(DEFINITIONS, Format::Toml).expect("valid definitions")
    }

    fn secrets(pairs: &[(&str, &str)]) -> Secrets {
        pairs
            .iter()
            .map(|(name, value)| (*name, SecretString::from((*value).to_owned())))
            .collect()
    }

    fn check(key: &str, parameters: &[(&str, &str)], credentials: &[(&str, &str)]) -> String {
        let definitions = definitions();
        let integration = definitions.get(key).expect("defined");
        let new = NewAccount {
            id: AccountId::new("acct").expect("valid id"),
            parameters: secrets(parameters),
            credentials: secrets(credentials),
        };
        match check_new_account(integration, &new) {
            Ok((plain, secret, status)) => format!(
                "ok {status}; plain {plain:?}; secret {:?}",
                secret.names().collect::<Vec<_>>()
            ),
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn parameters_are_split_and_defaults_filled() {
        assert_eq!(
            check("crm", &[("subdomain", "eu1"), ("client_secret", "s3cret")], &[]),
            r#"ok pending; plain {"region": "eu", "subdomain": "eu1"}; secret ["client_secret"]"#
        );
        assert_eq!(
            check(
                "crm",
                &[("subdomain", "eu1"), ("client_secret", "s"), ("region", "us")],
                &[("refresh_token", "r")]
            ),
            r#"ok connected; plain {"region": "us", "subdomain": "eu1"}; secret ["client_secret"]"#
        );
    }

    #[test]
    fn every_problem_with_a_new_account_is_named() {
        let message = check("crm", &[("tenant", "x")], &[("password", "p")]);
        assert!(
            message.contains("unknown parameter `tenant`; declared: subdomain, client_secret, region"),
            "{message}"
        );
        assert!(message.contains("missing parameter `subdomain`"), "{message}");
        assert!(message.contains("missing parameter `client_secret`"), "{message}");
        assert!(
            message.contains("unknown credential `password` for oauth2 accounts"),
            "{message}"
        );
        assert!(message.contains("(account `acct`, integration `crm`)"), "{message}");
    }

    #[test]
    fn values_are_checked_where_they_land() {
        let message = check("crm", &[("subdomain", "evil.example/"), ("client_secret", "s")], &[]);
        assert!(
            message.contains("parameter {subdomain}: value is not a valid host name"),
            "{message}"
        );
        assert!(
            message.contains("in base_url, auth.authorization_endpoint, auth.access_token_endpoint"),
            "{message}"
        );
        let message = check(
            "erp",
            &[("company", "A\r\nX-Injected: 1")],
            &[("username", "u"), ("password", "p")],
        );
        assert!(message.contains("control character"), "{message}");
        assert!(message.contains("request_parameters[0].value"), "{message}");
        assert!(!message.contains("Injected"), "the value must not be echoed: {message}");
    }

    #[test]
    fn credentials_follow_the_auth_method() {
        let message = check("erp", &[("company", "A")], &[("username", "a:b")]);
        assert!(message.contains("missing credential `password`"), "{message}");
        assert!(message.contains("must not contain `:` (RFC 7617)"), "{message}");
        let message = check("files", &[], &[("username", "u")]);
        assert!(message.contains("missing credential `host`"), "{message}");
        assert!(message.contains("missing credential `host_key`"), "{message}");
        assert!(
            message.contains("need credential `password` or `private_key`"),
            "{message}"
        );
        let message = check(
            "files",
            &[],
            &[
                ("username", "u"),
                ("host", "a/b"),
                ("password", "p"),
                ("passphrase", "x"),
                ("port", "70000"),
            ],
        );
        assert!(message.contains("`port` is not a port number: `70000`"), "{message}");
        let header = check("crm", &[("company", "A")], &[("access_token", "t\r\nX-Injected: 1")]);
        assert!(
            header.contains("credential `access_token` has a control character"),
            "{header}"
        );
        assert!(!header.contains("X-Injected"), "the value is never quoted: {header}");
        assert!(
            message.contains("credential `host` is not a valid host name"),
            "{message}"
        );
        assert!(
            message.contains("`passphrase` is only used with `private_key`"),
            "{message}"
        );
        assert_eq!(
            check(
                "files",
                &[],
                &[
                    ("username", "u"),
                    ("host", "sftp.example.com"),
                    ("private_key", "k"),
                    ("host_key", "insecure-accept-any"),
                    ("port", "2222")
                ]
            ),
            "ok connected; plain {}; secret []"
        );
    }

    #[test]
    fn ip_hosts_need_the_opt_in_and_metadata_addresses_are_refused() {
        for ip in ["10.0.0.5", "2130706433", "127.0.0.1"] {
            let message = check("onprem", &[("host", ip)], &[("token", "t")]);
            assert!(
                message.contains("parameter `host` makes the host an IP address") && message.contains("(in base_url)"),
                "{ip}: {message}"
            );
            assert!(!message.contains(ip), "the value is not quoted: {message}");
            assert_eq!(
                check("lab", &[("host", ip)], &[("token", "t")]),
                format!("ok connected; plain {{\"host\": \"{ip}\"}}; secret []")
            );
        }
        for integration in ["onprem", "lab"] {
            let message = check(integration, &[("host", "169.254.169.254")], &[("token", "t")]);
            assert!(message.contains("cloud metadata address"), "{integration}: {message}");
        }
        assert!(check("onprem", &[("host", "api.example")], &[("token", "t")]).starts_with("ok"));
        let sftp = [
            ("username", "u"),
            ("password", "p"),
            ("host_key", "insecure-accept-any"),
        ];
        let message = check("drop", &[("server", "10.0.0.5")], &sftp);
        assert!(
            message.contains("parameter `server` makes the host an IP address") && message.contains("(in auth.host)"),
            "{message}"
        );
        assert!(check("drop", &[("server", "sftp.example")], &sftp).starts_with("ok"));
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
