#![doc = include_str!("../README.md")]

use serde_json::Value;

/// A catalog entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its key, which `extends` names.
    pub key: &'static str,
    /// Its definition: one `[[integration]]` table, in TOML.
    pub definition: &'static str,
    /// Its setup page, in Markdown.
    pub setup: &'static str,
}

macro_rules! entries {
    ($($key:literal),* $(,)?) => {
        /// Every entry, sorted by key.
        pub const ENTRIES: &[Entry] = &[$(Entry {
            key: $key,
            definition: include_str!(concat!("../entries/", $key, ".toml")),
            setup: include_str!(concat!("../setup/", $key, ".md")),
        }),*];
    };
}

entries![
    "airtable",
    "asana",
    "atlassian",
    "box",
    "calendly",
    "docusign",
    "dropbox",
    "figma",
    "github",
    "githubapp",
    "gitlab",
    "google",
    "hubspot",
    "intercom",
    "linear",
    "mailchimp",
    "microsoft",
    "notion",
    "okta",
    "pipedrive",
    "quickbooks",
    "salesforce",
    "sendgrid",
    "sftp",
    "shopify",
    "slack",
    "stripe",
    "twilio",
    "xero",
    "zendesk",
    "zendesktoken",
    "zoom",
    "zoomservertoserver",
];

/// Every entry, sorted by key.
pub fn entries() -> &'static [Entry] {
    ENTRIES
}

/// The entry `key`.
pub fn entry(key: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|entry| entry.key == key)
}

impl Entry {
    /// Its integration table, as the definition loader reads it.
    pub fn integration(&self) -> Value {
        let document: Value = toml::from_str(self.definition).unwrap_or(Value::Null);
        document.pointer("/integration/0").cloned().unwrap_or(Value::Null)
    }

    /// Its display name.
    pub fn name(&self) -> String {
        self.field("/name")
    }

    /// Its auth method: `oauth2`, `api_token`, `basic`, `custom_token` or
    /// `sftp`.
    pub fn auth_type(&self) -> String {
        self.field("/auth/type")
    }

    fn field(&self, pointer: &str) -> String {
        self.integration()
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether `word` appears in its key, name or setup page (ignoring
    /// case).
    pub fn matches(&self, word: &str) -> bool {
        let word = word.to_lowercase();
        [self.key.to_owned(), self.name(), self.setup.to_owned()]
            .iter()
            .any(|text| text.to_lowercase().contains(&word))
    }
}

/// The integration table a definition that extends `key` starts from.
pub fn resolve(key: &str) -> Option<Value> {
    entry(key).map(Entry::integration)
}

/// Every entry's key.
pub fn keys() -> Vec<&'static str> {
    ENTRIES.iter().map(|entry| entry.key).collect()
}
