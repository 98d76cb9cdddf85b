//! Writing tokens to the account, with compare-and-swap.

use std::collections::BTreeMap;

use integration_core::account::provided_value_problems;
use integration_core::secrecy::SecretString;
use integration_core::time::OffsetDateTime;
use integration_core::time::format_description::well_known::Rfc3339;
use integration_core::{AccountHealth, AccountStatus, ConnectedAccount, ErrorKind, Result, Secrets, Update};

use crate::OAuth2Client;
use crate::token_endpoint::TokenSet;

pub use integration_http::token::{ACCESS_TOKEN, ACCESS_TOKEN_EXPIRES_AT};
/// The refresh token.
pub const REFRESH_TOKEN: &str = "refresh_token";
/// Who is refreshing the account's tokens, and until when: `HOLDER RFC3339`.
pub const REFRESH_LEASE: &str = "refresh_lease";

const MAX_CONFLICTS: usize = 20;

/// Applies `change` to the newest stored credentials and health and writes
/// them with a compare-and-swap, again on the newer record after a conflict.
pub(crate) async fn update_credentials(
    client: &OAuth2Client,
    account: ConnectedAccount,
    change: impl Fn(&ConnectedAccount, &mut Secrets, &mut AccountHealth) -> (AccountStatus, Option<String>),
) -> Result<ConnectedAccount> {
    update_connection(client, account, &BTreeMap::new(), change).await
}

/// [`update_credentials`], also setting parameters the provider gave.
async fn update_connection(
    client: &OAuth2Client,
    mut account: ConnectedAccount,
    provided: &BTreeMap<String, String>,
    change: impl Fn(&ConnectedAccount, &mut Secrets, &mut AccountHealth) -> (AccountStatus, Option<String>),
) -> Result<ConnectedAccount> {
    for _ in 0..MAX_CONFLICTS {
        let mut credentials = account.credentials().clone();
        let mut health = account.health().clone();
        let (status, reason) = change(&account, &mut credentials, &mut health);
        match client
            .store
            .update_account_with_parameters(&account, credentials, status, reason, health, provided)
            .await?
        {
            Update::Updated(updated) => return Ok(updated),
            Update::Conflict(current) => account = current,
        }
    }
    Err(client.error(
        ErrorKind::Storage,
        "the account kept changing while its tokens were stored",
    ))
}

/// Stores new tokens: the access token with its expiry, the refresh token
/// (the old one kept when the provider sent none), the parameters the
/// provider gave, the lease released, a success in the account's health.
pub(crate) async fn store_tokens(
    client: &OAuth2Client,
    tokens: &TokenSet,
    account: Option<ConnectedAccount>,
    status: AccountStatus,
    reason: Option<String>,
) -> Result<ConnectedAccount> {
    let account = match account {
        Some(account) => account,
        None => client.store.get(&client.account).await?,
    };
    if !tokens.parameters.is_empty() {
        let problems = provided_value_problems(&client.definition, &account, &tokens.parameters);
        if !problems.is_empty() {
            return Err(client.error(
                ErrorKind::Provider,
                format!("the provider's values are refused: {}", problems.join("; ")),
            ));
        }
    }
    let expires_at = tokens.expires_at.and_then(|at| at.format(&Rfc3339).ok());
    let now = OffsetDateTime::now_utc();
    update_connection(client, account, &tokens.parameters, |_, credentials, health| {
        health.succeeded(now);
        credentials.insert(ACCESS_TOKEN, tokens.access_token.clone());
        match &expires_at {
            Some(at) => credentials.insert(ACCESS_TOKEN_EXPIRES_AT, SecretString::from(at.clone())),
            None => drop(credentials.remove(ACCESS_TOKEN_EXPIRES_AT)),
        }
        if let Some(refresh) = &tokens.refresh_token {
            credentials.insert(REFRESH_TOKEN, refresh.clone());
        }
        credentials.remove(REFRESH_LEASE);
        (status, reason.clone())
    })
    .await
}
