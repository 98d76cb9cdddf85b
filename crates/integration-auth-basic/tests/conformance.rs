//! The auth-method conformance suite.

use integration_method_tests::{Case, method_conformance};

fn case() -> Case {
    Case {
        definition: r#"
            [[integration]]
            key = "erp"
            name = "ERP"
            base_url = "$SERVER/api"
            auth = { type = "basic" }
        "#
        .to_owned(),
        credentials: vec![("username", "ada"), ("password", "pass-s3cret")],
        bad_definitions: vec![(
            r#"[[integration]]
            key = "erp"
            name = "ERP"
            auth = { type = "basic", realm = "x" }"#
                .to_owned(),
            "unknown field `realm`",
        )],
        renews_after_401: false,
        ..Case::default()
    }
}

method_conformance!(integration_auth_basic::Basic, case());
