//! The JSON Schema of the definition format.

use schemars::{JsonSchema, Schema, generate::SchemaSettings};
use serde::{Deserialize, Serialize};

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
/// other tools.
pub fn json_schema() -> Schema {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<DefinitionFile>()
}
