//! The one reqwest client every account shares.

use std::time::Duration;

use integration_core::{Error, ErrorKind, Result};

/// A shared HTTP client: connection pools are reused across accounts.
///
/// Redirects are not followed: a redirect could carry a credential to a
/// host the integration does not name, so 3xx responses are returned as
/// they came.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    /// A client with rustls, no redirects, TCP_NODELAY and pooled
    /// keep-alive connections.
    pub fn new() -> Result<Self> {
        let inner = reqwest::Client::builder()
            .user_agent(concat!("integrations/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| Error::new(ErrorKind::Config, "cannot build the HTTP client").with_source(error))?;
        Ok(Self { inner })
    }

    /// Wraps a client of your own. Turn its redirects off, or it may carry
    /// credentials to other hosts.
    pub fn from_reqwest(inner: reqwest::Client) -> Self {
        Self { inner }
    }

    /// The underlying reqwest client.
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }
}
