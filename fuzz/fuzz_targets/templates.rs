//! The template parser and the URL renderer: any source, any values. A
//! value rendered into a URL never changes its scheme or its host beyond
//! the labels the template allows.
#![no_main]

use integration_template::{Escape, Template, UrlTemplate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str, &str)| {
    let (source, first, second) = input;
    if let Ok(template) = Template::parse(source) {
        let names: Vec<String> = template.parameters().map(str::to_owned).collect();
        let values: Vec<(&str, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), if i % 2 == 0 { first } else { second }))
            .collect();
        for escape in [Escape::Plain, Escape::Header, Escape::Query, Escape::PathSegment] {
            if let Ok(rendered) = template.render(escape, &values[..]) {
                if escape == Escape::Header && !source.contains(['\r', '\n']) {
                    assert!(
                        !rendered.contains(['\r', '\n']),
                        "a header value never holds a line break"
                    );
                }
            }
        }
    }
    if let Ok(url) = UrlTemplate::parse(source) {
        let names: Vec<String> = url.parameters().map(|(name, _)| name.to_owned()).collect();
        let values: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), first)).collect();
        if let Ok(rendered) = url.render(&values[..]) {
            let scheme_end = source.find("://").map(|end| end + 3);
            // A scheme written with escaped braces renders shorter than its source.
            if let Some(end) = scheme_end.filter(|&end| !source[..end].contains(['{', '}'])) {
                assert!(
                    rendered.starts_with(&source[..end]),
                    "a value never changes the scheme: {rendered:?} from {source:?}"
                );
            }
        }
    }
});
