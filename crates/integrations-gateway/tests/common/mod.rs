//! Helpers shared by the gateway's tests: a gateway over the test
//! definitions, an upstream that echoes, a response reader.
#![allow(dead_code, reason = "each test file uses some of them")]

use std::sync::Arc;

use integrations::auth::oauth2::RedirectUri;
use integrations::definition::Format;
use integrations::secrecy::ExposeSecret;
use integrations::storage::memory::MemoryStorage;
use integrations::{AccountStore, Cipher, Definitions, EncryptionKey, Integrations};
use integrations_gateway::AppState;
use integrations_gateway::keys::ApiKeys;
use reqwest::StatusCode;
use serde_json::Value;

pub(crate) const DEFINITIONS: &str = r#"
    [[integration]]
    key = "weather"
    name = "Weather"
    base_url = "https://api.weather.example/v1"
    parameters = [{ name = "units", default = "metric" }, { name = "station_secret", secret = true, default = "x" }]
    auth = { type = "api_token", token = { parameter_type = "header", parameter_name = "X-Key", value_template = "{token}" } }
    request_parameters = [{ type = "header", name = "X-Literal-Key", value = "literal-s3cret" }]

    [[integration]]
    key = "crm"
    name = "CRM"
    [integration.auth]
    type = "oauth2"
    grant_type = "client_credentials"
    access_token_endpoint = "https://crm.example/token"
    access_token_verb = "POST"
    scope = "read"
    client_id = "id"
    client_secret = "client-s3cret"
    token = { parameter_type = "header", parameter_name = "Authorization", value_template = "Bearer {token}" }
"#;

pub(crate) struct Gateway {
    pub(crate) base: String,
    pub(crate) key: String,
    pub(crate) http: reqwest::Client,
    pub(crate) state: Arc<AppState>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Gateway {
    pub(crate) async fn start() -> Self {
        Self::with_definitions(DEFINITIONS).await
    }

    pub(crate) async fn with_definitions(definitions: &str) -> Self {
        Self::with_settings(definitions, false).await
    }

    /// With `/v1/openapi.json` behind the key.
    pub(crate) async fn with_openapi_behind_the_key() -> Self {
        Self::with_settings(DEFINITIONS, true).await
    }

    async fn with_settings(definitions: &str, openapi_requires_key: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = ApiKeys::in_data_dir(dir.path()).await.expect("keys");
        let (_, key) = keys.create("tests").await.expect("key");
        integrations::register_methods();
        let definitions = Definitions::from_str(definitions, Format::Toml).expect("valid");
        let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(AppState {
            integrations: Integrations::new(definitions, store).expect("integrations"),
            keys,
            redirect_uri: RedirectUri::from_public_base_url(&base).expect("redirect"),
            openapi_requires_key,
        });
        tokio::spawn(integrations_gateway::serve(
            listener,
            Arc::clone(&state),
            std::future::pending(),
        ));
        Self {
            base,
            key: key.expose_secret().to_owned(),
            http: reqwest::Client::new(),
            state,
            _dir: dir,
        }
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("response");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// Integrations with account `w1` of `weather` (base URL on `upstream`), the
/// API keys and one key of them.
pub(crate) async fn weather_account(
    upstream: &str,
    http: integrations::http::HttpClient,
) -> (Integrations, ApiKeys, String, tempfile::TempDir) {
    let definitions = DEFINITIONS.replace("https://api.weather.example/v1", &format!("{upstream}/v1"));
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = ApiKeys::in_data_dir(dir.path()).await.expect("keys");
    let (_, key) = keys.create("tests").await.expect("key");
    integrations::register_methods();
    let definitions = Definitions::from_str(&definitions, Format::Toml).expect("valid");
    let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
    store
        .create(
            definitions.get("weather").expect("weather"),
            integrations::NewAccount {
                id: integrations::AccountId::new("w1").expect("id"),
                parameters: integrations::Secrets::default(),
                credentials: [("token", integrations::secrecy::SecretString::from("token-s3cret"))]
                    .into_iter()
                    .collect(),
            },
        )
        .await
        .expect("account");
    let integrations = Integrations::with_http_client(definitions, store, http);
    (integrations, keys, key.expose_secret().to_owned(), dir)
}

/// An upstream answering each request on a connection with its own request
/// line: chunked when the path has `chunked` in it, with a length otherwise.
pub(crate) async fn echoing_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                loop {
                    let request = loop {
                        let mut slots = [httparse::EMPTY_HEADER; 32];
                        let mut request = httparse::Request::new(&mut slots);
                        if let Ok(httparse::Status::Complete(head)) = request.parse(&received) {
                            let mut line =
                                format!("{} {}", request.method.expect("method"), request.path.expect("path"));
                            // Told back, so a test sees whether it was forwarded.
                            if request
                                .headers
                                .iter()
                                .any(|slot| slot.name.eq_ignore_ascii_case("x-client-hop"))
                            {
                                line.push_str(" +x-client-hop");
                            }
                            let chunked = request
                                .headers
                                .iter()
                                .any(|slot| slot.name.eq_ignore_ascii_case("transfer-encoding"));
                            if chunked && let Some((end, body)) = dechunk(&received[head..]) {
                                received.drain(..head + end);
                                break (line, body);
                            }
                            let length: usize = request
                                .headers
                                .iter()
                                .find(|slot| slot.name.eq_ignore_ascii_case("content-length"))
                                .map_or(0, |slot| {
                                    std::str::from_utf8(slot.value).expect("utf-8").parse().expect("length")
                                });
                            if !chunked && received.len() >= head + length {
                                let body = String::from_utf8_lossy(&received[head..head + length]).into_owned();
                                received.drain(..head + length);
                                break (line, body);
                            }
                        }
                        let mut chunk = [0; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => received.extend_from_slice(&chunk[..read]),
                        }
                    };
                    let (line, body) = request;
                    let echo = format!("{line} [{body}]");
                    let response = if line.contains("chunked") {
                        format!(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{echo}\r\n0\r\n\r\n",
                            echo.len()
                        )
                    } else if line.starts_with("HEAD") {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", echo.len())
                    } else if line.contains("listed") {
                        // A header made hop-by-hop by naming it in `Connection`.
                        format!(
                            "HTTP/1.1 200 OK\r\nConnection: X-Listed, keep-alive\r\nX-Listed: upstream-hop\r\n\
                             X-Kept: 1\r\nContent-Length: {}\r\n\r\n{echo}",
                            echo.len()
                        )
                    } else if line.contains("hop") {
                        // Hop-by-hop headers, which a proxy does not pass on.
                        format!(
                            "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: Keep-Alive\r\nX-Echo-Case: Kept\r\n\
                             Proxy-Authenticate: Basic\r\nContent-Length: {}\r\n\r\n{echo}",
                            echo.len()
                        )
                    } else {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{echo}", echo.len())
                    };
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

/// A whole chunked body (without trailers) at the front of `bytes`: where
/// it ends and what it holds.
pub(crate) fn dechunk(bytes: &[u8]) -> Option<(usize, String)> {
    let mut at = 0;
    let mut body = String::new();
    loop {
        match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete((used, 0))) if bytes.len() >= at + used + 2 => {
                return Some((at + used + 2, body));
            }
            Ok(httparse::Status::Complete((used, size))) if bytes.len() >= at + used + size as usize + 2 => {
                body.push_str(&String::from_utf8_lossy(&bytes[at + used..at + used + size as usize]));
                at += used + size as usize + 2;
            }
            _ => return None,
        }
    }
}

/// One response read off `stream`: status, head and body (de-chunked).
pub(crate) async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
    head_only: bool,
) -> (u16, String, String) {
    use tokio::io::AsyncReadExt;
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut slots);
        if let Ok(httparse::Status::Complete(head)) = response.parse(buffer) {
            let status = response.code.expect("status");
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|slot| slot.name.eq_ignore_ascii_case(name))
                    .map(|slot| String::from_utf8_lossy(slot.value).into_owned())
            };
            let head_text = String::from_utf8_lossy(&buffer[..head]).to_lowercase();
            let body = if head_only {
                Some((head, String::new()))
            } else if header("transfer-encoding").as_deref() == Some("chunked") {
                dechunk(&buffer[head..]).map(|(end, body)| (head + end, body))
            } else {
                let length: usize = header("content-length").map_or(0, |value| value.parse().expect("length"));
                (buffer.len() >= head + length).then(|| {
                    (
                        head + length,
                        String::from_utf8_lossy(&buffer[head..head + length]).into_owned(),
                    )
                })
            };
            if let Some((end, body)) = body {
                buffer.drain(..end);
                return (status, head_text, body);
            }
        }
        let mut chunk = [0; 4096];
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(
            read > 0,
            "the connection closed before a whole response: {:?}",
            String::from_utf8_lossy(buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// A gateway, on the front and hyper as `serve` runs them, with account
/// `w1` of `weather` on an [`echoing_upstream`]: its address, an API key,
/// and the data directory to keep alive.
pub(crate) async fn gateway_over_echoing_upstream() -> (std::net::SocketAddr, String, tempfile::TempDir) {
    use integrations::http::HttpClient;
    let upstream = echoing_upstream().await;
    let (integrations, keys, key, dir) =
        weather_account(&upstream, HttpClient::with_pool_per_thread().expect("http client")).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&format!("http://{address}")).expect("redirect"),
        openapi_requires_key: false,
    });
    tokio::spawn(integrations_gateway::serve(listener, state, std::future::pending()));
    (address, key, dir)
}

pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
