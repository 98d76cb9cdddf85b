//! `integrations request`.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use integrations::AccountId;
use integrations::http::Method;

use crate::cli::{GlobalArgs, RequestArgs};
use crate::context;

/// curl's exit code for `--fail`, so scripts can treat both alike.
const HTTP_ERROR_EXIT: u8 = 22;

pub(crate) async fn run(global: &GlobalArgs, args: RequestArgs) -> Result<ExitCode> {
    let id = AccountId::new(args.account.as_str())?;
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("`{}` is not an HTTP method", args.method))?;
    let body = match args.data.as_deref() {
        None => None,
        Some("@-") => {
            let mut body = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut body)
                .context("cannot read standard input")?;
            Some(body)
        }
        Some(data) => match data.strip_prefix('@') {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read {path}"))?),
            None => Some(data.as_bytes().to_vec()),
        },
    };

    let integrations = context::integrations(global).await?;
    let account = integrations.client(&id).await?;
    let mut request = account.request(method, &args.url);
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("a header must be given as `Name: value`");
        };
        request = request.header(name.trim(), value.trim());
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let mut response = request.send().await?;

    let status = response.status();
    let mut stdout = std::io::stdout().lock();
    if args.include {
        writeln!(stdout, "{:?} {status}", response.version())?;
        for (name, value) in response.headers() {
            stdout.write_all(name.as_str().as_bytes())?;
            stdout.write_all(b": ")?;
            stdout.write_all(value.as_bytes())?;
            stdout.write_all(b"\n")?;
        }
        writeln!(stdout)?;
    }
    while let Some(chunk) = response.chunk().await.context("the response broke off")? {
        stdout.write_all(&chunk)?;
    }
    stdout.flush()?;
    if args.fail && (status.is_client_error() || status.is_server_error()) {
        eprintln!("error: the server answered {status}");
        return Ok(ExitCode::from(HTTP_ERROR_EXIT));
    }
    Ok(ExitCode::SUCCESS)
}
