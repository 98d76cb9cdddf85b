//! The auth-method conformance suite.

use integration_method_tests::{Case, method_conformance};

fn case() -> Case {
    Case {
        definition: r#"
            [[integration]]
            key = "files"
            name = "Files"
            auth = { type = "sftp", host = "sftp.example" }
        "#
        .to_owned(),
        credentials: vec![
            ("username", "ada"),
            ("password", "pass-s3cret"),
            ("host_key", "insecure-accept-any"),
        ],
        bad_definitions: vec![(
            r#"[[integration]]
            key = "files"
            name = "Files"
            base_url = "https://files.example"
            auth = { type = "sftp", host = "sftp.example" }"#
                .to_owned(),
            "SFTP makes no HTTP requests",
        )],
        renews_after_401: false,
        ..Case::default()
    }
}

method_conformance!(integration_sftp::Sftp, case());
