//! Requests through accounts of API Token and HTTP Basic integrations, checked
//! as they arrive at a real HTTP server on loopback: credentials, request
//! parameters, the request builder, and accounts that change.

use std::sync::Arc;
use std::time::Duration;

use integrations::http::{HttpClient, Method, StatusCode};
use integrations::{ErrorKind, NewAccount, Secrets};
use wiremock::matchers::{body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::*;

#[tokio::test]
async fn api_token_in_a_header_with_request_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"contacts": ["ada"]}"#))
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "crm"
        name = "CRM"
        base_url = "{uri}/api/{{version}}"
        parameters = [{{ name = "version" }}, {{ name = "company" }}]
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
        request_parameters = [
          {{ type = "header", name = "Accept", value = "application/json" }},
          {{ type = "header", name = "X-Company", value = "{{company}}" }},
          {{ type = "url_parameter", name = "company", value = "{{company}}" }},
        ]
        "#,
        uri = server.uri()
    );
    let hub = hub(
        &definitions,
        &[("version", "v2"), ("company", "Acme & Co/ü")],
        &[("token", "tok-123")],
    )
    .await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account
        .request(Method::GET, "contacts")
        .query(&[("page", "2")])
        .header("X-Trace", "t1")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    // The response is reqwest's, JSON included.
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["contacts"][0], "ada");

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/api/v2/contacts");
    assert_eq!(request.url.query(), Some("company=Acme+%26+Co%2F%C3%BC&page=2"));
    assert_eq!(header_values(&request, "authorization"), ["Bearer tok-123"]);
    assert_eq!(header_values(&request, "accept"), ["application/json"]);
    assert_eq!(header_values(&request, "x-company"), ["Acme & Co/ü"]);
    assert_eq!(header_values(&request, "x-trace"), ["t1"]);

    let error = account
        .request(Method::GET, "contacts")
        .header("authorization", "Bearer mine")
        .send()
        .await
        .expect_err("the credential's header cannot be set");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(
        error.to_string(),
        "request refused: header `authorization` carries the account's credential and cannot be set (account `acct`, integration `crm`)"
    );
}

/// Each thread keeps its own copy of a compiled account; `forget` reaches
/// every thread's copy, so all of them send the credential stored since.
#[tokio::test]
async fn a_forgotten_account_is_read_again_on_every_thread() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let definitions = retrying_definition(&server.uri(), "max_attempts = 1");
    // Three threads, each with a runtime of its own (and so a connection
    // pool of its own), send a request before and after the change.
    let http = HttpClient::with_pool_per_thread().expect("client");
    let hub = Arc::new(hub_with(http, &definitions, &[("token", "tok-old")]).await);
    let changed = Arc::new(std::sync::Barrier::new(4));
    let sent_once = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (hub, sent_once, changed) = (Arc::clone(&hub), Arc::clone(&sent_once), Arc::clone(&changed));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let send = || {
                    runtime.block_on(async {
                        let account = hub.client(&acct()).await.expect("account");
                        account.request(Method::GET, "x").send().await.expect("sent").status()
                    })
                };
                let before = send();
                sent_once.wait();
                changed.wait();
                (before, send())
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || sent_once.wait())
        .await
        .expect("first requests");
    let account = hub.store().get(&acct()).await.expect("account");
    hub.store()
        .update_credentials(&account, secrets(&[("token", "tok-new")]), account.status(), None)
        .await
        .expect("update");
    hub.forget(&acct());
    let statuses = tokio::task::spawn_blocking(move || {
        changed.wait();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("thread"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("threads");
    assert_eq!(statuses, [(StatusCode::OK, StatusCode::OK); 3]);

    let sent: Vec<_> = server
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|request| header_values(request, "authorization"))
        .collect();
    assert_eq!(sent[..3], [["Bearer tok-old"], ["Bearer tok-old"], ["Bearer tok-old"]]);
    assert_eq!(sent[3..], [["Bearer tok-new"], ["Bearer tok-new"], ["Bearer tok-new"]]);
}

#[tokio::test]
async fn api_token_in_a_url_parameter_is_encoded() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/weather"))
        .and(query_param("appid", "key:a b&c=d"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "weather"
        name = "Weather"
        base_url = "{}/v1"
        auth = {{ type = "api_token", token = {{ parameter_type = "url_parameter", parameter_name = "appid", value_template = "key:{{token}}" }} }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("token", "a b&c=d")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account.request(Method::GET, "/weather").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let request = only_request(&server).await;
    assert_eq!(request.url.query(), Some("appid=key%3Aa+b%26c%3Dd"));
    assert!(request.headers.get("authorization").is_none());

    // The credential's query parameter cannot be set by the caller, nor
    // smuggled past a `;` (a separator to some servers) or an escape.
    for url in [
        "/weather?appid=mine",
        "/weather?a=1;appid=mine",
        "/weather?a=1&%61ppid=mine",
        "/weather?a=1;%61ppid=mine&b=2",
    ] {
        let error = account.request(Method::GET, url).send().await.expect_err(url);
        assert_eq!(error.kind(), ErrorKind::Refused, "{url}: {error}");
    }
    assert_eq!(server.received_requests().await.expect("recording").len(), 1);
}

#[tokio::test]
async fn basic_auth_is_rfc_7617_in_utf_8() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/erp/orders"))
        .and(header("authorization", "Basic dXNlcjpww6Rzc3fDtnJk"))
        .and(body_string("{\"id\":1}"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "erp"
        name = "ERP"
        base_url = "{}/erp"
        auth = {{ type = "basic" }}
        "#,
        server.uri()
    );
    let hub = hub(&definitions, &[], &[("username", "user"), ("password", "pässwörd")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let response = account
        .request(Method::POST, "orders")
        .header("content-type", "application/json")
        .body("{\"id\":1}")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);

    // The credential's header cannot be replaced by the caller.
    let error = account
        .request(Method::GET, "orders")
        .header("Authorization", "Basic other")
        .send()
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(
        only_request(&server).await.url.path(),
        "/erp/orders",
        "the refused request was not sent"
    );
}

/// The shortcuts and a JSON body, as reqwest users write them; a header
/// value that cannot be sent is named by its header, not quoted.
#[tokio::test]
async fn shortcuts_and_json_bodies_read_like_reqwest() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/contacts"))
        .and(header("content-type", "application/json"))
        .and(body_string(r#"{"name":"Ada"}"#))
        .respond_with(ResponseTemplate::new(201).set_body_string(r#"{"id":7}"#))
        .expect(1)
        .mount(&server)
        .await;
    for verb in ["GET", "PUT", "PATCH", "DELETE"] {
        Mock::given(method(verb))
            .and(path("/v1/contacts/7"))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
    }
    let definitions = x_key_definition(&format!("{}/v1", server.uri()));
    let hub = hub(&definitions, &[], &[("token", "k")]).await;
    let account = hub.client(&acct()).await.expect("account");
    let created: serde_json::Value = account
        .post("contacts")
        .json(&serde_json::json!({ "name": "Ada" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(created["id"], 7);
    for request in [
        account.get("contacts/7"),
        account.put("contacts/7"),
        account.patch("contacts/7"),
        account.delete("contacts/7"),
    ] {
        assert_eq!(request.send().await.expect("sent").status(), StatusCode::OK);
    }
    let error = account
        .get("contacts/7")
        .header("X-Note", "line\nbreak s3cret")
        .send()
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("header `x-note`"), "{error}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[tokio::test]
async fn forms_and_serde_queries_read_like_reqwest() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(query_param("page", "2"))
        .and(query_param("q", "Ada & Charles"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("amount=2000&currency=eur&note=caf%C3%A9+%26+cr%C3%A8me"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let definitions = x_key_definition(&format!("{}/v1", server.uri()));
    let hub = hub(&definitions, &[], &[("token", "k")]).await;
    let account = hub.client(&acct()).await.expect("account");
    #[derive(serde::Serialize)]
    struct Search<'a> {
        page: u32,
        q: &'a str,
    }
    let response = account
        .post("charges")
        .query(&Search {
            page: 2,
            q: "Ada & Charles",
        })
        .form(&[("amount", "2000"), ("currency", "eur"), ("note", "café & crème")])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    // What serde cannot put in a query is refused, naming the query.
    let error = account
        .get("charges")
        .query(&serde_json::json!({ "nested": { "a": 1 } }))
        .send()
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("cannot encode the query"), "{error}");
}

#[tokio::test]
async fn clones_share_accounts_and_caches() {
    let server = MockServer::start().await;
    let definitions = x_key_definition(&format!("{}/v1", server.uri()));
    let hub = hub(&definitions, &[], &[("token", "k")]).await;
    let clone = hub.clone();
    clone.client(&acct()).await.expect("compiled through the clone");
    hub.remove_account(&acct()).await.expect("removed through the original");
    let error = clone.client(&acct()).await.expect_err("gone for the clone too");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
}

/// Requests on `o1` from several tasks while its removal waits on a slow
/// revoke endpoint; once the removal is acknowledged no thread holds the old
/// account, and `o1` created again under another integration goes only to
/// that integration's host with its own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_then_recreated_account_never_sends_the_old_credential() {
    let old_upstream = MockServer::start().await;
    let new_upstream = MockServer::start().await;
    for server in [&old_upstream, &new_upstream] {
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(500)))
        .mount(&old_upstream)
        .await;
    let definitions = format!(
        r#"
        [[integration]]
        key = "acme"
        name = "Acme"
        base_url = "{old}/tenant/t1"
        [integration.auth]
        type = "oauth2"
        grant_type = "authorization_code"
        authorization_endpoint = "{old}/authorize"
        access_token_endpoint = "{old}/token"
        access_token_verb = "POST"
        revoke_token_endpoint = "{old}/revoke"
        scope = "read"
        client_id = "client"
        client_secret = "client-secret"
        token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }}

        [[integration]]
        key = "billing"
        name = "Billing"
        base_url = "{new}/tenant/t2"
        auth = {{ type = "api_token", token = {{ parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {{token}}" }} }}
        "#,
        old = old_upstream.uri(),
        new = new_upstream.uri(),
    );
    let hub = Arc::new(hub(&definitions, &[], &[("access_token", "old-token")]).await);
    let o1 = acct();
    let sent = hub
        .client(&o1)
        .await
        .expect("account")
        .request(Method::GET, "x")
        .send()
        .await
        .expect("sent");
    assert_eq!(sent.status(), StatusCode::OK);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let requesters: Vec<_> = (0..8)
        .map(|_| {
            let (hub, stop, id) = (Arc::clone(&hub), Arc::clone(&stop), o1.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(account) = hub.client(&id).await {
                        let _ = account.request(Method::GET, "x").send().await;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let removal = hub.remove_account(&o1).await.expect("remove");
    assert!(removal.existed);

    // Acknowledged: every thread must now find no account.
    let lookups: Vec<_> = (0..32)
        .map(|_| {
            let (hub, id) = (Arc::clone(&hub), o1.clone());
            tokio::spawn(async move { hub.client(&id).await.map(drop) })
        })
        .collect();
    for lookup in lookups {
        let error = lookup
            .await
            .expect("lookup")
            .expect_err("a removed account must not be found");
        assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for requester in requesters {
        requester.await.expect("requester");
    }
    let sent_to_old = old_upstream.received_requests().await.expect("recording").len();

    // The same id, another integration: its host, its token, nothing else.
    hub.create_account(
        hub.integration("billing").expect("billing"),
        NewAccount {
            id: o1.clone(),
            parameters: Secrets::new(),
            credentials: secrets(&[("token", "new-token")]),
        },
    )
    .await
    .expect("re-create");
    for _ in 0..8 {
        let account = hub.client(&o1).await.expect("re-created account");
        let status = account.request(Method::GET, "x").send().await.expect("sent").status();
        assert_eq!(status, StatusCode::OK);
    }
    let received = new_upstream.received_requests().await.expect("recording");
    assert_eq!(received.len(), 8);
    for request in &received {
        assert_eq!(request.url.path(), "/tenant/t2/x");
        assert_eq!(header_values(request, "authorization"), ["Bearer new-token"]);
    }
    assert_eq!(
        old_upstream.received_requests().await.expect("recording").len(),
        sent_to_old,
        "nothing may reach the old account's host after its removal"
    );
}
