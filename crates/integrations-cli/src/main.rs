//! The `integrations` command.

mod accounts;
mod cli;
mod connect;
mod context;
mod encryption;
mod request;
mod secrets;
mod serve;
mod sftp;
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
    let cli = Cli::parse();
    let global = &cli.global;
    // The gateway runs its own runtime per worker thread; every other async
    // command is one short task on a single-threaded one.
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(global, args),
        Command::Keys(command) => block_on(serve::keys(global, command)),
        Command::Webhooks(command) => block_on(webhooks::run(global, command)),
        Command::Migrate => block_on(serve::migrate(global)),
        Command::Storage(StorageCommand::Copy(args)) => block_on(storage::copy(global, args)),
        Command::Encryption(command) => block_on(encryption::run(global, command)),
        Command::Validate(args) => validate::run(global, args),
        Command::Schema => validate::schema(),
        Command::Accounts(AccountsCommand::Add(args)) => block_on(accounts::add(global, *args)),
        Command::Accounts(AccountsCommand::SetCredentials(args)) => block_on(accounts::set_credentials(global, args)),
        Command::Accounts(AccountsCommand::List(args)) => block_on(accounts::list(global, args)),
        Command::Accounts(AccountsCommand::Show(args)) => block_on(accounts::show(global, args)),
        Command::Accounts(AccountsCommand::Remove(args)) => block_on(accounts::remove(global, args)),
        Command::Accounts(AccountsCommand::Refresh(args)) => block_on(accounts::refresh(global, args)),
        Command::Accounts(AccountsCommand::Revoke(args)) => block_on(accounts::revoke(global, args)),
        Command::Connect(args) => block_on(connect::run(global, args)),
        Command::Request(args) => block_on(request::run(global, args)),
        Command::Sftp(args) => block_on(sftp::run(global, args)),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => report(&error),
    }
}

pub(crate) fn block_on<T>(command: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::Error::new(error).context("cannot start the async runtime"))?
        .block_on(command)
}

/// Prints the error on one line, then each cause on its own.
fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}
