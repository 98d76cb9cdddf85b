//! JWT: signatures checked by OpenSSL, as the provider would; used as the
//! token, exchanged by RFC 7523 and by a bearer call, renewed at expiry
//! and after a 401, one at a time; keys that cannot sign refused up front.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use integrations::http::{Method, StatusCode};
use integrations::time::OffsetDateTime;
use integrations::time::format_description::well_known::Rfc3339;
use integrations::{ErrorKind, Integrations};
use serde_json::Value;
use wiremock::matchers::{body_string_contains, header_regex, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod common;
use common::*;

/// OpenSSL, the independent signer of keys and verifier of signatures;
/// `None` (the test skips) when it is missing, unless
/// `INTEGRATIONS_REQUIRE_PEERS=1`.
struct OpenSsl {
    dir: tempfile::TempDir,
}

impl OpenSsl {
    fn find() -> Option<Self> {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            integration_test_peers::skip("openssl", "the openssl command is missing");
            return None;
        }
        Some(Self {
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A private key made by `args` into `name`, as PEM text.
    fn key(&self, name: &str, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["-out", name]);
        self.run(&all);
        std::fs::read_to_string(self.path(name)).expect("key")
    }

    /// Whether `jwt` is signed by `key` (a file here), checked by OpenSSL.
    fn verifies(&self, jwt: &str, key: &str) -> bool {
        let (signed, signature) = jwt.rsplit_once('.').expect("three parts");
        let signature = BASE64URL.decode(signature).expect("base64url");
        let alg = claims_of(jwt, 0)["alg"].as_str().unwrap_or_default().to_owned();
        let der = match alg.as_str() {
            "ES256" => ecdsa_der(&signature),
            _ => signature,
        };
        self.run(&["pkey", "-in", key, "-pubout", "-out", "public.pem"]);
        std::fs::write(self.path("signed.txt"), signed).expect("write");
        std::fs::write(self.path("signature.bin"), der).expect("write");
        Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                "public.pem",
                "-signature",
                "signature.bin",
                "signed.txt",
            ])
            .current_dir(self.dir.path())
            .output()
            .is_ok_and(|out| out.status.success())
    }
}

/// A JWT's header (part 0) or claims (part 1).
fn claims_of(jwt: &str, part: usize) -> Value {
    let encoded = jwt.split('.').nth(part).expect("part");
    serde_json::from_slice(&BASE64URL.decode(encoded).expect("base64url")).expect("json")
}

/// JOSE's `r || s` as the DER `ECDSA-Sig-Value` OpenSSL reads.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let integer = |bytes: &[u8]| {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        let mut value = if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
            vec![0]
        } else {
            Vec::new()
        };
        value.extend(trimmed);
        let mut out = vec![0x02, u8::try_from(value.len()).expect("short")];
        out.extend(value);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body: Vec<u8> = integer(r).into_iter().chain(integer(s)).collect();
    let mut der = vec![0x30, u8::try_from(body.len()).expect("short")];
    der.extend(body);
    der
}

fn bearer(request: &Request) -> String {
    let value = request.headers.get("authorization").expect("authorization");
    value.to_str().expect("ascii").trim_start_matches("Bearer ").to_owned()
}

fn definition(server: &str, algorithm: &str, exchange: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "service"
        name = "Service"
        base_url = "{server}/api"
        parameters = [{{ name = "client_email" }}, {{ name = "installation_id", default = "42" }}]
        [integration.auth]
        type = "jwt"
        algorithm = "{algorithm}"
        key_id = "key-7"
        lifetime_seconds = 300
        claims = {{ iss = "{{client_email}}", aud = "{server}/token", scope = "read write" }}
        token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}
        {exchange}
        "#
    )
}

async fn service(server: &MockServer, algorithm: &str, exchange: &str, key: &str) -> Integrations {
    hub(
        &definition(&server.uri(), algorithm, exchange),
        &[("client_email", "robot@project.example")],
        &[("private_key", key)],
    )
    .await
}

#[tokio::test]
async fn a_signed_jwt_is_the_token_and_openssl_verifies_it() {
    let Some(openssl) = OpenSsl::find() else { return };
    let keys = [
        ("RS256", "pkcs1.pem", vec![]),
        (
            "RS256",
            "rsa-pkcs8.pem",
            vec!["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        (
            "ES256",
            "ec-pkcs8.pem",
            vec!["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
    ];
    for (algorithm, file, args) in keys {
        // GitHub's kind of key: PKCS#1, `BEGIN RSA PRIVATE KEY`.
        let key = if args.is_empty() {
            openssl.run(&["genrsa", "-traditional", "-out", file, "2048"]);
            std::fs::read_to_string(openssl.path(file)).expect("key")
        } else {
            openssl.key(file, &args)
        };
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/data"))
            .respond_with(ResponseTemplate::new(200))
            .expect(2)
            .mount(&server)
            .await;
        let hub = service(&server, algorithm, "", &key).await;
        let client = hub.client(&acct()).await.expect("client");
        for _ in 0..2 {
            let response = client.request(Method::GET, "data").send().await.expect("sent");
            assert_eq!(response.status(), StatusCode::OK);
        }
        let requests = server.received_requests().await.expect("recorded");
        let (first, second) = (bearer(&requests[0]), bearer(&requests[1]));
        assert_eq!(first, second, "{algorithm}: the JWT is reused while valid");
        assert!(
            openssl.verifies(&first, file),
            "{algorithm} {file}: OpenSSL rejects the signature"
        );

        let header = claims_of(&first, 0);
        assert_eq!(header["alg"], algorithm);
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], "key-7");
        let claims = claims_of(&first, 1);
        assert_eq!(claims["iss"], "robot@project.example");
        assert_eq!(claims["aud"], format!("{}/token", server.uri()));
        assert_eq!(claims["scope"], "read write");
        let (iat, exp) = (
            claims["iat"].as_i64().expect("iat"),
            claims["exp"].as_i64().expect("exp"),
        );
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert_eq!(exp - iat, 300 + 60, "lifetime plus the clock skew");
        assert!((exp - 300 - now).abs() <= 5, "exp is lifetime_seconds from now");
    }
}

#[tokio::test]
async fn rfc_7523_exchanges_the_jwt_for_an_access_token() {
    let Some(openssl) = OpenSsl::find() else { return };
    let key = openssl.key(
        "google.pem",
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
        ))
        .and(body_string_contains("assertion="))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({ "access_token": "ya29-s3cret", "expires_in": 3599, "token_type": "Bearer" }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/data"))
        .and(header_regex("authorization", "^Bearer ya29-s3cret$"))
        .respond_with(ResponseTemplate::new(200))
        .expect(3)
        .mount(&server)
        .await;
    let exchange =
        r#"exchange = { endpoint = "{server}/token", send_jwt_as = "assertion" }"#.replace("{server}", &server.uri());
    let hub = service(&server, "RS256", &exchange, &key).await;
    let client = hub.client(&acct()).await.expect("client");
    for _ in 0..3 {
        let response = client.request(Method::GET, "data").send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let requests = server.received_requests().await.expect("recorded");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&requests[0].body).into_owned().collect();
    let assertion = form
        .iter()
        .find(|(name, _)| name == "assertion")
        .map(|(_, jwt)| jwt)
        .expect("assertion");
    assert!(
        openssl.verifies(assertion, "google.pem"),
        "OpenSSL rejects the assertion"
    );
}

#[tokio::test]
async fn a_bearer_exchange_is_made_once_for_many_requests_and_again_at_expiry() {
    let Some(openssl) = OpenSsl::find() else { return };
    let key = openssl.key(
        "app.pem",
        &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let server = MockServer::start().await;
    // GitHub's installation token: it expires in 2 s here, so it is
    // renewed halfway through.
    let expires_at = || {
        (OffsetDateTime::now_utc() + Duration::from_secs(2))
            .format(&Rfc3339)
            .expect("format")
    };
    Mock::given(method("POST"))
        .and(path("/app/installations/42/access_tokens"))
        .and(header_regex(
            "authorization",
            "^Bearer [A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$",
        ))
        .respond_with(move |_: &Request| {
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({ "token": "ghs_s3cret", "expires_at": expires_at() }))
        })
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/data"))
        .and(header_regex("authorization", "^Bearer ghs_s3cret$"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let exchange = r#"exchange = { endpoint = "{server}/app/installations/{installation_id}/access_tokens", send_jwt_as = "bearer", token_response = { token = "/token", expires_at = "/expires_at" } }"#
        .replace("{server}", &server.uri());
    let hub = service(&server, "ES256", &exchange, &key).await;
    let client = hub.client(&acct()).await.expect("client");
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request(Method::GET, "data").send().await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("task").expect("sent").status(), StatusCode::OK);
    }
    let exchanges = |requests: &[Request]| {
        requests
            .iter()
            .filter(|request| request.url.path().starts_with("/app/"))
            .count()
    };
    assert_eq!(
        exchanges(&server.received_requests().await.expect("recorded")),
        1,
        "one exchange"
    );
    let jwt = bearer(&server.received_requests().await.expect("recorded")[0]);
    assert!(openssl.verifies(&jwt, "app.pem"), "OpenSSL rejects the ES256 JWT");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let response = client.request(Method::GET, "data").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        exchanges(&server.received_requests().await.expect("recorded")),
        2,
        "a token past its renewal time is exchanged again"
    );
}

#[tokio::test]
async fn a_401_gets_one_new_token_and_one_retry() {
    let Some(openssl) = OpenSsl::find() else { return };
    let key = openssl.key(
        "k.pem",
        &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "access_token": "t-s3cret", "expires_in": 3600 })),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/data"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let exchange =
        r#"exchange = { endpoint = "{server}/token", send_jwt_as = "assertion" }"#.replace("{server}", &server.uri());
    let hub = service(&server, "ES256", &exchange, &key).await;
    let client = hub.client(&acct()).await.expect("client");
    let response = client.request(Method::GET, "data").send().await.expect("sent");
    // One new token, one retry, then the provider's 401 comes back.
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn keys_that_cannot_sign_are_refused_when_the_account_is_made() {
    let Some(openssl) = OpenSsl::find() else { return };
    let encrypted = openssl.key(
        "encrypted.pem",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-aes-256-cbc",
            "-pass",
            "pass:s3cret",
        ],
    );
    let sec1 = openssl.key("sec1.pem", &["ecparam", "-name", "prime256v1", "-genkey", "-noout"]);
    let ec = openssl.key(
        "ec.pem",
        &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let cases = [
        ("RS256", encrypted.as_str(), "is encrypted with a passphrase"),
        ("ES256", sec1.as_str(), "is a SEC1 EC key"),
        ("RS256", ec.as_str(), "is not a usable RSA key"),
        ("ES256", "not a key", "is not a PEM private key"),
    ];
    for (algorithm, key, expected) in cases {
        integrations::register_methods();
        let definitions = integrations::Definitions::from_str(
            &definition("https://service.example", algorithm, ""),
            integrations::definition::Format::Toml,
        )
        .expect("valid");
        let store = integrations::AccountStore::new(
            std::sync::Arc::new(integrations::storage::memory::MemoryStorage::new()),
            integrations::Cipher::new(&integrations::EncryptionKey::generate()),
        );
        let error = store
            .create(
                definitions.integration("service").expect("defined"),
                integrations::NewAccount::new(acct())
                    .parameter("client_email", "robot@project.example")
                    .credential("private_key", key),
            )
            .await
            .expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let message = error.to_string();
        assert!(message.contains(expected), "{algorithm}: {message}");
        // No part of the key is quoted.
        let body = key.lines().nth(1).unwrap_or(key);
        assert!(!message.contains(body) && !message.contains("s3cret"), "{message}");
    }
}
