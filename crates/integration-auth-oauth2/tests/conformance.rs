//! The auth-method conformance suite.

use integration_method_tests::{Case, method_conformance};

fn case() -> Case {
    Case {
        definition: r#"
            [[integration]]
            key = "crm"
            name = "CRM"
            base_url = "$SERVER/api"
            [integration.auth]
            type = "oauth2"
            grant_type = "client_credentials"
            access_token_endpoint = "$SERVER/token"
            access_token_verb = "POST"
            scope = "read"
            client_id = "crm-client"
            client_secret = "client-s3cret"
            token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
        "#
        .to_owned(),
        bad_definitions: vec![(
            r#"[[integration]]
            key = "crm"
            name = "CRM"
            [integration.auth]
            type = "oauth2"
            grant_type = "authorization_code"
            access_token_endpoint = "$SERVER/token"
            access_token_verb = "POST"
            scope = "read"
            client_id = "crm-client"
            client_secret = "client-s3cret"
            token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }"#
                .to_owned(),
            "missing required field `authorization_endpoint`",
        )],
        renews_after_401: true,
        ..Case::default()
    }
}

method_conformance!(integration_auth_oauth2::OAuth2, case());
