//! `extends = "KEY"`: a definition that starts from a catalog entry.
//!
//! The catalog lives in its own crate; it is registered here (the runtime
//! does it in `register_methods`), so that the loader needs no dependency
//! on it.

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// Finds a catalog entry's integration table by key, and lists the keys.
#[derive(Debug, Clone, Copy)]
pub struct CatalogResolver {
    /// The integration table of entry `key`.
    pub resolve: fn(&str) -> Option<Value>,
    /// Every entry's key.
    pub keys: fn() -> Vec<&'static str>,
}

static CATALOG: OnceLock<CatalogResolver> = OnceLock::new();

/// Registers the catalog `extends` looks entries up in; the first
/// registration wins.
pub fn register_catalog(resolver: CatalogResolver) {
    let _ = CATALOG.set(resolver);
}

/// `item` with the entry it extends merged under it, or why not.
pub(crate) fn extended(item: &Value) -> Result<Option<Value>, String> {
    let Some(extends) = item.get("extends") else {
        return Ok(None);
    };
    let Some(key) = extends.as_str() else {
        return Err("`extends` must be the key of a catalog entry, such as \"github\"".to_owned());
    };
    let Some(catalog) = CATALOG.get() else {
        return Err(format!(
            "`extends = \"{key}\"` needs the catalog: enable the `catalog` feature of the `integrations` crate"
        ));
    };
    let Some(mut base) = (catalog.resolve)(key) else {
        return Err(unknown_entry(key, &(catalog.keys)()));
    };
    // The entry's own `extends` never chains: the result names this one.
    if let Some(base) = base.as_object_mut() {
        base.remove("extends");
    }
    merge(&mut base, item.clone());
    Ok(Some(base))
}

/// Merges `over` into `base`: tables field by field, anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => merge_tables(base, over),
        (base, over) => *base = over,
    }
}

fn merge_tables(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (name, value) in over {
        match base.get_mut(&name) {
            Some(existing) => merge(existing, value),
            None => {
                base.insert(name, value);
            }
        }
    }
}

/// Says that `key` is no catalog entry, suggesting the ones of `keys` a
/// typo may have meant.
pub fn unknown_entry(key: &str, keys: &[&str]) -> String {
    let near: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|entry| edit_distance(&entry.to_lowercase(), &key.to_lowercase()) <= 2)
        .collect();
    if near.is_empty() {
        format!(
            "no catalog entry `{key}`; `integrations catalog list` shows the {} entries",
            keys.len()
        )
    } else {
        format!("no catalog entry `{key}`; did you mean `{}`?", near.join("` or `"))
    }
}

/// Levenshtein distance, for suggesting the entry a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_merge_field_by_field_and_lists_are_replaced() {
        let mut base = json!({ "key": "github", "auth": { "type": "oauth2", "client_id": "x", "scope": ["repo"] } });
        merge(
            &mut base,
            json!({ "auth": { "client_id": "mine", "scope": ["read:user"] }, "name": "GitHub (ours)" }),
        );
        assert_eq!(
            base,
            json!({ "key": "github", "name": "GitHub (ours)", "auth": { "type": "oauth2", "client_id": "mine", "scope": ["read:user"] } })
        );
    }
}
