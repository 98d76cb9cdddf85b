//! The `sftp` definition table.

use std::sync::Arc;

use integration_core::definition::{Integration, TemplateField, is_host_template};
use integration_core::method::{AccountContext, AuthDefinition, CredentialField, MethodTable, Problems};
use integration_core::secrecy::{ExposeSecret, SecretString};
use integration_core::template::is_host_name;
use integration_core::{ConnectedAccount, Error, ErrorKind, Result, Secrets, async_trait};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{SftpClient, SftpSettings};

/// SFTP configuration. The account's credentials are `username`, a
/// `password` or a `private_key` (with `passphrase`), `host_key`, and
/// `host` when the definition has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sftp {
    /// Server host, e.g. `{region}.sftp.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<TemplateField>,
    /// Server port.
    #[serde(default = "default_sftp_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
}

fn default_sftp_port() -> u16 {
    22
}

#[async_trait]
impl AuthDefinition for Sftp {
    fn check_definition(&self, integration: &Integration, problems: &mut Problems) {
        let host = self.host.as_ref().map(|host| host.source()).unwrap_or_default();
        if !is_host_template(host) {
            problems.at(
                "auth.host",
                "host must be a host name alone, without scheme, port, path or user",
            );
        }
        for (field, set) in [
            ("allowed_hosts", !integration.allowed_hosts.is_empty()),
            ("retry", integration.retry.is_some()),
        ] {
            if set {
                problems.at(
                    field,
                    format!("SFTP makes no HTTP requests, so {field} does not apply to it"),
                );
            }
        }
        if !integration.request_parameters.is_empty() {
            problems.at(
                "request_parameters",
                "SFTP makes no HTTP requests, so request parameters do not apply to it",
            );
        }
        if integration.base_url.is_some() {
            problems.at(
                "base_url",
                "SFTP makes no HTTP requests; set `auth.host` for the server instead",
            );
        }
        if integration.ca_bundle.is_some() {
            problems.at(
                "ca_bundle",
                "SFTP does not use TLS; its server is trusted by `host_keys`",
            );
        }
    }

    fn hosts(&self) -> Vec<(&'static str, &TemplateField)> {
        self.host.iter().map(|host| ("auth.host", host)).collect()
    }

    fn makes_http_requests(&self) -> bool {
        false
    }

    fn credential_fields(&self) -> Vec<CredentialField> {
        let mut fields = vec![
            CredentialField::required("username", "the user name").shown(),
            CredentialField::optional("password", "the password (or a private key)"),
            CredentialField::optional("private_key", "a private key in OpenSSH, PKCS#8 or PEM format"),
            CredentialField::optional("passphrase", "the private key's passphrase"),
            CredentialField::required(
                "host_key",
                "the server's public key, SHA256 fingerprint or known_hosts lines (`ssh-keyscan` prints them); \
                 `insecure-accept-any` to accept any key",
            )
            .shown(),
        ];
        if self.host.is_none() {
            fields.push(CredentialField::required("host", "the server's host name").shown());
        }
        fields.push(CredentialField::optional("port", "the server's port, when not the definition's").shown());
        fields
    }

    fn check_credentials(&self, credentials: &Secrets) -> Vec<String> {
        let mut problems = Vec::new();
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
        problems
    }

    fn authenticator(&self, context: &AccountContext<'_>) -> Result<Arc<dyn integration_core::method::Authenticator>> {
        Err(context.error(
            ErrorKind::InvalidInput,
            "SFTP accounts make no HTTP requests; use their SFTP operations",
        ))
    }

    /// Reads the private key and host keys, so that a key that cannot be
    /// used is refused when the account is made, not at its first connection.
    async fn check_account(&self, context: &AccountContext<'_>) -> Result<()> {
        client(Arc::new(context.integration.clone()), context.account.clone())
            .await
            .map(drop)
    }
}

impl MethodTable for Sftp {
    const TYPE: &'static str = "sftp";
}

/// A client for `account`, made on a blocking thread: an encrypted private
/// key is read with a deliberately slow key derivation, which would hold up
/// every task of an async worker.
pub async fn client(integration: Arc<Integration>, account: ConnectedAccount) -> Result<SftpClient> {
    match tokio::task::spawn_blocking(move || SftpClient::new(&integration, &account, SftpSettings::default())).await {
        Ok(client) => client,
        // As if it had run here.
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(Error::new(ErrorKind::Config, "the runtime is shutting down").with_source(error)),
    }
}
