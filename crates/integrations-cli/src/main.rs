//! The `integrations` command.

mod accounts;
mod cli;
mod connect;
mod context;
mod request;
mod secrets;
mod serve;
mod sftp;
mod validate;

use std::process::ExitCode;

use clap::Parser;

// The gateway allocates per request (headers, bodies, futures); mimalloc
// keeps that cheap under concurrency where glibc's malloc contends.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{AccountsCommand, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The gateway runs its own runtime per worker thread; every other
    // command is one short task.
    if let Command::Serve(args) = cli.command {
        return serve::run(&cli.global, args).unwrap_or_else(|error| report(&error));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report(&anyhow::Error::new(error).context("cannot start the async runtime")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Validate(args) => validate::run(&cli.global, args),
            Command::Schema => validate::schema(),
            Command::Accounts(AccountsCommand::Add(args)) => accounts::add(&cli.global, *args).await,
            Command::Accounts(AccountsCommand::List(args)) => accounts::list(&cli.global, args).await,
            Command::Accounts(AccountsCommand::Show(args)) => accounts::show(&cli.global, args).await,
            Command::Accounts(AccountsCommand::Remove(args)) => accounts::remove(&cli.global, args).await,
            Command::Accounts(AccountsCommand::Refresh(args)) => accounts::refresh(&cli.global, args).await,
            Command::Accounts(AccountsCommand::Revoke(args)) => accounts::revoke(&cli.global, args).await,
            Command::Connect(args) => connect::run(&cli.global, args).await,
            Command::Serve(_) => unreachable!("served above"),
            Command::Keys(command) => serve::keys(&cli.global, command),
            Command::Request(args) => request::run(&cli.global, args).await,
            Command::Sftp(args) => sftp::run(&cli.global, args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => report(&error),
    }
}

/// Prints the error on one line, then each cause on its own.
fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}
