//! The one HTTP client every account shares.

use std::sync::Arc;
use std::time::Duration;

use integration_core::{Error, ErrorKind, Result};
use thread_local::ThreadLocal;

use crate::relay::Relay;

const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const USER_AGENT: &str = concat!("integrations/", env!("CARGO_PKG_VERSION"));

/// The environment variables reqwest reads an outbound proxy from.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A shared HTTP client: connection pools are reused across accounts.
///
/// Redirects are not followed: a redirect could carry a credential to a
/// host the integration does not name, so 3xx responses are returned as
/// they came.
#[derive(Debug, Clone)]
pub struct HttpClient {
    shared: Transports,
    per_thread: Option<Arc<ThreadLocal<Transports>>>,
    /// Whether the transports are ours to build (not a caller's reqwest
    /// client, no outbound proxy configured).
    own: bool,
}

/// The clients one thread sends with.
#[derive(Debug, Clone)]
pub(crate) struct Transports {
    pub(crate) reqwest: reqwest::Client,
    /// The lean HTTP/1.1 client of [`forward`]: a proxied request costs a
    /// fraction of reqwest's CPU. `None` with a caller's reqwest client or
    /// an outbound proxy, which only reqwest honours.
    ///
    /// [`forward`]: crate::RequestBuilder::forward
    pub(crate) forward: Option<Relay>,
}

impl HttpClient {
    /// A client with rustls, no redirects, TCP_NODELAY and pooled
    /// keep-alive connections.
    pub fn new() -> Result<Self> {
        let own = !outbound_proxy_configured();
        Ok(Self {
            shared: Transports::build(own)?,
            per_thread: None,
            own,
        })
    }

    /// A client with one connection pool per thread, for a server that runs
    /// one single-threaded runtime per core: a connection is then only used
    /// by the runtime that drives it, never woken across threads.
    pub fn with_pool_per_thread() -> Result<Self> {
        let mut client = Self::new()?;
        client.per_thread = Some(Arc::new(ThreadLocal::new()));
        Ok(client)
    }

    /// Wraps a client of your own. Turn its redirects off, or it may carry
    /// credentials to other hosts.
    pub fn from_reqwest(inner: reqwest::Client) -> Self {
        Self {
            shared: Transports {
                reqwest: inner,
                forward: None,
            },
            per_thread: None,
            own: false,
        }
    }

    /// The underlying reqwest client: this thread's, with a pool per thread.
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.transports().reqwest
    }

    pub(crate) fn transports(&self) -> &Transports {
        match &self.per_thread {
            // Built as the shared one was, so it does not fail; if it did,
            // the shared pool still works.
            Some(transports) => transports
                .get_or_try(|| Transports::build(self.own))
                .unwrap_or(&self.shared),
            None => &self.shared,
        }
    }
}

impl Transports {
    fn build(forward: bool) -> Result<Self> {
        let reqwest = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|error| Error::new(ErrorKind::Config, "cannot build the HTTP client").with_source(error))?;
        let forward = match forward {
            true => Some(Relay::new(tls_config()?, CONNECT_TIMEOUT, POOL_IDLE_TIMEOUT)),
            false => None,
        };
        Ok(Self { reqwest, forward })
    }
}

/// The same TLS as the reqwest client's: rustls with ring and the webpki
/// roots.
fn tls_config() -> Result<rustls::ClientConfig> {
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::new(ErrorKind::Config, "cannot set up TLS").with_source(error))?
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth(),
    )
}

fn outbound_proxy_configured() -> bool {
    PROXY_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}
