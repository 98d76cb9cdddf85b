//! Integration definitions: the file format, loading and validation.

mod load;
mod model;
#[cfg(feature = "schema")]
mod schema;
mod validate;

pub use load::{Definitions, Format};
pub use model::*;
#[cfg(feature = "schema")]
pub use schema::json_schema;
pub use validate::{DefinitionError, DefinitionErrors};
