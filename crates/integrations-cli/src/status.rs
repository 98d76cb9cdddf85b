//! `integrations status`: whether a gateway runs on the data directory.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{GlobalArgs, StatusArgs};
use crate::context;

/// The exit code when no gateway runs (as `systemctl status` has it).
const NOT_RUNNING: u8 = 3;

pub(crate) async fn run(global: &GlobalArgs, args: StatusArgs) -> Result<ExitCode> {
    let dir = context::data_dir(global)?;
    let running = context::running_gateway(global).await?.map(|(_, status)| status);
    let mut stdout = std::io::stdout().lock();
    let Some(status) = running else {
        if args.json {
            writeln!(stdout, "{}", serde_json::json!({ "running": false }))?;
        } else {
            writeln!(stdout, "no gateway runs on {}", dir.display())?;
        }
        return Ok(ExitCode::from(NOT_RUNNING));
    };
    if args.json {
        let mut shown = serde_json::to_value(&status)?;
        shown["running"] = serde_json::Value::Bool(true);
        writeln!(stdout, "{shown}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(stdout, "a gateway runs on {} (pid {})", dir.display(), status.pid)?;
    writeln!(stdout, "address:  {}", status.address)?;
    writeln!(stdout, "version:  {}", status.version)?;
    let through = if status.store_shared {
        " (commands use it through the gateway)"
    } else {
        ""
    };
    writeln!(stdout, "store:    {}{through}", status.store)?;
    writeln!(
        stdout,
        "started:  {}",
        status
            .started_at
            .format(&integrations::time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    )?;
    Ok(ExitCode::SUCCESS)
}
