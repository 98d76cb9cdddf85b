//! The JSON Schema of the definition format.

use std::sync::{Arc, Mutex};

use schemars::{JsonSchema, Schema, generate::SchemaSettings};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Integration;

/// A definition file: one or more integrations under `integration` (the
/// TOML `[[integration]]` form) or `integrations`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Integration definitions")]
pub(crate) struct DefinitionFile {
    /// The integrations this file defines.
    #[serde(default)]
    pub(crate) integration: Vec<Integration>,
    /// Another name for `integration`; a file uses one or the other.
    #[serde(default)]
    pub(crate) integrations: Vec<Integration>,
}

/// The JSON Schema (draft 2020-12) of a definition file, for editors and
/// other tools: the integration's fields, and under `auth` one table per
/// registered method.
pub fn json_schema() -> Schema {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<DefinitionFile>()
}

/// The schema the loader checks structure against, made again only when
/// the registry changes.
pub(crate) fn definition_schema() -> Arc<Value> {
    static BUILT: Mutex<Option<(u64, Arc<Value>)>> = Mutex::new(None);
    let generation = crate::method::registry::generation();
    let mut built = BUILT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match &*built {
        Some((made_at, schema)) if *made_at == generation => Arc::clone(schema),
        _ => {
            let schema = Arc::new(json_schema().to_value());
            *built = Some((generation, Arc::clone(&schema)));
            schema
        }
    }
}
