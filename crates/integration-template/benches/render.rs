//! Rendering a URL template with three parameters, beside the same string
//! built by `format!`.
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use integration_template::UrlTemplate;

fn render_url(c: &mut Criterion) {
    let template = UrlTemplate::parse("https://{subdomain}.acme.example/api/{version}/contacts?owner={owner}")
        .expect("valid template");
    let values = [("subdomain", "eu1"), ("version", "v2"), ("owner", "jane.doe")];
    let expected = "https://eu1.acme.example/api/v2/contacts?owner=jane.doe";
    assert_eq!(template.render(&values).expect("renders"), expected);

    let mut group = c.benchmark_group("url_template_3_params");
    group.throughput(Throughput::Elements(1));
    group.bench_function("UrlTemplate::render", |b| {
        b.iter(|| black_box(&template).render(black_box(&values)))
    });
    group.bench_function("format!", |b| {
        b.iter(|| {
            let [(_, subdomain), (_, version), (_, owner)] = black_box(&values);
            format!("https://{subdomain}.acme.example/api/{version}/contacts?owner={owner}")
        })
    });
    group.finish();
}

criterion_group!(benches, render_url);
criterion_main!(benches);
