//! Escaping a value for the place it lands in.

use std::fmt::Write;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::{Escape, RenderErrorKind};

/// Everything but RFC 3986 unreserved characters, so that an encoded value
/// is one opaque component wherever it lands in a URL.
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Appends `value` to `out`, escaped for `escape`.
pub(crate) fn push(out: &mut String, escape: Escape, value: &str) -> Result<(), RenderErrorKind> {
    match escape {
        Escape::PathSegment => {
            if value == "." || value == ".." {
                return Err(RenderErrorKind::DotSegment);
            }
            push_encoded(out, value);
        }
        Escape::Query => push_encoded(out, value),
        Escape::Form => {
            for (i, part) in value.split(' ').enumerate() {
                if i > 0 {
                    out.push('+');
                }
                push_encoded(out, part);
            }
        }
        Escape::Header => {
            if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
                return Err(RenderErrorKind::ControlCharacterInHeader);
            }
            out.push_str(value);
        }
        Escape::Json => push_json(out, value),
        Escape::Plain => out.push_str(value),
    }
    Ok(())
}

pub(crate) fn push_encoded(out: &mut String, value: &str) {
    out.extend(utf8_percent_encode(value, COMPONENT));
}

fn push_json(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c.is_control()) {
        out.push_str(&rest[..at]);
        let c = rest[at..].chars().next().unwrap_or_default();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            other => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(other));
            }
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.push_str(rest);
}

/// Whether `value` is a sequence of dot-separated host labels
/// (RFC 1123: letters, digits and `-`, not at either end, 1 to 63 each).
pub(crate) fn is_host_labels(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `http://` or `https://` (any case), host labels, an optional port and
/// at most a trailing `/`.
pub(crate) fn is_origin(value: &str) -> bool {
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &value[8..]
    } else if lower.starts_with("http://") {
        &value[7..]
    } else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    is_host_labels(host) && port.is_none_or(is_port)
}

pub(crate) fn is_port(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 5
        && value.bytes().all(|b| b.is_ascii_digit())
        && value.parse::<u16>().is_ok_and(|port| port > 0)
}
