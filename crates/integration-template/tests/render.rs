//! The rendering table, URL placement rules and parse errors, as snapshots.

use std::fmt::Write;

use integration_template::{Escape, ParseErrorKind, Placement, RenderErrorKind, Template, UrlTemplate};

const TRICKY_VALUES: &[&str] = &[
    "plain",
    "two words",
    "a&b=c+d",
    "x/../y?z#w",
    "..",
    "100% \"quoted\" \\ back",
    "line\r\nInjected: yes",
    "tab\there",
    "ünïcödé ✓",
    "{not_a_parameter}",
    "",
];

const ESCAPES: &[Escape] = &[
    Escape::PathSegment,
    Escape::Query,
    Escape::Header,
    Escape::Form,
    Escape::Json,
    Escape::Plain,
];

#[test]
fn rendering_table() {
    let template = Template::parse("<{value}>").expect("valid template");
    let mut table = String::new();
    for value in TRICKY_VALUES {
        writeln!(table, "value {value:?}").expect("write to string");
        for escape in ESCAPES {
            let rendered = match template.render(*escape, &[("value", *value)]) {
                Ok(text) => text,
                Err(error) => format!("error: {error}"),
            };
            writeln!(table, "  {:<12} {rendered}", format!("{escape:?}")).expect("write to string");
        }
    }
    insta::assert_snapshot!(table);
}

#[track_caller]
fn check_url(template: &str, values: &[(&str, &str)]) -> String {
    match UrlTemplate::parse(template) {
        Err(error) => format!("parse error: {error}"),
        Ok(url) => match url.render(values) {
            Ok(rendered) => rendered,
            Err(error) => format!("render error: {error}"),
        },
    }
}

#[test]
fn url_table() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("https://{sub}.acme.example/api", &[("sub", "eu1")]),
        ("https://{sub}.acme.example/api", &[("sub", "eu1.staging")]),
        ("https://{sub}.acme.example/api", &[("sub", "evil.example/")]),
        ("https://{sub}.acme.example/api", &[("sub", "evil.example:80")]),
        ("https://{sub}.acme.example/api", &[("sub", "evil.example#")]),
        ("https://{sub}.acme.example/api", &[("sub", "user@evil.example")]),
        ("https://{sub}.acme.example/api", &[("sub", "-bad")]),
        ("https://{host}/api", &[("host", "api.acme.example")]),
        ("https://acme.example:{port}/api", &[("port", "8443")]),
        ("https://acme.example:{port}/api", &[("port", "443/evil")]),
        ("https://acme.example:{port}/api", &[("port", "70000")]),
        ("https://acme.example/api/{id}", &[("id", "../admin")]),
        ("https://acme.example/api/{id}", &[("id", "..")]),
        ("https://acme.example/api/{id}/x", &[("id", "a b?c#d")]),
        ("https://acme.example/api?q={q}&page=2", &[("q", "a&page=9")]),
        ("https://acme.example/api#{frag}", &[("frag", "a b#c")]),
        ("/contacts/{id}", &[("id", "42/../../x")]),
        ("https://acme.example/{{literal}}/{id}", &[("id", "1")]),
        ("HTTPS://acme.example/{id}", &[("id", "1")]),
        ("{scheme}://acme.example", &[("scheme", "http")]),
        ("http{s}://acme.example", &[("s", "s")]),
        ("https://{user}@acme.example", &[("user", "me")]),
        ("ftp://acme.example/{id}", &[("id", "1")]),
        ("acme.example/{id}", &[("id", "1")]),
        ("https://acme.example/{id}", &[]),
        (
            "{origin}/services/data",
            &[("origin", "https://eu12.my.salesforce.com")],
        ),
        ("{origin}/services/data", &[("origin", "https://acme.pipedrive.com/")]),
        ("{origin}/services/data", &[("origin", "http://127.0.0.1:8080")]),
        ("{origin}/services/data", &[("origin", "https://evil.example/x")]),
        ("{origin}/services/data", &[("origin", "https://me@evil.example")]),
        ("{origin}/services/data", &[("origin", "https://evil.example?")]),
        ("{origin}/services/data", &[("origin", "javascript:alert(1)")]),
        ("{origin}/services/data", &[("origin", "eu12.my.salesforce.com")]),
        ("{origin}", &[("origin", "https://acme.example:8443")]),
        ("{origin}:8443/api", &[("origin", "https://acme.example")]),
    ];
    let mut table = String::new();
    for (template, values) in cases {
        writeln!(table, "{template}  {values:?}\n  => {}", check_url(template, values)).expect("write to string");
    }
    insta::assert_snapshot!(table);
}

#[test]
fn parse_errors() {
    let cases = [
        "Bearer {token",
        "Bearer token}",
        "{}",
        "{with space}",
        r#"{"user": "{name}"}"#,
        r#"{{"user": "{name}"}}"#,
        "{{token}}",
        "{a}{b}}}",
    ];
    let mut table = String::new();
    for source in cases {
        let outcome = match Template::parse(source) {
            Ok(template) => format!("ok {:?}", template.segments()),
            Err(error) => format!("error: {error}"),
        };
        writeln!(table, "{source}\n  => {outcome}").expect("write to string");
    }
    insta::assert_snapshot!(table);
}

#[test]
fn placements_are_found_at_parse_time() {
    let url = UrlTemplate::parse("https://{a}.x.example:{b}/p/{c}?q={d}#{e}").expect("valid template");
    let placements: Vec<_> = url.parameters().collect();
    assert_eq!(
        placements,
        [
            ("a", Placement::Host),
            ("b", Placement::Port),
            ("c", Placement::Path),
            ("d", Placement::Query),
            ("e", Placement::Fragment),
        ]
    );
}

#[test]
fn an_origin_and_host_suffixes_are_found_at_parse_time() {
    let origin = UrlTemplate::parse("{instance_url}/services/data?v={v}").expect("valid template");
    let placements: Vec<_> = origin.parameters().collect();
    assert_eq!(
        placements,
        [("instance_url", Placement::Origin), ("v", Placement::Query)]
    );
    assert_eq!(origin.host_suffix(), None);
    for (template, suffix) in [
        ("https://{shop}.myshopify.com/admin/oauth", Some(".myshopify.com")),
        ("https://{a}.{b}.zendesk.com:8443/x", Some(".zendesk.com")),
        ("https://{host}/oauth/token", Some("")),
        ("https://{host}", Some("")),
        ("https://login.example/{tenant}/token", None),
    ] {
        let url = UrlTemplate::parse(template).expect("valid template");
        assert_eq!(url.host_suffix(), suffix, "{template}");
    }
}

#[test]
fn errors_never_show_the_value() {
    let secret = "s3cr3t\r\nvalue";
    let template = Template::parse("Bearer {token}").expect("valid template");
    let error = template
        .render(Escape::Header, &[("token", secret)])
        .expect_err("CR LF refused");
    assert_eq!(error.kind, RenderErrorKind::ControlCharacterInHeader);
    assert!(!format!("{error} {error:?}").contains("s3cr3t"));

    let url = UrlTemplate::parse("https://{host}/").expect("valid template");
    let error = url.render(&[("host", "s3cr3t/")]).expect_err("invalid host");
    assert!(!format!("{error} {error:?}").contains("s3cr3t"));
}

#[test]
fn failed_render_leaves_the_buffer_untouched() {
    let template = Template::parse("a{x}b{y}").expect("valid template");
    let mut out = String::from("prefix:");
    let error = template
        .render_into(&mut out, Escape::Plain, &[("x", "1")])
        .expect_err("y is missing");
    assert_eq!(error.parameter, "y");
    assert_eq!(out, "prefix:");
}

#[test]
fn parse_error_kinds() {
    assert_eq!(
        Template::parse("{").expect_err("unclosed").kind,
        ParseErrorKind::UnclosedBrace
    );
    assert_eq!(
        UrlTemplate::parse("{scheme}://x").expect_err("scheme").kind,
        ParseErrorKind::ParameterInScheme
    );
}
