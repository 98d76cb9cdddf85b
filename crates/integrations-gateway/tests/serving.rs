//! How connections are served: workers, the shutdown grace, and the
//! front's limits (early refusal, body deadline, connection cap).

use std::sync::Arc;

use integrations::auth::oauth2::RedirectUri;
use integrations_gateway::AppState;
use reqwest::StatusCode;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_answer_every_connection_and_finish_requests_in_flight_at_shutdown() {
    use std::num::NonZeroUsize;

    use integrations::http::HttpClient;
    use integrations_gateway::server::{ConnectionSettings, Listeners, serve_on_workers};
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let upstream = MockServer::start().await;
    Mock::given(path("/v1/fast"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fast"))
        .mount(&upstream)
        .await;
    Mock::given(path("/v1/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("slow")
                .set_delay(std::time::Duration::from_millis(800)),
        )
        .mount(&upstream)
        .await;
    let (integrations, keys, key, _dir) = weather_account(
        &upstream.uri(),
        HttpClient::with_pool_per_thread().expect("http client"),
    )
    .await;

    let listeners = Listeners::bind(
        "127.0.0.1:0".parse().expect("address"),
        NonZeroUsize::new(3).expect("3"),
    )
    .expect("bind");
    assert_eq!(listeners.workers(), 3);
    let base = format!("http://{}", listeners.local_addr());
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&base).expect("redirect"),
        openapi_requires_key: false,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = ConnectionSettings {
        header_read_timeout: std::time::Duration::from_millis(300),
        ..ConnectionSettings::default()
    };
    let server = std::thread::spawn(move || {
        serve_on_workers(listeners, state, settings, async {
            let _ = stopped.await;
        })
    });

    // Many connections, each answered, whichever worker took it.
    let mut calls = Vec::new();
    for _ in 0..24 {
        let (base, key) = (base.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            // A client per call: a connection of its own.
            let response = reqwest::Client::new()
                .get(format!("{base}/v1/accounts/w1/proxy/fast"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("response");
            (response.status(), response.text().await.expect("body"))
        }));
    }
    for call in calls {
        assert_eq!(call.await.expect("join"), (StatusCode::OK, "fast".to_owned()));
    }

    // A client that trickles its request head is cut off.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut trickling = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
            .await
            .expect("connect");
        trickling
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), trickling.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a connection without a whole request head is closed after the header read timeout"
        );
    }

    let slow = tokio::spawn({
        let (base, key) = (base.clone(), key.clone());
        async move {
            let response = reqwest::Client::new()
                .get(format!("{base}/v1/accounts/w1/proxy/slow"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("the request in flight is answered");
            (response.status(), response.text().await.expect("body"))
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.send(()).expect("stop");
    assert_eq!(slow.await.expect("join"), (StatusCode::OK, "slow".to_owned()));
    tokio::task::spawn_blocking(move || server.join())
        .await
        .expect("join")
        .expect("no worker panicked")
        .expect("the server stopped cleanly");
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "nothing listens after shutdown"
    );
}

/// The proxy's front against hostile or slow clients: a keyless request's
/// body is never waited for, a stalled body times out, a worker serves at
/// most `max_connections`, and shutdown ends after its grace period even
/// with a request still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_refuses_early_times_out_bodies_caps_connections_and_stops_in_time() {
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use integrations::http::HttpClient;
    use integrations_gateway::server::{ConnectionSettings, Listeners, serve_on_workers};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let upstream = MockServer::start().await;
    Mock::given(path("/v1/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .mount(&upstream)
        .await;
    let (integrations, keys, key, _dir) = weather_account(
        &upstream.uri(),
        HttpClient::with_pool_per_thread().expect("http client"),
    )
    .await;
    let listeners = Listeners::bind("127.0.0.1:0".parse().expect("address"), NonZeroUsize::MIN).expect("bind");
    let address = listeners.local_addr();
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&format!("http://{address}")).expect("redirect"),
        openapi_requires_key: false,
    });
    let settings = ConnectionSettings {
        header_read_timeout: Duration::from_secs(3),
        body_read_timeout: Duration::from_millis(300),
        max_connections: 2,
        shutdown_grace: Duration::from_millis(500),
        ..ConnectionSettings::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        serve_on_workers(listeners, state, settings, async {
            let _ = stopped.await;
        })
    });
    let within = |seconds| Duration::from_secs(seconds);

    // No key, 1 MiB announced, nothing sent: 401 at once, then closed.
    let mut keyless = tokio::net::TcpStream::connect(address).await.expect("connect");
    keyless
        .write_all(b"POST /v1/accounts/w1/proxy/x HTTP/1.1\r\nHost: g\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = Vec::new();
    let (status, head, _) = tokio::time::timeout(within(5), read_response(&mut keyless, &mut buffer, false))
        .await
        .expect("answered without the body");
    assert_eq!(status, 401);
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = [0; 16];
    assert_eq!(keyless.read(&mut rest).await.expect("read"), 0, "closed");

    // No key, and part of the body already on its way: still a clean 401,
    // not a reset that would lose it.
    let mut sending = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut request = b"POST /v1/accounts/w1/proxy/x HTTP/1.1\r\nHost: g\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 200 * 1024]);
    let (mut reading, mut writing) = sending.split();
    let write = async {
        // The gateway stops reading, so part of this may never be taken.
        let _ = tokio::time::timeout(within(3), writing.write_all(&request)).await;
    };
    let read = async {
        let mut buffer = Vec::new();
        let mut chunk = [0; 4096];
        while let Ok(read) = reading.read(&mut chunk).await {
            if read == 0 {
                break;
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        buffer
    };
    let ((), answer) = tokio::join!(write, read);
    assert!(
        answer.starts_with(b"HTTP/1.1 401"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // A key, but the body stalls: 408 after the body read timeout.
    let mut stalled = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /v1/accounts/w1/proxy/x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Length: 10\r\n\r\nabc"
    );
    stalled.write_all(head.as_bytes()).await.expect("write");
    let mut buffer = Vec::new();
    let (status, _, _) = tokio::time::timeout(within(5), read_response(&mut stalled, &mut buffer, false))
        .await
        .expect("timed out, not held");
    assert_eq!(status, 408);
    drop((keyless, stalled));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Two idle connections fill the worker: a third waits for one of them.
    let first = tokio::net::TcpStream::connect(address).await.expect("connect");
    let _second = tokio::net::TcpStream::connect(address).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(address)
        .await
        .expect("queued in the backlog");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = Vec::new();
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            read_response(&mut third, &mut buffer, false)
        )
        .await
        .is_err(),
        "a third connection is not served while two are open"
    );
    drop(first);
    let (status, _, _) = tokio::time::timeout(within(5), read_response(&mut third, &mut buffer, false))
        .await
        .expect("served once a connection closed");
    assert_eq!(status, 200);
    drop(third);

    // A request in flight for 20 s does not hold shutdown past its grace.
    let slow = tokio::spawn({
        let key = key.clone();
        async move {
            reqwest::Client::new()
                .get(format!("http://{address}/v1/accounts/w1/proxy/slow"))
                .bearer_auth(&key)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    let stopped = tokio::time::timeout(within(10), tokio::task::spawn_blocking(move || server.join()))
        .await
        .expect("stopped within the grace period, not after the slow request")
        .expect("join");
    stopped.expect("no panic").expect("served");
    assert!(
        slow.await.expect("join").is_err(),
        "the request cut off at the end of the grace period gets no response"
    );
}

/// Every route's body has the deadline the proxy's has: a client that
/// stalls a JSON body is answered and cut off, not left holding a handler.
#[tokio::test]
async fn a_stalled_body_on_any_route_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (integrations, keys, key, _dir) = weather_account(
        "https://api.weather.example",
        integrations::http::HttpClient::new().expect("http"),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let state = Arc::new(AppState {
        integrations,
        keys,
        redirect_uri: RedirectUri::from_public_base_url(&format!("http://{address}")).expect("redirect"),
        openapi_requires_key: false,
    });
    let settings = integrations_gateway::server::ConnectionSettings {
        body_read_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    tokio::spawn(integrations_gateway::serve_with(
        listener,
        state,
        settings,
        std::future::pending(),
    ));

    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"id\": \"w2\""
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // The rest of the body never comes.
    let mut response = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("answered and closed, not held")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("the request body did not arrive in time"),
        "{response}"
    );
}
