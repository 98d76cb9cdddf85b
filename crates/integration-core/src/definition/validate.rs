//! Validation of a whole set of definitions, reporting every problem by
//! its field path.
//!
//! Structure (required and unknown fields, types, allowed values, template
//! syntax) is checked against the JSON Schema generated from the model, so
//! the published schema and the loader cannot disagree. The rules a schema
//! cannot say (key characters, duplicates, parameter references) follow.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use integration_template::{Template, UrlTemplate, is_valid_parameter_name};
use serde_json::{Map, Value};

use super::model::{TEMPLATE_KEYWORD, unknown_type};
use super::{Integration, ParameterType, TokenResponse};
use crate::method::Problems;

/// The name reserved for the token in value templates.
pub(crate) const TOKEN_PARAMETER: &str = "token";

/// One problem in a definition, located by file and field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// The file, when the definition came from one.
    pub file: Option<PathBuf>,
    /// The field path, e.g. `integration[2].auth.access_token_endpoint`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl DefinitionError {
    pub(crate) fn in_file(file: &Path, path: &str, message: String) -> Self {
        Self {
            file: Some(file.to_owned()),
            path: path.to_owned(),
            message,
        }
    }
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a set of definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionErrors(Vec<DefinitionError>);

impl DefinitionErrors {
    pub(crate) fn new(errors: Vec<DefinitionError>) -> Self {
        Self(errors)
    }

    /// The problems, in file order.
    pub fn errors(&self) -> &[DefinitionError] {
        &self.0
    }
}

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionErrors {}

/// So that `?` takes a failed load into [`crate::Result`]: an
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error that
/// lists every problem, with the problems as its source.
impl From<DefinitionErrors> for crate::Error {
    fn from(errors: DefinitionErrors) -> Self {
        let count = errors.0.len();
        let plural = if count == 1 { "" } else { "s" };
        crate::Error::new(
            crate::ErrorKind::InvalidInput,
            format!("{count} problem{plural} in the definitions:\n{errors}"),
        )
        .with_source(errors)
    }
}

impl IntoIterator for DefinitionErrors {
    type Item = DefinitionError;
    type IntoIter = std::vec::IntoIter<DefinitionError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A template found while checking structure, kept for the reference checks.
struct TemplateUse {
    path: String,
    kind: TemplateKind,
    parameters: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TemplateKind {
    Text,
    Url,
    Token,
}

/// Collects problems for one document.
struct Checker<'a> {
    /// The definition schema, which `$ref`s point into.
    root: &'a Value,
    file: &'a Option<PathBuf>,
    errors: Vec<DefinitionError>,
    templates: Vec<TemplateUse>,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(DefinitionError {
            file: self.file.clone(),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn check(&mut self, value: &Value, schema: &Value, path: &str) {
        let schema = resolve(self.root, schema);
        if let Some(Value::Array(variants)) = schema.get("oneOf") {
            return self.check_one_of(value, variants, path);
        }
        if let Some(Value::Array(variants)) = schema.get("anyOf") {
            return self.check_any_of(value, variants, path);
        }
        if !type_matches(value, schema) {
            let expected = describe_type(schema);
            return self.error(path, format!("expected {expected}, found {}", describe_value(value)));
        }
        match value {
            Value::Object(object) => self.check_object(object, schema, path),
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &format!("{path}[{i}]"));
                    }
                }
            }
            Value::String(text) => {
                if let Some(kind) = schema.get(TEMPLATE_KEYWORD).and_then(Value::as_str) {
                    self.check_template(text, kind, path);
                }
            }
            Value::Number(number) => {
                let minimum = schema.get("minimum").and_then(Value::as_f64);
                let maximum = schema.get("maximum").and_then(Value::as_f64);
                let n = number.as_f64().unwrap_or_default();
                if minimum.is_some_and(|min| n < min) || maximum.is_some_and(|max| n > max) {
                    let (min, max) = (minimum.unwrap_or(f64::MIN), maximum.unwrap_or(f64::MAX));
                    self.error(path, format!("{number} is out of range ({min} to {max})"));
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn check_object(&mut self, object: &Map<String, Value>, schema: &Value, path: &str) {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    self.error(path, format!("missing required field `{name}`"));
                }
            }
        }
        for (name, field) in object {
            let field_path = join(path, name);
            match (
                properties.and_then(|properties| properties.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(field_schema), _) => self.check(field, field_schema, &field_path),
                (None, Some(Value::Bool(false))) => {
                    let known: Vec<&str> = properties
                        .into_iter()
                        .flat_map(|p| p.keys())
                        .map(String::as_str)
                        .collect();
                    self.error(
                        &field_path,
                        format!("unknown field `{name}`; expected one of: {}", known.join(", ")),
                    );
                }
                (None, Some(additional)) => self.check(field, additional, &field_path),
                (None, None) => {}
            }
        }
    }

    /// `oneOf` is either a set of string constants (an enumeration) or a set
    /// of objects told apart by their `type` constant (the auth methods).
    fn check_one_of(&mut self, value: &Value, variants: &[Value], path: &str) {
        let constants: Vec<&str> = variants.iter().filter_map(|v| v.get("const")?.as_str()).collect();
        if constants.len() == variants.len() {
            match value.as_str() {
                Some(text) if constants.contains(&text) => {}
                _ => self.error(
                    path,
                    format!(
                        "expected one of {}, found {}",
                        quote_all(&constants),
                        describe_value(value)
                    ),
                ),
            }
            return;
        }
        fn tag_of(variant: &Value) -> Option<&str> {
            variant.pointer("/properties/type/const").and_then(Value::as_str)
        }
        let tags: Vec<&str> = variants.iter().filter_map(tag_of).collect();
        let Some(object) = value.as_object() else {
            return self.error(path, format!("expected a table, found {}", describe_value(value)));
        };
        match object.get("type") {
            None => self.error(
                path,
                format!("missing required field `type` (one of {})", quote_all(&tags)),
            ),
            Some(tag) => match variants.iter().find(|variant| tag_of(variant) == tag.as_str()) {
                Some(variant) => self.check(value, variant, path),
                None => {
                    let message = match tag.as_str() {
                        Some(name) => unknown_type(name),
                        None => format!(
                            "expected the name of an auth method ({}), found {}",
                            quote_all(&tags),
                            describe_value(tag)
                        ),
                    };
                    self.error(&join(path, "type"), message);
                }
            },
        }
    }

    /// `anyOf` alternatives (a template or `{ env = ... }`): the value must
    /// match one of them.
    fn check_any_of(&mut self, value: &Value, variants: &[Value], path: &str) {
        for variant in variants {
            let mut trial = Checker {
                root: self.root,
                file: self.file,
                errors: Vec::new(),
                templates: Vec::new(),
            };
            trial.check(value, variant, path);
            if trial.errors.is_empty() {
                self.templates.extend(trial.templates);
                return;
            }
            // A value of the alternative's own type gets that alternative's
            // precise errors.
            if type_matches(value, resolve(self.root, variant)) {
                self.errors.extend(trial.errors);
                return;
            }
        }
        let expected: Vec<String> = variants
            .iter()
            .map(|variant| describe_type(resolve(self.root, variant)))
            .collect();
        self.error(
            path,
            format!("expected {}, found {}", expected.join(" or "), describe_value(value)),
        );
    }

    fn check_template(&mut self, text: &str, kind: &str, path: &str) {
        let (kind, parsed) = match kind {
            "url" => (
                TemplateKind::Url,
                UrlTemplate::parse(text).map(|url| url.template().clone()),
            ),
            "token" => (TemplateKind::Token, Template::parse(text)),
            _ => (TemplateKind::Text, Template::parse(text)),
        };
        match parsed {
            Ok(template) => self.templates.push(TemplateUse {
                path: path.to_owned(),
                kind,
                parameters: template.parameters().map(str::to_owned).collect(),
            }),
            // A client secret may be written literally: never echo any of it.
            Err(_) if path.ends_with("client_secret") => self.error(
                path,
                "invalid template (its text is not shown, as it may be a secret); write `{{` and `}}` for literal braces",
            ),
            Err(error) => self.error(path, format!("invalid template: {error}")),
        }
    }
}

/// Validates every document and returns the integrations when all are valid.
pub(crate) fn validate_documents(
    documents: &[(Option<PathBuf>, Value)],
    errors: &mut Vec<DefinitionError>,
) -> Vec<Integration> {
    let schema = super::schema::definition_schema();
    let root = &*schema;
    let integration_schema = root.pointer("/$defs/Integration").unwrap_or(&Value::Null);
    let mut integrations = Vec::new();
    // Where each key was first defined, to report duplicates.
    let mut seen_keys: BTreeMap<String, (Option<PathBuf>, String)> = BTreeMap::new();

    for (file, document) in documents {
        let mut checker = Checker {
            root,
            file,
            errors: Vec::new(),
            templates: Vec::new(),
        };
        let Some(object) = document.as_object() else {
            checker.error(
                "",
                format!(
                    "expected a table with `integration`, found {}",
                    describe_value(document)
                ),
            );
            errors.append(&mut checker.errors);
            continue;
        };
        let list_field = match (object.contains_key("integration"), object.contains_key("integrations")) {
            (true, true) => {
                checker.error("", "use either `integration` or `integrations`, not both");
                "integration"
            }
            (false, true) => "integrations",
            _ => "integration",
        };
        // Check the top level without descending: each integration is
        // checked on its own below, so its errors stay together.
        for name in object
            .keys()
            .filter(|name| !matches!(name.as_str(), "integration" | "integrations"))
        {
            checker.error(
                name,
                format!("unknown field `{name}`; expected `integration` or `integrations`"),
            );
        }
        let items: &[Value] = match object.get(list_field) {
            None => &[],
            Some(Value::Array(items)) => items,
            Some(other) => {
                checker.error(
                    list_field,
                    format!("expected a list of tables, found {}", describe_value(other)),
                );
                &[]
            }
        };
        if items.is_empty() && !object.contains_key(list_field) {
            checker.error("", "no integration defined: add an `[[integration]]` table");
        }
        errors.append(&mut checker.errors);

        for (index, item) in items.iter().enumerate() {
            let path = format!("{list_field}[{index}]");
            let mut checker = Checker {
                root,
                file,
                errors: Vec::new(),
                templates: Vec::new(),
            };
            let merged = match super::catalog::extended(item) {
                Ok(merged) => merged,
                Err(message) => {
                    checker.error(&join(&path, "extends"), message);
                    errors.append(&mut checker.errors);
                    continue;
                }
            };
            let item = merged.as_ref().unwrap_or(item);
            checker.check(item, integration_schema, &path);
            let structure_is_valid = checker.errors.is_empty();
            // Checked on the raw value, so it is reported even when the
            // structure is broken.
            if let Some(key) = item.get("key").and_then(Value::as_str) {
                check_key(&mut checker, key, &join(&path, "key"));
            }
            if structure_is_valid {
                match serde_json::from_value::<Integration>(item.clone()) {
                    Ok(integration) => {
                        check_rules(&mut checker, &integration, &path);
                        if let Some((first_file, first_path)) = seen_keys.get(&integration.key) {
                            let place = match first_file {
                                Some(first_file) if Some(first_file) != file.as_ref() => {
                                    format!("{}: {first_path}", first_file.display())
                                }
                                _ => first_path.clone(),
                            };
                            checker.error(
                                &join(&path, "key"),
                                format!("duplicate key `{}`, first defined at {place}", integration.key),
                            );
                        } else {
                            seen_keys.insert(integration.key.clone(), (file.clone(), path.clone()));
                        }
                        if checker.errors.is_empty() {
                            integrations.push(integration);
                        }
                    }
                    Err(error) => checker.error(&path, error.to_string()),
                }
            } else {
                // Parameter references can still be checked when the rest is broken.
                check_references(&mut checker, item);
            }
            errors.append(&mut checker.errors);
        }
    }
    integrations
}

fn check_key(checker: &mut Checker<'_>, key: &str, path: &str) {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        checker.error(path, format!("key `{key}` must be ASCII letters and digits only"));
    }
}

/// The rules a schema cannot say.
fn check_rules(checker: &mut Checker<'_>, integration: &Integration, path: &str) {
    if integration.name.trim().is_empty() {
        checker.error(&join(path, "name"), "name must not be empty");
    }

    let mut declared = BTreeSet::new();
    for (i, parameter) in integration.parameters.iter().enumerate() {
        let parameter_path = format!("{path}.parameters[{i}].name");
        if !is_valid_parameter_name(&parameter.name) {
            checker.error(
                &parameter_path,
                format!(
                    "parameter name `{}` must be ASCII letters, digits and `_`",
                    parameter.name
                ),
            );
        } else if parameter.name == TOKEN_PARAMETER {
            checker.error(&parameter_path, "`token` is reserved for the token value template");
        } else if !declared.insert(parameter.name.as_str()) {
            checker.error(&parameter_path, format!("duplicate parameter `{}`", parameter.name));
        }
        check_choices(checker, parameter, &format!("{path}.parameters[{i}]"));
    }
    let provided = integration.auth.provided_parameters();
    for (field, name) in &provided {
        let field = join(path, field);
        if !is_valid_parameter_name(name) {
            checker.error(
                &field,
                format!("parameter name `{name}` must be ASCII letters, digits and `_`"),
            );
        } else if *name == TOKEN_PARAMETER {
            checker.error(&field, "`token` is reserved for the token value template");
        } else if integration.parameter(name).is_some() {
            checker.error(
                &field,
                format!("`{name}` is also declared in parameters: a parameter is either given or provided, not both"),
            );
        } else if !declared.insert(*name) {
            checker.error(&field, format!("parameter `{name}` is provided twice"));
        }
    }
    check_template_references(checker, &declared);

    if let Some(rate_limit) = &integration.rate_limit {
        check_rate_limit(checker, rate_limit, &join(path, "rate_limit"));
    }

    let mut problems = Problems::default();
    integration.auth.check_definition(integration, &mut problems);
    for (field, message) in problems.into_vec() {
        checker.error(&join(path, &field), message);
    }
    if let Some(bundle) = &integration.ca_bundle
        && integration.auth.makes_http_requests()
        && let Some(problem) = ca_bundle_problem(bundle)
    {
        checker.error(&join(path, "ca_bundle"), problem);
    }
    if !integration.allow_insecure_http {
        for (field, url) in url_fields(integration) {
            if let Some(host) = plain_http_host(url.source())
                && !is_loopback_host(host)
            {
                checker.error(
                    &join(path, field),
                    format!(
                        "plain http to `{host}` is refused: credentials would cross the network in clear; \
                         use https (plain http is allowed to localhost, 127.0.0.0/8 and [::1] only, \
                         or anywhere with `allow_insecure_http = true`, for a lab)"
                    ),
                );
            }
        }
    }
    for (i, host) in integration.allowed_hosts.iter().enumerate() {
        let pattern = host.source().strip_prefix("*.").unwrap_or(host.source());
        if pattern.is_empty() || !is_host_template(pattern) || pattern.contains('*') {
            checker.error(
                &format!("{path}.allowed_hosts[{i}]"),
                format!("`{}` is not a host name or `*.domain` pattern", host.source()),
            );
        }
    }

    if let Some(token) = integration.auth.token() {
        let token_path = format!("{path}.auth.token.parameter_name");
        check_parameter_name(checker, token.parameter_type, &token.parameter_name, &token_path);
    }
    let mut names: BTreeMap<(ParameterType, String), usize> = BTreeMap::new();
    for (i, parameter) in integration.request_parameters.iter().enumerate() {
        let name_path = format!("{path}.request_parameters[{i}].name");
        check_parameter_name(checker, parameter.parameter_type, &parameter.name, &name_path);
        let normalized = normalize(parameter.parameter_type, &parameter.name);
        if let Some(token) = integration.auth.token()
            && token.parameter_type == parameter.parameter_type
            && normalize(token.parameter_type, &token.parameter_name) == normalized
        {
            {
                checker.error(
                    &name_path,
                    format!(
                        "request parameter `{}` would overwrite the auth token (auth.token.parameter_name)",
                        parameter.name
                    ),
                );
            }
        }
        if let Some(first) = names.insert((parameter.parameter_type, normalized), i) {
            checker.error(
                &name_path,
                format!(
                    "duplicate request parameter `{}`, first at request_parameters[{first}]",
                    parameter.name
                ),
            );
        }
    }
}

/// The URL templates of an integration, by field.
fn url_fields(integration: &Integration) -> Vec<(&'static str, &UrlTemplate)> {
    let mut fields = Vec::new();
    if let Some(base_url) = &integration.base_url {
        fields.push(("base_url", &**base_url));
    }
    fields.extend(integration.auth.endpoints());
    fields
}

/// The host of a URL template that starts with `http://`, as written
/// (a template's host is never known to be loopback).
fn plain_http_host(source: &str) -> Option<&str> {
    let rest = source
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &source[7..])?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority.rsplit('@').next().unwrap_or_default();
    Some(match host_and_port.find(']') {
        Some(end) if host_and_port.starts_with('[') => &host_and_port[..=end],
        _ => host_and_port.split(':').next().unwrap_or_default(),
    })
}

/// Whether a literal host is this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(ipv6) = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        return ipv6.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a template's literal text can only form a host name: no scheme,
/// port, path or user.
pub fn is_host_template(source: &str) -> bool {
    !source.contains(|c: char| matches!(c, '/' | ':' | '@' | '?' | '#') || c.is_whitespace())
}

impl TokenResponse {
    /// Reports the problems of this `token_response` table, at `field`.
    pub fn check(&self, field: &str, problems: &mut Problems) {
        if self.token.is_some() && self.token_header.is_some() {
            problems.at(field, "set `token` or `token_header`, not both");
        }
        if self.expires_in.is_some() && self.expires_at.is_some() {
            problems.at(field, "set `expires_in` or `expires_at`, not both");
        }
        for (name, pointer) in [
            ("token", &self.token),
            ("refresh_token", &self.refresh_token),
            ("expires_in", &self.expires_in),
            ("expires_at", &self.expires_at),
        ] {
            if pointer
                .as_deref()
                .is_some_and(|p| p.is_empty() || p.contains(char::is_whitespace))
            {
                problems.at(
                    join(field, name),
                    "expected a JSON pointer such as `/data/token`, or a field name",
                );
            }
        }
        if let Some(header) = &self.token_header
            && !is_header_name(header)
        {
            problems.at(
                join(field, "token_header"),
                format!("`{header}` is not a valid header name"),
            );
        }
    }
}

fn check_choices(checker: &mut Checker<'_>, parameter: &super::ParameterDeclaration, path: &str) {
    if parameter.choices.is_empty() {
        return;
    }
    let field = join(path, "choices");
    if parameter.secret {
        checker.error(&field, "a secret parameter takes no choices: they would show its value");
        return;
    }
    let mut seen = BTreeSet::new();
    for choice in &parameter.choices {
        if choice.is_empty() {
            checker.error(&field, "a choice must not be empty");
        } else if !seen.insert(choice.as_str()) {
            checker.error(&field, format!("`{choice}` is listed twice"));
        }
    }
    if let Some(default) = &parameter.default
        && !parameter.choices.contains(default)
    {
        checker.error(&join(path, "default"), format!("`{default}` is not one of the choices"));
    }
}

fn check_rate_limit(checker: &mut Checker<'_>, rate_limit: &crate::definition::RateLimit, path: &str) {
    for (i, status) in rate_limit.statuses.iter().enumerate() {
        if !(400..=599).contains(status) {
            checker.error(
                &format!("{path}.statuses[{i}]"),
                format!("{status} is not an error status (400 to 599)"),
            );
        }
    }
    if let Some(when) = &rate_limit.when
        && !is_header_name(&when.name)
    {
        checker.error(
            &join(path, "when.name"),
            format!("`{}` is not a valid header name", when.name),
        );
    }
    if let Some(header) = &rate_limit.reset_header
        && !is_header_name(header)
    {
        checker.error(
            &join(path, "reset_header"),
            format!("`{header}` is not a valid header name"),
        );
    }
    if rate_limit.when.is_some() && rate_limit.statuses.is_empty() {
        checker.error(
            &join(path, "when"),
            "`when` qualifies the extra `statuses`, and none are given",
        );
    }
}

fn check_template_references(checker: &mut Checker<'_>, declared: &BTreeSet<&str>) {
    let uses = std::mem::take(&mut checker.templates);
    for template in &uses {
        for parameter in &template.parameters {
            if parameter == TOKEN_PARAMETER {
                if template.kind != TemplateKind::Token {
                    checker.error(&template.path, "{token} may only appear in auth.token.value_template");
                }
            } else if !declared.contains(parameter.as_str()) {
                let hint = if declared.is_empty() {
                    "no parameters are declared".to_owned()
                } else {
                    format!("declared: {}", declared.iter().copied().collect::<Vec<_>>().join(", "))
                };
                checker.error(&template.path, format!("unknown parameter {{{parameter}}} ({hint})"));
            }
        }
        if template.kind == TemplateKind::Token && !template.parameters.iter().any(|p| p == TOKEN_PARAMETER) {
            checker.error(&template.path, "value_template must contain {token}");
        }
    }
    checker.templates = uses;
}

/// Reference checks for an integration whose structure is broken, using
/// whatever parameter names could be read.
fn check_references(checker: &mut Checker<'_>, item: &Value) {
    let declared: BTreeSet<&str> = match item.get("parameters") {
        Some(Value::Array(parameters)) => parameters.iter().filter_map(|p| p.get("name")?.as_str()).collect(),
        _ => BTreeSet::new(),
    };
    check_template_references(checker, &declared);
}

fn check_parameter_name(checker: &mut Checker<'_>, parameter_type: ParameterType, name: &str, path: &str) {
    match parameter_type {
        ParameterType::Header if !is_header_name(name) => {
            checker.error(path, format!("`{name}` is not a valid header name"));
        }
        ParameterType::UrlParameter if name.is_empty() => checker.error(path, "URL parameter name must not be empty"),
        _ => {}
    }
}

/// Whether `name` is a header name: RFC 9110 token characters.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `name` can name an environment variable.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn normalize(parameter_type: ParameterType, name: &str) -> String {
    match parameter_type {
        // Header names are case-insensitive; query names are not.
        ParameterType::Header => name.to_ascii_lowercase(),
        ParameterType::UrlParameter => name.to_owned(),
    }
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .map(|target| resolve(root, target))
            .unwrap_or(schema),
        None => schema,
    }
}

fn type_matches(value: &Value, schema: &Value) -> bool {
    let matches = |name: &str| match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    match schema.get("type") {
        Some(Value::String(name)) => matches(name),
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).any(matches),
        _ => true,
    }
}

fn describe_type(schema: &Value) -> String {
    let describe = |name: &str| match name {
        "object" => {
            let required: Vec<String> = schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|name| format!("`{name}`"))
                .collect();
            if required.is_empty() {
                "a table".to_owned()
            } else {
                format!("a table with {}", required.join(", "))
            }
        }
        "array" => "a list".to_owned(),
        "string" if schema.get(TEMPLATE_KEYWORD).is_some() => "a template string".to_owned(),
        "string" => "a string".to_owned(),
        "integer" => "an integer".to_owned(),
        "number" => "a number".to_owned(),
        "boolean" => "true or false".to_owned(),
        other => other.to_owned(),
    };
    match schema.get("type") {
        Some(Value::String(name)) => describe(name),
        Some(Value::Array(names)) => {
            let names: Vec<String> = names
                .iter()
                .filter_map(Value::as_str)
                .filter(|n| *n != "null")
                .map(describe)
                .collect();
            names.join(" or ")
        }
        _ => "a value".to_owned(),
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("\"{}\"", s.escape_default()),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a table".to_owned(),
    }
}

fn quote_all(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// What is wrong with a `ca_bundle` file, if anything: it must be readable
/// and hold a PEM certificate. The HTTP client reads the certificates.
fn ca_bundle_problem(path: &std::path::Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Err(error) => Some(format!("cannot read `{}`: {error}", path.display())),
        Ok(pem) if !pem.contains("-----BEGIN CERTIFICATE-----") => Some(format!(
            "`{}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            path.display()
        )),
        Ok(_) => None,
    }
}
