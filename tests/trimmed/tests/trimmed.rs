//! The facade with `default-features = false` and only API Token, the
//! memory store and TOML: the README's example runs, and what the build
//! leaves out is refused when the definitions load, naming the feature.

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use integrations::definition::Format;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, ErrorKind, Integrations, NewAccount};

#[test]
fn a_method_left_out_is_refused_when_definitions_load() {
    integrations::register_methods();
    let errors = Definitions::from_str(
        r#"
        [[integration]]
        key = "legacy"
        name = "Legacy"
        base_url = "https://legacy.example"
        auth = { type = "basic" }
        "#,
        Format::Toml,
    )
    .expect_err("basic is not in this build")
    .to_string();
    assert!(errors.contains("integration[0].auth.type"), "{errors}");
    assert!(errors.contains("`basic` is not in this build"), "{errors}");
    assert!(errors.contains("enable the `auth-basic` feature"), "{errors}");
}

#[test]
fn a_format_left_out_is_refused_naming_its_feature() {
    integrations::register_methods();
    let errors = Definitions::from_str("integration: []", Format::Yaml)
        .expect_err("YAML is not in this build")
        .to_string();
    assert!(errors.contains("enable the `yaml` feature"), "{errors}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_readme_example_runs_on_the_trimmed_build() -> Result<(), Box<dyn std::error::Error>> {
    // An upstream on loopback that answers once with what it was sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let upstream = std::thread::spawn(move || -> std::io::Result<String> {
        let (mut stream, _) = listener.accept()?;
        let mut request = Vec::new();
        let mut chunk = [0; 1024];
        while !request.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..read]);
        }
        let body = r#"{"contacts":["ada"]}"#;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
        Ok(String::from_utf8_lossy(&request).into_owned())
    });

    integrations::register_methods();
    let definitions = Definitions::from_str(
        &format!(
            r#"
            [[integration]]
            key = "crm"
            name = "CRM"
            base_url = "http://{address}/v1"
            auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
            "#
        ),
        Format::Toml,
    )?;
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    let crm = definitions.integration("crm")?;
    store
        .create(
            crm,
            NewAccount::new(AccountId::try_from("customer-42")?).credential("token", "s3cr3t"),
        )
        .await?;
    let integrations = Integrations::new(definitions, store)?;

    let account = integrations.client(&AccountId::try_from("customer-42")?).await?;
    let contacts = account
        .get("/contacts")
        .query(&[("page", "1")])
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(contacts, r#"{"contacts":["ada"]}"#);
    let request = upstream.join().map_err(|_| "the upstream panicked")??;
    assert!(request.starts_with("GET /v1/contacts?page=1 HTTP/1.1\r\n"), "{request}");
    assert!(request.contains("authorization: Bearer s3cr3t\r\n"), "{request}");

    // Errors have kinds to match on.
    let refused = account
        .get("https://elsewhere.example/")
        .send()
        .await
        .expect_err("another host");
    assert_eq!(refused.kind(), ErrorKind::Refused);
    Ok(())
}
