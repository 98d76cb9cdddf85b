//! `integrations encryption status|rotate|rewrap|retire`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use integrations::crypto::{ENCRYPTION_KEYS_ENV, KeyId};
use integrations::storage::Storage;
use integrations::{AccountQuery, AccountStore, EncryptionKey};

use crate::cli::{EncryptionCommand, GlobalArgs};
use crate::context::{self, KeySource};

/// Accounts read per step: no step holds every account.
const PAGE: usize = 500;

pub(crate) async fn run(global: &GlobalArgs, command: EncryptionCommand) -> Result<ExitCode> {
    let source = context::key_source(global)?;
    match command {
        EncryptionCommand::Status => status(global, &source).await,
        EncryptionCommand::Rotate => rotate(&source),
        EncryptionCommand::Rewrap => rewrap(global, &source).await,
        EncryptionCommand::Retire { key_id } => retire(global, &source, &key_id).await,
    }
}

/// How many records each key seals.
#[derive(Default)]
struct Usage {
    accounts: BTreeMap<KeyId, usize>,
    pending: BTreeMap<KeyId, usize>,
    webhooks: BTreeMap<KeyId, usize>,
}

/// Counts, for each key, the accounts, pending authorizations and webhook
/// endpoints with at least one value it sealed.
async fn usage(storage: &dyn Storage) -> Result<Usage> {
    let mut usage = Usage::default();
    let mut query = AccountQuery::first(PAGE);
    loop {
        let page = storage
            .accounts_page(&query)
            .await
            .context("cannot read the accounts")?;
        for record in page.accounts {
            let record = record?;
            let keys: std::collections::BTreeSet<KeyId> =
                record.sealed_values().filter_map(|sealed| sealed.key_id()).collect();
            for key in keys {
                *usage.accounts.entry(key).or_default() += 1;
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    for pending in storage.pending_authorizations().await? {
        let keys: std::collections::BTreeSet<KeyId> =
            pending.secrets.values().filter_map(|sealed| sealed.key_id()).collect();
        for key in keys {
            *usage.pending.entry(key).or_default() += 1;
        }
    }
    if let Some(webhooks) = storage.webhook_storage() {
        for webhook in webhooks.webhooks().await.context("cannot read the webhooks")? {
            let keys: std::collections::BTreeSet<KeyId> = std::iter::once(&webhook.secret)
                .chain(webhook.previous_secret.as_ref())
                .filter_map(|sealed| sealed.key_id())
                .collect();
            for key in keys {
                *usage.webhooks.entry(key).or_default() += 1;
            }
        }
    }
    Ok(usage)
}

async fn status(global: &GlobalArgs, source: &KeySource) -> Result<ExitCode> {
    let keyring = source.keyring()?;
    let usage = usage(context::storage(global).await?.as_ref()).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{:<8}  {:<12}  {:>8}  {:>7}  {:>8}",
        "KEY", "ROLE", "ACCOUNTS", "PENDING", "WEBHOOKS"
    )?;
    let mut ids: Vec<KeyId> = keyring.keys().iter().map(EncryptionKey::id).collect();
    let missing: Vec<KeyId> = usage
        .accounts
        .keys()
        .chain(usage.pending.keys())
        .chain(usage.webhooks.keys())
        .filter(|id| keyring.get(**id).is_none())
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    ids.extend(&missing);
    for id in ids {
        let role = if id == keyring.active().id() {
            "active"
        } else if keyring.get(id).is_some() {
            "decrypt-only"
        } else {
            "missing"
        };
        writeln!(
            stdout,
            "{id}  {role:<12}  {:>8}  {:>7}  {:>8}",
            usage.accounts.get(&id).copied().unwrap_or(0),
            usage.pending.get(&id).copied().unwrap_or(0),
            usage.webhooks.get(&id).copied().unwrap_or(0)
        )?;
    }
    if !missing.is_empty() {
        eprintln!("error: records are sealed with keys the keyring does not hold: they cannot be opened");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate(source: &KeySource) -> Result<ExitCode> {
    let mut keyring = source.keyring()?;
    let previous = keyring.active().id();
    let key = EncryptionKey::generate();
    let Some(file) = source.keyring_file() else {
        // The environment cannot be written: say what to set, in the order
        // that keeps every gateway able to open what the others seal.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}:{}", key.id(), key.to_base64().as_str())?;
        eprintln!(
            "a new key {id} (above; shown once). The keys come from the environment, so on every gateway:\n  \
             1. add `{id}:KEY` to {ENCRYPTION_KEYS_ENV}, and restart them one by one;\n  \
             2. then set INTEGRATIONS_ENCRYPTION_KEY to it and move {previous} into {ENCRYPTION_KEYS_ENV}, \
             and restart them one by one;\n  \
             3. then run `integrations encryption rewrap`.\n\
             With a keyring file (INTEGRATIONS_ENCRYPTION_KEYRING), gateways follow a rotation without a restart.",
            id = key.id()
        );
        return Ok(ExitCode::SUCCESS);
    };
    keyring.rotate_to(key.clone());
    keyring.save(&file)?;
    println!("{}", key.id());
    eprintln!(
        "rotated to key {} in {}; key {previous} now only opens. Running gateways follow within a second; \
         next: `integrations encryption rewrap`",
        key.id(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn rewrap(global: &GlobalArgs, source: &KeySource) -> Result<ExitCode> {
    let store = AccountStore::new(context::storage(global).await?, source.cipher()?);
    let active = store.cipher().key_id();
    let (mut checked, mut rewrapped) = (0usize, 0usize);
    let mut query = AccountQuery::first(PAGE);
    loop {
        let page = store
            .storage()
            .accounts_page(&query)
            .await
            .context("cannot read the accounts")?;
        for record in page.accounts {
            let id = record?.id;
            if store
                .rewrap(&id)
                .await
                .with_context(|| format!("cannot re-seal account `{id}`"))?
            {
                rewrapped += 1;
            }
            checked += 1;
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    println!("re-sealed {rewrapped} of {checked} accounts with key {active}");
    if store.storage().webhook_storage().is_some() {
        let webhooks = integrations_gateway::webhooks::Webhooks::new(store.clone())
            .rewrap()
            .await
            .context("cannot re-seal the webhook endpoints' secrets")?;
        println!("re-sealed {webhooks} webhook endpoints with key {active}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn retire(global: &GlobalArgs, source: &KeySource, key_id: &str) -> Result<ExitCode> {
    let id: KeyId = key_id.parse()?;
    let mut keyring = source.keyring()?;
    if keyring.get(id).is_none() {
        bail!("key {id} is not in the keyring");
    }
    if keyring.active().id() == id {
        bail!("key {id} is the active key: rotate to a new key first");
    }
    let usage = usage(context::storage(global).await?.as_ref()).await?;
    let accounts = usage.accounts.get(&id).copied().unwrap_or(0);
    let pending = usage.pending.get(&id).copied().unwrap_or(0);
    let webhooks = usage.webhooks.get(&id).copied().unwrap_or(0);
    if accounts > 0 || pending > 0 || webhooks > 0 {
        bail!(
            "key {id} still seals {accounts} accounts, {pending} pending authorizations and {webhooks} webhook \
             endpoints: run `integrations encryption rewrap` (pending authorizations expire within 10 minutes)"
        );
    }
    let Some(file) = source.keyring_file() else {
        eprintln!("no record uses key {id}: remove it from {ENCRYPTION_KEYS_ENV} on every gateway");
        return Ok(ExitCode::SUCCESS);
    };
    keyring.remove(id)?;
    keyring.save(&file)?;
    if let KeySource::DataDir(dir) = source {
        // The key file of before the first rotation holds a retired key.
        let key_file = dir.join(integrations::crypto::KEY_FILE_NAME);
        if EncryptionKey::load_or_create(&key_file).is_ok_and(|key| key.id() == id) {
            std::fs::remove_file(&key_file).with_context(|| format!("cannot remove {}", key_file.display()))?;
        }
    }
    eprintln!("retired key {id}");
    Ok(ExitCode::SUCCESS)
}
