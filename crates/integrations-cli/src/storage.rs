//! `integrations storage copy`: from the store in use to PostgreSQL.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use integrations::storage::{KeyStorage, Storage};
use integrations::webhooks::WebhookStorage;
use integrations::{AccountQuery, ErrorKind};

use crate::cli::{CopyArgs, GlobalArgs};
use crate::context;

/// Accounts read and written per step: no step holds every account.
const PAGE: usize = 500;

pub(crate) async fn copy(global: &GlobalArgs, args: CopyArgs) -> Result<ExitCode> {
    let source = context::storage(global).await?;
    let source_keys = context::key_storage(global).await?;
    let target = context::connect(global, &args.to).await?;
    let place = format!("{target:?}");

    let holds_records = !target.accounts_page(&AccountQuery::first(1)).await?.accounts.is_empty()
        || !target.keys().await?.is_empty()
        || !target.pending_authorizations().await?.is_empty();
    if holds_records && !args.allow_non_empty {
        bail!("the target database already holds records ({place}): pass --allow-non-empty to add to them");
    }

    let mut stderr = std::io::stderr().lock();
    let mut accounts = 0usize;
    let mut query = AccountQuery::first(PAGE);
    loop {
        let page = source.accounts_page(&query).await.context("cannot read the accounts")?;
        for record in page.accounts {
            // Copied sealed, as stored: an unreadable record stops the copy
            // rather than being left behind unnoticed.
            let record = record.context("an account cannot be read, so it cannot be copied")?;
            match target.insert_account(&record, &[]).await {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                    if target.account(&record.id).await?.as_ref() != Some(&record) {
                        bail!(
                            "account `{}` exists in the target database with other contents",
                            record.id
                        );
                    }
                }
                Err(error) => return Err(error.into()),
            }
            accounts += 1;
        }
        writeln!(stderr, "copied {accounts} accounts")?;
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let keys = source_keys.keys().await.context("cannot read the API keys")?;
    let existing = target.keys().await?;
    for key in &keys {
        match existing.iter().find(|stored| stored.id == key.id) {
            Some(stored) if stored == key => {}
            Some(_) => bail!("API key `{}` exists in the target database with other contents", key.id),
            None => target.insert_key(key).await?,
        }
    }
    let pending = source
        .pending_authorizations()
        .await
        .context("cannot read the pending authorizations")?;
    for authorization in &pending {
        match target.insert_pending_authorization(authorization).await {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error.into()),
        }
    }

    let webhooks = match source.webhook_storage() {
        Some(webhooks) => webhooks.webhooks().await.context("cannot read the webhook endpoints")?,
        None => Vec::new(),
    };
    let existing = WebhookStorage::webhooks(&target).await?;
    for webhook in &webhooks {
        match existing.iter().find(|stored| stored.id == webhook.id) {
            Some(stored) if stored == webhook => {}
            Some(_) => bail!(
                "webhook `{}` exists in the target database with other contents",
                webhook.id
            ),
            None => target.insert_webhook(webhook).await?,
        }
    }
    let backlog = source.outbox_backlog().await.context("cannot read the outbox")?;
    if backlog.events > 0 {
        writeln!(
            stderr,
            "{} events wait in the outbox and are not copied: run the gateway on the old store until they are \
             delivered (integrations_outbox_events is 0) to have them sent",
            backlog.events
        )?;
    }

    verify(source.as_ref(), source_keys.as_ref(), &target, accounts).await?;
    let copied_webhooks = WebhookStorage::webhooks(&target).await?;
    if let Some(missing) = webhooks.iter().find(|webhook| !copied_webhooks.contains(webhook)) {
        bail!("webhook `{}` is missing from the copy", missing.id);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "copied and checked {accounts} accounts, {} API keys, {} pending authorizations and {} webhook endpoints \
         to {place}",
        keys.len(),
        pending.len(),
        webhooks.len()
    )?;
    writeln!(
        stderr,
        "the secrets stay sealed: run the gateways on the database with the same encryption key \
         (INTEGRATIONS_ENCRYPTION_KEY; the data directory's is in encryption.key)"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Reads every record of the source again and finds it equal in the target.
async fn verify(
    source: &dyn Storage,
    source_keys: &dyn KeyStorage,
    target: &(impl Storage + KeyStorage),
    copied: usize,
) -> Result<()> {
    let mut checked = 0usize;
    let mut query = AccountQuery::first(PAGE);
    loop {
        let page = source.accounts_page(&query).await?;
        for record in page.accounts {
            let record = record?;
            if target.account(&record.id).await?.as_ref() != Some(&record) {
                bail!("the copy of account `{}` differs from the original", record.id);
            }
            checked += 1;
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    if checked != copied {
        bail!("{copied} accounts were copied but {checked} are in the source now: was a gateway running?");
    }
    let stored = target.keys().await?;
    for key in source_keys.keys().await? {
        if !stored.contains(&key) {
            bail!("API key `{}` is missing from the copy", key.id);
        }
    }
    let pending = target.pending_authorizations().await?;
    for authorization in source.pending_authorizations().await? {
        if !pending.contains(&authorization) {
            bail!("a pending authorization is missing from the copy");
        }
    }
    Ok(())
}
