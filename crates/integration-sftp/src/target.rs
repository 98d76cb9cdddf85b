//! Where and as whom an account connects, compiled once from its
//! integration and credentials.

use std::fmt;
use std::sync::Arc;

use integration_core::definition::Integration;
use integration_core::{ConnectedAccount, Error, ErrorKind, Result};
use integration_template::{Escape, is_host_name};
use russh::keys::PrivateKey;
use secrecy::{ExposeSecret, SecretString};

use crate::host_key::HostKeyPolicy;
use crate::private_key;

/// The server, the user and how the user logs in.
pub(crate) struct Target {
    pub(crate) account: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: SecretString,
    pub(crate) login: Login,
    pub(crate) host_keys: HostKeyPolicy,
}

pub(crate) enum Login {
    Password(SecretString),
    Key(Arc<PrivateKey>),
}

impl Target {
    pub(crate) fn new(integration: &Integration, account: &ConnectedAccount) -> Result<Self> {
        let credentials = account.credentials();
        let credential = |name: &str| {
            credentials
                .get(name)
                .map(|value| value.expose_secret())
                .filter(|value| !value.is_empty())
        };
        let invalid = |message: String| {
            Error::new(ErrorKind::InvalidInput, message)
                .with_context("account", account.id())
                .with_context("integration", &integration.key)
        };

        let (host, port) = server_address(integration, account).map_err(|error| {
            error
                .with_context("account", account.id())
                .with_context("integration", &integration.key)
        })?;
        let username = credential("username")
            .ok_or_else(|| invalid("missing credential `username`".to_owned()))?
            .into();
        let login = match (credential("private_key"), credential("password")) {
            (Some(key), _) => Login::Key(Arc::new(
                private_key::decode(key, credential("passphrase"))
                    .map_err(|error| error.with_context("account", account.id()))?,
            )),
            (None, Some(password)) => Login::Password(password.into()),
            (None, None) => {
                return Err(invalid(
                    "SFTP accounts need credential `password` or `private_key`".to_owned(),
                ));
            }
        };
        let host_keys = HostKeyPolicy::parse(credential("host_key").unwrap_or_default())
            .map_err(|error| error.with_context("account", account.id()))?;
        Ok(Self {
            account: account.id().to_string(),
            host,
            port,
            username,
            login,
            host_keys,
        })
    }
}

/// The host and port `account` of the SFTP `integration` connects to: its
/// `host` and `port` credentials, else the definition's `auth.host`
/// (rendered with the account's parameters) and `auth.port`.
pub fn server_address(integration: &Integration, account: &ConnectedAccount) -> Result<(String, u16)> {
    let Some(sftp) = integration.auth.definition::<crate::Sftp>() else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "integration `{}` uses {}, not sftp",
                integration.key,
                integration.auth_type()
            ),
        ));
    };
    let credentials = account.credentials();
    let credential = |name: &str| {
        credentials
            .get(name)
            .map(|value| value.expose_secret())
            .filter(|value| !value.is_empty())
    };
    let invalid = |message: String| Error::new(ErrorKind::InvalidInput, message);
    let host = match (&sftp.host, credential("host")) {
        (_, Some(host)) => host.to_owned(),
        (Some(template), None) => template
            .render(Escape::Plain, &account.parameter_values())
            .map_err(|error| invalid(format!("auth.host: {error}")))?,
        (None, None) => return Err(invalid("missing credential `host`".to_owned())),
    };
    if !is_host_name(&host) {
        // Not echoed: a value that is no host name may be anything.
        return Err(invalid(
            "the server's host (credential `host` or `auth.host`) is not a host name".to_owned(),
        ));
    }
    let port = match credential("port") {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| invalid(format!("credential `port` is not a port number: `{port}`")))?,
        None => sftp.port,
    };
    Ok((host, port))
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("account", &self.account)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "login",
                &match self.login {
                    Login::Password(_) => "password",
                    Login::Key(_) => "private key",
                },
            )
            .field("host_keys", &self.host_keys)
            .finish_non_exhaustive()
    }
}
