//! The one HTTP client every account shares.

use std::sync::Arc;
use std::time::Duration;

use integration_core::{Error, ErrorKind, Result};
use rustls::pki_types::CertificateDer;
use thread_local::ThreadLocal;

use crate::relay::Relay;
use crate::tls;

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
///
/// HTTPS trusts the platform's root certificates and webpki's, and the CA
/// certificates of the PEM file `INTEGRATIONS_CA_BUNDLE` names;
/// [`with_ca_bundle`](Self::with_ca_bundle) adds more.
#[derive(Debug, Clone)]
pub struct HttpClient {
    shared: Transports,
    per_thread: Option<Arc<ThreadLocal<Transports>>>,
    /// Whether the transports are ours to build (not a caller's reqwest
    /// client, no outbound proxy configured).
    own: bool,
    /// Whether the reqwest client is a caller's, whose roots are theirs.
    callers: bool,
    /// The CA certificates trusted beside the platform's and webpki's.
    extra_roots: Arc<[CertificateDer<'static>]>,
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
        Self::trusting(tls::roots_from_environment()?.into())
    }

    fn trusting(extra_roots: Arc<[CertificateDer<'static>]>) -> Result<Self> {
        let own = !outbound_proxy_configured();
        Ok(Self {
            shared: Transports::build(own, &extra_roots)?,
            per_thread: None,
            own,
            callers: false,
            extra_roots,
        })
    }

    /// A client of its own (its own connection pools) that also trusts the
    /// CA certificates of the PEM file at `path`; `source` says, in errors,
    /// where the path came from (`integration `corp` ca_bundle`).
    pub fn with_ca_bundle(&self, path: &std::path::Path, source: &str) -> Result<Self> {
        if self.callers {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{source}: the HTTP client is a reqwest client of your own: add the CA certificates to it"),
            ));
        }
        let roots: Vec<_> = self
            .extra_roots
            .iter()
            .cloned()
            .chain(tls::read_ca_bundle(path, source)?)
            .collect();
        let mut client = Self::trusting(roots.into())?;
        if self.per_thread.is_some() {
            client.per_thread = Some(Arc::new(ThreadLocal::new()));
        }
        Ok(client)
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
            callers: true,
            extra_roots: Arc::new([]),
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
                .get_or_try(|| Transports::build(self.own, &self.extra_roots))
                .unwrap_or(&self.shared),
            None => &self.shared,
        }
    }
}

impl Transports {
    fn build(forward: bool, extra_roots: &[CertificateDer<'static>]) -> Result<Self> {
        let tls = tls::client_config(extra_roots)?;
        let mut reqwest_tls = tls.clone();
        reqwest_tls.alpn_protocols = if cfg!(feature = "http2") {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let reqwest = reqwest::Client::builder()
            .use_preconfigured_tls(reqwest_tls)
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|error| Error::new(ErrorKind::Config, "cannot build the HTTP client").with_source(error))?;
        let forward = match forward {
            true => Some(Relay::new(tls, CONNECT_TIMEOUT, POOL_IDLE_TIMEOUT)),
            false => None,
        };
        Ok(Self { reqwest, forward })
    }
}

fn outbound_proxy_configured() -> bool {
    PROXY_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}
