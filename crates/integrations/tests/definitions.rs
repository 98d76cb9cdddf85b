//! The examples validate; each broken definition gets one precise error.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use integrations::Definitions;
use integrations::auth::oauth2::{GrantType, OAuth2};
use integrations::definition::{Format, ParameterType, Verb, json_schema};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_validates() {
    integrations::register_methods();
    let examples = workspace_root().join("examples");
    let definitions = Definitions::load([&examples]).unwrap_or_else(|errors| panic!("{errors}"));
    let types: Vec<&str> = definitions.iter().map(|integration| integration.auth_type()).collect();
    for auth_type in integrations::method::registered() {
        assert!(types.contains(&auth_type), "examples/ has no {auth_type} integration");
    }
    // Each file also validates on its own.
    for file in files_in(&examples) {
        Definitions::load([&file]).unwrap_or_else(|errors| panic!("{errors}"));
    }
}

#[test]
fn example_fields_are_read_as_written() {
    integrations::register_methods();
    let definitions = Definitions::load([workspace_root().join("examples/acmecrm.toml")]).expect("valid");
    let acme = definitions.get("acmecrm").expect("acmecrm");
    let oauth2 = acme.auth.definition::<OAuth2>().expect("acmecrm is oauth2");
    assert_eq!(oauth2.grant_type, GrantType::AuthorizationCode);
    assert_eq!(oauth2.access_token_verb, Verb::Post);
    assert_eq!(oauth2.token.parameter_type, ParameterType::Header);
    assert_eq!(oauth2.token.value_template.source(), "Bearer {token}");
    assert_eq!(
        oauth2.access_token_endpoint.source(),
        "https://{subdomain}.acme.example/oauth/token"
    );
    assert!(acme.parameter("client_secret").is_some_and(|p| p.secret));
    assert_eq!(acme.request_parameters[0].name, "Accept");
}

#[test]
fn broken_definitions_get_one_precise_error_each() {
    integrations::register_methods();
    let root = workspace_root();
    let mut report = String::new();
    for file in files_in(&root.join("tests/definitions/broken")) {
        let errors = Definitions::load([&file]).expect_err("a broken definition must not load");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        assert_eq!(
            errors.errors().len(),
            1,
            "{name} must get exactly one error, got:\n{errors}"
        );
        let error = &errors.errors()[0];
        assert_eq!(
            error.file.as_deref(),
            Some(file.as_path()),
            "the error must name the file"
        );
        writeln!(report, "{name}\n  {}: {}", error.path, error.message).expect("write to string");
    }
    insta::assert_snapshot!(report);
}

#[test]
fn every_problem_is_reported_at_once() {
    integrations::register_methods();
    let text = r#"
        [[integration]]
        key = "bad-key"
        name = "One"
        parameters = [{ name = "region" }]
        base_url = "https://{tenant}.example.com"
        auth = { type = "api_token", token = { parameter_type = "cookie", parameter_name = "X", value_template = "{token}" }, extra = 1 }

        [[integration]]
        name = "Two"
        auth = { type = "oauth2", grant_type = "client_credentials" }

        [[integration]]
        key = "three"
        name = "Three"
        auth = { type = "custom_token", access_token_endpoint = "https://x.example/{region}", access_token_verb = "GET", token = { parameter_type = "header", parameter_name = "A", value_template = "no token here" } }
    "#;
    let errors = Definitions::from_str(text, Format::Toml).expect_err("broken");
    insta::assert_snapshot!(errors.to_string());
}

#[test]
fn the_three_formats_load_the_same_integration() {
    integrations::register_methods();
    let toml = r#"
        [[integration]]
        key = "acme"
        name = "Acme"
        parameters = [{ name = "region", default = "eu" }]
        base_url = "https://{region}.acme.example"
        auth = { type = "api_token", token = { parameter_type = "url_parameter", parameter_name = "key", value_template = "{token}" } }
    "#;
    let from_toml = Definitions::from_str(toml, Format::Toml).expect("toml");
    let integration = from_toml.get("acme").expect("acme");
    let json = serde_json::to_string(&serde_json::json!({ "integration": [integration.as_ref()] })).expect("json");
    let yaml = serde_yaml_ng::to_string(&serde_json::json!({ "integrations": [integration.as_ref()] })).expect("yaml");
    let from_json = Definitions::from_str(&json, Format::Json).expect("json loads");
    let from_yaml = Definitions::from_str(&yaml, Format::Yaml).expect("yaml loads");
    assert_eq!(from_json.get("acme"), Some(integration));
    assert_eq!(from_yaml.get("acme"), Some(integration));
}

#[test]
fn duplicate_keys_are_found_across_files() {
    integrations::register_methods();
    let dir = tempfile::tempdir().expect("temp dir");
    let one = "[[integration]]\nkey = \"acme\"\nname = \"A\"\nauth = { type = \"basic\" }\n";
    std::fs::write(dir.path().join("a.toml"), one).expect("write");
    std::fs::write(
        dir.path().join("b.json"),
        r#"{"integration": [{"key": "acme", "name": "B", "auth": {"type": "basic"}}]}"#,
    )
    .expect("write");
    std::fs::write(dir.path().join("README.md"), "not a definition").expect("write");
    let errors = Definitions::load([dir.path()]).expect_err("duplicate");
    assert_eq!(errors.errors().len(), 1, "{errors}");
    let message = errors.to_string();
    assert!(
        message.contains("b.json: integration[0].key: duplicate key `acme`, first defined at"),
        "{message}"
    );
    assert!(message.contains("a.toml: integration[0]"), "{message}");
}

#[test]
fn a_literal_client_secret_is_never_echoed() {
    integrations::register_methods();
    let text = r#"
        [[integration]]
        key = "acme"
        name = "Acme"
        [integration.auth]
        type = "oauth2"
        grant_type = "client_credentials"
        access_token_endpoint = "https://acme.example/token"
        access_token_verb = "POST"
        scope = "read"
        client_id = "id"
        client_secret = "sup3r{s3cret"
        token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
    "#;
    let errors = Definitions::from_str(text, Format::Toml).expect_err("unclosed brace");
    let shown = format!("{errors} {errors:?}");
    assert!(shown.contains("client_secret"), "{shown}");
    assert!(!shown.contains("s3cret"), "the secret leaked: {shown}");

    let valid = text.replace("sup3r{s3cret", "sup3r{{s3cret").replace(
        r#"name = "Acme""#,
        r#"name = "Acme"
        parameters = [{ name = "fallback", secret = true, default = "def4ult-s3cret" }]"#,
    );
    let definitions = Definitions::from_str(&valid, Format::Toml).expect("valid");
    let debug = format!("{definitions:?}");
    assert!(!debug.contains("s3cret"), "the secret leaked into Debug: {debug}");
}

#[test]
fn published_schema_matches_the_model() {
    integrations::register_methods();
    let generated = serde_json::to_string_pretty(&json_schema()).expect("schema") + "\n";
    // The published copy, assembled from the methods of a default build.
    let path = "docs/definition.schema.json";
    let committed = std::fs::read_to_string(workspace_root().join(path)).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} is out of date: run `cargo xtask schema`"
    );
}

#[test]
fn a_directory_without_definitions_is_an_error() {
    integrations::register_methods();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notes.txt"), "nothing here").expect("write");
    let errors = Definitions::load([dir.path()]).expect_err("empty");
    assert!(
        errors
            .to_string()
            .ends_with("no definition files (.toml, .yaml, .yml, .json) in this directory"),
        "{errors}"
    );
}

#[test]
fn plain_http_is_allowed_to_loopback_or_with_the_lab_opt_out_only() {
    integrations::register_methods();
    let definition = |base_url: &str, extra: &str| {
        format!(
            r#"
            [[integration]]
            key = "lab"
            name = "Lab"
            base_url = "{base_url}"
            {extra}
            auth = {{ type = "basic" }}
            "#
        )
    };
    for loopback in [
        "http://localhost:8080/api",
        "http://127.0.0.1:9/api",
        "http://127.1.2.3/api",
        "http://[::1]:8080/api",
        "HTTP://LOCALHOST/api",
        "https://{tenant}.example/api",
    ] {
        let text = definition(loopback, r#"parameters = [{ name = "tenant" }]"#);
        Definitions::from_str(&text, Format::Toml).unwrap_or_else(|errors| panic!("{loopback}: {errors}"));
    }
    for remote in [
        "http://192.0.2.2/api",
        "http://api.example/api",
        "http://{tenant}.localhost/api",
        "http://user@10.0.0.1:80/api",
        "http://[2001:db8::1]/api",
        "http://localhost.evil.example/api",
    ] {
        let text = definition(remote, r#"parameters = [{ name = "tenant" }]"#);
        let errors = Definitions::from_str(&text, Format::Toml).expect_err(remote);
        let message = errors.to_string();
        assert!(
            message.contains("integration[0].base_url: plain http to"),
            "{remote}: {message}"
        );
        let allowed = definition(
            remote,
            "parameters = [{ name = \"tenant\" }]\n            allow_insecure_http = true",
        );
        let loaded =
            Definitions::from_str(&allowed, Format::Toml).unwrap_or_else(|errors| panic!("{remote}: {errors}"));
        assert!(loaded.get("lab").expect("lab").allow_insecure_http);
    }
}

#[test]
fn a_failed_load_converts_into_the_crate_error_with_every_problem() {
    integrations::register_methods();
    fn load(text: &str) -> integrations::Result<Definitions> {
        Ok(Definitions::from_str(text, Format::Toml)?)
    }
    let error =
        load("[[integration]]\nkey = \"bad-key\"\nname = \"\"\nauth = { type = \"basic\" }\n").expect_err("invalid");
    assert_eq!(error.kind(), integrations::ErrorKind::InvalidInput);
    let message = error.to_string();
    assert!(message.starts_with("2 problems in the definitions:"), "{message}");
    assert!(message.contains("integration[0].key"), "{message}");
    assert!(message.contains("integration[0].name"), "{message}");
}
