//! Reading definition files: TOML, YAML or JSON, one file or a directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::Integration;
use super::validate::{self, DefinitionError, DefinitionErrors};

/// The syntax of a definition file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// TOML (`.toml`).
    Toml,
    /// YAML (`.yaml`, `.yml`).
    Yaml,
    /// JSON (`.json`).
    Json,
}

impl Format {
    /// The format a file name's extension stands for.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Self::Toml),
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Toml => "TOML",
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        }
    }

    #[cfg_attr(
        not(any(feature = "toml", feature = "yaml", feature = "json")),
        allow(unused_variables, reason = "unread when no format is built")
    )]
    fn parse(self, text: &str) -> Result<Value, String> {
        match self {
            #[cfg(feature = "toml")]
            Self::Toml => toml::from_str(text).map_err(|error| error.to_string()),
            #[cfg(feature = "yaml")]
            Self::Yaml => serde_yaml_ng::from_str(text).map_err(|error| error.to_string()),
            #[cfg(feature = "json")]
            Self::Json => serde_json::from_str(text).map_err(|error| error.to_string()),
            #[allow(unreachable_patterns, reason = "reachable when a format's feature is off")]
            _ => Err(format!(
                "{} definitions are not in this build: enable the `{}` feature of the `integrations` crate",
                self.name(),
                self.feature()
            )),
        }
    }

    /// The cargo feature that reads this format.
    fn feature(self) -> &'static str {
        match self {
            Self::Toml => "toml",
            Self::Yaml => "yaml",
            Self::Json => "json",
        }
    }
}

/// A validated set of integrations, by key.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    integrations: BTreeMap<String, Arc<Integration>>,
}

impl Definitions {
    /// Loads every definition in `paths`: files, or directories whose
    /// `.toml`, `.yaml`, `.yml` and `.json` files are read (sorted by name,
    /// subdirectories included). The whole set is validated at once and
    /// every problem is reported.
    pub fn load<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Self, DefinitionErrors> {
        let mut errors = Vec::new();
        let mut files = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let before = files.len();
            collect_files(path, true, &mut files, &mut errors);
            if files.len() == before && path.is_dir() {
                errors.push(DefinitionError::in_file(
                    path,
                    "",
                    "no definition files (.toml, .yaml, .yml, .json) in this directory".to_owned(),
                ));
            }
        }
        let mut sources = Vec::new();
        for path in files {
            let Some(format) = Format::from_path(&path) else {
                errors.push(DefinitionError::in_file(
                    &path,
                    "",
                    "unknown file format: use .toml, .yaml, .yml or .json".to_owned(),
                ));
                continue;
            };
            match fs::read_to_string(&path) {
                Ok(text) => sources.push((Some(path), format, text)),
                Err(error) => errors.push(DefinitionError::in_file(
                    &path,
                    "",
                    format!("cannot read file: {error}"),
                )),
            }
        }
        Self::from_sources(sources, errors)
    }

    /// Parses and validates one document held in memory.
    pub fn from_str(text: &str, format: Format) -> Result<Self, DefinitionErrors> {
        Self::from_sources(vec![(None, format, text.to_owned())], Vec::new())
    }

    fn from_sources(
        sources: Vec<(Option<PathBuf>, Format, String)>,
        mut errors: Vec<DefinitionError>,
    ) -> Result<Self, DefinitionErrors> {
        let mut documents = Vec::with_capacity(sources.len());
        for (file, format, text) in sources {
            match format.parse(&text) {
                Ok(value) => documents.push((file, value)),
                Err(message) => errors.push(DefinitionError {
                    file,
                    path: String::new(),
                    message: format!("cannot parse {}: {}", format.name(), message.trim_end()),
                }),
            }
        }
        let integrations = validate::validate_documents(&documents, &mut errors);
        if !errors.is_empty() {
            return Err(DefinitionErrors::new(errors));
        }
        for integration in integrations
            .iter()
            .filter(|integration| integration.allow_insecure_http)
        {
            tracing::warn!(
                integration = %integration.key,
                "allow_insecure_http is set: this integration's credentials may cross the network over plain http"
            );
        }
        Ok(Self {
            integrations: integrations
                .into_iter()
                .map(|integration| (integration.key.clone(), Arc::new(integration)))
                .collect(),
        })
    }

    /// The integration with `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<&Arc<Integration>> {
        self.integrations.get(key)
    }

    /// The integration with `key`, or a `NotFound` error naming it.
    pub fn integration(&self, key: &str) -> crate::Result<&Arc<Integration>> {
        self.get(key).ok_or_else(|| {
            crate::Error::new(crate::ErrorKind::NotFound, "no such integration in the definitions")
                .with_context("integration", key)
        })
    }

    /// Every integration, sorted by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Arc<Integration>> {
        self.integrations.values()
    }

    /// How many integrations there are.
    pub fn len(&self) -> usize {
        self.integrations.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.integrations.is_empty()
    }
}

fn collect_files(path: &Path, explicit: bool, files: &mut Vec<PathBuf>, errors: &mut Vec<DefinitionError>) {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => {
            errors.push(DefinitionError::in_file(path, "", format!("cannot read: {error}")));
            return;
        }
    };
    if metadata.is_file() {
        // Inside a directory, files of other kinds (READMEs, say) are skipped.
        if explicit || Format::from_path(path).is_some() {
            files.push(path.to_owned());
        }
        return;
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) => {
            errors.push(DefinitionError::in_file(
                path,
                "",
                format!("cannot read directory: {error}"),
            ));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|child| {
            !child
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with('.'))
        })
        .collect();
    children.sort();
    for child in children {
        collect_files(&child, false, files, errors);
    }
}
