//! `integrations webhooks`: the endpoints account events are sent to.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use integrations::time::format_description::well_known::Rfc3339;
use integrations::webhooks::StoredWebhook;
use integrations_gateway::webhooks::Webhooks;
use integrations_gateway::webhooks::routes::event_types;

use crate::cli::{GlobalArgs, WebhooksCommand};
use crate::context;

pub(crate) async fn run(global: &GlobalArgs, command: WebhooksCommand) -> Result<ExitCode> {
    let webhooks = Webhooks::new(context::store(global).await?);
    let mut stdout = std::io::stdout().lock();
    match command {
        WebhooksCommand::Add { url, events } => {
            let events = event_types(&events).context("--events")?;
            let (webhook, secret) = webhooks.add(&url, events).await?;
            writeln!(stdout, "{}", secret.expose())?;
            eprintln!(
                "added webhook {} for {}; its signing secret (above) is shown once, keep it now",
                webhook.id,
                describe_events(&webhook)
            );
        }
        WebhooksCommand::List => {
            for webhook in webhooks.list().await? {
                let state = match &webhook.disabled {
                    Some(disabled) => format!("disabled: {}", disabled.reason),
                    None => "enabled".to_owned(),
                };
                writeln!(
                    stdout,
                    "{}  {}  {}  ({state})",
                    webhook.id,
                    webhook.url,
                    describe_events(&webhook)
                )?;
            }
        }
        WebhooksCommand::Remove { id } => {
            webhooks.remove(&id).await?;
            writeln!(stdout, "removed webhook {id}")?;
        }
        WebhooksCommand::RotateSecret { id, overlap } => {
            let (webhook, secret) = webhooks.rotate_secret(&id, overlap).await?;
            writeln!(stdout, "{}", secret.expose())?;
            let until = webhook
                .previous_secret_expires_at
                .and_then(|at| at.format(&Rfc3339).ok())
                .unwrap_or_default();
            eprintln!("new signing secret for {id} (above; shown once); the old one also signs until {until}");
        }
        WebhooksCommand::Enable { id } => {
            webhooks.enable(&id).await?;
            writeln!(stdout, "enabled webhook {id}")?;
        }
        WebhooksCommand::Deliveries { id, limit } => {
            for delivery in webhooks.deliveries(&id, None, usize::from(limit)).await? {
                let created = delivery.created_at.format(&Rfc3339).unwrap_or_default();
                writeln!(
                    stdout,
                    "{}  {created}  {}  {}  {}",
                    delivery.id,
                    delivery.event.kind,
                    delivery.event.data.account,
                    delivery.state.as_str()
                )?;
                for attempt in &delivery.attempts {
                    let at = attempt.at.format(&Rfc3339).unwrap_or_default();
                    let outcome = match (attempt.status, &attempt.error) {
                        (Some(status), _) => status.to_string(),
                        (None, Some(error)) => error.clone(),
                        (None, None) => "-".to_owned(),
                    };
                    writeln!(stdout, "    {at}  {outcome}  {} ms", attempt.duration_ms)?;
                }
            }
        }
        WebhooksCommand::Retry { id, delivery } => {
            webhooks.retry(&id, &delivery).await?;
            writeln!(stdout, "delivery {delivery} is due again; a running gateway sends it")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_events(webhook: &StoredWebhook) -> String {
    if webhook.events.is_empty() {
        "every event".to_owned()
    } else {
        webhook
            .events
            .iter()
            .map(|kind| kind.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}
