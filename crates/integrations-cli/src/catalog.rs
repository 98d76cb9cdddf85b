//! `integrations catalog`: the built-in entries, offline.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};
use integrations::catalog;

use crate::cli::CatalogCommand;

pub(crate) fn run(command: CatalogCommand) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match command {
        CatalogCommand::List { search, json } => {
            let entries: Vec<_> = catalog::entries()
                .iter()
                .filter(|entry| search.as_deref().is_none_or(|word| entry.matches(word)))
                .collect();
            if json {
                let list: Vec<_> = entries
                    .iter()
                    .map(|entry| {
                        serde_json::json!({ "key": entry.key, "name": entry.name(), "auth_type": entry.auth_type() })
                    })
                    .collect();
                writeln!(stdout, "{}", serde_json::Value::Array(list))?;
            } else if entries.is_empty() {
                writeln!(stdout, "no entry matches; `integrations catalog list` shows them all")?;
            } else {
                let width = entries.iter().map(|entry| entry.key.len()).max().unwrap_or(0);
                for entry in entries {
                    writeln!(
                        stdout,
                        "{:width$}  {:12}  {}",
                        entry.key,
                        entry.auth_type(),
                        entry.name()
                    )?;
                }
            }
        }
        CatalogCommand::Show { key } => {
            let Some(entry) = catalog::entry(&key) else {
                let keys: Vec<&str> = catalog::entries().iter().map(|entry| entry.key).collect();
                bail!("{}", integrations::definition::unknown_entry(&key, &keys));
            };
            writeln!(stdout, "{}", entry.setup.trim_end())?;
            writeln!(stdout, "\n## Definition\n\n```toml\n{}```", entry.definition)?;
            writeln!(
                stdout,
                "\nExtend it in a definition file:\n\n```toml\n[[integration]]\nextends = \"{key}\"\n```"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
