//! The auth methods this process knows, by `type` name.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AuthDefinition;

/// An auth method as the registry holds it: its `type` name, the schema of
/// its table, and the parser of its table.
///
/// Most methods implement [`MethodTable`] on their table type and register
/// it with [`register`]; implement this trait directly for a table that
/// serde alone cannot read.
pub trait AuthMethod: Send + Sync + 'static {
    /// The name written in `auth.type`: lower case ASCII letters, digits
    /// and `_`.
    fn type_name(&self) -> &'static str;

    /// The JSON Schema of the table, `type` left out, with no `$ref`.
    fn table_schema(&self) -> Value;

    /// Reads the table, `type` left out, whose structure matches the schema.
    fn parse(&self, table: Value) -> Result<Arc<dyn AuthDefinition>, String>;
}

/// A definition table that serde reads and schemars describes: what a
/// method crate implements to be registered with one call to [`register`].
pub trait MethodTable: AuthDefinition + DeserializeOwned + JsonSchema {
    /// The name written in `auth.type`.
    const TYPE: &'static str;
}

/// The [`AuthMethod`] of a [`MethodTable`].
pub struct TableMethod<T>(PhantomData<fn() -> T>);

impl<T> Default for TableMethod<T> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T: MethodTable> AuthMethod for TableMethod<T> {
    fn type_name(&self) -> &'static str {
        T::TYPE
    }

    fn table_schema(&self) -> Value {
        let mut settings = SchemaSettings::draft2020_12();
        settings.inline_subschemas = true;
        let mut schema = settings.into_generator().into_root_schema_for::<T>().to_value();
        if let Some(object) = schema.as_object_mut() {
            object.remove("$schema");
            object.remove("title");
        }
        schema
    }

    fn parse(&self, table: Value) -> Result<Arc<dyn AuthDefinition>, String> {
        serde_json::from_value::<T>(table)
            .map(|definition| Arc::new(definition) as Arc<dyn AuthDefinition>)
            .map_err(|error| error.to_string())
    }
}

#[derive(Default)]
struct Registry {
    methods: BTreeMap<&'static str, Arc<dyn AuthMethod>>,
    /// Why a method is not here, for names this build knows of but left out.
    unavailable: BTreeMap<&'static str, String>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(RwLock::default);

/// Moves on at every change, so that what is built from the methods (the
/// definition schema) is built again.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The registry's current generation.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

fn read() -> std::sync::RwLockReadGuard<'static, Registry> {
    REGISTRY.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    REGISTRY.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers the method whose table is `T`, for the whole process:
/// definitions may then use it, and accounts of it are served. Registering
/// a name again replaces the method.
///
/// ```
/// # use integration_core::method::{AuthDefinition, CredentialField, MethodTable};
/// #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct Passcode {}
///
/// impl AuthDefinition for Passcode {
///     fn credential_fields(&self) -> Vec<CredentialField> {
///         vec![CredentialField::required("passcode", "the passcode")]
///     }
/// }
///
/// impl MethodTable for Passcode {
///     const TYPE: &'static str = "passcode";
/// }
///
/// integration_core::method::register::<Passcode>();
/// assert!(integration_core::method::registered().contains(&"passcode"));
/// ```
pub fn register<T: MethodTable>() {
    register_method(TableMethod::<T>::default());
}

/// Registers `method`, replacing one of the same name.
pub fn register_method(method: impl AuthMethod) {
    let mut registry = write();
    registry.unavailable.remove(method.type_name());
    registry.methods.insert(method.type_name(), Arc::new(method));
}

/// Records why `type_name` is not in this build (a cargo feature left out),
/// for the error a definition using it gets. A registered method of that
/// name wins.
pub fn register_unavailable(type_name: &'static str, reason: impl Into<String>) {
    let mut registry = write();
    if !registry.methods.contains_key(type_name) {
        registry.unavailable.insert(type_name, reason.into());
    }
}

/// The names of the registered methods, sorted.
pub fn registered() -> Vec<&'static str> {
    read().methods.keys().copied().collect()
}

/// Why `type_name` is not in this build, when that was registered.
pub fn unavailable(type_name: &str) -> Option<String> {
    read().unavailable.get(type_name).cloned()
}

/// The method registered as `type_name`.
pub(crate) fn method(type_name: &str) -> Option<Arc<dyn AuthMethod>> {
    read().methods.get(type_name).cloned()
}

/// Every registered method, sorted by name.
pub(crate) fn methods() -> Vec<Arc<dyn AuthMethod>> {
    read().methods.values().cloned().collect()
}
