//! One account's compiled request settings.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use integration_core::definition::{Integration, ParameterType, RetryPolicy};
use integration_core::template::{Chain, Escape, Placement, RenderError, RenderErrorKind, Template, UrlTemplate};
use integration_core::{AccountId, ConnectedAccount, Error, ErrorKind, Result, Secrets};
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::SecretString;
use url::Url;

use crate::HttpClient;
use crate::hosts::{HostPolicy, check_destination, check_scheme};
use crate::retry::Retry;
use integration_core::method::{Authenticator, Credential, Placed};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The "authenticator" of calls to an integration's own endpoints, which
/// carry the client's credentials themselves.
#[derive(Debug)]
struct NoCredential;

#[integration_core::async_trait]
impl Authenticator for NoCredential {
    async fn credential(&self) -> Result<Arc<Credential>> {
        static NONE: std::sync::LazyLock<Arc<Credential>> = std::sync::LazyLock::new(|| Arc::new(Credential::none()));
        Ok(Arc::clone(&NONE))
    }
}

/// Makes authenticated requests through one connected account.
///
/// Everything that does not change between requests is worked out once
/// here: the base URL, the request parameters rendered with the account's
/// values, the hosts credentials may go to. Cloning is cheap.
#[derive(Clone)]
pub struct AccountClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    account: AccountId,
    integration: String,
    http: HttpClient,
    authenticator: Arc<dyn Authenticator>,
    base_url: Option<Url>,
    headers: Vec<(HeaderName, HeaderValue)>,
    query: Vec<(String, String)>,
    token: Option<TokenPlacement>,
    hosts: HostPolicy,
    /// Whether a host or port may hold a secret parameter's value: then
    /// errors do not name the destination.
    secret_destination: bool,
    allow_insecure_http: bool,
    timeout: Duration,
    retry: Retry,
}

#[derive(Clone)]
struct TokenPlacement {
    parameter_type: ParameterType,
    name: String,
    header_name: Option<HeaderName>,
    value_template: Template,
    parameters: BTreeMap<String, String>,
    secret_parameters: Secrets,
}

impl AccountClient {
    /// Compiles `integration`'s request settings for `account`, with the
    /// auth method's `authenticator`.
    pub fn new(
        account: &ConnectedAccount,
        integration: &Integration,
        http: HttpClient,
        authenticator: Arc<dyn Authenticator>,
    ) -> Result<Self> {
        Self::compile(account, integration, http, authenticator, false)
    }

    /// [`new`](Self::new); for the endpoints' client, a URL that needs a
    /// parameter the provider has not given yet (an account still
    /// connecting) is left out rather than refused, and the request
    /// parameters are not rendered.
    fn compile(
        account: &ConnectedAccount,
        integration: &Integration,
        http: HttpClient,
        authenticator: Arc<dyn Authenticator>,
        endpoints_only: bool,
    ) -> Result<Self> {
        let provided = integration.auth.provided_parameters();
        let awaited = |e: &RenderError| {
            endpoints_only
                && e.kind == RenderErrorKind::MissingValue
                && provided.iter().any(|(_, name)| *name == e.parameter)
        };
        let error = |message: String| {
            Error::new(ErrorKind::InvalidInput, message)
                .with_context("account", account.id())
                .with_context("integration", &integration.key)
        };
        if integration.key != account.integration() {
            return Err(error(format!(
                "the account belongs to integration `{}`",
                account.integration()
            )));
        }
        let values = account.parameter_values();
        let render_url = |field: &str, template: &UrlTemplate| -> Result<Option<Url>> {
            let text = match template.render(&values) {
                Ok(text) => text,
                Err(e) if awaited(&e) => return Ok(None),
                Err(e) => return Err(error(format!("{e} (in {field})"))),
            };
            let url = Url::parse(&text).map_err(|e| error(format!("{field} does not render to a valid URL: {e}")))?;
            check_destination(&url, template, integration).map_err(|refusal| error(format!("{field}: {refusal}")))?;
            Ok(Some(url))
        };

        let secret = |name: &str| {
            integration
                .parameters
                .iter()
                .any(|parameter| parameter.secret && parameter.name == name)
        };
        let in_authority = |template: &UrlTemplate| {
            template
                .parameters()
                .any(|(name, placement)| (placement.chooses_host() || placement == Placement::Port) && secret(name))
        };
        let secret_destination = integration.base_url.as_deref().is_some_and(in_authority)
            || integration
                .auth
                .endpoints()
                .into_iter()
                .any(|(_, template)| in_authority(template))
            || integration
                .allowed_hosts
                .iter()
                .any(|pattern| pattern.parameters().any(secret));

        let mut hosts = HostPolicy::default();
        let base_url = match &integration.base_url {
            Some(template) => render_url("base_url", template)?,
            None => None,
        };
        if let Some(url) = &base_url {
            hosts.allow_origin(url);
        }
        for (field, template) in integration.auth.endpoints() {
            if let Some(url) = render_url(field, template)? {
                hosts.allow_origin(&url);
            }
        }
        for (i, pattern) in integration.allowed_hosts.iter().enumerate() {
            match pattern.render(Escape::Plain, &values) {
                Ok(host) => hosts.allow_pattern(&host),
                Err(e) if awaited(&e) => {}
                Err(e) => return Err(error(format!("{e} (in allowed_hosts[{i}])"))),
            }
        }

        let mut headers = Vec::new();
        let mut query = Vec::new();
        let request_parameters = if endpoints_only {
            &[][..]
        } else {
            &integration.request_parameters[..]
        };
        for (i, parameter) in request_parameters.iter().enumerate() {
            let field = format!("request_parameters[{i}]");
            match parameter.parameter_type {
                ParameterType::Header => {
                    let value = parameter
                        .value
                        .render(Escape::Header, &values)
                        .map_err(|e| error(format!("{e} (in {field}.value)")))?;
                    let name = HeaderName::from_bytes(parameter.name.as_bytes())
                        .map_err(|_| error(format!("`{}` is not a valid header name (in {field})", parameter.name)))?;
                    let value = HeaderValue::from_str(&value)
                        .map_err(|_| error(format!("{field}.value is not a valid header value")))?;
                    headers.push((name, value));
                }
                ParameterType::UrlParameter => {
                    let value = parameter
                        .value
                        .render(Escape::Plain, &values)
                        .map_err(|e| error(format!("{e} (in {field}.value)")))?;
                    query.push((parameter.name.clone(), value));
                }
            }
        }

        let token = match integration.auth.token() {
            Some(token) => Some(TokenPlacement {
                parameter_type: token.parameter_type,
                name: token.parameter_name.clone(),
                header_name: match token.parameter_type {
                    ParameterType::Header => {
                        Some(HeaderName::from_bytes(token.parameter_name.as_bytes()).map_err(|_| {
                            error(format!(
                                "`{}` is not a valid header name (in auth.token)",
                                token.parameter_name
                            ))
                        })?)
                    }
                    ParameterType::UrlParameter => None,
                },
                value_template: token.value_template.template().clone(),
                parameters: account.parameters().clone(),
                secret_parameters: account.secret_parameters().clone(),
            }),
            None => None,
        };

        let timeout = integration
            .timeout_seconds
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .unwrap_or(DEFAULT_TIMEOUT);
        let retry = Retry::new(integration.retry.as_ref().unwrap_or(&RetryPolicy::default()))
            .with_rate_limit(integration.rate_limit.as_ref());

        Ok(Self {
            inner: Arc::new(Inner {
                account: account.id().clone(),
                integration: integration.key.clone(),
                http,
                authenticator,
                base_url,
                headers,
                query,
                token,
                hosts,
                secret_destination,
                allow_insecure_http: integration.allow_insecure_http,
                timeout,
                retry,
            }),
        })
    }

    /// The client of `integration`'s own endpoints (token, revoke) for
    /// `account`, for the auth method that calls them: the request path of
    /// every other call (host checks, the time limit, error mapping), with
    /// neither the account's credential nor the request parameters, and
    /// retried only where a call that changes state at the provider can be
    /// sent again: a connection that never opened, and 429 or 503 with a
    /// `Retry-After`, within the integration's retry budget.
    pub fn endpoints(account: &ConnectedAccount, integration: &Integration, http: HttpClient) -> Result<Self> {
        let client = Self::compile(account, integration, http, Arc::new(NoCredential), true)?;
        let mut inner = Inner::clone(&client.inner);
        inner.headers.clear();
        inner.query.clear();
        inner.token = None;
        inner.retry = inner.retry.only_unprocessed();
        Ok(Self { inner: Arc::new(inner) })
    }

    /// A client equal to this one but with a reference count of its own,
    /// for a cache kept per thread: requests through it change no counter
    /// that requests on other threads change too. The auth method is still
    /// shared, so tokens are obtained and renewed once for all copies.
    pub fn detached(&self) -> Self {
        Self {
            inner: Arc::new(Inner::clone(&self.inner)),
        }
    }

    /// The longest a call through this client can take, retries included:
    /// the retry budget, then one more attempt's time limit.
    pub fn longest_call(&self) -> Duration {
        self.inner.retry.budget().saturating_add(self.inner.timeout)
    }

    /// The account id.
    pub fn account(&self) -> &AccountId {
        &self.inner.account
    }

    /// The integration's key.
    pub fn integration(&self) -> &str {
        &self.inner.integration
    }

    /// The auth method.
    pub fn authenticator(&self) -> &Arc<dyn Authenticator> {
        &self.inner.authenticator
    }

    /// The HTTP client calls go through.
    pub(crate) fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    /// Each call's time limit, unless a request sets its own.
    pub(crate) fn time_limit(&self) -> Duration {
        self.inner.timeout
    }

    /// The request parameters that go in headers, rendered.
    pub(crate) fn parameter_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.inner.headers
    }

    /// The request parameters that go in the query, rendered.
    pub(crate) fn parameter_query(&self) -> &[(String, String)] {
        &self.inner.query
    }

    /// When failed calls are tried again.
    pub(crate) fn retry(&self) -> &Retry {
        &self.inner.retry
    }

    /// Whether a secret parameter may be in a destination's host or port,
    /// so that errors must not name it.
    pub(crate) fn destination_is_secret(&self) -> bool {
        self.inner.secret_destination
    }

    /// Resolves `url` and checks that credentials may go there.
    pub fn resolve(&self, url: &str) -> Result<Url> {
        let inner = &self.inner;
        // A scheme, then `://`.
        let scheme = url
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            .count();
        let is_absolute = scheme > 0 && url[scheme..].starts_with("://");
        if !is_absolute {
            return self.join(url);
        }
        let parsed = Url::parse(url).map_err(|e| self.invalid_url(e))?;
        check_scheme(&parsed, inner.allow_insecure_http).map_err(|refusal| self.refused(&refusal))?;
        if !inner.hosts.allows(&parsed) {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port_or_known_default().unwrap_or_default();
            return Err(self.refused(&format!(
                "{host}:{port} is not a host this integration sends credentials to (allowed: {}; add it to allowed_hosts)",
                inner.hosts.describe()
            )));
        }
        Ok(parsed)
    }

    /// Appends a relative URL to the base URL's path. Only the path, query
    /// and fragment change, so the base's scheme and host, checked when
    /// the account was compiled, stay as they are.
    fn join(&self, relative: &str) -> Result<Url> {
        let Some(base) = &self.inner.base_url else {
            return Err(self.refused("a relative URL needs a base_url in the integration's definition"));
        };
        let (rest, fragment) = match relative.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (relative, None),
        };
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        if has_dot_segment(path) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the path `{path}` has a `.` or `..` segment (in any encoding, or after a `\\`): \
                     it could leave the base URL's path, so it is refused"
                ),
            )
            .with_context("account", &self.inner.account));
        }
        let mut url = base.clone();
        if !path.is_empty() {
            let base_path = base.path().trim_end_matches('/');
            let mut joined = String::with_capacity(base_path.len() + path.len() + 1);
            joined.push_str(base_path);
            if !path.starts_with('/') {
                joined.push('/');
            }
            joined.push_str(path);
            url.set_path(&joined);
        }
        if query.is_some() || base.query().is_some() {
            let combined = match (base.query(), query) {
                (Some(base), Some(query)) => Some(format!("{base}&{query}")),
                (Some(base), None) => Some(base.to_owned()),
                (None, query) => query.map(str::to_owned),
            };
            url.set_query(combined.as_deref());
        }
        url.set_fragment(fragment);
        Ok(url)
    }

    fn invalid_url(&self, error: url::ParseError) -> Error {
        Error::new(ErrorKind::InvalidInput, format!("invalid URL: {error}"))
            .with_context("account", &self.inner.account)
    }

    fn refused(&self, message: &str) -> Error {
        Error::new(ErrorKind::Refused, format!("request refused: {message}"))
            .with_context("account", &self.inner.account)
            .with_context("integration", &self.inner.integration)
    }

    /// Renders `credential` into its header or query parameter, once.
    pub(crate) fn injected<'c>(&self, credential: &'c Credential) -> Result<Option<&'c Placed>> {
        if credential.ready_header().is_some() {
            return Ok(None);
        }
        if let Some(placed) = credential.placed() {
            return Ok(Some(placed));
        }
        let (Some(placement), Some(token)) = (&self.inner.token, credential.expose_token()) else {
            if credential.expose_token().is_none() {
                return Ok(None);
            }
            return Err(Error::new(
                ErrorKind::Config,
                "the auth method gave a token but the integration has no token settings",
            )
            .with_context("account", &self.inner.account));
        };
        let values = Chain(
            [("token", token)],
            Chain(&placement.parameters, &placement.secret_parameters),
        );
        let escape = match placement.parameter_type {
            ParameterType::Header => Escape::Header,
            ParameterType::UrlParameter => Escape::Plain,
        };
        let rendered = placement.value_template.render(escape, &values).map_err(|e| {
            Error::new(ErrorKind::Provider, format!("the token cannot be sent: {e}"))
                .with_context("account", &self.inner.account)
        })?;
        let injected = match &placement.header_name {
            Some(name) => {
                let mut value = HeaderValue::from_str(&rendered).map_err(|_| {
                    Error::new(ErrorKind::Provider, "the token is not a valid header value")
                        .with_context("account", &self.inner.account)
                })?;
                value.set_sensitive(true);
                Placed::Header(name.clone(), value)
            }
            None => Placed::Query(placement.name.clone(), SecretString::from(rendered)),
        };
        // Another task may have placed it meanwhile; both are equal.
        Ok(Some(credential.place(injected)))
    }

    /// The header name the credential goes in, which a caller may not set.
    pub(crate) fn credential_header(&self) -> Option<&HeaderName> {
        self.inner.token.as_ref().and_then(|token| token.header_name.as_ref())
    }

    /// The query parameter the credential goes in, which a caller may not set.
    pub(crate) fn credential_query(&self) -> Option<&str> {
        self.inner
            .token
            .as_ref()
            .filter(|token| token.parameter_type == ParameterType::UrlParameter)
            .map(|token| token.name.as_str())
    }
}

impl fmt::Debug for AccountClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountClient")
            .field("account", &self.inner.account)
            .field("integration", &self.inner.integration)
            .field("allowed_hosts", &self.inner.hosts.describe())
            .field("authenticator", &self.inner.authenticator)
            .finish_non_exhaustive()
    }
}

/// Whether `path` has a `.` or `..` segment as a URL parser or a server
/// could read it: after percent-decoding, with `\` taken as `/` (as the
/// WHATWG URL parser does for http and https).
fn has_dot_segment(path: &str) -> bool {
    // The common path has no dot and no escape: nothing to decode.
    if !path.bytes().any(|byte| byte == b'.' || byte == b'%') {
        return false;
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode(path.as_bytes()).collect();
    decoded
        .split(|&byte| byte == b'/' || byte == b'\\')
        .any(|segment| segment == b"." || segment == b"..")
}
