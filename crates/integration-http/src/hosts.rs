//! Which hosts an account's credentials may go to.

use std::net::IpAddr;

use url::{Host, Url};

/// The hosts named by an integration's templates (host and port), plus its
/// `allowed_hosts` patterns (host only, any port).
#[derive(Debug, Clone, Default)]
pub(crate) struct HostPolicy {
    origins: Vec<(String, u16)>,
    hosts: Vec<String>,
    suffixes: Vec<String>,
}

impl HostPolicy {
    /// Allows the host and port of `url`.
    pub(crate) fn allow_origin(&mut self, url: &Url) {
        if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
            let origin = (host.to_ascii_lowercase(), port);
            if !self.origins.contains(&origin) {
                self.origins.push(origin);
            }
        }
    }

    /// Allows a host name, or every subdomain for `*.domain`.
    pub(crate) fn allow_pattern(&mut self, pattern: &str) {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => self.suffixes.push(format!(".{domain}")),
            None => self.hosts.push(pattern),
        }
    }

    /// Whether credentials may go to `url`.
    pub(crate) fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        // Hosts are compared without allocating: most are lowercase already.
        let port = url.port_or_known_default().unwrap_or(0);
        self.origins
            .iter()
            .any(|(allowed, allowed_port)| *allowed_port == port && allowed.eq_ignore_ascii_case(host))
            || self.hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host))
            || self.suffixes.iter().any(|suffix| {
                host.len() > suffix.len() && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            })
    }

    /// The allowed hosts, for error messages.
    pub(crate) fn describe(&self) -> String {
        let mut names: Vec<String> = self
            .origins
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .chain(self.hosts.iter().cloned())
            .chain(self.suffixes.iter().map(|suffix| format!("*{suffix}")))
            .collect();
        names.dedup();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// Whether `url` goes to this machine, the one place plain http is allowed.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}
