//! The admin API, the health checks and the dashboard page, on a real broker with real MQTT
//! clients; the token and the loopback rule.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use hyper::{Method, StatusCode};
use midge_broker::HttpConfig;
use midge_client::{PublishOptions, QoS, SubscribeOptions};
use midge_http::{HttpError, HttpLimits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_dashboard_need_no_token() {
    let setup = start_default(Some(TOKEN)).await;
    let addr = setup.addr();
    let health = request(addr, Method::GET, "/health", None, None).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok")
    );
    let ready = request(addr, Method::GET, "/ready", None, None).await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (StatusCode::OK, "ready")
    );
    let page = request(addr, Method::GET, "/", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.to_lowercase().starts_with("<!doctype html>"));
    let metrics = request(addr, Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_endpoint_refuses_a_missing_or_wrong_token() {
    let setup = start_default(Some(TOKEN)).await;
    // What the refused requests would change: a retained message on `a`, a client `someone`
    // subscribed to `a`.
    let someone = client(setup.mqtt(), "someone").await;
    someone
        .publish(
            "a",
            "kept",
            PublishOptions::with_qos(QoS::AtLeastOnce).retain(true),
        )
        .await
        .unwrap();
    let (_, mut messages) = someone
        .subscribe("a", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let retained = tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("the retained message arrives in time")
        .expect("a message");
    assert_eq!(retained.payload().as_ref(), b"kept");
    let endpoints = [
        (Method::GET, "/api/v1/broker", None),
        (Method::GET, "/api/v1/clients", None),
        (Method::GET, "/api/v1/clients/someone", None),
        (Method::POST, "/api/v1/clients/someone/kick", None),
        (Method::POST, "/api/v1/kick?client_id=someone", None),
        (Method::GET, "/api/v1/retained", None),
        (Method::DELETE, "/api/v1/retained?topic=a", None),
        (Method::GET, "/api/v1/subscriptions", None),
        (
            Method::POST,
            "/api/v1/publish",
            Some(r#"{"topic": "a", "payload": "x"}"#),
        ),
    ];
    for (method, path, body) in endpoints {
        for token in [None, Some("wrong"), Some("test-token-012345678"), Some("")] {
            let answer = request(setup.addr(), method.clone(), path, token, body).await;
            answer.error(StatusCode::UNAUTHORIZED);
            assert_eq!(
                answer.headers["www-authenticate"], "Bearer",
                "{method} {path}"
            );
        }
        // Another scheme is no bearer token either.
        let basic = format!("Basic {TOKEN}");
        let stream = tokio::net::TcpStream::connect(setup.addr()).await.unwrap();
        let answer = raw_request(stream, &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    // Nothing was done. The refused publishes never reached the subscriber: the next message
    // it gets is the one published now, with the token, on a connection that was not kicked.
    let published = request(
        setup.addr(),
        Method::POST,
        "/api/v1/publish",
        Some(TOKEN),
        Some(r#"{"topic": "a", "payload": "with the token"}"#),
    )
    .await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.body);
    let next = tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("the message arrives in time")
        .expect("a message: the client is still connected");
    assert_eq!(next.payload().as_ref(), b"with the token");
    let detail = get(setup.addr(), "/api/v1/clients/someone").await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    // The retained message is still there.
    let retained = get(setup.addr(), "/api/v1/retained").await.json();
    assert_eq!(retained["topics"][0]["topic"], "a", "{retained}");
    assert_eq!(
        retained["topics"][0]["payload_preview"], "kept",
        "{retained}"
    );
    drop(someone);
    setup.stop().await;
}

async fn raw_request(mut stream: tokio::net::TcpStream, text: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("reads");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_api_is_off() {
    let setup = start_default(None).await;
    for token in [None, Some(TOKEN)] {
        let answer = request(setup.addr(), Method::GET, "/api/v1/broker", token, None).await;
        assert_eq!(
            answer.error(StatusCode::FORBIDDEN),
            "the admin API is off: set [http] token or token_file"
        );
    }
    // The rest still answers.
    let health = request(setup.addr(), Method::GET, "/health", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_is_read_at_start_and_must_hold_a_token() {
    let dir = std::env::temp_dir().join(format!("midge-http-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broker = midge_broker::Broker::builder()
        .config(test_config())
        .bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let mut http = http_config(None);

    let missing = dir.join("missing");
    http.token_file = Some(missing.clone());
    let err = midge_http::serve(broker.admin(), &http).unwrap_err();
    assert!(matches!(err, HttpError::TokenFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let empty = dir.join("empty");
    std::fs::write(&empty, " \n").unwrap();
    http.token_file = Some(empty.clone());
    let err = midge_http::serve(broker.admin(), &http).unwrap_err();
    assert!(matches!(err, HttpError::EmptyTokenFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&empty.display().to_string()),
        "{err}"
    );

    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    http.token_file = Some(file);
    let server = midge_http::serve(broker.admin(), &http).expect("serves");
    let answer = get(server.local_addr(), "/api/v1/broker").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // The token never shows in the configuration's Debug.
    let mut with_token = http_config(Some(TOKEN));
    with_token.api_allow_remote = true;
    assert!(!format!("{with_token:?}").contains(TOKEN));

    server.shutdown().await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// This machine's address on the interface of its default route, if it has one: a peer that
/// is not loopback.
fn non_loopback_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_loopback_peers_only_unless_allowed() {
    let Some(ip) = non_loopback_ip() else {
        // A machine without a network interface cannot make a non-loopback peer.
        eprintln!("SKIPPED: no non-loopback address to test the loopback rule from");
        return;
    };
    for allow_remote in [false, true] {
        let mut http = HttpConfig::default();
        http.bind = Some("0.0.0.0:0".parse().unwrap());
        http.token = Some(midge_broker::Secret::new(TOKEN));
        http.api_allow_remote = allow_remote;
        let setup = start(http, HttpLimits::default()).await;
        let port = setup.addr().port();
        let remote = SocketAddr::new(ip, port);
        let loopback = SocketAddr::from(([127, 0, 0, 1], port));

        let from_remote = request_from(
            Some(remote),
            remote,
            Method::GET,
            "/api/v1/broker",
            Some(TOKEN),
            None,
        )
        .await;
        if allow_remote {
            assert_eq!(from_remote.status, StatusCode::OK, "{}", from_remote.body);
        } else {
            let message = from_remote.error(StatusCode::FORBIDDEN);
            assert!(message.contains("api_allow_remote"), "{message}");
        }
        // Metrics and health answer anyone.
        let metrics = request_from(Some(remote), remote, Method::GET, "/metrics", None, None).await;
        assert_eq!(metrics.status, StatusCode::OK);
        let from_loopback = get(loopback, "/api/v1/broker").await;
        assert_eq!(from_loopback.status, StatusCode::OK);
        setup.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_endpoint_answers() {
    let setup = start_default(Some(TOKEN)).await;
    let (addr, mqtt) = (setup.addr(), setup.mqtt());

    let c1 = client(mqtt, "c1").await;
    let (_, mut c1_messages) = c1
        .subscribe("a/+", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let c2 = client(mqtt, "c2").await;
    c2.publish(
        "r/1",
        "retained payload",
        PublishOptions::with_qos(QoS::AtLeastOnce).retain(true),
    )
    .await
    .unwrap();

    // /broker
    let broker = get(addr, "/api/v1/broker").await.json();
    assert_eq!(broker["stats"]["clients_connected"], 2, "{broker}");
    assert!(broker["info"]["version"].is_string(), "{broker}");
    assert_eq!(broker["info"]["listeners"].as_array().unwrap().len(), 1);

    // /clients, a page at a time.
    let all = get(addr, "/api/v1/clients").await.json();
    assert_eq!(all["total"], 2, "{all}");
    let ids: Vec<_> = all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
    let first = get(addr, "/api/v1/clients?limit=1").await.json();
    assert_eq!(first["clients"][0]["client_id"], "c1", "{first}");
    let next = first["next"].as_str().expect("a next page").to_owned();
    let second = get(addr, &format!("/api/v1/clients?limit=1&after={next}"))
        .await
        .json();
    assert_eq!(second["clients"][0]["client_id"], "c2", "{second}");
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "after=%20",
        "after=%2541",
    ] {
        get(addr, &format!("/api/v1/clients?{bad}"))
            .await
            .error(StatusCode::BAD_REQUEST);
    }

    // /clients/{id}
    let detail = get(addr, "/api/v1/clients/c1").await.json();
    assert_eq!(detail["client_id"], "c1");
    assert_eq!(detail["protocol"], "5.0");
    assert_eq!(detail["subscriptions"][0]["filter"], "a/+", "{detail}");
    assert_eq!(detail["subscriptions"][0]["qos"], 1);
    get(addr, "/api/v1/clients/nobody")
        .await
        .error(StatusCode::NOT_FOUND);

    // /subscriptions
    let subs = get(addr, "/api/v1/subscriptions").await.json();
    assert_eq!(subs["subscriptions"].as_array().unwrap().len(), 1, "{subs}");
    assert_eq!(subs["subscriptions"][0]["client_id"], "c1");
    let none = get(addr, "/api/v1/subscriptions?filter=b/%23").await.json();
    assert_eq!(none["subscriptions"].as_array().unwrap().len(), 0, "{none}");
    let a = get(addr, "/api/v1/subscriptions?filter=a/%2B").await.json();
    assert_eq!(a["subscriptions"].as_array().unwrap().len(), 1, "{a}");

    // /retained
    let retained = get(addr, "/api/v1/retained").await.json();
    assert_eq!(retained["topics"][0]["topic"], "r/1", "{retained}");
    assert_eq!(retained["topics"][0]["payload_bytes"], 16);
    assert_eq!(retained["topics"][0]["payload_preview"], "retained payload");
    let filtered = get(addr, "/api/v1/retained?filter=r/%23").await.json();
    assert_eq!(filtered["topics"].as_array().unwrap().len(), 1);
    let other = get(addr, "/api/v1/retained?filter=s/%23").await.json();
    assert_eq!(other["topics"].as_array().unwrap().len(), 0);
    get(addr, "/api/v1/retained?filter=a/%23/b")
        .await
        .error(StatusCode::BAD_REQUEST);

    // POST /publish reaches the subscriber.
    let published = request(
        addr,
        Method::POST,
        "/api/v1/publish",
        Some(TOKEN),
        Some(r#"{"topic": "a/b", "payload": "from HTTP", "qos": 1, "retain": false}"#),
    )
    .await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.body);
    assert_eq!(published.json()["sessions"], 1);
    let message = tokio::time::timeout(WAIT, c1_messages.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(message.topic(), "a/b");
    assert_eq!(message.payload().as_ref(), b"from HTTP");
    // qos and retain may be left out.
    let minimal = request(
        addr,
        Method::POST,
        "/api/v1/publish",
        Some(TOKEN),
        Some(r#"{"topic": "nobody/here", "payload": ""}"#),
    )
    .await;
    assert_eq!(minimal.json()["sessions"], 0, "{}", minimal.body);
    for bad in [
        "{",
        "not json",
        r#"{"payload": "x"}"#,
        r#"{"topic": "a/b"}"#,
        r#"{"topic": "a/b", "payload": "x", "qos": 3}"#,
        r#"{"topic": "a/#", "payload": "x"}"#,
        r#"{"topic": "a/b", "payload": 5}"#,
        r#"{"topic": "a/b", "payload": "x", "extra": 1}"#,
    ] {
        let answer = request(
            addr,
            Method::POST,
            "/api/v1/publish",
            Some(TOKEN),
            Some(bad),
        )
        .await;
        answer.error(StatusCode::BAD_REQUEST);
    }

    // DELETE /retained
    let deleted = request(
        addr,
        Method::DELETE,
        "/api/v1/retained?topic=r/1",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    request(
        addr,
        Method::DELETE,
        "/api/v1/retained?topic=r/1",
        Some(TOKEN),
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND);
    request(addr, Method::DELETE, "/api/v1/retained", Some(TOKEN), None)
        .await
        .error(StatusCode::BAD_REQUEST);
    let retained = get(addr, "/api/v1/retained").await.json();
    assert_eq!(retained["topics"].as_array().unwrap().len(), 0);

    // POST /clients/{id}/kick
    let kicked = request(
        addr,
        Method::POST,
        "/api/v1/clients/c2/kick",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(kicked.status, StatusCode::NO_CONTENT, "{}", kicked.body);
    eventually("the kicked client is gone", || async {
        get(addr, "/api/v1/clients/c2").await.status == StatusCode::NOT_FOUND
    })
    .await;
    request(
        addr,
        Method::POST,
        "/api/v1/clients/nobody/kick",
        Some(TOKEN),
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND);

    // POST /kick?client_id=: an id that a path segment cannot carry through a browser.
    let dots = client(mqtt, "..").await;
    let kicked = request(
        addr,
        Method::POST,
        "/api/v1/kick?client_id=..",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(kicked.status, StatusCode::NO_CONTENT, "{}", kicked.body);
    eventually("the client `..` is gone", || async {
        get(addr, "/api/v1/clients").await.json()["total"] == 1
    })
    .await;
    drop(dots);
    request(
        addr,
        Method::POST,
        "/api/v1/kick?client_id=nobody",
        Some(TOKEN),
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND);

    // Wrong methods and unknown routes.
    request(
        addr,
        Method::GET,
        "/api/v1/clients/c1/kick",
        Some(TOKEN),
        None,
    )
    .await
    .error(StatusCode::METHOD_NOT_ALLOWED);
    request(addr, Method::DELETE, "/metrics", None, None)
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED);
    for path in ["/nothing", "/api/v2/broker", "/api/v1/nothing"] {
        request(addr, Method::GET, path, Some(TOKEN), None)
            .await
            .error(StatusCode::NOT_FOUND);
    }

    round_trip(mqtt).await;
    drop(c1);
    setup.stop().await;
}

/// A path segment that is not UTF-8 once decoded is refused with a JSON error, like every
/// other error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_that_is_not_utf8_gets_a_json_error() {
    let setup = start_default(Some(TOKEN)).await;
    for (method, path) in [
        (Method::GET, "/api/v1/clients/%ff"),
        (Method::POST, "/api/v1/clients/%ff/kick"),
    ] {
        let answer = request(setup.addr(), method, path, Some(TOKEN), None).await;
        answer.error(StatusCode::BAD_REQUEST);
        assert_eq!(answer.headers["content-type"], "application/json");
    }
    setup.stop().await;
}

/// A token that no `Authorization` header could carry is refused at start, without showing
/// the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_no_header_can_carry_is_refused_at_start() {
    let broker = midge_broker::Broker::builder()
        .config(test_config())
        .bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    for (token, position) in [
        ("pässword-secret", 2),
        ("secret\u{7f}x", 7),
        ("sec\nret", 4),
        ("secret\u{0}", 7),
    ] {
        let err = midge_http::serve(broker.admin(), &http_config(Some(token))).unwrap_err();
        assert!(
            matches!(err, HttpError::TokenCharacter { position: p } if p == position),
            "{token:?}: {err:?}"
        );
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    // From a file too.
    let dir = std::env::temp_dir().join(format!("midge-http-bad-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "secret\u{1b}[31m\n").unwrap();
    let mut http = http_config(None);
    http.token_file = Some(file);
    let err = midge_http::serve(broker.admin(), &http).unwrap_err();
    assert!(
        matches!(err, HttpError::TokenCharacter { position: 7 }),
        "{err:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
    // Printable ASCII, with spaces and tabs inside, is fine, and matches.
    let server = midge_http::serve(broker.admin(), &http_config(Some("a b\tc~!"))).expect("serves");
    let answer = request(
        server.local_addr(),
        Method::GET,
        "/api/v1/broker",
        Some("a b\tc~!"),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    server.shutdown().await;
    broker.shutdown().await;
}
