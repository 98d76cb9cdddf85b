//! The `integrations` command.

mod accounts;
mod catalog;
mod cli;
mod connect;
mod context;
mod encryption;
mod request;
mod secrets;
mod serve;
mod sftp;
mod status;
mod storage;
mod validate;
mod webhooks;

use std::process::ExitCode;

use clap::Parser;

// The gateway allocates per request (headers, bodies, futures); mimalloc
// keeps that cheap under concurrency where glibc's malloc contends.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{AccountsCommand, Cli, Command, StorageCommand};

fn main() -> ExitCode {
    integrations::register_methods();
    let cli = Cli::try_parse().unwrap_or_else(|error| exit_on_usage_error(&error));
    let global = &cli.global;
    if !matches!(cli.command, Command::Serve(_)) {
        log_when_asked();
    }
    // The gateway runs its own runtime per worker thread; every other async
    // command is one short task on a single-threaded one.
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(global, args),
        Command::Status(args) => block_on(status::run(global, args)),
        Command::Keys(command) => block_on(serve::keys(global, command)),
        Command::Webhooks(command) => block_on(webhooks::run(global, command)),
        Command::Migrate => block_on(serve::migrate(global)),
        Command::Storage(StorageCommand::Copy(args)) => block_on(storage::copy(global, args)),
        Command::Encryption(command) => block_on(encryption::run(global, command)),
        Command::Validate(args) => validate::run(global, args),
        Command::Catalog(command) => catalog::run(command),
        Command::Schema => validate::schema(),
        Command::Accounts(AccountsCommand::Add(args)) => block_on(accounts::add(global, *args)),
        Command::Accounts(AccountsCommand::SetCredentials(args)) => block_on(accounts::set_credentials(global, args)),
        Command::Accounts(AccountsCommand::List(args)) => block_on(accounts::list(global, args)),
        Command::Accounts(AccountsCommand::Show(args)) => block_on(accounts::show(global, args)),
        Command::Accounts(AccountsCommand::Remove(args)) => block_on(accounts::remove(global, args)),
        Command::Accounts(AccountsCommand::Refresh(args)) => block_on(accounts::refresh(global, args)),
        Command::Accounts(AccountsCommand::Revoke(args)) => block_on(accounts::revoke(global, args)),
        Command::Connect(args) => block_on(connect::run(global, args)),
        Command::ConnectLink(args) => block_on(connect::link(global, args)),
        Command::Request(args) => block_on(request::run(global, args)),
        Command::Sftp(args) => block_on(sftp::run(global, args)),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => report(&error),
    }
}

/// Prints a usage error and exits. Clap's usage line after a missing
/// argument lists every option that has a value, environment variables'
/// included, so `--definitions <PATH>` would read as required: global
/// options are dropped from that line.
fn exit_on_usage_error(error: &clap::Error) -> ! {
    if error.kind() != clap::error::ErrorKind::MissingRequiredArgument {
        error.exit()
    }
    let command = <Cli as clap::CommandFactory>::command();
    let globals: Vec<String> = command
        .get_arguments()
        .filter(|arg| arg.is_global_set())
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let value = arg.get_value_names()?.first()?.to_string();
            Some(format!(" --{long} <{value}>"))
        })
        .collect();
    let text = error.render().to_string();
    let mut cleaned = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with("Usage: ") {
            cleaned.push_str(
                &globals
                    .iter()
                    .fold(line.to_owned(), |line, global| line.replace(global, "")),
            );
        } else {
            cleaned.push_str(line);
        }
    }
    eprint!("{cleaned}");
    std::process::exit(error.exit_code())
}

/// Logs to standard error when `INTEGRATIONS_LOG` holds a filter (`serve`
/// sets up its own logging, on by default).
fn log_when_asked() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("INTEGRATIONS_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
    }
}

pub(crate) fn block_on<T>(command: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::Error::new(error).context("cannot start the async runtime"))?
        .block_on(command)
}

/// Prints the error, then each cause on its own line; a cause of several
/// lines (every problem of the definitions, say) is listed under it.
fn report(error: &anyhow::Error) -> ExitCode {
    eprint!("{}", report_text(error));
    ExitCode::FAILURE
}

fn report_text(error: &anyhow::Error) -> String {
    let mut text = format!("error: {error}\n");
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if cause.contains('\n') {
            text.push_str("  caused by:\n");
            for line in cause.lines().filter(|line| !line.trim().is_empty()) {
                text.push_str(&format!("    {}\n", line.trim_start()));
            }
        } else {
            text.push_str(&format!("  caused by: {cause}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_of_several_lines_are_listed_indented() {
        let problems = anyhow::anyhow!("a.toml: first problem\nb.toml: second problem\n")
            .context("the definitions have 2 problems");
        assert_eq!(
            report_text(&problems),
            "error: the definitions have 2 problems\n  caused by:\n    a.toml: first problem\n    b.toml: second problem\n"
        );
        let single = anyhow::anyhow!("missing").context("cannot add the account");
        assert_eq!(
            report_text(&single),
            "error: cannot add the account\n  caused by: missing\n"
        );
    }
}
