//! The auth-method conformance suite.

use integration_method_tests::{Case, method_conformance};

fn case() -> Case {
    Case {
        definition: r#"
            [[integration]]
            key = "partner"
            name = "Partner"
            base_url = "$SERVER/api"
            parameters = [{ name = "api_key", secret = true }]
            [integration.auth]
            type = "custom_token"
            access_token_endpoint = "$SERVER/token"
            access_token_verb = "POST"
            access_token_parameters = { key = "{api_key}" }
            token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
        "#
        .to_owned(),
        parameters: vec![("api_key", "key-s3cret")],
        bad_definitions: vec![
            (
                r#"[[integration]]
                key = "partner"
                name = "Partner"
                [integration.auth]
                type = "custom_token"
                access_token_endpoint = "$SERVER/token"
                access_token_verb = "GET"
                access_token_body = "json"
                token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }"#
                    .to_owned(),
                "access_token_body applies to POST only",
            ),
            (
                r#"[[integration]]
                key = "partner"
                name = "Partner"
                [integration.auth]
                type = "custom_token"
                access_token_endpoint = "$SERVER/token"
                access_token_verb = "POST"
                token_response = { refresh_token = "/refresh" }
                token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }"#
                    .to_owned(),
                "custom tokens are not refreshed",
            ),
        ],
        renews_after_401: true,
        ..Case::default()
    }
}

method_conformance!(integration_auth_custom_token::CustomToken, case());
