//! Where an end user may point the gateway: the hosts they choose are
//! resolved and checked before any credential check or probe goes there.

use std::time::Duration;

use axum::http::StatusCode;
use integrations::ConnectedAccount;
use integrations::definition::Integration;
use integrations::template::Placement;
use url::Url;

use crate::error::ApiError;

/// Refuses what an end user points the gateway at through the hosts they
/// choose (a host parameter, an SFTP `host` credential): never a cloud
/// metadata or link-local address, nor a name written as a number; unless
/// the integration sets `allow_ip_hosts`, no IP address and no name that
/// resolves to a loopback, private or otherwise non-public address. A host
/// the definition fixes is the operator's choice, and not checked here.
pub(super) async fn check_destinations(integration: &Integration, account: &ConnectedAccount) -> Result<(), ApiError> {
    let mut hosts = Vec::new();
    if integration.auth_type() == "sftp" {
        let chosen = account.credentials().contains("host")
            || integration
                .auth
                .hosts()
                .iter()
                .any(|(_, template)| template.parameters().next().is_some());
        if chosen {
            hosts.push(integrations::sftp::server_address(integration, account)?);
        }
    } else {
        let values = account.parameter_values();
        let templates = integration
            .base_url
            .iter()
            .map(|url| &**url)
            .chain(integration.auth.endpoints().into_iter().map(|(_, template)| template));
        for template in templates {
            let chosen = template
                .parameters()
                .any(|(_, placement)| placement.chooses_host() || placement == Placement::Port);
            if !chosen {
                continue;
            }
            // A template that does not render is refused by the account's
            // own checks, with the field named.
            let Some(url) = template.render(&values).ok().and_then(|text| Url::parse(&text).ok()) else {
                continue;
            };
            if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
                hosts.push((host.to_owned(), port));
            }
        }
    }
    for (host, port) in hosts {
        check_host(integration, &host, port).await?;
    }
    Ok(())
}

async fn check_host(integration: &Integration, host: &str, port: u16) -> Result<(), ApiError> {
    let refused = |message: &str| ApiError::new(StatusCode::FORBIDDEN, "refused", message);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if integrations::destination::is_metadata_name(bare) {
        return Err(refused("this host is not allowed"));
    }
    let literal = bare.parse::<std::net::IpAddr>().is_ok();
    // A name written as a number is read as an address by the system's
    // resolver: it is refused like one, and never allowed.
    if (literal && !integration.allow_ip_hosts) || (!literal && is_numeric_name(bare)) {
        return Err(refused(
            "the host must be a name, not an IP address (the integration does not set `allow_ip_hosts`)",
        ));
    }
    let addresses = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the host's name did not resolve in time",
            )
        })?
        .map_err(|_| ApiError::new(StatusCode::BAD_GATEWAY, "provider", "the host's name does not resolve"))?;
    for address in addresses {
        let ip = address.ip();
        if integrations::destination::is_link_local_or_metadata(ip) {
            return Err(refused("this host is not allowed"));
        }
        if !integration.allow_ip_hosts && !is_public(ip) {
            return Err(refused(
                "this host is on a private network: a connect page reaches public servers only \
                 (the integration does not set `allow_ip_hosts`)",
            ));
        }
    }
    Ok(())
}

/// How long resolving an end user's host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A name the system resolver would read as an address (`2852039166`,
/// `0xa9fea9fe`, `127.1`): every label a number.
fn is_numeric_name(host: &str) -> bool {
    host.split('.').all(|label| {
        let digits = label
            .strip_prefix("0x")
            .or_else(|| label.strip_prefix("0X"))
            .map_or(label.bytes().all(|b| b.is_ascii_digit()), |hex| {
                hex.bytes().all(|b| b.is_ascii_hexdigit())
            });
        !label.is_empty() && digits
    })
}

/// Whether `ip` is a public unicast address.
fn is_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => {
            let [first, second, ..] = ip.octets();
            !(ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || first == 0
                || (first == 100 && (64..128).contains(&second)))
        }
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public(mapped.into()),
            None => {
                let first = ip.segments()[0];
                !(ip.is_loopback()
                    || ip.is_unspecified()
                    || ip.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// At most this many credential checks and server probes run at once,
/// whatever the sessions: the rest wait their turn, for a while.
static CHECK_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// A slot to run a check in, or 503 when none frees up in 10 s.
pub(super) async fn check_slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(10), CHECK_SLOTS.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the gateway is checking many accounts at once: try again in a moment",
        )),
    }
}
