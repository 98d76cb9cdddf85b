//! The auth-method contract: what a method crate implements so that
//! definitions, accounts and requests can use it, and the registry that
//! makes it known.
//!
//! A method is a definition table (serde and schemars, checked with field
//! paths), the credentials an account gives, and the authenticator built
//! for an account. Core knows no method by name: each comes in through
//! [`register`].

mod credential;
pub(crate) mod registry;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use integration_template::{Template, UrlTemplate};
use serde::Serialize;
use serde_json::Value;

pub use credential::{Authenticator, Credential, Outgoing, Placed};
/// Re-exported so that a method names the types the request path uses.
pub use http::{HeaderMap, HeaderName, HeaderValue, Method};
pub use registry::{
    AuthMethod, MethodTable, TableMethod, register, register_method, register_unavailable, registered, unavailable,
};

use crate::definition::{Integration, TemplateField, TokenInjection};
use crate::{AccountStatus, AccountStore, ConnectedAccount, Error, ErrorKind, Result, Secrets};

/// One method's parsed `[integration.auth]` table.
///
/// # Behavior
///
/// - Debug output never shows a secret: a literal client secret or key in
///   the table is shown by its references only.
/// - `check_definition` reports what the table's schema cannot say, each
///   problem at its field path (`auth.access_token_body`), so that a load
///   reports every problem of every integration at once.
/// - `endpoints` lists every URL the account's credential may be sent to
///   besides `base_url` and `allowed_hosts`: requests elsewhere are refused,
///   and account values are checked against them when an account is made.
/// - `credential_fields` lists every credential an account takes; any
///   other is refused, a required one that is missing too.
///   `check_credentials` refuses values that could never work, naming the
///   credential and never quoting its value.
/// - `authenticator` builds what the request path asks for a credential;
///   after a 401 it renews only when a new credential can help (see
///   [`Authenticator`]).
#[async_trait]
pub trait AuthDefinition: TableJson + fmt::Debug + Send + Sync + Any {
    /// Rules the table's schema cannot say.
    fn check_definition(&self, integration: &Integration, problems: &mut Problems) {
        let _ = (integration, problems);
    }

    /// The URL templates the credential goes to, by field path: token,
    /// authorization and revoke endpoints.
    fn endpoints(&self) -> Vec<(&'static str, &UrlTemplate)> {
        Vec::new()
    }

    /// Host name templates it connects to, by field path (an SFTP server).
    fn hosts(&self) -> Vec<(&'static str, &TemplateField)> {
        Vec::new()
    }

    /// The other templates it renders with an account's values, by field
    /// path, so that a value that cannot fit is refused when the account is
    /// made.
    fn templates(&self) -> Vec<(String, &Template)> {
        Vec::new()
    }

    /// Parameters the provider gives while an account connects (from a
    /// token response or an authorization callback), by the field path
    /// that declares each: templates may use them like declared
    /// parameters, and an account is never made with a value for them.
    fn provided_parameters(&self) -> Vec<(String, &str)> {
        Vec::new()
    }

    /// Where the token goes on each request, for methods that have one.
    fn token(&self) -> Option<&TokenInjection> {
        None
    }

    /// Whether its accounts make HTTP requests (SFTP's do not).
    fn makes_http_requests(&self) -> bool {
        true
    }

    /// The credentials an account gives.
    fn credential_fields(&self) -> Vec<CredentialField>;

    /// Problems with an account's credential values, beyond presence.
    fn check_credentials(&self, credentials: &Secrets) -> Vec<String> {
        let _ = credentials;
        Vec::new()
    }

    /// The status of a new account with these credentials.
    fn initial_status(&self, credentials: &Secrets) -> AccountStatus {
        let _ = credentials;
        AccountStatus::Connected
    }

    /// The authenticator of an account's HTTP requests.
    fn authenticator(&self, context: &AccountContext<'_>) -> Result<Arc<dyn Authenticator>> {
        Err(context.error(
            ErrorKind::InvalidInput,
            format!(
                "{} accounts make no HTTP requests through this method",
                context.integration.auth_type()
            ),
        ))
    }

    /// Checks that need more than the values, run when an account is
    /// created: reading a private key, say.
    async fn check_account(&self, context: &AccountContext<'_>) -> Result<()> {
        let _ = context;
        Ok(())
    }

    /// Revokes what the provider issued to an account, before it is removed.
    async fn revoke(&self, context: &AccountContext<'_>) -> Revocation {
        let _ = context;
        Revocation::default()
    }
}

/// The table as JSON, for writing a definition back; implemented for every
/// `Serialize` type.
pub trait TableJson {
    /// The table's fields, `type` left out.
    fn table_json(&self) -> Value;
}

impl<T: Serialize> TableJson for T {
    fn table_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A credential an auth method takes when an account is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialField {
    /// The credential's name.
    pub name: &'static str,
    /// Whether an account must have it.
    pub required: bool,
    /// Whether it is a secret (a user name or port is not).
    pub secret: bool,
    /// What it is.
    pub description: &'static str,
}

impl CredentialField {
    /// A secret credential an account must give.
    pub const fn required(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            required: true,
            secret: true,
            description,
        }
    }

    /// A secret credential an account may give.
    pub const fn optional(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            required: false,
            secret: true,
            description,
        }
    }

    /// The same, but not a secret: forms may show it as typed.
    pub const fn shown(self) -> Self {
        Self { secret: false, ..self }
    }
}

/// Problems found in one integration's definition, each at a field path
/// relative to the integration (`auth.host`, `base_url`).
#[derive(Debug, Default)]
pub struct Problems {
    found: Vec<(String, String)>,
}

impl Problems {
    /// Reports `message` at `field`.
    pub fn at(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.found.push((field.into(), message.into()));
    }

    /// The problems, in the order found.
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.found
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

/// What a method may use to build an account's authenticator: the account,
/// its integration, the store (to keep tokens it obtains) and the services
/// the runtime provides, such as its HTTP client.
#[derive(Clone, Copy)]
pub struct AccountContext<'a> {
    /// The account.
    pub account: &'a ConnectedAccount,
    /// Its integration.
    pub integration: &'a Integration,
    /// The account store.
    pub store: &'a AccountStore,
    /// Services of the runtime, by type.
    pub services: &'a Services,
}

impl AccountContext<'_> {
    /// An error about this account.
    pub fn error(&self, kind: ErrorKind, message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
        Error::new(kind, message)
            .with_context("account", self.account.id())
            .with_context("integration", &self.integration.key)
    }

    /// The definition of this account's method, as its own type.
    pub fn definition<T: AuthDefinition>(&self) -> Result<&T> {
        self.integration.auth.definition::<T>().ok_or_else(|| {
            self.error(
                ErrorKind::InvalidInput,
                format!(
                    "the integration uses {}, not this auth method",
                    self.integration.auth_type()
                ),
            )
        })
    }
}

impl fmt::Debug for AccountContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountContext")
            .field("account", self.account.id())
            .field("integration", &self.integration.key)
            .finish_non_exhaustive()
    }
}

/// Services a runtime provides to auth methods, one value per type: the
/// HTTP client token calls go through, say.
#[derive(Default)]
pub struct Services(http::Extensions);

impl Services {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Provides `service`, replacing one of the same type.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, service: T) {
        self.0.insert(service);
    }

    /// The service of type `T`, if provided.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.get::<T>()
    }

    /// The service of type `T`, or a `Config` error naming `what`.
    pub fn require<T: Send + Sync + 'static>(&self, what: &str) -> Result<&T> {
        self.get::<T>().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("the runtime provides no {what} ({})", std::any::type_name::<T>()),
            )
        })
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services").field("count", &self.0.len()).finish()
    }
}

/// What revoking an account's tokens did.
#[derive(Debug, Default)]
pub struct Revocation {
    /// The kinds of token the provider accepted to revoke, in order.
    pub revoked: Vec<&'static str>,
    /// The provider's failures; they never block removing an account.
    pub failures: Vec<Error>,
    /// Whether the integration has a revoke endpoint at all.
    pub endpoint: bool,
}
