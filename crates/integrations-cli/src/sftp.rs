//! `integrations sftp ACCOUNT ls|stat|get|put|mv|rm|mkdir|rmdir`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use integrations::AccountId;
use integrations::sftp::{DirEntry, FileInfo, FileKind, SftpClient, WriteOptions};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::cli::{GlobalArgs, SftpArgs, SftpCommand};
use crate::context;

pub(crate) async fn run(global: &GlobalArgs, args: SftpArgs) -> Result<ExitCode> {
    let id = AccountId::new(args.account.as_str())?;
    let integrations = context::integrations(global).await?;
    let sftp = integrations.sftp(&id).await?;
    let outcome = command(&sftp, args.command).await;
    sftp.close().await;
    outcome.map(|()| ExitCode::SUCCESS)
}

async fn command(sftp: &SftpClient, command: SftpCommand) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match command {
        SftpCommand::Ls { path, json } => {
            let entries = sftp.list(&path).await?;
            if json {
                serde_json::to_writer_pretty(&mut stdout, &entries)?;
                writeln!(stdout)?;
            } else {
                for DirEntry { name, info } in &entries {
                    writeln!(stdout, "{}", long_line(info, name))?;
                }
            }
        }
        SftpCommand::Stat { path, json } => {
            let info = sftp.stat(&path).await?;
            if json {
                serde_json::to_writer_pretty(&mut stdout, &info)?;
                writeln!(stdout)?;
            } else {
                writeln!(stdout, "{}", long_line(&info, &path))?;
            }
        }
        SftpCommand::Get { remote, local } => {
            drop(stdout);
            get(sftp, &remote, &local).await?;
        }
        SftpCommand::Put {
            local,
            remote,
            in_place,
        } => {
            put(sftp, &local, &remote, WriteOptions { atomic: !in_place }).await?;
        }
        SftpCommand::Mv { from, to } => sftp.rename(&from, &to).await?,
        SftpCommand::Rm { path } => sftp.remove(&path).await?,
        SftpCommand::Mkdir { parents, path } => sftp.mkdir(&path, parents).await?,
        SftpCommand::Rmdir { path } => sftp.rmdir(&path).await?,
    }
    Ok(())
}

async fn get(sftp: &SftpClient, remote: &str, local: &Path) -> Result<()> {
    if local == Path::new("-") {
        let mut stdout = tokio::io::stdout();
        sftp.read_to(remote, &mut stdout).await?;
        return Ok(());
    }
    let size = sftp.stat(remote).await?.size;
    let file = tokio::fs::File::create(local)
        .await
        .with_context(|| format!("cannot create {}", local.display()))?;
    let progress = progress_bar(size);
    let mut out = progress.wrap_async_write(file);
    let outcome = sftp.read_to(remote, &mut out).await;
    progress.finish_and_clear();
    if outcome.is_err() {
        // Leave no partial file behind under the name asked for.
        let _ = tokio::fs::remove_file(local).await;
    }
    outcome?;
    Ok(())
}

async fn put(sftp: &SftpClient, local: &Path, remote: &str, options: WriteOptions) -> Result<()> {
    if local == Path::new("-") {
        sftp.write_from(remote, &mut tokio::io::stdin(), options).await?;
        return Ok(());
    }
    let file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("cannot open {}", local.display()))?;
    let size = file.metadata().await.ok().map(|metadata| metadata.len());
    let progress = progress_bar(size);
    let mut input = progress.wrap_async_read(file);
    let outcome = sftp.write_from(remote, &mut input, options).await;
    progress.finish_and_clear();
    outcome?;
    Ok(())
}

/// A bar on standard error when it is a terminal; hidden otherwise.
fn progress_bar(size: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match size {
        Some(size) => ProgressBar::new(size).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// `drwxr-xr-x  4096 2026-11-27 12:00 name`, as `ls -l` without owners.
fn long_line(info: &FileInfo, name: &str) -> String {
    let kind = match info.kind {
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        FileKind::Other => '?',
    };
    let mode = info.permissions.map_or_else(
        || "?????????".to_owned(),
        |mode| {
            (0..9)
                .map(|bit| {
                    if mode & (0o400 >> bit) == 0 {
                        '-'
                    } else {
                        ['r', 'w', 'x'][bit % 3]
                    }
                })
                .collect()
        },
    );
    let size = info.size.map_or_else(|| "-".to_owned(), |size| size.to_string());
    let modified = info
        .modified
        .and_then(|seconds| OffsetDateTime::from_unix_timestamp(i64::from(seconds)).ok())
        .and_then(|time| {
            time.format(format_description!("[year]-[month]-[day] [hour]:[minute]"))
                .ok()
        })
        .unwrap_or_else(|| "-".to_owned());
    format!("{kind}{mode} {size:>12} {modified} {name}")
}
