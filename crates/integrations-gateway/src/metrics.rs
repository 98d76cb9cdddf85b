//! Metrics in the Prometheus text format, and the access log.
//!
//! Labels never carry an account id or anything of a request's path: only
//! integration keys (bounded by the definitions), method and status
//! classes, and outcomes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use integrations::storage::AccountQuery;
use integrations::{AccountStatus, AccountStore};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rustc_hash::FxHashMap;

/// Proxied requests: `integration`, `method` (`read` or `write`), `status`
/// (`2xx`…`5xx`).
pub const PROXY_REQUESTS: &str = "integrations_proxy_requests_total";
/// Proxied requests' duration in seconds, by `integration`.
pub const PROXY_DURATION: &str = "integrations_proxy_request_duration_seconds";
/// Accounts by `status`.
pub const ACCOUNTS: &str = "integrations_accounts";
/// Events waiting in the outbox.
pub const OUTBOX_BACKLOG: &str = "integrations_outbox_events";
/// The age in seconds of the oldest event in the outbox.
pub const OUTBOX_AGE: &str = "integrations_outbox_oldest_event_age_seconds";
/// Webhook delivery attempts by `outcome` (`delivered`, `retrying`,
/// `failed`, `gone`).
pub const WEBHOOK_DELIVERIES: &str = "integrations_webhook_deliveries_total";
/// SFTP bytes by `integration` and `direction` (`in`: uploaded, `out`:
/// downloaded).
pub const SFTP_BYTES: &str = "integrations_sftp_bytes_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static ACCESS_LOG: AtomicBool = AtomicBool::new(true);

/// Installs the process's metrics recorder (once; later calls return the
/// same handle). Without it, nothing is recorded and `/metrics` is 404.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(PROXY_DURATION.to_owned()),
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics shows only what it does not take");
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        PROXY_REQUESTS,
        "Proxied requests by integration, method class and status class."
    );
    metrics::describe_histogram!(PROXY_DURATION, metrics::Unit::Seconds, "Proxied requests' duration.");
    metrics::describe_gauge!(ACCOUNTS, "Connected accounts by status.");
    metrics::describe_gauge!(OUTBOX_BACKLOG, "Events waiting in the outbox.");
    metrics::describe_gauge!(
        OUTBOX_AGE,
        metrics::Unit::Seconds,
        "Age of the oldest event in the outbox."
    );
    metrics::describe_counter!(WEBHOOK_DELIVERIES, "Webhook delivery attempts by outcome.");
    metrics::describe_counter!(
        SFTP_BYTES,
        metrics::Unit::Bytes,
        "SFTP bytes by integration and direction."
    );
    metrics::describe_counter!(
        integrations::http::metrics::TOKEN_REQUESTS,
        "Token endpoint calls by integration and outcome."
    );
    metrics::describe_counter!(
        integrations::http::metrics::REFRESHES,
        "OAuth 2.0 refreshes by integration and outcome."
    );
}

/// The metrics in the Prometheus text format, if a recorder is installed.
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

/// Turns the access log on or off (it is on).
pub fn set_access_log(enabled: bool) {
    ACCESS_LOG.store(enabled, Ordering::Relaxed);
}

/// `read` for methods that change nothing, `write` for the others.
fn method_class(method: &Method) -> usize {
    usize::from(!matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS))
}

const METHOD_CLASSES: [&str; 2] = ["read", "write"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One integration's proxy metrics, registered once per thread.
struct ProxyHandles {
    requests: [[Counter; 5]; 2],
    duration: Histogram,
}

impl ProxyHandles {
    fn new(integration: &str) -> Self {
        let counter = |method: usize, status: usize| {
            metrics::counter!(
                PROXY_REQUESTS,
                "integration" => integration.to_owned(),
                "method" => METHOD_CLASSES[method],
                "status" => STATUS_CLASSES[status]
            )
        };
        Self {
            requests: std::array::from_fn(|method| std::array::from_fn(|status| counter(method, status))),
            duration: metrics::histogram!(PROXY_DURATION, "integration" => integration.to_owned()),
        }
    }
}

thread_local! {
    /// Handles by integration: a request costs a lookup and two atomic
    /// operations, not a registration.
    static PROXY: RefCell<FxHashMap<String, ProxyHandles>> = RefCell::new(FxHashMap::default());
}

/// What the access log and the metrics learn of a request.
pub(crate) struct Observed<'a> {
    pub(crate) key: Option<&'a str>,
    pub(crate) account: Option<&'a str>,
    pub(crate) integration: Option<&'a str>,
    pub(crate) method: &'a Method,
    /// The route: its template, never the path as sent.
    pub(crate) route: &'a str,
    pub(crate) status: StatusCode,
    pub(crate) started: Instant,
}

/// Records a proxied request in the metrics (when installed) and the
/// access log (when on).
pub(crate) fn observe_proxy(observed: &Observed<'_>) {
    let elapsed = observed.started.elapsed();
    if HANDLE.get().is_some()
        && let Some(integration) = observed.integration
    {
        let status = usize::from(observed.status.as_u16() / 100).clamp(1, 5) - 1;
        let method = method_class(observed.method);
        PROXY.with(|handles| {
            let mut handles = handles.borrow_mut();
            if !handles.contains_key(integration) {
                handles.insert(integration.to_owned(), ProxyHandles::new(integration));
            }
            if let Some(handles) = handles.get(integration) {
                handles.requests[method][status].increment(1);
                handles.duration.record(elapsed.as_secs_f64());
            }
        });
    }
    access_log(observed, elapsed);
}

/// The access-log line of a request: never its query or a header's value.
pub(crate) fn access_log(observed: &Observed<'_>, elapsed: Duration) {
    if !ACCESS_LOG.load(Ordering::Relaxed) {
        return;
    }
    tracing::info!(
        target: "integrations::access",
        key = observed.key.unwrap_or("-"),
        account = observed.account.unwrap_or("-"),
        integration = observed.integration.unwrap_or("-"),
        method = %observed.method,
        route = observed.route,
        status = observed.status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
}

/// Counts a webhook delivery attempt's `outcome`.
pub(crate) fn webhook_delivery(outcome: &'static str) {
    metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// Counts SFTP bytes of `integration` in `direction` (`in` or `out`).
pub(crate) fn sftp_bytes(integration: &str, direction: &'static str, bytes: u64) {
    metrics::counter!(SFTP_BYTES, "integration" => integration.to_owned(), "direction" => direction).increment(bytes);
}

/// Keeps the gauges current (accounts by status, the outbox), and the
/// recorder's histograms drained, on the current tokio runtime until the
/// handle is dropped.
pub fn spawn_gauges(store: AccountStore) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut counted_at: Option<(Instant, Duration)> = None;
        loop {
            if let Some(handle) = HANDLE.get() {
                handle.run_upkeep();
            }
            match store.storage().outbox_backlog().await {
                Ok(backlog) => {
                    metrics::gauge!(OUTBOX_BACKLOG).set(backlog.events as f64);
                    let age = backlog.oldest.map_or(0.0, |oldest| {
                        (integrations::time::OffsetDateTime::now_utc() - oldest)
                            .as_seconds_f64()
                            .max(0.0)
                    });
                    metrics::gauge!(OUTBOX_AGE).set(age);
                }
                Err(error) => tracing::debug!(%error, "cannot measure the outbox"),
            }
            // Counting reads every record: at most 1% of the time goes to it.
            if counted_at.is_none_or(|(at, took)| at.elapsed() >= (took * 100).max(Duration::from_secs(5))) {
                let started = Instant::now();
                if let Err(error) = count_accounts(&store).await {
                    tracing::debug!(%error, "cannot count the accounts");
                }
                counted_at = Some((started, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}

async fn count_accounts(store: &AccountStore) -> integrations::Result<()> {
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    let mut query = AccountQuery::first(1000);
    loop {
        let page = store.storage().accounts_page(&query).await?;
        for account in page.accounts.into_iter().flatten() {
            *counts.entry(account.status.as_str()).or_default() += 1;
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    for status in [
        AccountStatus::Pending,
        AccountStatus::Connected,
        AccountStatus::NeedsReauth,
    ] {
        let count = counts.get(status.as_str()).copied().unwrap_or(0);
        metrics::gauge!(ACCOUNTS, "status" => status.as_str()).set(count as f64);
    }
    Ok(())
}
