//! `integrations validate` and `integrations schema`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};
use integrations::Definitions;
use integrations::definition::json_schema;

use crate::cli::{GlobalArgs, ValidateArgs};

pub(crate) fn run(global: &GlobalArgs, args: ValidateArgs) -> Result<ExitCode> {
    let files = if args.files.is_empty() {
        &global.definitions
    } else {
        &args.files
    };
    if files.is_empty() {
        bail!("nothing to validate: name files or directories, or pass --definitions");
    }
    match Definitions::load(files) {
        Ok(definitions) => {
            let keys: Vec<&str> = definitions.iter().map(|integration| integration.key.as_str()).collect();
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "ok: {} integration{} ({})",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" },
                keys.join(", ")
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            let mut stderr = std::io::stderr().lock();
            for error in errors.errors() {
                writeln!(stderr, "{error}")?;
            }
            let count = errors.errors().len();
            writeln!(stderr, "{count} problem{} found", if count == 1 { "" } else { "s" })?;
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(crate) fn schema() -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &json_schema())?;
    writeln!(stdout)?;
    Ok(ExitCode::SUCCESS)
}
