//! Splitting template text into literal and parameter segments.

use crate::{ParseError, ParseErrorKind, Segment};

pub(crate) fn segments(source: &str) -> Result<Vec<Segment>, ParseError> {
    let bytes = source.as_bytes();
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                literal.push_str(&source[literal_start..i]);
                literal.push('{');
                i += 2;
                literal_start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                literal.push_str(&source[literal_start..i]);
                literal.push('}');
                i += 2;
                literal_start = i;
            }
            b'{' => {
                let name_start = i + 1;
                let Some(length) = source[name_start..].find('}') else {
                    return Err(error(i, ParseErrorKind::UnclosedBrace));
                };
                let name = &source[name_start..name_start + length];
                check_name(name, i)?;
                literal.push_str(&source[literal_start..i]);
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Parameter(name.to_owned()));
                i = name_start + length + 1;
                literal_start = i;
            }
            b'}' => return Err(error(i, ParseErrorKind::UnmatchedClosingBrace)),
            _ => i += 1,
        }
    }
    literal.push_str(&source[literal_start..]);
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(segments)
}

/// Whether `name` can be a parameter name: ASCII letters, digits and `_`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_name(name: &str, position: usize) -> Result<(), ParseError> {
    if name.is_empty() {
        return Err(error(position, ParseErrorKind::EmptyName));
    }
    if !is_valid_name(name) {
        // Show at most a short prefix: the text may be a JSON body.
        let shown: String = name.chars().take(24).collect();
        return Err(error(position, ParseErrorKind::InvalidName(shown)));
    }
    Ok(())
}

fn error(position: usize, kind: ParseErrorKind) -> ParseError {
    ParseError { position, kind }
}
