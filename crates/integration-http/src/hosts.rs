//! Which hosts an account's credentials may go to.

use std::net::IpAddr;

use integration_core::Integration;
use integration_core::template::UrlTemplate;
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

/// Refuses a URL that credentials must not go to for its scheme: anything
/// but https, except plain http to loopback or where the integration sets
/// `allow_insecure_http`. The message names the host, never the URL (which
/// may hold a secret).
pub fn check_scheme(url: &Url, allow_insecure_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "plain http to {} is refused except to loopback; use https (or `allow_insecure_http = true` for a lab)",
            url.host_str().unwrap_or_default()
        )),
        other => Err(format!("scheme `{other}` is not http or https")),
    }
}

/// Refuses a URL rendered from `template` for an account of `integration`
/// that credentials must not go to: [`check_scheme`], then
/// [`check_host`](integration_core::destination::check_host).
pub fn check_destination(url: &Url, template: &UrlTemplate, integration: &Integration) -> Result<(), String> {
    check_scheme(url, integration.allow_insecure_http)?;
    integration_core::destination::check_host(url, template, integration.allow_ip_hosts)
}

/// Whether `url` goes to this machine, the one place plain http is allowed
/// by default.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(name)) => {
            // `localhost` alone: a resolver need not send `*.localhost` to
            // loopback (RFC 6761 only asks it to), so plain http to it could
            // leave the machine.
            name.eq_ignore_ascii_case("localhost")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_goes_to_loopback_only_unless_allowed() {
        let check = |url: &str, allow: bool| check_scheme(&Url::parse(url).expect("url"), allow);
        for url in [
            "https://api.example/x",
            "http://127.0.0.1:9/x",
            "http://localhost/x",
            "http://[::1]/x",
        ] {
            assert_eq!(check(url, false), Ok(()), "{url}");
        }
        assert!(
            check("http://app.localhost/x", false).is_err(),
            "*.localhost may not resolve to loopback"
        );
        let refused = check("http://user:secret@192.0.2.2/x?token=t", false).expect_err("plain http");
        assert!(refused.contains("plain http to 192.0.2.2"), "{refused}");
        assert!(!refused.contains("secret") && !refused.contains("token=t"), "{refused}");
        assert_eq!(check("http://192.0.2.2/x", true), Ok(()));
        assert!(check("ftp://files.example/x", true).is_err());
    }
}
