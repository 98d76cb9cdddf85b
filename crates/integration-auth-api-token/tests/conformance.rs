//! The auth-method conformance suite.

use integration_method_tests::{Case, method_conformance};

fn case() -> Case {
    Case {
        definition: r#"
            [[integration]]
            key = "weather"
            name = "Weather"
            base_url = "$SERVER/v1"
            parameters = [{ name = "station", secret = true }]
            auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }
        "#
        .to_owned(),
        parameters: vec![("station", "station-s3cret")],
        credentials: vec![("token", "tok-s3cret")],
        bad_definitions: vec![
            (
                r#"[[integration]]
                key = "weather"
                name = "Weather"
                auth = { type = "api_token" }"#
                    .to_owned(),
                "missing required field `token`",
            ),
            (
                r#"[[integration]]
                key = "weather"
                name = "Weather"
                auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X Key", value_template = "{token}" } }"#
                    .to_owned(),
                "is not a valid header name",
            ),
        ],
        renews_after_401: false,
    }
}

method_conformance!(integration_auth_api_token::ApiToken, case());
