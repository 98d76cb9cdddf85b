//! `integrations accounts ...`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use integrations::time::OffsetDateTime;
use integrations::time::format_description::well_known::Rfc3339;
use integrations::{AccountId, AccountQuery, AccountStatus, ConnectedAccount, NewAccount};
use serde_json::{Value, json};

use crate::cli::{AddArgs, GlobalArgs, IdArgs, ListArgs, RemoveArgs, SetCredentialsArgs, ShowArgs};
use crate::context;
use crate::secrets::{self, Sources, Stdin};

const MASK: &str = "********";

pub(crate) async fn add(global: &GlobalArgs, args: AddArgs) -> Result<ExitCode> {
    let integrations = context::integrations(global).await?;
    let definitions = integrations.definitions();
    let Some(integration) = definitions.get(&args.integration) else {
        let keys: Vec<&str> = definitions.iter().map(|integration| integration.key.as_str()).collect();
        bail!(
            "unknown integration `{}`; defined: {}",
            args.integration,
            keys.join(", ")
        );
    };
    let id = AccountId::new(args.id.as_str())?;
    let mut stdin = Stdin::new(args.param_stdins.len() + args.credential_stdins.len());
    let parameters = secrets::collect(
        &Sources {
            kind: "parameter",
            flag: "param",
            literal: &args.params,
            env: &args.param_envs,
            file: &args.param_files,
            stdin: &args.param_stdins,
        },
        &mut stdin,
    )?;
    let credentials = secrets::collect(
        &Sources {
            kind: "credential",
            flag: "credential",
            literal: &args.credentials,
            env: &args.credential_envs,
            file: &args.credential_files,
            stdin: &args.credential_stdins,
        },
        &mut stdin,
    )?;
    let account = integrations
        .create_account(
            integration,
            NewAccount {
                id,
                parameters,
                credentials,
            },
        )
        .await
        .context("cannot add the account")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "added account {} (integration {}, status {})",
        account.id(),
        account.integration(),
        account.status()
    )?;
    if account.status() == AccountStatus::Pending {
        writeln!(stdout, "it needs an OAuth 2.0 authorization before it can be used")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Accounts read per page: the list is printed as it is read, so that no
/// step holds every account.
const LIST_PAGE: usize = 200;

pub(crate) async fn set_credentials(global: &GlobalArgs, args: SetCredentialsArgs) -> Result<ExitCode> {
    let integrations = context::integrations(global).await?;
    let id = AccountId::new(args.id.as_str())?;
    let mut stdin = Stdin::new(args.credential_stdins.len());
    let credentials = secrets::collect(
        &Sources {
            kind: "credential",
            flag: "credential",
            literal: &args.credentials,
            env: &args.credential_envs,
            file: &args.credential_files,
            stdin: &args.credential_stdins,
        },
        &mut stdin,
    )?;
    let account = integrations.replace_credentials(&id, credentials).await?;
    println!("replaced the credentials of account {id} (status {})", account.status());
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn list(global: &GlobalArgs, args: ListArgs) -> Result<ExitCode> {
    let store = context::store(global).await?;
    let mut query = AccountQuery::first(LIST_PAGE);
    query.integration = args.integration.clone();
    query.status = match args.status.as_deref() {
        Some(status) => Some(serde_json::from_value::<AccountStatus>(Value::String(
            status.to_owned(),
        ))?),
        None => None,
    };
    query.min_consecutive_failures = args.min_consecutive_failures;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let (mut listed, mut unreadable) = (0usize, 0usize);
    // Column widths from the first page: later pages are printed as read.
    let mut widths = None;
    if args.json {
        write!(stdout, "[")?;
    }
    loop {
        let page = store.page(&query).await.context("cannot list accounts")?;
        for account in &page.accounts {
            if args.json {
                let separator = if listed == 0 { "\n" } else { ",\n" };
                write!(
                    stdout,
                    "{separator}{}",
                    serde_json::to_string_pretty(&masked_json(account))?
                )?;
            } else {
                let (width, integration_width) = *widths.get_or_insert_with(|| {
                    let width = page.accounts.iter().map(|a| a.id().as_str().len()).max().unwrap_or(0);
                    let integration_width = page.accounts.iter().map(|a| a.integration().len()).max().unwrap_or(0);
                    (width.max(2), integration_width.max(11))
                });
                if listed == 0 {
                    writeln!(
                        stdout,
                        "{:<width$}  {:<integration_width$}  {:<12}  UPDATED",
                        "ID", "INTEGRATION", "STATUS"
                    )?;
                }
                writeln!(
                    stdout,
                    "{:<width$}  {:<integration_width$}  {:<12}  {}",
                    account.id().as_str(),
                    account.integration(),
                    account.status().as_str(),
                    timestamp(account.updated_at())
                )?;
            }
            listed += 1;
        }
        for error in &page.unreadable {
            writeln!(stderr, "error: {error}")?;
        }
        unreadable += page.unreadable.len();
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    if args.json {
        writeln!(stdout, "{}]", if listed == 0 { "" } else { "\n" })?;
    } else if listed == 0 && unreadable == 0 {
        writeln!(stderr, "no accounts")?;
    }
    Ok(if unreadable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) async fn show(global: &GlobalArgs, args: ShowArgs) -> Result<ExitCode> {
    let id = AccountId::new(args.id.as_str())?;
    let store = context::store(global).await?;
    let account = store.get(&id).await?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &masked_json(&account))?;
        writeln!(stdout)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(stdout, "id:           {}", account.id())?;
    writeln!(stdout, "integration:  {}", account.integration())?;
    match account.status_reason() {
        Some(reason) => writeln!(stdout, "status:       {} ({reason})", account.status())?,
        None => writeln!(stdout, "status:       {}", account.status())?,
    }
    writeln!(stdout, "created:      {}", timestamp(account.created_at()))?;
    writeln!(stdout, "updated:      {}", timestamp(account.updated_at()))?;
    let health = account.health();
    if let Some(at) = health.last_refresh_at {
        writeln!(stdout, "refreshed:    {}", timestamp(at))?;
    }
    if let Some(error) = &health.last_error {
        writeln!(stdout, "last error:   {} at {}", error.code, timestamp(error.at))?;
    }
    if health.consecutive_failures > 0 {
        writeln!(stdout, "failing:      {} times in a row", health.consecutive_failures)?;
    }
    let mut parameters: Vec<(&str, String)> = account
        .parameters()
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .chain(
            account
                .secret_parameters()
                .names()
                .map(|name| (name, format!("{MASK} (secret)"))),
        )
        .collect();
    parameters.sort();
    writeln!(
        stdout,
        "parameters:{}",
        if parameters.is_empty() { "   none" } else { "" }
    )?;
    for (name, value) in parameters {
        writeln!(stdout, "  {name} = {value}")?;
    }
    let credentials = account.credentials();
    writeln!(
        stdout,
        "credentials:{}",
        if credentials.is_empty() { "  none" } else { "" }
    )?;
    for name in credentials.names() {
        writeln!(stdout, "  {name} = {MASK}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Worded as the store words it, so `show` and `remove` say the same.
fn no_such_account(id: &AccountId) -> anyhow::Error {
    integrations::Error::new(integrations::ErrorKind::NotFound, "no such account")
        .with_context("account", id)
        .into()
}

pub(crate) async fn remove(global: &GlobalArgs, args: RemoveArgs) -> Result<ExitCode> {
    let id = AccountId::new(args.id.as_str())?;
    // Beside a running gateway, the gateway removes it: its own refreshes
    // keep off the account while its tokens are revoked.
    if let Some((gateway, _)) = context::lending_gateway(global).await? {
        let (existed, revoked, failures) = gateway.remove_account(&id).await.context("cannot remove the account")?;
        if !existed {
            return Err(no_such_account(&id));
        }
        for failure in &failures {
            eprintln!("warning: {failure}");
        }
        let mut stdout = std::io::stdout().lock();
        if !revoked.is_empty() {
            writeln!(stdout, "revoked {}", revoked.join(", "))?;
        }
        writeln!(stdout, "removed account {id}")?;
        return Ok(ExitCode::SUCCESS);
    }
    // Without definitions nothing can be revoked, but the account can go.
    if global.definitions.is_empty() {
        let store = context::store(global).await?;
        if !store.remove(&id).await.context("cannot remove the account")? {
            return Err(no_such_account(&id));
        }
    } else {
        let integrations = context::integrations(global).await?;
        let removal = integrations
            .remove_account(&id)
            .await
            .context("cannot remove the account")?;
        if !removal.existed {
            return Err(no_such_account(&id));
        }
        for failure in &removal.revoke_failures {
            eprintln!("warning: {failure}");
        }
        if !removal.revoked.is_empty() {
            writeln!(std::io::stdout().lock(), "revoked {}", removal.revoked.join(", "))?;
        }
    }
    writeln!(std::io::stdout().lock(), "removed account {id}")?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn refresh(global: &GlobalArgs, args: IdArgs) -> Result<ExitCode> {
    let id = AccountId::new(args.id.as_str())?;
    let integrations = context::integrations(global).await?;
    let account = integrations
        .refresh(&id)
        .await
        .context("cannot refresh the account's tokens")?;
    let expires = account
        .credentials()
        .get("access_token_expires_at")
        .map(|at| {
            format!(
                ", the access token expires at {}",
                secrecy::ExposeSecret::expose_secret(at)
            )
        })
        .unwrap_or_default();
    writeln!(std::io::stdout().lock(), "refreshed account {id}{expires}")?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn revoke(global: &GlobalArgs, args: IdArgs) -> Result<ExitCode> {
    let id = AccountId::new(args.id.as_str())?;
    // Beside a running gateway, the gateway revokes, with its copy of the
    // account.
    let (revoked, failures, endpoint) = match context::lending_gateway(global).await? {
        Some((gateway, _)) => gateway
            .disconnect_account(&id)
            .await
            .context("cannot revoke the account's tokens")?,
        None => {
            let revocation = context::integrations(global)
                .await?
                .disconnect(&id)
                .await
                .context("cannot revoke the account's tokens")?;
            (
                revocation.revoked.iter().map(|token| (*token).to_owned()).collect(),
                revocation.failures,
                revocation.endpoint,
            )
        }
    };
    let mut stdout = std::io::stdout().lock();
    if !endpoint {
        writeln!(
            stdout,
            "the integration has no revoke endpoint; the tokens were forgotten"
        )?;
    } else if !revoked.is_empty() {
        writeln!(stdout, "revoked {}", revoked.join(", "))?;
    }
    writeln!(stdout, "account {id} is disconnected")?;
    for failure in &failures {
        eprintln!("error: {failure}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The account as JSON: secret values are replaced by a mask, names kept.
fn masked_json(account: &ConnectedAccount) -> Value {
    let mut parameters = serde_json::Map::new();
    for (name, value) in account.parameters() {
        parameters.insert(name.clone(), Value::String(value.clone()));
    }
    for name in account.secret_parameters().names() {
        parameters.insert(name.to_owned(), Value::String(MASK.to_owned()));
    }
    let credentials: serde_json::Map<String, Value> = account
        .credentials()
        .names()
        .map(|name| (name.to_owned(), Value::String(MASK.to_owned())))
        .collect();
    json!({
        "id": account.id().as_str(),
        "integration": account.integration(),
        "status": account.status().as_str(),
        "status_reason": account.status_reason(),
        "parameters": parameters,
        "credentials": credentials,
        "last_refresh_at": account.health().last_refresh_at.map(timestamp),
        "last_error": account.health().last_error.as_ref().map(|error| json!({
            "code": error.code,
            "at": timestamp(error.at),
        })),
        "consecutive_failures": account.health().consecutive_failures,
        "created_at": timestamp(account.created_at()),
        "updated_at": timestamp(account.updated_at()),
        "revision": account.revision(),
    })
}

fn timestamp(time: OffsetDateTime) -> String {
    time.format(&Rfc3339)
        .unwrap_or_else(|_| time.unix_timestamp().to_string())
}
