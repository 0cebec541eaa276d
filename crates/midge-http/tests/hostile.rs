//! Hostile and broken HTTP clients: oversized heads, slowloris, slow and large bodies, bad
//! JSON, unknown routes, too many connections. After each, MQTT still works.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::{Method, StatusCode};
use midge_http::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or resets) the connection; what it sent.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection is still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let setup = start_default(Some(TOKEN)).await;
    let mut stream = TcpStream::connect(setup.addr()).await.unwrap();
    let big = "a".repeat(64 * 1024);
    let request = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may close before it has read everything: a failed write is a refusal too.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream, WAIT).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // Headers under the cap are fine.
    let medium = "a".repeat(8 * 1024);
    let mut stream = TcpStream::connect(setup.addr()).await.unwrap();
    stream
        .write_all(
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Medium: {medium}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, WAIT).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    round_trip(setup.mqtt()).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_closed_after_the_header_timeout() {
    let mut limits = HttpLimits::default();
    limits.header_read_timeout = Duration::from_secs(1);
    let setup = start(http_config(Some(TOKEN)), limits).await;
    let mut stream = TcpStream::connect(setup.addr()).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte at a time, never finishing the head.
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b"X").await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drip).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
    // An idle connection is closed after the same time.
    let mut idle = TcpStream::connect(setup.addr()).await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Other clients were served all along.
    assert_eq!(
        request(setup.addr(), Method::GET, "/health", None, None)
            .await
            .status,
        StatusCode::OK
    );
    round_trip(setup.mqtt()).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_large_bodies_and_bad_json_are_refused() {
    let mut limits = HttpLimits::default();
    limits.request_timeout = Duration::from_secs(1);
    let setup = start(http_config(Some(TOKEN)), limits).await;
    let addr = setup.addr();

    // A body larger than the cap.
    let big = format!(
        r#"{{"topic": "a", "payload": "{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let answer = request(
        addr,
        Method::POST,
        "/api/v1/publish",
        Some(TOKEN),
        Some(&big),
    )
    .await;
    answer.error(StatusCode::PAYLOAD_TOO_LARGE);

    // A body that never comes.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"topic\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, WAIT).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Bad JSON.
    for bad in ["{", "[]", "null", r#"{"topic": 1, "payload": "x"}"#] {
        let answer = request(
            addr,
            Method::POST,
            "/api/v1/publish",
            Some(TOKEN),
            Some(bad),
        )
        .await;
        let message = answer.error(StatusCode::BAD_REQUEST);
        assert!(message.starts_with("invalid request body"), "{message}");
    }
    // Unknown routes.
    for path in ["/admin", "/metrics/x", "/api/v1/clients/a/b/c", "/%ff"] {
        request(addr, Method::GET, path, Some(TOKEN), None)
            .await
            .error(StatusCode::NOT_FOUND);
    }
    // Not HTTP at all.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, WAIT).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    round_trip(setup.mqtt()).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed() {
    let mut limits = HttpLimits::default();
    limits.max_connections = 2;
    let setup = start(http_config(Some(TOKEN)), limits).await;
    let addr = setup.addr();
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    // The server has taken both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut third, WAIT).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // Once they close, there is room again.
    drop(held);
    eventually("a connection is served again", || async {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return false;
        };
        let _ = stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let answer = read_until_closed(&mut stream, WAIT).await;
        answer.starts_with(b"HTTP/1.1 200")
    })
    .await;
    round_trip(setup.mqtt()).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_endpoint() {
    let setup = start_default(Some(TOKEN)).await;
    let addr = setup.addr();
    let idle = TcpStream::connect(addr).await.unwrap();
    setup.http.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    drop(idle);
    round_trip(setup.broker.local_addr()).await;
    setup.broker.shutdown().await;
}
