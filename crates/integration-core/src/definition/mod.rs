//! Integration definitions: the file format, loading and validation.

mod catalog;
mod load;
mod model;
mod schema;
mod validate;

pub use catalog::{CatalogResolver, register_catalog, unknown_entry};
pub use load::{Definitions, Format};
pub use model::*;
pub use schema::json_schema;
pub use validate::{DefinitionError, DefinitionErrors, is_env_name, is_header_name, is_host_template};
