//! Rendering never panics, and literal text always comes through intact.

use integration_template::{Escape, Segment, Template, UrlTemplate};
use proptest::prelude::*;

const ESCAPES: [Escape; 6] = [
    Escape::PathSegment,
    Escape::Query,
    Escape::Header,
    Escape::Form,
    Escape::Json,
    Escape::Plain,
];

fn literal_text() -> impl Strategy<Value = String> {
    // Any text without braces; braces are covered by the escaped forms.
    "[^{}]{0,12}"
}

fn template_parts() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    prop::collection::vec((literal_text(), prop::option::of("[a-z_][a-z0-9_]{0,6}")), 0..5)
}

proptest! {
    #[test]
    fn parsing_arbitrary_text_never_panics(source in any::<String>()) {
        let _ = Template::parse(&source);
        let _ = UrlTemplate::parse(&source);
    }

    #[test]
    fn rendering_keeps_literals_in_order(parts in template_parts(), value in any::<String>(), escape in 0..ESCAPES.len()) {
        let mut source = String::new();
        for (literal, parameter) in &parts {
            source.push_str(literal);
            if let Some(name) = parameter {
                source.push('{');
                source.push_str(name);
                source.push('}');
            }
        }
        let template = Template::parse(&source).expect("generated templates are valid");
        let values: Vec<(&str, &str)> = template.parameters().map(|name| (name, value.as_str())).collect();
        if let Ok(rendered) = template.render(ESCAPES[escape], values.as_slice()) {
            let mut rest = rendered.as_str();
            for segment in template.segments() {
                if let Segment::Literal(text) = segment {
                    let at = rest.find(text.as_str());
                    prop_assert!(at.is_some(), "literal {:?} missing from {:?}", text, rendered);
                    rest = &rest[at.unwrap_or_default() + text.len()..];
                }
            }
        }
    }

    #[test]
    fn url_values_never_change_scheme_host_or_port(value in any::<String>()) {
        let template = UrlTemplate::parse("https://api.acme.example:8443/v1/{a}?q={b}#{c}").expect("valid template");
        let rendered = template.render(&[("a", value.as_str()), ("b", value.as_str()), ("c", value.as_str())]);
        if let Ok(rendered) = rendered {
            prop_assert!(rendered.starts_with("https://api.acme.example:8443/v1/"));
            let path_and_query = &rendered["https://api.acme.example:8443/v1/".len()..];
            prop_assert_eq!(path_and_query.matches('?').count(), 1);
            prop_assert_eq!(path_and_query.matches('#').count(), 1);
            prop_assert!(!path_and_query.contains('/'));
        }
    }

    #[test]
    fn host_values_stay_host_labels(value in any::<String>()) {
        let template = UrlTemplate::parse("https://{sub}.acme.example/api").expect("valid template");
        if let Ok(rendered) = template.render(&[("sub", value.as_str())]) {
            let host = &rendered["https://".len()..rendered.len() - "/api".len()];
            prop_assert!(host.ends_with(".acme.example"));
            prop_assert!(host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        }
    }

    #[test]
    fn origin_values_stay_an_origin(value in "(https?://)?[a-z0-9.:/@?#-]{0,24}") {
        let template = UrlTemplate::parse("{origin}/services/data?v=1").expect("valid template");
        if let Ok(rendered) = template.render(&[("origin", value.as_str())]) {
            let (origin, rest) = rendered.split_at(rendered.len() - "/services/data?v=1".len());
            prop_assert_eq!(rest, "/services/data?v=1");
            let (scheme, authority) = origin.split_once("://").expect("a scheme");
            prop_assert!(scheme == "http" || scheme == "https");
            prop_assert!(!authority.contains(['/', '@', '?', '#']), "{:?}", rendered);
        }
    }

    #[test]
    fn header_values_never_hold_line_breaks(value in any::<String>()) {
        let template = Template::parse("Bearer {token}").expect("valid template");
        if let Ok(rendered) = template.render(Escape::Header, &[("token", value.as_str())]) {
            prop_assert!(!rendered.contains('\r') && !rendered.contains('\n'));
        }
    }

    #[test]
    fn json_values_stay_inside_their_string(value in any::<String>()) {
        let template = Template::parse(r#"{{"user": "{name}"}}"#).expect("valid template");
        let rendered = template.render(Escape::Json, &[("name", value.as_str())]).expect("json never fails");
        let parsed: Result<std::collections::BTreeMap<String, String>, _> = serde_json_lite(&rendered);
        prop_assert_eq!(parsed.ok().and_then(|map| map.get("user").cloned()), Some(value));
    }
}

/// Decodes `{"user": "..."}` with the escapes `push_json` produces, to keep
/// this crate free of a JSON dependency.
fn serde_json_lite(text: &str) -> Result<std::collections::BTreeMap<String, String>, ()> {
    let inner = text
        .strip_prefix(r#"{"user": ""#)
        .and_then(|t| t.strip_suffix(r#""}"#))
        .ok_or(())?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err(()),
            c if c.is_control() => return Err(()),
            '\\' => match chars.next().ok_or(())? {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'b' => out.push('\u{08}'),
                'f' => out.push('\u{0C}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).map_err(|_| ())?;
                    out.push(char::from_u32(code).ok_or(())?);
                }
                _ => return Err(()),
            },
            c => out.push(c),
        }
    }
    Ok([("user".to_owned(), out)].into_iter().collect())
}
