//! The auth-method conformance suite.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use integration_auth_jwt::Jwt;
use integration_method_tests::{Case, method_conformance};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// A fresh P-256 key in PKCS#8 PEM, kept for the test's life.
fn private_key() -> &'static str {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).expect("key");
    let base64 = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = base64
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("base64"))
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    Box::leak(pem.into_boxed_str())
}

fn case() -> Case {
    Case {
        definition: r#"
            [[integration]]
            key = "service"
            name = "Service account"
            base_url = "$SERVER/api"
            parameters = [{ name = "client_email" }]
            [integration.auth]
            type = "jwt"
            algorithm = "ES256"
            claims = { iss = "{client_email}", aud = "$SERVER/token" }
            token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
            [integration.auth.exchange]
            endpoint = "$SERVER/token"
            send_jwt_as = "assertion"
        "#
        .to_owned(),
        parameters: vec![("client_email", "robot@project.example")],
        credentials: vec![("private_key", private_key())],
        bad_definitions: vec![
            (
                r#"[[integration]]
                key = "service"
                name = "Service account"
                [integration.auth]
                type = "jwt"
                algorithm = "ES256"
                claims = { exp = "9999999999" }
                token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }"#
                    .to_owned(),
                "`exp` is set when the JWT is signed",
            ),
            (
                r#"[[integration]]
                key = "service"
                name = "Service account"
                [integration.auth]
                type = "jwt"
                algorithm = "ES256"
                token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
                exchange = { endpoint = "$SERVER/token", send_jwt_as = "assertion", verb = "GET" }"#
                    .to_owned(),
                "the JWT bearer grant (RFC 7523) is a POST",
            ),
            (
                r#"[[integration]]
                key = "service"
                name = "Service account"
                [integration.auth]
                type = "jwt"
                algorithm = "HS256"
                token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }"#
                    .to_owned(),
                "expected one of `RS256`, `ES256`",
            ),
        ],
        renews_after_401: true,
    }
}

method_conformance!(Jwt, case());
