//! The auth-method conformance suite, as every method runs it.

use example_auth_method::HmacSigned;
use integration_method_tests::{Case, method_conformance};

fn case() -> Case {
    Case {
        definition: r#"
            [[integration]]
            key = "exchange"
            name = "Exchange"
            base_url = "$SERVER/api"
            auth = { type = "hmac" }
        "#
        .to_owned(),
        credentials: vec![("key_id", "key-1"), ("secret", "signing-s3cret")],
        bad_definitions: vec![
            (
                r#"[[integration]]
                key = "exchange"
                name = "Exchange"
                auth = { type = "hmac", signature_header = "x-key-id" }"#
                    .to_owned(),
                "is already the header of auth.key_id_header",
            ),
            (
                r#"[[integration]]
                key = "exchange"
                name = "Exchange"
                auth = { type = "hmac", timestamp_header = "X Time" }"#
                    .to_owned(),
                "`X Time` is not a valid header name",
            ),
        ],
        renews_after_401: false,
        ..Case::default()
    }
}

method_conformance!(HmacSigned, case());
