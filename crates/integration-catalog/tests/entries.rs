//! Every entry validates as a definition, every file is an entry, and a
//! definition extends one with its own fields.

use std::path::Path;

use integrations::Definitions;
use integrations::definition::Format;

#[test]
fn every_entry_validates_and_every_file_is_listed() {
    integrations::register_methods();
    let entries = integration_catalog::entries();
    let mut keys: Vec<&str> = entries.iter().map(|entry| entry.key).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "entries are listed sorted by key");
    for entry in entries {
        let definitions = Definitions::from_str(entry.definition, Format::Toml)
            .unwrap_or_else(|errors| panic!("entry `{}`:\n{errors}", entry.key));
        let integration = definitions
            .get(entry.key)
            .unwrap_or_else(|| panic!("entry `{}` has its own key", entry.key));
        assert_eq!(integration.name, entry.name());
        assert!(
            entry.setup.starts_with(&format!("# {}\n", entry.name())),
            "the setup page of `{}` starts with its name",
            entry.key
        );
    }
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("entries");
    let mut files: Vec<String> = std::fs::read_dir(&directory)
        .expect("entries")
        .filter_map(|file| {
            file.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".toml")
                .map(str::to_owned)
        })
        .collect();
    files.sort_unstable();
    keys.sort_unstable();
    assert_eq!(files, keys, "every file in entries/ is in the catalog");
}

#[test]
fn a_definition_extends_an_entry_and_the_result_is_validated() {
    integrations::register_methods();
    let ours = Definitions::from_str(
        r#"
        [[integration]]
        extends = "stripe"
        name = "Stripe (billing)"
        timeout_seconds = 10
        "#,
        Format::Toml,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let stripe = ours.get("stripe").expect("the entry's key");
    assert_eq!(stripe.name, "Stripe (billing)");
    assert_eq!(stripe.timeout_seconds, Some(10.0));
    assert_eq!(stripe.extends.as_deref(), Some("stripe"));
    assert_eq!(
        stripe.base_url.as_ref().map(|url| url.source()),
        Some("https://api.stripe.com/v1")
    );

    // Two accounts' worth of one entry, under keys of their own; the auth
    // table merges field by field.
    let pair = Definitions::from_str(
        r#"
        [[integration]]
        extends = "sftp"
        key = "partnerA"
        auth = { host = "sftp.partner-a.example" }

        [[integration]]
        extends = "sftp"
        key = "partnerB"
        "#,
        Format::Toml,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(pair.iter().len(), 2);
    assert_eq!(pair.get("partnerA").expect("a").auth_type(), "sftp");

    for (text, names) in [
        (
            "[[integration]]\nextends = \"stirpe\"",
            "no catalog entry `stirpe`; did you mean `stripe`?",
        ),
        (
            "[[integration]]\nextends = \"acmecrm\"",
            "no catalog entry `acmecrm`; `integrations catalog list` shows the",
        ),
        (
            "[[integration]]\nextends = 7",
            "`extends` must be the key of a catalog entry",
        ),
        (
            "[[integration]]\nextends = \"stripe\"\nbase_url = \"ftp://api.stripe.com\"",
            "base_url",
        ),
    ] {
        let errors = Definitions::from_str(text, Format::Toml).expect_err(text).to_string();
        assert!(errors.contains(names), "{text}: {errors}");
    }
}
