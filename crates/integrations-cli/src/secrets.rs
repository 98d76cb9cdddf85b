//! Values for `accounts add`: from the command line, the environment, a
//! file or standard input.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use integrations::Secrets;
use secrecy::SecretString;

/// Where the values of one kind (parameters or credentials) come from.
pub(crate) struct Sources<'a> {
    /// `parameter` or `credential`, for messages.
    pub(crate) kind: &'static str,
    /// The flags' stem: `param` or `credential` (`--param`, `--param-env`…).
    pub(crate) flag: &'static str,
    pub(crate) literal: &'a [String],
    pub(crate) env: &'a [String],
    pub(crate) file: &'a [String],
    pub(crate) stdin: &'a [String],
}

/// Standard input, shared by every `--*-stdin` value.
pub(crate) struct Stdin {
    /// How many values will be read from it in all.
    wanted: usize,
    /// Lines not yet handed out, when stdin is not a terminal.
    lines: Option<std::vec::IntoIter<String>>,
}

impl Stdin {
    pub(crate) fn new(wanted: usize) -> Self {
        Self { wanted, lines: None }
    }

    fn read(&mut self, kind: &str, name: &str) -> Result<SecretString> {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            let value = rpassword::prompt_password(format!("{kind} {name}: "))
                .with_context(|| format!("cannot read {kind} `{name}` from the terminal"))?;
            return Ok(SecretString::from(value));
        }
        if self.lines.is_none() {
            let mut text = String::new();
            stdin
                .lock()
                .read_to_string(&mut text)
                .context("cannot read standard input")?;
            let values: Vec<String> = if self.wanted == 1 {
                // One value takes all of stdin (a private key, say), less the
                // final line break.
                let trimmed = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t));
                vec![trimmed.unwrap_or(&text).to_owned()]
            } else {
                text.lines().map(str::to_owned).collect()
            };
            self.lines = Some(values.into_iter());
        }
        match self.lines.as_mut().and_then(Iterator::next) {
            Some(line) => Ok(SecretString::from(line)),
            None => bail!("standard input ended before {kind} `{name}` was read"),
        }
    }
}

/// Gathers the values of one kind, refusing a name given twice.
pub(crate) fn collect(sources: &Sources<'_>, stdin: &mut Stdin) -> Result<Secrets> {
    let kind = sources.kind;
    let mut values = Secrets::new();
    let put = |values: &mut Secrets, name: &str, value: SecretString| -> Result<()> {
        if name.is_empty() {
            bail!("empty {kind} name");
        }
        if values.contains(name) {
            bail!("{kind} `{name}` is given more than once");
        }
        values.insert(name, value);
        Ok(())
    };
    let flag = sources.flag;
    for (index, pair) in sources.literal.iter().enumerate() {
        let (name, value) = split(
            &which(&format!("--{flag}"), index, sources.literal.len()),
            pair,
            "NAME=VALUE",
        )?;
        put(&mut values, name, SecretString::from(value.to_owned()))?;
    }
    for (index, pair) in sources.env.iter().enumerate() {
        let (name, variable) = split(
            &which(&format!("--{flag}-env"), index, sources.env.len()),
            pair,
            "NAME=VAR",
        )?;
        let value = std::env::var(variable)
            .with_context(|| format!("{kind} `{name}`: environment variable {variable} is not set or not UTF-8"))?;
        put(&mut values, name, SecretString::from(value))?;
    }
    for (index, pair) in sources.file.iter().enumerate() {
        let (name, path) = split(
            &which(&format!("--{flag}-file"), index, sources.file.len()),
            pair,
            "NAME=PATH",
        )?;
        let value =
            std::fs::read_to_string(Path::new(path)).with_context(|| format!("{kind} `{name}`: cannot read {path}"))?;
        put(&mut values, name, SecretString::from(value))?;
    }
    for name in sources.stdin {
        let value = stdin.read(kind, name)?;
        put(&mut values, name, value)?;
    }
    Ok(values)
}

/// Splits a value at its `=`; a value without one is named by `which`
/// flag gave it.
fn split<'a>(which: &str, pair: &'a str, form: &str) -> Result<(&'a str, &'a str)> {
    match pair.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name, value)),
        // Never echo the argument: it may be a secret typed without its name.
        _ => bail!("{which} is not {form} (the value is not repeated here: it may be a secret)"),
    }
}

/// `` `--param` `` when it was given once, else `` the 2nd `--param` ``.
fn which(flag: &str, index: usize, count: usize) -> String {
    if count == 1 {
        return format!("`{flag}`");
    }
    let position = index + 1;
    let suffix = match (position % 10, position % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("the {position}{suffix} `{flag}`")
}
