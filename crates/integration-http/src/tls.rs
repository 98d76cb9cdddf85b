//! Whom HTTPS calls trust: the platform's root certificates, webpki's (so
//! that a host without a CA store still reaches public APIs), and extra CA
//! certificates, the deployment's (`INTEGRATIONS_CA_BUNDLE`) or one
//! integration's (`ca_bundle`): a company CA, an internal API's own.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use integration_core::{Error, ErrorKind, Result};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The environment variable naming a PEM file of CA certificates that every
/// HTTPS call trusts, beside the platform's.
pub const CA_BUNDLE_VARIABLE: &str = "INTEGRATIONS_CA_BUNDLE";

/// The platform's root certificates, read once per process.
static PLATFORM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "some of the platform's root certificates cannot be read");
    }
    loaded.certs
});

/// The certificates of the PEM file at `path`; `source` says, in errors,
/// where the path came from.
pub fn read_ca_bundle(path: &Path, source: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|error| {
        Error::new(ErrorKind::Config, format!("{source}: cannot read `{}`", path.display())).with_source(error)
    })?;
    ca_certificates(&pem)
        .map_err(|message| Error::new(ErrorKind::Config, format!("{source}: `{}` {message}", path.display())))
}

/// The certificates of a PEM bundle; at least one.
fn ca_certificates(pem: &[u8]) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| format!("is not a PEM bundle of certificates: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no certificate (`-----BEGIN CERTIFICATE-----`)".to_owned());
    }
    Ok(certificates)
}

/// The extra CA certificates `INTEGRATIONS_CA_BUNDLE` names, if it is set.
pub(crate) fn roots_from_environment() -> Result<Vec<CertificateDer<'static>>> {
    roots_from(std::env::var_os(CA_BUNDLE_VARIABLE))
}

/// The certificates of the bundle at `path`, the variable's value.
fn roots_from(path: Option<std::ffi::OsString>) -> Result<Vec<CertificateDer<'static>>> {
    match path {
        Some(path) if !path.is_empty() => read_ca_bundle(Path::new(&path), CA_BUNDLE_VARIABLE),
        _ => Ok(Vec::new()),
    }
}

/// rustls with ring, trusting the platform's roots, webpki's and `extra`.
pub(crate) fn client_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // A platform certificate rustls cannot use is left out, not fatal.
    roots.add_parsable_certificates(PLATFORM_ROOTS.iter().cloned());
    for certificate in extra {
        roots.add(certificate.clone()).map_err(|error| {
            Error::new(ErrorKind::Config, "an extra CA certificate cannot be used as a root").with_source(error)
        })?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::new(ErrorKind::Config, "cannot set up TLS").with_source(error))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("integrations-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = read_ca_bundle(&path, "integration `corp` ca_bundle")
            .unwrap_err()
            .to_string();
        assert!(error.contains("integration `corp` ca_bundle"), "{error}");
        assert!(error.contains("empty.pem"), "{error}");
        assert!(error.contains("no certificate"), "{error}");
        let missing = read_ca_bundle(&dir.join("missing.pem"), CA_BUNDLE_VARIABLE)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("INTEGRATIONS_CA_BUNDLE") && missing.contains("missing.pem"),
            "{missing}"
        );
        let unset = roots_from(None).unwrap();
        assert!(unset.is_empty() && roots_from(Some("".into())).unwrap().is_empty());
        let from_variable = roots_from(Some(path.into_os_string())).unwrap_err().to_string();
        assert!(from_variable.starts_with("INTEGRATIONS_CA_BUNDLE: "), "{from_variable}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
