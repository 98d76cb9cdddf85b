//! URL templates: each parameter is escaped for the URL component it
//! stands in, found once when the template is parsed.

use std::fmt;

use crate::escape::{self, COMPONENT};
use crate::{Escape, ParseError, ParseErrorKind, RenderError, RenderErrorKind, Segment, Template, Values};

/// The URL component a parameter stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Placement {
    /// The whole origin, at the start of the template
    /// (`{instance_url}/services/data`): the value must be
    /// `http(s)://host[:port]`.
    Origin,
    /// The host: the value must be dot-separated host labels.
    Host,
    /// The port: the value must be a port number.
    Port,
    /// The path: the value is percent-encoded as one segment.
    Path,
    /// The query: the value is percent-encoded as one component.
    Query,
    /// The fragment: the value is percent-encoded.
    Fragment,
}

impl Placement {
    /// Whether a value here chooses the host the URL leads to: an origin
    /// or a host.
    pub fn chooses_host(self) -> bool {
        matches!(self, Self::Origin | Self::Host)
    }
}

/// A URL template such as `https://{subdomain}.acme.example/api?o={owner}`.
///
/// A value can never change the scheme, host or port of the rendered URL,
/// except a parameter that stands in the host itself, whose value must then
/// be a valid sequence of host labels.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UrlTemplate {
    template: Template,
    /// One entry per segment; `None` for literals.
    placements: Vec<Option<Placement>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Scheme,
    Host,
    Port,
    Path,
    Query,
    Fragment,
}

impl UrlTemplate {
    /// Parses an absolute `http(s)://` URL template, or a path template
    /// starting with `/`.
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        let template = Template::parse(source)?;
        let mut state = if source.starts_with('/') || starts_with_origin(&template) {
            State::Path
        } else {
            let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                let kind = match template.segments.first() {
                    Some(Segment::Parameter(_)) => ParseErrorKind::ParameterInScheme,
                    _ if source.contains("://") && source.find('{') < source.find("://") => {
                        ParseErrorKind::ParameterInScheme
                    }
                    _ => ParseErrorKind::NotAUrl,
                };
                let position = match kind {
                    ParseErrorKind::ParameterInScheme => source.find('{').unwrap_or(0),
                    _ => 0,
                };
                return Err(ParseError { position, kind });
            }
            State::Scheme
        };
        let mut placements = Vec::with_capacity(template.segments.len());
        let mut offset = 0;
        let mut parameter_in_authority = false;
        for segment in &template.segments {
            match segment {
                Segment::Literal(text) => {
                    let mut chars = text.char_indices().peekable();
                    while let Some((at, c)) = chars.next() {
                        state = match (state, c) {
                            (State::Scheme, '/') if text[at..].starts_with("//") => {
                                chars.next();
                                State::Host
                            }
                            (State::Host | State::Port, '@') if parameter_in_authority => {
                                return Err(ParseError {
                                    position: offset + at,
                                    kind: ParseErrorKind::ParameterInUserinfo,
                                });
                            }
                            (State::Host | State::Port, '@') => State::Host,
                            (State::Host, ':') => State::Port,
                            (State::Host | State::Port, '/') => State::Path,
                            (State::Host | State::Port | State::Path, '?') => State::Query,
                            (State::Host | State::Port | State::Path | State::Query, '#') => State::Fragment,
                            (state, _) => state,
                        };
                    }
                    offset += text.len();
                    placements.push(None);
                }
                Segment::Parameter(name) if offset == 0 && state == State::Path && !source.starts_with('/') => {
                    parameter_in_authority = true;
                    offset += name.len() + 2;
                    placements.push(Some(Placement::Origin));
                }
                Segment::Parameter(name) => {
                    let placement = match state {
                        State::Scheme => {
                            return Err(ParseError {
                                position: offset,
                                kind: ParseErrorKind::ParameterInScheme,
                            });
                        }
                        State::Host => Placement::Host,
                        State::Port => Placement::Port,
                        State::Path => Placement::Path,
                        State::Query => Placement::Query,
                        State::Fragment => Placement::Fragment,
                    };
                    parameter_in_authority |= matches!(placement, Placement::Host | Placement::Port);
                    offset += name.len() + 2;
                    placements.push(Some(placement));
                }
            }
        }
        Ok(Self { template, placements })
    }

    /// The underlying template.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        self.template.source()
    }

    /// The literal end of the host after its last parameter, such as
    /// `.zendesk.com` for `https://{subdomain}.zendesk.com/api`: empty when
    /// a parameter ends the host, `None` when no parameter stands in the
    /// host.
    pub fn host_suffix(&self) -> Option<&str> {
        let last = self.placements.iter().rposition(|p| *p == Some(Placement::Host))?;
        Some(match self.template.segments.get(last + 1) {
            Some(Segment::Literal(text)) => {
                let end = text.find([':', '/', '?', '#']).unwrap_or(text.len());
                &text[..end]
            }
            _ => "",
        })
    }

    /// Each parameter with the URL component it stands in.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, Placement)> + '_ {
        self.template
            .segments
            .iter()
            .zip(&self.placements)
            .filter_map(|(segment, placement)| match (segment, placement) {
                (Segment::Parameter(name), Some(placement)) => Some((name.as_str(), *placement)),
                _ => None,
            })
    }

    /// Renders the URL, escaping each value for its component.
    pub fn render(&self, values: &(impl Values + ?Sized)) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.template.source.len() + 32);
        self.render_into(&mut out, values)?;
        Ok(out)
    }

    /// Renders the URL at the end of `out`. On error, `out` is left as it
    /// was.
    pub fn render_into(&self, out: &mut String, values: &(impl Values + ?Sized)) -> Result<(), RenderError> {
        let start = out.len();
        for (segment, placement) in self.template.segments.iter().zip(&self.placements) {
            let result = match (segment, placement) {
                (Segment::Literal(text), _) => {
                    out.push_str(text);
                    Ok(())
                }
                (Segment::Parameter(name), placement) => match values.get(name) {
                    None => Err(RenderErrorKind::MissingValue),
                    Some(value) => push(out, placement.unwrap_or(Placement::Path), value),
                }
                .map_err(|kind| RenderError {
                    parameter: name.clone(),
                    kind,
                }),
            };
            if let Err(error) = result {
                out.truncate(start);
                return Err(error);
            }
        }
        Ok(())
    }
}

/// Whether the template starts with a parameter followed by the path, the
/// query, the fragment or nothing: `{instance_url}/services/data`.
fn starts_with_origin(template: &Template) -> bool {
    match template.segments.as_slice() {
        [Segment::Parameter(_)] => true,
        [Segment::Parameter(_), Segment::Literal(rest), ..] => rest.starts_with(['/', '?', '#']),
        _ => false,
    }
}

fn push(out: &mut String, placement: Placement, value: &str) -> Result<(), RenderErrorKind> {
    match placement {
        Placement::Origin if escape::is_origin(value) => out.push_str(value.strip_suffix('/').unwrap_or(value)),
        Placement::Origin => return Err(RenderErrorKind::InvalidOrigin),
        Placement::Host if escape::is_host_labels(value) => out.push_str(value),
        Placement::Host => return Err(RenderErrorKind::InvalidHost),
        Placement::Port if escape::is_port(value) => out.push_str(value),
        Placement::Port => return Err(RenderErrorKind::InvalidPort),
        Placement::Path => escape::push(out, Escape::PathSegment, value)?,
        Placement::Query => escape::push(out, Escape::Query, value)?,
        Placement::Fragment => out.extend(percent_encoding::utf8_percent_encode(value, COMPONENT)),
    }
    Ok(())
}

impl fmt::Debug for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UrlTemplate").field(&self.template.source()).finish()
    }
}

impl fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.template.source())
    }
}

/// Whether `value` is a host name: dot-separated labels of ASCII letters,
/// digits and `-` (RFC 1123), the rule for values that stand in a host.
pub fn is_host_name(value: &str) -> bool {
    escape::is_host_labels(value)
}

/// Whether `name` could be a parameter name: ASCII letters, digits and `_`.
pub fn is_valid_parameter_name(name: &str) -> bool {
    crate::parse::is_valid_name(name)
}
