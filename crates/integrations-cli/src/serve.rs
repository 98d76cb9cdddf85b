//! `integrations serve` and `integrations keys`.

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use integrations::auth::oauth2::RedirectUri;
use integrations::http::HttpClient;
use integrations::secrecy::ExposeSecret;
use integrations::time::format_description::well_known::Rfc3339;
use integrations_gateway::AppState;
use integrations_gateway::keys::ApiKeys;
use integrations_gateway::local::{GatewayStatus, LocalService, LocalSocket};
use integrations_gateway::server::{ConnectionSettings, Listeners, serve_on_workers};
use integrations_gateway::webhooks::{Deliverer, DeliverySettings, Webhooks};
use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, KeysCommand, ServeArgs};
use crate::context;
use integrations::SchedulerSettings;

pub(crate) fn run(global: &GlobalArgs, args: ServeArgs) -> Result<ExitCode> {
    let filter = EnvFilter::try_from_env("INTEGRATIONS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }

    let (integrations, keys) = crate::block_on(async {
        if global.database_url.is_none()
            && let Some((_, running)) = context::running_gateway(global).await?
        {
            anyhow::bail!(
                "a gateway already runs on this data directory (pid {}, {}): stop it first, or give this one \
                 another --data-dir",
                running.pid,
                running.address
            );
        }
        let integrations = context::serving_integrations(global, HttpClient::with_pool_per_thread()?)
            .await?
            .with_compiled_accounts(args.compiled_accounts);
        let keys = ApiKeys::new(context::key_storage(global).await?).await?;
        Ok((integrations, keys))
    })?;
    let place = match &global.database_url {
        Some(_) => format!("{:?}", integrations.store().storage()),
        None => context::data_dir(global)?.display().to_string(),
    };
    if keys.is_empty() {
        tracing::warn!("no API key exists yet: create one with `integrations keys create --name NAME`");
    }
    let workers = args
        .workers
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN);
    let listeners =
        Listeners::bind(args.listen, workers).with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listeners.local_addr();
    tracing::info!(
        %address,
        workers = listeners.workers(),
        integrations = integrations.definitions().len(),
        store = %place,
        "gateway listening on http://{address}: /healthz, /connect in a browser, /v1 with an API key"
    );
    integrations_gateway::metrics::set_access_log(!args.no_access_log);
    if !args.no_metrics {
        integrations_gateway::metrics::install();
    }
    // Kept until the gateway stops, when its file is removed.
    let local_socket = start_local_socket(
        global,
        &integrations,
        format!("http://{address}"),
        &match &global.database_url {
            Some(_) => place.clone(),
            None => format!("the embedded store in {place}"),
        },
    );
    let metrics_listener = match args.metrics_listen {
        Some(address) => Some(
            std::net::TcpListener::bind(address)
                .with_context(|| format!("cannot listen on {address} (--metrics-listen)"))?,
        ),
        None => None,
    };
    start_background_work(&integrations, &args, metrics_listener)?;
    let public_url = args.public_url.clone().unwrap_or_else(|| format!("http://{address}"));
    let redirect_uri = RedirectUri::from_public_base_url(&public_url)?;
    tracing::info!(%redirect_uri, "OAuth 2.0 redirect URI (register it with providers)");
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri,
        openapi_requires_key: args.openapi_requires_key,
    });
    let settings = ConnectionSettings {
        max_connections: args.max_connections.get(),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        ..ConnectionSettings::default()
    };
    let grace = settings.shutdown_grace;
    serve_on_workers(listeners, state, settings, shutdown_signal()).context("the server failed")?;
    if let Some((socket, service)) = local_socket {
        // A command's call under way ends before the process does.
        let ended = crate::block_on(async { Ok(service.finish_calls(grace).await) })?;
        if !ended {
            tracing::warn!("a command's call through the local socket did not end in time");
        }
        drop(socket);
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serves the socket the commands reach this gateway through, in the data
/// directory, on a thread of its own (a slow store call there delays no
/// refresh or delivery): it lends them the embedded store; a gateway on a
/// database answers `integrations status` there only. Without it (the
/// directory cannot hold a socket) the gateway runs on, with a warning.
fn start_local_socket(
    global: &GlobalArgs,
    integrations: &integrations::Integrations,
    address: String,
    store: &str,
) -> Option<(LocalSocket, LocalService)> {
    let started = context::data_dir(global).and_then(|dir| {
        context::create_private_dir(&dir)?;
        let mut socket = LocalSocket::bind(&dir.join(integrations_gateway::local::SOCKET_NAME))?;
        let listener = socket.take_listener()?;
        let mut service = LocalService::new(GatewayStatus::of_this_process(address, store.to_owned()));
        if global.database_url.is_none() {
            service = service.with_store(integrations.clone());
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let served = service.clone();
        std::thread::Builder::new()
            .name("integrations-local".to_owned())
            .spawn(move || {
                if let Err(error) = runtime.block_on(integrations_gateway::local::serve(listener, served)) {
                    tracing::error!(%error, "the local socket failed");
                }
            })?;
        Ok((socket, service))
    });
    match started {
        Ok((socket, service)) => {
            tracing::info!(socket = %socket.path().display(), "commands reach this gateway through its socket");
            Some((socket, service))
        }
        Err(error) => {
            tracing::warn!(%error, "no local socket: `integrations` commands cannot reach this gateway");
            None
        }
    }
}

/// Runs the background work on a thread of its own, for as long as the
/// process runs: webhook delivery (the outbox's events become deliveries,
/// sent with their retries) and the scheduler (refreshes, health checks).
fn start_background_work(
    integrations: &integrations::Integrations,
    args: &ServeArgs,
    metrics_listener: Option<std::net::TcpListener>,
) -> Result<()> {
    let webhooks = Webhooks::new(integrations.store().clone());
    let deliver = if args.no_webhook_delivery {
        tracing::info!("webhook delivery is off on this gateway (--no-webhook-delivery)");
        None
    } else if webhooks.backend().is_err() {
        tracing::warn!("this store keeps no webhooks: none are delivered");
        None
    } else {
        Some(Deliverer::new(
            webhooks,
            DeliverySettings::default().schedule(args.webhook_retry_schedule.0.clone()),
        )?)
    };
    let schedule = if args.no_scheduler {
        tracing::info!("background refreshes and health checks are off on this gateway (--no-scheduler)");
        None
    } else {
        Some((
            integrations.clone(),
            SchedulerSettings::default()
                .scan_interval(args.scheduler_interval)
                .refresh_ahead(args.refresh_ahead)
                .idle_refresh(args.idle_refresh)
                .max_consecutive_failures(args.max_consecutive_failures),
        ))
    };
    let gauges = (!args.no_metrics).then(|| integrations.store().clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the background work's runtime")?;
    std::thread::Builder::new()
        .name("integrations-background".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let _workers = deliver.map(integrations_gateway::webhooks::spawn);
                let _scheduler = schedule.map(|(integrations, settings)| integrations.spawn_scheduler(settings));
                let _gauges = gauges.map(integrations_gateway::metrics::spawn_gauges);
                match metrics_listener.map(serve_metrics) {
                    Some(served) => {
                        if let Err(error) = served.await {
                            tracing::error!(%error, "the metrics listener failed");
                        }
                        std::future::pending::<()>().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            });
        })
        .context("cannot start the background work's thread")?;
    Ok(())
}

/// `/metrics` alone, without a key, on the `--metrics-listen` address.
async fn serve_metrics(listener: std::net::TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "metrics on http://{address}/metrics");
    let app = axum::Router::new().route("/metrics", axum::routing::get(integrations_gateway::metrics_text));
    axum::serve(listener, app).await
}

/// Ctrl-C or SIGTERM: stop accepting, finish the requests in flight.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

pub(crate) async fn keys(global: &GlobalArgs, command: KeysCommand) -> Result<ExitCode> {
    let keys = ApiKeys::new(context::key_storage(global).await?).await?;
    let mut stdout = std::io::stdout().lock();
    match command {
        KeysCommand::Create { name } => {
            let (key, secret) = keys.create(&name).await?;
            writeln!(stdout, "{}", secret.expose_secret())?;
            eprintln!(
                "created API key {} ({}); it is shown once, keep it now",
                key.id, key.name
            );
        }
        KeysCommand::List => {
            for key in keys.list().await? {
                let created = key.created_at.format(&Rfc3339).unwrap_or_default();
                writeln!(stdout, "{}  {created}  {}", key.id, key.name)?;
            }
        }
        KeysCommand::Revoke { id } => {
            if !keys.revoke(&id).await? {
                bail!("no such API key `{id}`");
            }
            writeln!(stdout, "revoked API key {id}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `integrations migrate`: connecting migrates the database.
pub(crate) async fn migrate(global: &GlobalArgs) -> Result<ExitCode> {
    let Some(database) = context::database(global).await? else {
        bail!("nothing to migrate: pass --database-url or set INTEGRATIONS_DATABASE_URL");
    };
    eprintln!("the database schema is up to date: {database:?}");
    Ok(ExitCode::SUCCESS)
}
