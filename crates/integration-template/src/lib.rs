#![doc = include_str!("../README.md")]

mod escape;
mod parse;
mod url;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

pub use crate::url::{Placement, UrlTemplate, is_host_name, is_valid_parameter_name};

/// Where a rendered value lands, which decides how it is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Escape {
    /// One segment of a URL path: everything but unreserved characters is
    /// percent-encoded, so a value can never add a `/`, `?` or `#`.
    PathSegment,
    /// A URL query component: `&`, `=`, `+` and `#` are percent-encoded.
    Query,
    /// An HTTP header value: passed through, but CR, LF and other control
    /// characters are refused.
    Header,
    /// An `application/x-www-form-urlencoded` body: spaces become `+`.
    Form,
    /// The inside of a JSON string literal: quotes, backslashes and control
    /// characters are escaped.
    Json,
    /// Plain text: the value is inserted as it is.
    Plain,
}

/// The values that parameters are rendered with.
///
/// Implemented for the common maps and for slices of pairs, so that callers
/// can hand over whatever they already hold.
pub trait Values {
    /// The value of `name`, if there is one.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Values for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Values for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl Values for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(key, _)| *key == name).map(|(_, value)| *value)
    }
}

impl<const N: usize> Values for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        Values::get(self.as_slice(), name)
    }
}

impl<V: Values + ?Sized> Values for &V {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// Two sets of values, the first one consulted first.
///
/// Lets a caller add `token` to an account's parameter values without
/// copying either.
#[derive(Debug, Clone, Copy)]
pub struct Chain<A, B>(pub A, pub B);

impl<A: Values, B: Values> Values for Chain<A, B> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).or_else(|| self.1.get(name))
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Text copied as it is (with `{{` and `}}` already turned into braces).
    Literal(String),
    /// A `{name}` reference.
    Parameter(String),
}

/// A template such as `Bearer {token}`, parsed once into segments.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `source`. `{{` and `}}` stand for literal braces.
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        Ok(Self {
            source: source.to_owned(),
            segments: parse::segments(source)?,
        })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The names of the parameters referenced, in order of appearance
    /// (a name used twice appears twice).
    pub fn parameters(&self) -> impl Iterator<Item = &str> + '_ {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Parameter(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Whether the template references `name`.
    pub fn references(&self, name: &str) -> bool {
        self.parameters().any(|parameter| parameter == name)
    }

    /// Whether the template has no parameter at all.
    pub fn is_literal(&self) -> bool {
        self.parameters().next().is_none()
    }

    /// Renders the template, escaping each value for `escape`.
    pub fn render(&self, escape: Escape, values: &(impl Values + ?Sized)) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.source.len() + 16);
        self.render_into(&mut out, escape, values)?;
        Ok(out)
    }

    /// Renders the template at the end of `out`. On error, `out` is left
    /// as it was.
    pub fn render_into(
        &self,
        out: &mut String,
        escape: Escape,
        values: &(impl Values + ?Sized),
    ) -> Result<(), RenderError> {
        let start = out.len();
        for segment in &self.segments {
            let result = match segment {
                Segment::Literal(text) => {
                    out.push_str(text);
                    Ok(())
                }
                Segment::Parameter(name) => match values.get(name) {
                    Some(value) => escape::push(out, escape, value).map_err(|kind| RenderError::new(name, kind)),
                    None => Err(RenderError::new(name, RenderErrorKind::MissingValue)),
                },
            };
            if let Err(error) = result {
                out.truncate(start);
                return Err(error);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Template {
    type Err = ParseError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        Self::parse(source)
    }
}

/// A template that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (at byte {position})")]
pub struct ParseError {
    /// Byte offset in the template source where the problem starts.
    pub position: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A `{` with no `}` after it.
    #[error("unclosed `{{`; write `{{{{` for a literal brace")]
    UnclosedBrace,
    /// A `}` that closes nothing.
    #[error("unmatched `}}`; write `}}}}` for a literal brace")]
    UnmatchedClosingBrace,
    /// `{}`.
    #[error("empty parameter name `{{}}`")]
    EmptyName,
    /// A name with characters other than ASCII letters, digits and `_`.
    #[error("invalid parameter name `{0}`: use ASCII letters, digits and `_`, or write `{{{{` for a literal brace")]
    InvalidName(String),
    /// A parameter before `://`, where it could change the URL's scheme.
    #[error("a parameter cannot stand in the URL scheme")]
    ParameterInScheme,
    /// A parameter in the user information of a URL.
    #[error("a parameter cannot stand in the user information of a URL")]
    ParameterInUserinfo,
    /// A URL template that is neither absolute (`https://...`) nor a path
    /// starting with `/`.
    #[error("a URL template must start with `http://`, `https://` or `/`")]
    NotAUrl,
}

/// A value that could not be rendered. Never holds the value itself, which
/// may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {{{parameter}}}: {kind}")]
pub struct RenderError {
    /// The parameter whose value was at fault.
    pub parameter: String,
    /// What is wrong with it.
    pub kind: RenderErrorKind,
}

impl RenderError {
    fn new(parameter: &str, kind: RenderErrorKind) -> Self {
        Self {
            parameter: parameter.to_owned(),
            kind,
        }
    }
}

/// What is wrong with a rendered value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderErrorKind {
    /// No value was given.
    #[error("no value given")]
    MissingValue,
    /// A header value with CR, LF or another control character.
    #[error("value contains a control character (CR, LF or other), which a header value cannot hold")]
    ControlCharacterInHeader,
    /// A value in a URL host that is not a sequence of host labels.
    #[error("value is not a valid host name (dot-separated labels of letters, digits and `-`)")]
    InvalidHost,
    /// A value in a URL port that is not a port number.
    #[error("value is not a port number (1 to 65535)")]
    InvalidPort,
    /// A value standing for a URL's origin that is not
    /// `http(s)://host[:port]`.
    #[error("value is not an origin such as `https://host` or `https://host:8443` (no path, user or query)")]
    InvalidOrigin,
    /// `.` or `..` as a path segment, which would move the request to
    /// another path.
    #[error("value `.` or `..` cannot stand in a URL path")]
    DotSegment,
}
