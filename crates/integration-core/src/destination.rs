//! Addresses credentials never go to, checked on the URLs rendered for an
//! account: its creation refuses them, and so does compiling it for
//! requests, token calls and revocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use integration_template::UrlTemplate;
use url::{Host, Url};

/// Host names of cloud metadata services, refused like their addresses.
const METADATA_NAMES: [&str; 2] = ["metadata.google.internal", "metadata.goog"];

/// Refuses the host of `url`, rendered from `template`, when it is a
/// link-local or cloud metadata address (always), or an IP address that a
/// parameter put in the host (unless `allow_ip_hosts`). The message names
/// the parameter, never its value.
pub fn check_host(url: &Url, template: &UrlTemplate, allow_ip_hosts: bool) -> Result<(), String> {
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(name)) if is_metadata_name(name) => {
            return Err("the host is a cloud metadata service, where credentials never go".to_owned());
        }
        Some(Host::Domain(_)) | None => return Ok(()),
    };
    if is_link_local_or_metadata(ip) {
        return Err(
            "the host is a link-local or cloud metadata address (169.254.0.0/16, fe80::/10, \
             100.100.100.200, fd00:ec2::254), where credentials never go"
                .to_owned(),
        );
    }
    match template.parameters().find(|(_, placement)| placement.chooses_host()) {
        Some((parameter, _)) if !allow_ip_hosts => Err(format!(
            "parameter `{parameter}` makes the host an IP address; \
             the integration needs `allow_ip_hosts = true` for that"
        )),
        _ => Ok(()),
    }
}

/// Whether `name` is a cloud metadata service's host name.
pub fn is_metadata_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    METADATA_NAMES
        .iter()
        .any(|metadata| name.eq_ignore_ascii_case(metadata))
}

/// Whether `ip` is a link-local or cloud metadata address, which nothing
/// of ours is ever sent to: 169.254.0.0/16, fe80::/10, 100.100.100.200,
/// fd00:ec2::254, and their IPv4-mapped forms.
pub fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_link_local_or_metadata_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_link_local_or_metadata_v4(mapped),
            None => {
                // fe80::/10, and AWS's IPv6 metadata address.
                (ip.segments()[0] & 0xffc0) == 0xfe80 || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

fn is_link_local_or_metadata_v4(ip: Ipv4Addr) -> bool {
    // 169.254.0.0/16 holds AWS, GCP and Azure's 169.254.169.254;
    // 100.100.100.200 is Alibaba Cloud's.
    ip.is_link_local() || ip == Ipv4Addr::new(100, 100, 100, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(template: &str, rendered: &str, allow_ip_hosts: bool) -> Result<(), String> {
        let template = UrlTemplate::parse(template).expect("template");
        check_host(&Url::parse(rendered).expect("url"), &template, allow_ip_hosts)
    }

    #[test]
    fn ip_hosts_from_parameters_need_the_opt_in_and_metadata_is_never_reached() {
        let from_parameter = "https://{host}/api";
        for rendered in [
            "https://192.0.2.7/api",
            "https://2130706433/api",
            "https://0x7f.1/api",
            "https://[2001:db8::1]/api",
        ] {
            let refused = check(from_parameter, rendered, false).expect_err(rendered);
            assert!(
                refused.contains("parameter `host` makes the host an IP address"),
                "{refused}"
            );
            assert_eq!(check(from_parameter, rendered, true), Ok(()), "{rendered}");
        }
        for rendered in [
            "https://169.254.169.254/latest",
            "https://169.254.1.1/",
            "https://[fe80::1]/",
            "https://[fd00:ec2::254]/",
            "https://[::ffff:169.254.169.254]/",
            "https://100.100.100.200/",
            "https://metadata.google.internal/",
            "https://METADATA.google.internal./",
        ] {
            for allow in [false, true] {
                let refused = check(from_parameter, rendered, allow).expect_err(rendered);
                assert!(refused.contains("metadata"), "{refused}");
                assert!(!refused.contains("169.254.169.254/"), "{refused}");
            }
        }
        // Written in the definition, an IP address is the author's choice.
        assert_eq!(
            check("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/api", false),
            Ok(())
        );
        assert!(check("https://169.254.169.254/x", "https://169.254.169.254/x", true).is_err());
        assert_eq!(check(from_parameter, "https://api.example/api", false), Ok(()));
    }
}
