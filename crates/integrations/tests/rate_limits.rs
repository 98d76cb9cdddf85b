//! A provider's own rate-limit signal, honoured by the retry policy: a 403
//! with no request left waits for the reset its header gives.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use integrations::definition::Format;
use integrations::http::{Method, StatusCode};
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountId, AccountStore, Cipher, Definitions, EncryptionKey, Integrations, NewAccount};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn definition(base: &str, rate_limit: &str) -> String {
    format!(
        r#"
        [[integration]]
        key = "limited"
        name = "Limited"
        base_url = "{base}"
        retry = {{ max_total_seconds = 30 }}
        {rate_limit}
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "token {{token}}" }} }}
        "#
    )
}

async fn hub(definition: &str) -> Integrations {
    integrations::register_methods();
    let definitions = Definitions::from_str(definition, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    store
        .create(
            definitions.get("limited").expect("limited"),
            NewAccount::new(AccountId::new("a").expect("id")).credential("token", "t"),
        )
        .await
        .expect("create");
    Integrations::new(definitions, store).expect("integrations")
}

#[tokio::test]
async fn a_403_with_no_request_left_waits_for_the_reset_then_succeeds() {
    let server = MockServer::start().await;
    let reset = (SystemTime::now() + Duration::from_secs(2))
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    Mock::given(method("POST"))
        .and(path("/issues"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str()),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/issues"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/private"))
        .respond_with(ResponseTemplate::new(403).insert_header("x-ratelimit-remaining", "4999"))
        .expect(1)
        .mount(&server)
        .await;
    let hub = hub(&definition(
        &server.uri(),
        r#"rate_limit = { statuses = [403], when = { name = "X-RateLimit-Remaining", value = "0" }, reset_header = "X-RateLimit-Reset", reset_unit = "epoch_seconds" }"#,
    ))
    .await;
    let client = hub.client(&AccountId::new("a").expect("id")).await.expect("client");

    // A POST too: a rate-limited request was not acted on.
    let started = Instant::now();
    let created = client
        .request(Method::POST, "issues")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // A 403 with requests left is the provider's refusal, returned at once.
    let refused = client.request(Method::GET, "private").send().await.expect("sent");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}

#[test]
fn rate_limit_hints_are_checked_with_the_field_named() {
    integrations::register_methods();
    for (rate_limit, field) in [
        ("rate_limit = { statuses = [200] }", "rate_limit.statuses[0]"),
        (
            r#"rate_limit = { statuses = [403], reset_header = "bad header" }"#,
            "rate_limit.reset_header",
        ),
        (
            r#"rate_limit = { when = { name = "x-ratelimit-remaining", value = "0" } }"#,
            "rate_limit.when",
        ),
        (r#"rate_limit = { reset_unit = "fortnights" }"#, "reset_unit"),
    ] {
        let errors = Definitions::from_str(&definition("https://api.example", rate_limit), Format::Toml)
            .expect_err(rate_limit)
            .to_string();
        assert!(errors.contains(field), "{rate_limit}: {errors}");
    }
}
