#![doc = include_str!("../README.md")]

pub mod api;
pub mod connect;
pub mod error;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod sftp;
pub mod webhooks;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use futures_util::future::Either;
use integrations::Integrations;
use integrations::auth::oauth2::RedirectUri;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::keys::ApiKeys;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// Definitions, accounts and the HTTP client.
    pub integrations: Integrations,
    /// The API keys.
    pub keys: ApiKeys,
    /// Where providers send users back after an OAuth 2.0 authorization:
    /// the gateway's public URL plus the callback path.
    pub redirect_uri: RedirectUri,
    /// Whether `/v1/openapi.json` needs an API key. It holds nothing
    /// secret (the routes, generated from the code), and tools that
    /// discover APIs expect it public, so it is public unless this is set.
    pub openapi_requires_key: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "integrations gateway", description = "Connected accounts of custom integrations, over HTTP."),
    modifiers(&BearerKeys),
    tags((name = "accounts"), (name = "integrations"), (name = "connect"), (name = "oauth2"), (name = "proxy"), (name = "sftp"), (name = "webhooks"), (name = "health"))
)]
struct ApiDoc;

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The gateway's routes and their OpenAPI document, generated from the
/// handlers themselves. A request body may pause at most 30 s between its
/// parts.
pub fn router(state: Arc<AppState>) -> Router {
    router_with_body_timeout(state, server::ConnectionSettings::default().body_read_timeout)
}

/// [`router`], a request body pausing at most `body_read_timeout`.
fn router_with_body_timeout(state: Arc<AppState>, body_read_timeout: std::time::Duration) -> Router {
    let (protected, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::list_integrations))
        .routes(routes!(api::list_catalog))
        .routes(routes!(api::get_integration))
        .routes(routes!(api::list_accounts, api::create_account))
        .routes(routes!(api::get_account, api::delete_account))
        .routes(routes!(api::replace_credentials))
        .routes(routes!(api::connect_account))
        .routes(routes!(api::refresh_account))
        .routes(routes!(api::revoke_account))
        .routes(routes!(sftp::list))
        .routes(routes!(sftp::stat))
        .routes(routes!(sftp::download, sftp::upload, sftp::remove))
        .routes(routes!(sftp::rename))
        .routes(routes!(sftp::mkdir, sftp::rmdir))
        .routes(routes!(
            webhooks::routes::list_webhooks,
            webhooks::routes::create_webhook
        ))
        .routes(routes!(webhooks::routes::get_webhook, webhooks::routes::delete_webhook))
        .routes(routes!(webhooks::routes::rotate_webhook_secret))
        .routes(routes!(webhooks::routes::enable_webhook))
        .routes(routes!(webhooks::routes::list_deliveries))
        .routes(routes!(webhooks::routes::retry_delivery))
        .routes(routes!(connect::admin::create_connect_session))
        .split_for_parts();
    // The proxy's route takes any method and refuses TRACE and CONNECT
    // itself; the document lists the methods it forwards.
    openapi.merge(
        OpenApiRouter::<Arc<AppState>>::new()
            .routes(routes!(proxy::proxy))
            .into_openapi(),
    );
    let protected = protected.route("/v1/accounts/{id}/proxy/{*path}", axum::routing::any(proxy::proxy));
    let (public, public_doc) = OpenApiRouter::new()
        .routes(routes!(api::healthz))
        .routes(routes!(api::oauth_callback))
        .routes(routes!(connect::routes::get_session))
        .routes(routes!(connect::routes::submit_account))
        .routes(routes!(connect::routes::start_authorization))
        .routes(routes!(connect::routes::host_key))
        .split_for_parts();
    // What an end user types is small: a private key at most.
    let mut public = public.route_layer(axum::extract::DefaultBodyLimit::max(connect::MAX_BODY));
    for route in ["", "/account", "/authorization", "/host-key"] {
        public = public.route(
            &format!("/v1/connect/session{route}"),
            axum::routing::options(connect::routes::preflight),
        );
    }
    openapi.merge(public_doc);
    let document = Arc::new(openapi);
    let openapi_route = axum::routing::get(move || {
        let document = Arc::clone(&document);
        async move { axum::Json(document.as_ref().clone()) }
    });
    let (protected, public) = if state.openapi_requires_key {
        (protected.route("/v1/openapi.json", openapi_route), public)
    } else {
        (protected, public.route("/v1/openapi.json", openapi_route))
    };
    let protected = protected
        .route("/metrics", axum::routing::get(metrics_text))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), require_api_key));
    let page = Router::new()
        .route("/connect", axum::routing::get(connect_page))
        .route(connect::PAGE_PATH, axum::routing::get(connect::callback::page))
        .route("/connect.js", axum::routing::get(connect::callback::script));
    protected
        .merge(public)
        .merge(page)
        .layer(middleware::from_fn(access_log))
        .with_state(state)
        // A client that stalls its body does not hold a handler for ever.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_read_timeout))
}

/// The connect page: static, served with the binary, no build step.
const CONNECT_PAGE: &str = include_str!("../assets/connect.html");

/// What the connect page may do: run its own inline script and style (by
/// hash, so nothing injected runs), call this gateway, and nothing else; no
/// site may frame it.
static CONNECT_PAGE_POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
        inline_hash(CONNECT_PAGE, "<script>", "</script>"),
        inline_hash(CONNECT_PAGE, "<style>", "</style>"),
    )
});

/// The CSP source of the inline element between `open` and `close`.
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let body = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(body, _)| body);
    let digest = sha2::Sha256::digest(body.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Headers for the gateway's HTML pages: `policy` as their
/// Content-Security-Policy, never cached, never framed, and no Referer
/// (the callback's URL holds an authorization code).
pub(crate) fn page_headers(policy: &str) -> [(axum::http::HeaderName, HeaderValue); 6] {
    use axum::http::header;
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        ),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ]
}

/// The connect page. It holds no data; it asks for an API key and calls
/// `/v1` with it.
async fn connect_page() -> impl axum::response::IntoResponse {
    (page_headers(&CONNECT_PAGE_POLICY), CONNECT_PAGE)
}

/// Refuses requests without a valid `Authorization: Bearer` API key.
async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match proxy::policy::presented_key(
        &state.keys,
        request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes),
    ) {
        Some(id) => {
            // On the response: the access log, outside this layer, reads it there.
            let mut response = next.run(request).await;
            response.extensions_mut().insert(KeyId(id));
            Ok(response)
        }
        None => Err(ApiError::key_refused(&state.keys)),
    }
}

/// `/metrics`: the Prometheus text, when the process records metrics.
pub async fn metrics_text() -> Response {
    match metrics::render() {
        Some(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => ApiError::not_found("metrics are not recorded by this process").into_response(),
    }
}

/// The id of the API key a request was let through with.
#[derive(Debug, Clone)]
pub(crate) struct KeyId(pub(crate) String);

/// Writes the access-log line of every request hyper's path serves (the
/// proxy's are written by the proxy, which knows the integration).
async fn access_log(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "-".to_owned(), |matched| matched.as_str().to_owned());
    // An account's routes name it; nothing else of the path is logged.
    let account = request
        .uri()
        .path()
        .strip_prefix("/v1/accounts/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let response = next.run(request).await;
    if !route.starts_with("/v1/accounts/{id}/proxy") {
        let key = response.extensions().get::<KeyId>().map(|key| key.0.clone());
        metrics::access_log(
            &metrics::Observed {
                key: key.as_deref(),
                account: account.as_deref(),
                integration: None,
                method: &method,
                route: &route,
                status: response.status(),
                started,
            },
            started.elapsed(),
        );
    }
    response
}

/// The gateway as a hyper service: [`router`], with the proxy's requests,
/// the hot path, taken straight to the proxy rather than through axum's
/// routing, middleware and extractors, which cost as much as the rest of a
/// proxied request does.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<AppState>,
    router: Router,
    /// How long hyper's path waits for a proxied request's body.
    body_read_timeout: std::time::Duration,
}

impl Gateway {
    /// The gateway over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            router: router(Arc::clone(&state)),
            state,
            body_read_timeout: server::ConnectionSettings::default().body_read_timeout,
        }
    }

    /// The gateway waiting at most `timeout` for the next part of a
    /// request's body, on every route.
    pub(crate) fn with_body_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        if timeout != self.body_read_timeout {
            self.body_read_timeout = timeout;
            self.router = router_with_body_timeout(Arc::clone(&self.state), timeout);
        }
        self
    }

    /// A proxy request, its API key checked.
    pub(crate) async fn proxy(&self, request: Request) -> Response {
        let authorization = request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        let Some(key) = proxy::policy::presented_key(&self.state.keys, authorization) else {
            return ApiError::key_refused(&self.state.keys).into_response();
        };
        proxy::forward(&self.state, request, self.body_read_timeout, Some(&key)).await
    }

    /// Whether a proxy request's `Authorization` header holds a valid key,
    /// on a connection whose last accepted key is `accepted`: the same key
    /// is not checked again while the keys have not changed.
    pub(crate) fn accepts_on_connection(
        &self,
        authorization: Option<&[u8]>,
        accepted: &mut Option<AcceptedKey>,
    ) -> bool {
        let generation = self.state.keys.generation();
        // Not constant-time: the header is compared with what this same
        // connection sent before, never with a stored key.
        let known = matches!(
            (&*accepted, authorization),
            (Some(accepted), Some(presented)) if accepted.generation == generation && accepted.header == presented
        );
        if known {
            return true;
        }
        let Some(id) = proxy::policy::presented_key(&self.state.keys, authorization) else {
            return false;
        };
        *accepted = authorization.map(|header| AcceptedKey {
            header: header.to_vec(),
            generation,
            id: Arc::from(id),
        });
        true
    }

    /// A proxy request the front read, whose key
    /// [`accepts_on_connection`](Self::accepts_on_connection) accepted.
    pub(crate) fn forward_accepted<'a>(
        &'a self,
        incoming: proxy::Incoming,
        key: Option<&'a str>,
    ) -> impl Future<Output = proxy::Answer> + Send + 'a {
        proxy::forward_read(&self.state, incoming, key).map(|answered| match answered {
            Ok(response) => proxy::Answer::Upstream(response),
            Err(error) => proxy::Answer::Gateway(error.into_response()),
        })
    }
}

type GatewayFuture = Either<
    Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
    axum::routing::future::RouteFuture<Infallible>,
>;

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = GatewayFuture;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if proxy::split(request.uri().path()).is_none() {
            return Either::Right(tower_service::Service::call(&mut self.router.clone(), request));
        }
        let gateway = self.clone();
        Either::Left(Box::pin(async move {
            Ok(gateway.proxy(request.map(axum::body::Body::new)).await)
        }))
    }
}

/// The `Authorization` header a connection's last proxy request was let
/// through with, and the generation of the keys it was checked against.
/// Not `Debug`: the header is an API key.
pub(crate) struct AcceptedKey {
    header: Vec<u8>,
    generation: u64,
    /// The key's public id, for the access log.
    pub(crate) id: Arc<str>,
}

/// Serves `state` on `listener` until `shutdown` completes, then finishes
/// the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, server::ConnectionSettings::default(), shutdown).await
}

/// [`serve`] with connection settings of one's own.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    settings: server::ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve_worker(listener, Gateway::new(state), settings, shutdown).await
}
