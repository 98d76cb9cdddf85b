//! `integrations connect`: the authorization code flow from a terminal.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Html;
use integrations::AccountId;
use integrations::auth::oauth2::{CALLBACK_PATH, Callback, RedirectUri, STATE_LIFETIME};
use tokio::sync::mpsc;
use url::{Host, Url};

use crate::cli::{ConnectArgs, ConnectLinkArgs, GlobalArgs};
use crate::context;

pub(crate) async fn run(global: &GlobalArgs, args: ConnectArgs) -> Result<ExitCode> {
    let id = AccountId::new(args.account.as_str())?;
    let redirect_uri = RedirectUri::from_public_base_url(&args.public_url)?;
    let address = loopback_address(redirect_uri.url())?;
    let integrations = context::integrations(global).await?;

    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for the redirect"))?;
    let start = integrations.start_authorization(&id, &redirect_uri).await?;

    let expected_state = start
        .url
        .query_pairs()
        .find_map(|(name, value)| (name == "state").then(|| value.into_owned()))
        .context("the authorization URL has no state")?;
    let (sender, mut receiver) = mpsc::channel::<String>(1);
    let app = axum::Router::new()
        .route(CALLBACK_PATH, axum::routing::get(callback))
        .with_state(Arc::new(Listener { sender, expected_state }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "Open this URL to authorize account {id}:\n\n  {}\n", start.url)?;
    writeln!(stdout, "Waiting for the redirect to {redirect_uri} ...")?;
    stdout.flush()?;
    drop(stdout);
    if !args.no_browser && std::io::stdout().is_terminal() {
        open_browser(start.url.as_str());
    }

    let query = tokio::time::timeout(STATE_LIFETIME, receiver.recv())
        .await
        .context("no redirect came before the authorization expired")?
        .context("the redirect listener stopped")?;
    server.abort();
    let account = integrations
        .complete_authorization(&Callback::from_query(&query))
        .await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "connected account {} (status {})",
        account.id(),
        account.status()
    )?;
    if let Some(reason) = account.status_reason() {
        writeln!(stdout, "warning: {reason}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What the redirect listener waits for.
struct Listener {
    sender: mpsc::Sender<String>,
    /// The `state` of the authorization this command started.
    expected_state: String,
}

/// Takes the redirect of the authorization in progress. Any other request
/// to the listener (a stale tab, another site's page posting to loopback)
/// is answered and ignored, and the command goes on waiting.
async fn callback(
    State(listener): State<Arc<Listener>>,
    RawQuery(query): RawQuery,
) -> (StatusCode, Html<&'static str>) {
    let query = query.unwrap_or_default();
    if Callback::from_query(&query).state.as_deref() != Some(listener.expected_state.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            Html(
                "<!doctype html><title>integrations</title><p>This redirect is not for the authorization in progress.</p>",
            ),
        );
    }
    // Only the first redirect counts; a second is answered the same way.
    let _ = listener.sender.try_send(query);
    (
        StatusCode::OK,
        Html("<!doctype html><title>integrations</title><p>Authorization received. You can close this window.</p>"),
    )
}

/// The loopback socket address the redirect URI points at.
fn loopback_address(url: &Url) -> Result<SocketAddr> {
    let port = url.port_or_known_default().unwrap_or(80);
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain("localhost")) => IpAddr::from([127, 0, 0, 1]),
        _ => bail!("`connect` receives the redirect on loopback: pass a --public-url such as http://127.0.0.1:8400"),
    };
    if !ip.is_loopback() {
        bail!("`connect` receives the redirect on loopback: pass a --public-url such as http://127.0.0.1:8400");
    }
    Ok(SocketAddr::new(ip, port))
}

/// Best effort: the URL is printed anyway.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// `integrations connect-link`: a connect session, printed as its link.
pub(crate) async fn link(global: &GlobalArgs, args: ConnectLinkArgs) -> Result<ExitCode> {
    use integrations_gateway::connect::{SessionRequest, create_session};

    let Some(public_url) = &args.public_url else {
        bail!(
            "the link needs the gateway's public URL: pass --public-url or set INTEGRATIONS_PUBLIC_URL \
             (as for `serve`)"
        );
    };
    let redirect_uri = RedirectUri::from_public_base_url(public_url).context("--public-url")?;
    let end_user = args
        .end_user
        .map(|id| integrations::EndUser::new(id, args.end_user_name))
        .transpose()?;
    let integrations = context::integrations(global).await?;
    let created = create_session(
        &integrations,
        &redirect_uri,
        SessionRequest {
            integrations: args.integration,
            account: args.account,
            end_user,
            ttl: Some(args.ttl),
            ..SessionRequest::default()
        },
    )
    .await?;
    let expires_at = created
        .session
        .expires_at
        .format(&integrations::time::format_description::well_known::Rfc3339)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "connect_url": created.connect_url,
            "account": created.session.account.as_str(),
            "integrations": created.session.integrations,
            "reconnect": created.session.reconnect,
            "expires_at": expires_at,
        });
        writeln!(stdout, "{json}")?;
    } else {
        writeln!(stdout, "{}", created.connect_url)?;
        let what = if created.session.reconnect {
            "reconnects"
        } else {
            "connects"
        };
        eprintln!(
            "The link {what} account {} once, until {expires_at}. Anyone with it can do so: send it to the customer alone.",
            created.session.account
        );
    }
    Ok(ExitCode::SUCCESS)
}
