//! The SFTP routes through an account, against OpenSSH's sshd on loopback.

use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn sftp_routes_work_through_an_account() {
    let Some(sshd) = integration_sftp_test_server::start_or_skip() else {
        return;
    };
    let gateway = Gateway::with_definitions(
        r#"
        [[integration]]
        key = "files"
        name = "Files"
        auth = { type = "sftp", host = "127.0.0.1" }
        "#,
    )
    .await;
    let key = sshd.user_key(integration_sftp_test_server::UserKey::Ed25519);
    let account = |id: &str, host_key: String| {
        json!({
            "id": id,
            "integration": "files",
            "credentials": {
                "username": sshd.user(),
                "port": sshd.port().to_string(),
                "private_key": key,
                "host_key": host_key,
            },
        })
    };
    let (status, created) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(account("f1", sshd.host_public_key())),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(!created.to_string().contains("PRIVATE KEY"), "{created}");

    let root = sshd.files().display().to_string();
    let q = |path: &str| format!("path={}", url_encode(path));
    let (status, body) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts/f1/sftp/directories",
            Some(json!({ "path": format!("{root}/a/b"), "parents": true })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Upload streamed (3 MiB, in chunks), then download streamed.
    let content: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = content.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = gateway
        .http
        .put(format!(
            "{}/v1/accounts/f1/sftp/files?{}",
            gateway.base,
            q(&format!("{root}/a/b/data.bin"))
        ))
        .bearer_auth(&gateway.key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "bytes": content.len() })
    );

    let response = gateway
        .http
        .get(format!(
            "{}/v1/accounts/f1/sftp/files?{}",
            gateway.base,
            q(&format!("{root}/a/b/data.bin"))
        ))
        .bearer_auth(&gateway.key)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/octet-stream");
    assert_eq!(response.headers()["content-length"], content.len().to_string().as_str());
    assert!(response.bytes().await.unwrap() == content);

    let (status, info) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f1/sftp/stat?{}", q(&format!("{root}/a/b/data.bin"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (info["kind"].as_str(), info["size"].as_u64()),
        (Some("file"), Some(content.len() as u64))
    );

    let (status, _) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts/f1/sftp/rename",
            Some(json!({ "from": format!("{root}/a/b/data.bin"), "to": format!("{root}/a/data.bin") })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, entries) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f1/sftp/entries?{}", q(&format!("{root}/a"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<(&str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["name"].as_str().unwrap(), entry["info"]["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("b", "directory"), ("data.bin", "file")]);

    // Error statuses.
    let missing = format!("/v1/accounts/f1/sftp/stat?{}", q(&format!("{root}/nothing")));
    let (status, body) = gateway.call(reqwest::Method::GET, &missing, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["kind"], "not_found");
    let (status, body) = gateway
        .call(reqwest::Method::GET, "/v1/accounts/f1/sftp/stat", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("path"), "{body}");
    let (status, body) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f1/sftp/files?{}", q(&format!("{root}/a"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a directory is not downloaded: {body}");
    let (status, body) = gateway
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/accounts/f1/sftp/directories?{}", q(&format!("{root}/a"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not empty: {body}");
    assert_eq!(body["error"]["kind"], "conflict");
    let (status, body) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/ghost/sftp/entries?{}", q(&root)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts/f1/sftp/rename",
            Some(json!({"from": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let unauthenticated = gateway
        .http
        .get(format!("{}/v1/accounts/f1/sftp/entries?{}", gateway.base, q(&root)))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    // A wrong host key: refused, with both fingerprints.
    let other = integration_sftp_test_server::start_or_skip().expect("second sshd");
    let (status, _) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(account("f2", other.host_public_key())),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f2/sftp/entries?{}", q(&root)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&sshd.host_key_fingerprint()),
        "{body}"
    );
    // The refusal marks the account: it needs new credentials, and is not
    // tried again until it gets them.
    let mut marked = Value::Null;
    for _ in 0..100 {
        marked = gateway.call(reqwest::Method::GET, "/v1/accounts/f2", None).await.1;
        if marked["status"] == "needs_reauth" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(marked["status"], "needs_reauth", "{marked}");
    assert!(
        marked["status_reason"]
            .as_str()
            .unwrap()
            .contains(&sshd.host_key_fingerprint())
    );
    assert_eq!(marked["last_error"]["code"], "host_key_refused");
    let (status, body) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f2/sftp/entries?{}", q(&root)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs new credentials"),
        "{body}"
    );
    let replaced = account("f2", sshd.host_public_key())["credentials"].clone();
    let (status, body) = gateway
        .call(
            reqwest::Method::PUT,
            "/v1/accounts/f2/credentials",
            Some(json!({ "credentials": replaced })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "connected");
    assert_eq!(body["consecutive_failures"], 0);
    let (status, body) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/f2/sftp/entries?{}", q(&root)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the new credentials work: {body}");
    // An HTTP account has no SFTP.
    let (status, body) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({ "id": "f3", "integration": "files", "credentials": { "username": "u", "password": "p" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing credential `host_key`"),
        "{body}"
    );

    // Cleanup through the API.
    for (method, path) in [
        (
            reqwest::Method::DELETE,
            format!("/v1/accounts/f1/sftp/files?{}", q(&format!("{root}/a/data.bin"))),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/accounts/f1/sftp/directories?{}", q(&format!("{root}/a/b"))),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/accounts/f1/sftp/directories?{}", q(&format!("{root}/a"))),
        ),
    ] {
        let (status, body) = gateway.call(method, &path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {body}");
    }
    assert_eq!(std::fs::read_dir(sshd.files()).unwrap().count(), 0);
}
