//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Custom integrations: validate definitions and manage connected accounts.
#[derive(Debug, Parser)]
#[command(name = "integrations", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Definition files or directories of them (.toml, .yaml, .yml, .json).
    #[arg(long, global = true, value_name = "PATH", env = "INTEGRATIONS_DEFINITIONS")]
    pub(crate) definitions: Vec<PathBuf>,
    /// Where accounts and the encryption key are kept [default: the user's
    /// data directory, e.g. ~/.local/share/integrations].
    #[arg(long, global = true, value_name = "DIR", env = "INTEGRATIONS_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Keep accounts and API keys in PostgreSQL (postgres://user:password@host:port/database),
    /// shared by every gateway given the same URL, instead of the data directory. The
    /// encryption key then comes from INTEGRATIONS_ENCRYPTION_KEY.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "INTEGRATIONS_DATABASE_URL",
        hide_env_values = true,
        value_parser = DatabaseUrl::parse
    )]
    pub(crate) database_url: Option<DatabaseUrl>,
    /// Connections to PostgreSQL kept at most, per process.
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "INTEGRATIONS_DATABASE_POOL_SIZE",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub(crate) database_pool_size: u32,
    /// Seconds a connection to PostgreSQL may take before the call fails.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        env = "INTEGRATIONS_DATABASE_CONNECT_TIMEOUT",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    pub(crate) database_connect_timeout: u64,
}

const ENCRYPTION_HELP: &str = "\
The keyring is INTEGRATIONS_ENCRYPTION_KEYRING (a file), or
INTEGRATIONS_ENCRYPTION_KEY with the decrypt-only keys of
INTEGRATIONS_ENCRYPTION_KEYS (ID:KEY pairs), or the data directory's.

A rotation:
  integrations encryption rotate        # a new active key; the old one opens only
  integrations encryption rewrap        # every record sealed again with it
  integrations encryption status        # how many records each key seals
  integrations encryption retire OLD_ID # once no record uses it";

#[derive(Debug, Subcommand)]
pub(crate) enum EncryptionCommand {
    /// Show each key of the keyring and how many records it seals.
    Status,
    /// Add a new active key to the keyring; the current one stays, to open.
    Rotate,
    /// Seal every account again with the active key (compare-and-swap: safe
    /// while gateways run on a shared database).
    Rewrap,
    /// Remove a decrypt-only key, once no record uses it.
    Retire {
        /// The key's id, as `status` shows it.
        key_id: String,
    },
}

const CATALOG_HELP: &str = "\
A definition starts from an entry and sets what is its own:

  [[integration]]
  extends = \"stripe\"
  name = \"Stripe (billing)\"

Its tables merge field by field (an `auth` table of its own keeps the
entry's other auth fields); the result is validated like any definition.
Works offline: the catalog is built into the binary.";

#[derive(Debug, Subcommand)]
pub(crate) enum CatalogCommand {
    /// List the entries: key, name, auth method.
    List {
        /// Only entries whose key, name or setup page holds this word.
        #[arg(long, value_name = "WORD")]
        search: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an entry's definition and its setup page.
    Show {
        /// The entry's key, as `list` shows it.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StorageCommand {
    /// Copy every account, API key, pending authorization and webhook
    /// endpoint of the store in use (the data directory, or --database-url)
    /// to a PostgreSQL database, still sealed, then check the copy. Stop the
    /// gateway first.
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The database to copy to (postgres://user:password@host:port/database).
    #[arg(long, value_name = "URL", value_parser = DatabaseUrl::parse)]
    pub(crate) to: DatabaseUrl,
    /// Copy into a database that already holds records (records with the
    /// same id must then be equal).
    #[arg(long)]
    pub(crate) allow_non_empty: bool,
}

/// A PostgreSQL URL; it may hold a password, so it is never shown.
#[derive(Clone)]
pub(crate) struct DatabaseUrl(secrecy::SecretString);

impl DatabaseUrl {
    /// Takes any text: clap's own refusal would quote the value, password
    /// and all, so it is checked when used ([`DatabaseUrl::expose`]).
    fn parse(text: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self(secrecy::SecretString::from(text.to_owned())))
    }

    /// The URL, once it is known to be PostgreSQL's.
    pub(crate) fn expose(&self) -> anyhow::Result<&str> {
        let text = secrecy::ExposeSecret::expose_secret(&self.0);
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            anyhow::bail!(
                "--database-url (INTEGRATIONS_DATABASE_URL) must start with postgres://: PostgreSQL is the database \
                 supported"
            );
        }
        Ok(text)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check definition files; list every problem and exit 1 if there is one.
    Validate(ValidateArgs),
    /// The built-in catalog of ready definitions for popular APIs, which a
    /// definition extends with `extends = "KEY"`.
    #[command(subcommand, after_long_help = CATALOG_HELP)]
    Catalog(CatalogCommand),
    /// Print the JSON Schema of the definition format.
    Schema,
    /// Manage connected accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Connect an OAuth 2.0 account: open the authorization URL, receive the
    /// redirect on loopback, exchange the code and store the tokens.
    #[command(after_long_help = CONNECT_HELP)]
    Connect(ConnectArgs),
    /// Print a link for a customer to connect (or reconnect) their own
    /// account on the gateway's connect page, to send by email.
    #[command(name = "connect-link", after_long_help = CONNECT_LINK_HELP)]
    ConnectLink(ConnectLinkArgs),
    /// Run the gateway: a REST API over the connected accounts.
    Serve(ServeArgs),
    /// Whether a gateway runs on the data directory: its address, version
    /// and store (exit code 3 when none runs).
    Status(StatusArgs),
    /// Manage the gateway's API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the endpoints account events are sent to, signed.
    #[command(subcommand, after_long_help = WEBHOOKS_HELP)]
    Webhooks(WebhooksCommand),
    /// Bring the PostgreSQL schema of --database-url up to date and exit
    /// (gateways also do it when they start).
    Migrate,
    /// Move between stores.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Rotate the key that seals credentials, while gateways keep serving.
    #[command(subcommand, after_long_help = ENCRYPTION_HELP)]
    Encryption(EncryptionCommand),
    /// Make an HTTP request through an account, with its credential and
    /// request parameters applied, and print the response body.
    #[command(after_long_help = REQUEST_HELP)]
    Request(RequestArgs),
    /// Work with files through an SFTP account.
    #[command(after_long_help = SFTP_HELP)]
    Sftp(SftpArgs),
}

const SFTP_HELP: &str = "\
Paths on the server are absolute, or relative to the login directory. `get`
and `put` show a progress bar when standard error is a terminal; `-` stands
for standard output (get) or standard input (put). `put` writes to a
temporary name beside the file and renames it into place when complete,
unless --in-place.

Examples:
  integrations sftp partner1 ls outbox
  integrations sftp partner1 put report.csv outbox/2026/report.csv
  integrations sftp partner1 get inbox/orders.csv - | head
  integrations sftp partner1 mkdir -p archive/2026/11";

#[derive(Debug, Args)]
pub(crate) struct SftpArgs {
    /// The account's id.
    pub(crate) account: String,
    #[command(subcommand)]
    pub(crate) command: SftpCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SftpCommand {
    /// List a directory: kind and permissions, size, modification time, name.
    Ls {
        /// The directory.
        #[arg(default_value = ".")]
        path: String,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Show what a path is.
    Stat {
        /// The path.
        path: String,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Download a file.
    Get {
        /// The file on the server.
        remote: String,
        /// Where to write it; `-` for standard output.
        local: std::path::PathBuf,
    },
    /// Upload a file.
    Put {
        /// The file to send; `-` for standard input.
        local: std::path::PathBuf,
        /// Where to write it on the server.
        remote: String,
        /// Write straight to the final name instead of a temporary one.
        #[arg(long)]
        in_place: bool,
    },
    /// Rename or move a file or directory (an existing file at TO is
    /// replaced where the server supports it, as OpenSSH does).
    Mv {
        /// The current path.
        from: String,
        /// The new path.
        to: String,
    },
    /// Remove a file.
    Rm {
        /// The file.
        path: String,
    },
    /// Create a directory.
    Mkdir {
        /// Create missing parent directories too; an existing directory is no error.
        #[arg(short, long)]
        parents: bool,
        /// The directory.
        path: String,
    },
    /// Remove an empty directory.
    Rmdir {
        /// The directory.
        path: String,
    },
}

const CONNECT_HELP: &str = "\
The redirect URI is the public URL plus /internal/sessions/v1/auth/callback,
e.g. http://127.0.0.1:8400/internal/sessions/v1/auth/callback by default:
register it with the provider. `connect` listens on that loopback address
until the provider redirects the browser there (ten minutes at most).";

const REQUEST_HELP: &str = "\
The URL is absolute, or relative to the integration's base_url. Credentials
only go to the hosts the integration names; any other host is refused before
anything is sent.

Exit codes: 0 when a response came back (whatever its status, unless
--fail), 1 on an error before or while sending, 22 with --fail when the status
is 400 or more.

Examples:
  integrations request customer42 GET /forecast -H 'Accept: application/json'
  integrations request erp1 POST orders -d @order.json -H 'Content-Type: application/json' --fail";

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print it as JSON (`{"running": false}` when none runs).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "INTEGRATIONS_LISTEN", default_value = "127.0.0.1:8400", value_parser = parse_listen)]
    pub(crate) listen: std::net::SocketAddr,
    /// The gateway's public base URL, on which OAuth 2.0 redirect URIs are
    /// built [default: http://LISTEN].
    #[arg(long, env = "INTEGRATIONS_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// Worker threads, each with its own runtime and listening socket
    /// [default: one per core].
    #[arg(long, env = "INTEGRATIONS_WORKERS")]
    pub(crate) workers: Option<std::num::NonZeroUsize>,
    /// Log lines as `text` or `json`.
    #[arg(long, env = "INTEGRATIONS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
    /// The most connections each worker serves at once; more wait in the
    /// listening socket's backlog until one closes.
    #[arg(long, env = "INTEGRATIONS_MAX_CONNECTIONS", default_value = "4096")]
    pub(crate) max_connections: std::num::NonZeroUsize,
    /// Seconds that requests in flight get to finish after SIGTERM or
    /// Ctrl-C; what is left then is closed.
    #[arg(long, env = "INTEGRATIONS_SHUTDOWN_GRACE", default_value = "30")]
    pub(crate) shutdown_grace: u64,
    /// Accounts kept compiled (credentials opened, token cached); the least
    /// recently used go first, so memory stays bounded.
    #[arg(long, env = "INTEGRATIONS_COMPILED_ACCOUNTS", default_value = "10000")]
    pub(crate) compiled_accounts: std::num::NonZeroUsize,
    /// The waits between attempts to deliver a webhook, comma-separated
    /// (`ms`, `s`, `m`, `h`); once spent, the delivery fails.
    #[arg(
        long,
        env = "INTEGRATIONS_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h",
        value_parser = parse_schedule
    )]
    pub(crate) webhook_retry_schedule: RetrySchedule,
    /// Do not deliver webhooks from this gateway (others sharing the
    /// database still do); events wait in the store.
    #[arg(long, env = "INTEGRATIONS_NO_WEBHOOK_DELIVERY")]
    pub(crate) no_webhook_delivery: bool,
    /// Refresh OAuth 2.0 accounts not refreshed for this long, so that
    /// providers do not revoke unused refresh tokens; also how often health
    /// checks run.
    #[arg(long, env = "INTEGRATIONS_IDLE_REFRESH", default_value = "24h", value_parser = parse_wait)]
    pub(crate) idle_refresh: std::time::Duration,
    /// Refresh tokens that expire within this (or within half their
    /// lifetime, when shorter).
    #[arg(long, env = "INTEGRATIONS_REFRESH_AHEAD", default_value = "10m", value_parser = parse_wait)]
    pub(crate) refresh_ahead: std::time::Duration,
    /// Failed refreshes in a row after which an account is marked
    /// needs_reauth and no longer refreshed.
    #[arg(long, env = "INTEGRATIONS_MAX_CONSECUTIVE_FAILURES", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) max_consecutive_failures: u32,
    /// How often the scheduler looks for due accounts.
    #[arg(long, env = "INTEGRATIONS_SCHEDULER_INTERVAL", default_value = "60s", value_parser = parse_wait)]
    pub(crate) scheduler_interval: std::time::Duration,
    /// Run no background refreshes or health checks on this gateway (others
    /// sharing the database still do).
    #[arg(long, env = "INTEGRATIONS_NO_SCHEDULER")]
    pub(crate) no_scheduler: bool,
    /// Also serve `/metrics` on this address, without an API key (keep it
    /// private: a port only the monitoring reaches). On the main address,
    /// `/metrics` needs a key.
    #[arg(long, env = "INTEGRATIONS_METRICS_LISTEN", value_parser = parse_listen)]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// Record no metrics (`/metrics` answers 404).
    #[arg(long, env = "INTEGRATIONS_NO_METRICS", conflicts_with = "metrics_listen")]
    pub(crate) no_metrics: bool,
    /// Serve `/v1/openapi.json` only with an API key (it is public by
    /// default: it holds the routes, nothing secret).
    #[arg(long, env = "INTEGRATIONS_OPENAPI_REQUIRES_KEY")]
    pub(crate) openapi_requires_key: bool,
    /// Write no access-log line per request.
    #[arg(long, env = "INTEGRATIONS_NO_ACCESS_LOG")]
    pub(crate) no_access_log: bool,
}

const WEBHOOKS_HELP: &str = "\
`integrations serve` delivers the events: each is POSTed as JSON with the
Standard Webhooks headers `webhook-id`, `webhook-timestamp` and
`webhook-signature`, retried after 5s, 5m, 30m, 2h, 5h, 10h and 10h. An
endpoint that answers 410 Gone is disabled until `enable`.

The event types: account.created, account.connected,
account.credentials_updated, account.refresh_failed, account.needs_reauth,
account.recovered, account.removed.

Examples:
  integrations webhooks add https://example.com/hooks --events account.needs_reauth,account.recovered
  integrations webhooks deliveries wh_0123456789abcdef
  integrations webhooks rotate-secret wh_0123456789abcdef --overlap 48h";

#[derive(Debug, Subcommand)]
pub(crate) enum WebhooksCommand {
    /// Add an endpoint and print its signing secret (shown once).
    Add {
        /// `https://…` (or `http://…`), without a username or password.
        url: String,
        /// The event types to send, comma-separated; every type when left out.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// List the endpoints.
    List,
    /// Remove an endpoint and its deliveries.
    Remove {
        /// The endpoint's id, as `list` shows it.
        id: String,
    },
    /// Give an endpoint a new signing secret and print it; deliveries are
    /// signed with the old one too for the overlap.
    RotateSecret {
        /// The endpoint's id.
        id: String,
        /// How long the old secret still signs, such as `24h` (at most a week).
        #[arg(long, default_value = "24h", value_parser = parse_overlap)]
        overlap: std::time::Duration,
    },
    /// Send to a disabled endpoint again.
    Enable {
        /// The endpoint's id.
        id: String,
    },
    /// List an endpoint's deliveries, newest first, with their attempts.
    Deliveries {
        /// The endpoint's id.
        id: String,
        /// At most this many.
        #[arg(long, default_value = "20", value_parser = clap::value_parser!(u16).range(1..=100))]
        limit: u16,
    },
    /// Send a delivery again now.
    Retry {
        /// The endpoint's id.
        id: String,
        /// The delivery's id, as `deliveries` shows it.
        delivery: String,
    },
}

/// A wait such as `24h`, at most a week.
fn parse_overlap(text: &str) -> Result<std::time::Duration, String> {
    let [overlap] = integrations_gateway::webhooks::parse_schedule(text)?[..] else {
        return Err("one wait, such as `24h`".to_owned());
    };
    if overlap > std::time::Duration::from_secs(7 * 24 * 3600) {
        return Err("at most a week (`168h`)".to_owned());
    }
    Ok(overlap)
}

/// One wait, such as `10m`.
fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    match integrations_gateway::webhooks::parse_duration(text)? {
        wait if !wait.is_zero() => Ok(wait),
        _ => Err("one wait above zero, such as `10m` or `24h`".to_owned()),
    }
}

/// `HOST:PORT`, the host a name (`localhost`) or an address; a name is
/// resolved now, to its first IPv4 address when it has one.
fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let form = "an address is HOST:PORT, such as 127.0.0.1:8400, [::1]:8400 or localhost:8400";
    if text
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!("`{text}`: {form}"));
    }
    let addresses: Vec<_> = text
        .to_socket_addrs()
        .map_err(|error| format!("`{text}`: cannot resolve the host ({error}); {form}"))?
        .collect();
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("`{text}`: the host has no address"))
}

/// The waits between a webhook delivery's attempts.
#[derive(Debug, Clone)]
pub(crate) struct RetrySchedule(pub(crate) Vec<std::time::Duration>);

/// A retry schedule such as `5s,5m,30m`.
fn parse_schedule(text: &str) -> Result<RetrySchedule, String> {
    let schedule = integrations_gateway::webhooks::parse_schedule(text)?;
    if schedule.is_empty() || schedule.len() > 50 {
        return Err("from 1 to 50 waits".to_owned());
    }
    Ok(RetrySchedule(schedule))
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key and print it (it is shown once, and stored hashed).
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
    },
    /// List API keys (ids and names; the keys themselves are not kept).
    List,
    /// Revoke an API key.
    Revoke {
        /// The key's id, as `keys list` shows it.
        id: String,
    },
}

const CONNECT_LINK_HELP: &str = "\
The link opens a connect session: single use, valid for --ttl, allowing
exactly the creation of ACCOUNT (or of a new account of --integration), or
its reconnection when it exists (its id, parameters and history kept). The
token is in the link's fragment; only its hash is stored. The gateway's
public URL comes from --public-url or INTEGRATIONS_PUBLIC_URL.

Examples:
  integrations connect-link --integration zendesk --end-user cust-42 --ttl 7d
  integrations connect-link acme-zendesk --end-user-name 'Ada at Acme'
  integrations connect-link acme-zendesk --json";

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(true).args(["account", "integration"]))]
pub(crate) struct ConnectLinkArgs {
    /// The account to create, or to reconnect when it exists.
    pub(crate) account: Option<String>,
    /// The integration to connect; repeat it to let the customer choose.
    #[arg(long = "integration", value_name = "KEY")]
    pub(crate) integration: Vec<String>,
    /// The product's id for the customer, kept on the account.
    #[arg(long, value_name = "ID")]
    pub(crate) end_user: Option<String>,
    /// A name to greet the customer with, kept on the account.
    #[arg(long, value_name = "NAME", requires = "end_user")]
    pub(crate) end_user_name: Option<String>,
    /// How long the link works: `30m`, `24h`, `7d`; 1 minute to 7 days.
    #[arg(long, default_value = "30m", value_parser = parse_ttl)]
    pub(crate) ttl: std::time::Duration,
    /// The gateway's public base URL, which the link points to.
    #[arg(long, env = "INTEGRATIONS_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// Print the link, account and expiry as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A lifetime such as `30m`, `24h` or `7d`.
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Some(days) = text.strip_suffix('d') {
        return days
            .parse::<u64>()
            .ok()
            .and_then(|days| days.checked_mul(24 * 3600))
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| format!("`{text}` is not a lifetime such as `30m`, `24h` or `7d`"));
    }
    integrations_gateway::webhooks::parse_duration(text)
}

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The account's id.
    pub(crate) account: String,
    /// The public base URL the provider redirects to; `connect` listens on it,
    /// so it must be a loopback address.
    #[arg(long, env = "INTEGRATIONS_PUBLIC_URL", default_value = "http://127.0.0.1:8400")]
    pub(crate) public_url: String,
    /// Print the URL without trying to open a browser.
    #[arg(long)]
    pub(crate) no_browser: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    /// The account's id.
    pub(crate) account: String,
    /// The HTTP method: GET, POST, PUT, PATCH, DELETE...
    pub(crate) method: String,
    /// Absolute, or relative to the integration's base_url.
    pub(crate) url: String,
    /// A header, as `Name: value`.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub(crate) headers: Vec<String>,
    /// The body: text, `@FILE` for a file's content, `@-` for standard input.
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    pub(crate) data: Option<String>,
    /// Print the status line and headers before the body.
    #[arg(short = 'i', long)]
    pub(crate) include: bool,
    /// Exit with code 22 when the status is 400 or more.
    #[arg(short = 'f', long)]
    pub(crate) fail: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Files or directories to check [default: the --definitions paths].
    #[arg(value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AccountsCommand {
    /// Create a connected account.
    #[command(after_long_help = ADD_HELP)]
    Add(Box<AddArgs>),
    /// List connected accounts.
    List(ListArgs),
    /// Show one account; secrets are masked.
    Show(ShowArgs),
    /// Delete an account and its credentials, revoking OAuth 2.0 tokens
    /// first where the integration has a revoke endpoint.
    Remove(RemoveArgs),
    /// Replace an account's credentials (a new API token, password or key),
    /// checked as for a new account. OAuth 2.0 accounts: `connect` instead.
    SetCredentials(SetCredentialsArgs),
    /// Get new OAuth 2.0 tokens for an account now.
    Refresh(IdArgs),
    /// Revoke an OAuth 2.0 account's tokens (refresh token first) and forget
    /// them; the account goes back to pending.
    Revoke(IdArgs),
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The account's id.
    pub(crate) id: String,
}

const ADD_HELP: &str = "\
Secret values need not sit in shell history: give them with --credential-env
(an environment variable), --credential-file (a file's whole content) or
--credential-stdin (typed at a prompt without echo, or read from standard
input, one line per value: parameters first, then credentials, each in the
order given; a single value takes all of standard input). The --param-*
forms work the same way for parameter values.

Examples:
  integrations accounts add weather --id customer42 --credential-env token=WEATHER_TOKEN
  integrations accounts add legacyerp --id erp1 --param host=erp.example.com \\
      --param company=ACME --credential username=api --credential-stdin password";

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The integration's key.
    pub(crate) integration: String,
    /// The new account's id: letters, digits, `-`, `_` and `.`.
    #[arg(long)]
    pub(crate) id: String,
    /// A parameter value.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// A parameter value read from an environment variable.
    #[arg(long = "param-env", value_name = "NAME=VAR")]
    pub(crate) param_envs: Vec<String>,
    /// A parameter value read from a file.
    #[arg(long = "param-file", value_name = "NAME=PATH")]
    pub(crate) param_files: Vec<String>,
    /// A parameter value read from standard input.
    #[arg(long = "param-stdin", value_name = "NAME")]
    pub(crate) param_stdins: Vec<String>,
    /// A credential.
    #[arg(long = "credential", value_name = "NAME=VALUE")]
    pub(crate) credentials: Vec<String>,
    /// A credential read from an environment variable.
    #[arg(long = "credential-env", value_name = "NAME=VAR")]
    pub(crate) credential_envs: Vec<String>,
    /// A credential read from a file (a private key, say).
    #[arg(long = "credential-file", value_name = "NAME=PATH")]
    pub(crate) credential_files: Vec<String>,
    /// A credential read from standard input.
    #[arg(long = "credential-stdin", value_name = "NAME")]
    pub(crate) credential_stdins: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SetCredentialsArgs {
    /// The account's id.
    pub(crate) id: String,
    /// A credential.
    #[arg(long = "credential", value_name = "NAME=VALUE")]
    pub(crate) credentials: Vec<String>,
    /// A credential read from an environment variable.
    #[arg(long = "credential-env", value_name = "NAME=VAR")]
    pub(crate) credential_envs: Vec<String>,
    /// A credential read from a file (a private key, say).
    #[arg(long = "credential-file", value_name = "NAME=PATH")]
    pub(crate) credential_files: Vec<String>,
    /// A credential read from standard input.
    #[arg(long = "credential-stdin", value_name = "NAME")]
    pub(crate) credential_stdins: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Only accounts of this integration.
    #[arg(long, value_name = "KEY")]
    pub(crate) integration: Option<String>,
    /// Only accounts with this status.
    #[arg(long, value_parser = ["pending", "connected", "needs_reauth"])]
    pub(crate) status: Option<String>,
    /// Only accounts whose credentials failed to renew at least N times in
    /// a row (1: every failing account).
    #[arg(long, value_name = "N")]
    pub(crate) min_consecutive_failures: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The account's id.
    pub(crate) id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The account's id.
    pub(crate) id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_host_names() {
        assert_eq!(
            parse_listen("localhost:8400").unwrap(),
            "127.0.0.1:8400".parse::<std::net::SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:0").unwrap(),
            "[::1]:0".parse::<std::net::SocketAddr>().unwrap()
        );
        for bad in ["localhost", "8400", ":8400", "localhost:http", "localhost:99999"] {
            let refused = parse_listen(bad).unwrap_err();
            assert!(refused.contains(&format!("`{bad}`")), "{refused}");
            assert!(refused.contains("HOST:PORT"), "{refused}");
        }
    }
}
