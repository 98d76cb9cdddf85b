//! HTTPS end to end against a loopback server whose certificate a test CA,
//! made here, signed: trusted through an integration's `ca_bundle` on both
//! transports (reqwest for `send`, the relay for `forward`) and for OAuth
//! 2.0 token calls, and refused without it.

use std::net::SocketAddr;
use std::sync::Arc;

use integrations::definition::Format;
use integrations::http::{HttpClient, Method, StatusCode};
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, ErrorKind, Integrations, NewAccount};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A test CA's certificate, in PEM, and a TLS server on loopback for
/// `localhost` with a certificate it signed.
struct TlsUpstream {
    ca_pem: String,
    address: SocketAddr,
}

impl TlsUpstream {
    /// Answers `POST /token` with an OAuth 2.0 token, anything else with
    /// the credential it was sent (`X-Key` or `Authorization`).
    async fn start() -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "integrations test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(server.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the CA ends the handshake.
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut chunk = [0; 4096];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    let (content_type, body) = if head.starts_with("post /token") {
                        (
                            "application/json",
                            r#"{"access_token":"tls-access-token","token_type":"bearer","expires_in":3600}"#.to_owned(),
                        )
                    } else {
                        let credential = head
                            .lines()
                            .find_map(|line| {
                                line.strip_prefix("x-key: ")
                                    .or_else(|| line.strip_prefix("authorization: "))
                            })
                            .unwrap_or("none")
                            .to_owned();
                        ("text/plain", credential)
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            ca_pem: ca.pem(),
            address,
        }
    }
}

/// Integrations `trusted` (with the CA as its `ca_bundle`), `untrusted`
/// (without) and `oauth` (client credentials, token endpoint on the same
/// server, with the bundle), an account of each.
async fn hub(upstream: &TlsUpstream, bundle: &std::path::Path, http: HttpClient) -> Integrations {
    let base = format!("https://localhost:{}", upstream.address.port());
    let bundle = bundle.display();
    let definitions = format!(
        r#"
        [[integration]]
        key = "trusted"
        name = "Trusted"
        base_url = "{base}/v1"
        ca_bundle = "{bundle}"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}

        [[integration]]
        key = "untrusted"
        name = "Untrusted"
        base_url = "{base}/v1"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}

        [[integration]]
        key = "oauth"
        name = "OAuth"
        base_url = "{base}/v1"
        ca_bundle = "{bundle}"
        [integration.auth]
        type = "oauth2"
        grant_type = "client_credentials"
        access_token_endpoint = "{base}/token"
        access_token_verb = "POST"
        scope = "read"
        client_id = "id"
        client_secret = "secret"
        token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
        "#
    );
    integrations::register_methods();
    let definitions = Definitions::from_str(&definitions, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    for (id, integration, new) in [
        (
            "t1",
            "trusted",
            NewAccount::new(id("t1")).credential("token", "tls-s3cret"),
        ),
        (
            "u1",
            "untrusted",
            NewAccount::new(id("u1")).credential("token", "tls-s3cret"),
        ),
        ("o1", "oauth", NewAccount::new(id("o1"))),
    ] {
        store
            .create(definitions.get(integration).expect(id), new)
            .await
            .unwrap_or_else(|error| panic!("{id}: {error}"));
    }
    Integrations::with_http_client(definitions, store, http)
}

fn id(text: &str) -> AccountId {
    AccountId::new(text).expect("id")
}

#[tokio::test]
async fn an_integration_ca_bundle_is_trusted_on_both_transports_and_nowhere_else() {
    let upstream = TlsUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &upstream.ca_pem).expect("bundle");
    let integrations = hub(&upstream, &bundle, HttpClient::new().expect("client")).await;

    let trusted = integrations.client(&id("t1")).await.expect("t1");
    // reqwest's transport.
    let sent = trusted.get("/items").send().await.expect("sent over TLS");
    assert_eq!(sent.status(), StatusCode::OK);
    assert_eq!(sent.text().await.expect("body"), "tls-s3cret");
    // The relay's.
    let forwarded = trusted
        .request(Method::GET, "/items")
        .forward()
        .await
        .expect("forwarded over TLS");
    assert_eq!(forwarded.status(), StatusCode::OK);
    // An OAuth 2.0 token call, then the request with its token.
    let oauth = integrations.client(&id("o1")).await.expect("o1");
    let response = oauth.get("/items").send().await.expect("sent with a token");
    assert_eq!(response.text().await.expect("body"), "bearer tls-access-token");

    // The same server, from an integration without the bundle: refused on
    // both transports, naming the certificate, never the credential.
    let untrusted = integrations.client(&id("u1")).await.expect("u1");
    for error in [
        untrusted.get("/items").send().await.expect_err("untrusted CA"),
        untrusted
            .request(Method::GET, "/items")
            .forward()
            .await
            .expect_err("untrusted CA"),
    ] {
        assert_eq!(error.kind(), ErrorKind::Transport, "{error}");
        // The message alone says what failed and where.
        let message = error.to_string();
        let destination = format!("localhost:{}", upstream.address.port());
        assert!(message.contains(&destination), "{message}");
        assert!(
            message.contains("TLS: invalid peer certificate: UnknownIssuer"),
            "{message}: {}",
            error_chain(&error)
        );
        let chain = error_chain(&error);
        assert!(chain.to_lowercase().contains("certificate"), "{chain}");
        assert!(!chain.contains("tls-s3cret"), "{chain}");
    }
}

/// A bundle the whole deployment trusts (`INTEGRATIONS_CA_BUNDLE` is read
/// into the same place): every integration's calls trust it.
#[tokio::test]
async fn a_deployment_ca_bundle_is_trusted_by_every_integration() {
    let upstream = TlsUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &upstream.ca_pem).expect("bundle");
    let http = HttpClient::with_pool_per_thread()
        .expect("client")
        .with_ca_bundle(&bundle, "INTEGRATIONS_CA_BUNDLE")
        .expect("bundle read");
    let integrations = hub(&upstream, &bundle, http).await;
    let account = integrations.client(&id("u1")).await.expect("u1");
    let sent = account.get("/items").send().await.expect("sent over TLS");
    assert_eq!(sent.text().await.expect("body"), "tls-s3cret");
    let forwarded = account
        .request(Method::GET, "/items")
        .forward_raw()
        .await
        .expect("forwarded");
    assert_eq!(forwarded.status, StatusCode::OK);
}

#[test]
fn a_ca_bundle_that_cannot_be_used_is_refused_when_definitions_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    for (bundle, expected) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (not_pem, "no PEM certificate"),
    ] {
        let definitions = format!(
            r#"
            [[integration]]
            key = "corp"
            name = "Corp"
            base_url = "https://api.corp.example"
            ca_bundle = "{}"
            auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "X-Key", value_template = "{{token}}" }} }}
            "#,
            bundle.display()
        );
        integrations::register_methods();
        let errors = Definitions::from_str(&definitions, Format::Toml)
            .expect_err("refused")
            .to_string();
        assert!(errors.contains("integration[0].ca_bundle"), "{errors}");
        assert!(errors.contains(expected), "{errors}");
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}
