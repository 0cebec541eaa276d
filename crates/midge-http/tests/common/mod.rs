//! What the HTTP tests share: a broker with its HTTP endpoint, a small HTTP client, MQTT
//! clients and a round trip that shows the broker still serves.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use midge_broker::{Broker, BrokerConfig, BrokerHandle, HttpConfig, Secret};
use midge_client::{Client, PublishOptions, QoS, SubscribeOptions};
use midge_http::{HttpLimits, HttpServer};
use tokio::net::TcpStream;

pub const TOKEN: &str = "test-token-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn test_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    config.limits.close_timeout_ms = 500;
    config
}

pub fn http_config(token: Option<&str>) -> HttpConfig {
    let mut http = HttpConfig::default();
    http.bind = Some("127.0.0.1:0".parse().expect("address"));
    http.token = token.map(Secret::new);
    http
}

pub struct Setup {
    pub broker: BrokerHandle,
    pub http: HttpServer,
}

impl Setup {
    pub fn mqtt(&self) -> SocketAddr {
        self.broker.local_addr()
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    pub async fn stop(self) {
        self.http.shutdown().await;
        self.broker.shutdown().await;
    }
}

pub async fn start(http: HttpConfig, limits: HttpLimits) -> Setup {
    let broker = Broker::builder()
        .config(test_config())
        .bind("127.0.0.1:0".parse().expect("address"))
        .start()
        .await
        .expect("broker starts");
    let http = midge_http::serve_with_limits(broker.admin(), &http, limits).expect("HTTP starts");
    Setup { broker, http }
}

pub async fn start_default(token: Option<&str>) -> Setup {
    start(http_config(token), HttpLimits::default()).await
}

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.body))
    }

    /// The `error` of a JSON error answer with `status`.
    pub fn error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        let json = self.json();
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {json}"))
            .to_owned()
    }
}

/// One request on a connection of its own.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    tokio::time::timeout(WAIT, request_from(None, addr, method, path, token, body))
        .await
        .unwrap_or_else(|_| panic!("no answer to {path} in {WAIT:?}"))
}

pub async fn request_from(
    connect: Option<SocketAddr>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let stream = TcpStream::connect(connect.unwrap_or(addr))
        .await
        .expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, Method::GET, path, Some(TOKEN), None).await
}

pub async fn client(broker: SocketAddr, id: &str) -> Client {
    Client::builder(broker.ip().to_string(), broker.port())
        .client_id(id)
        .reconnect(None)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{id} connects: {e}"))
}

/// A subscriber and a publisher on a fresh topic: a QoS 1 message goes through.
pub async fn round_trip(broker: SocketAddr) {
    let id = format!("rt-{}", fastrand_suffix());
    let subscriber = client(broker, &format!("{id}-s")).await;
    let publisher = client(broker, &format!("{id}-p")).await;
    let topic = format!("round-trip/{id}");
    let (_, mut messages) = subscriber
        .subscribe(topic.as_str(), SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("subscribes");
    publisher
        .publish(
            topic.as_str(),
            "ping",
            PublishOptions::with_qos(QoS::AtLeastOnce),
        )
        .await
        .expect("publishes");
    let message = tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("the round trip's message arrives in time")
        .expect("a message");
    assert_eq!(message.payload().as_ref(), b"ping");
    publisher
        .disconnect(midge_client::ReasonCode::SUCCESS)
        .await;
    subscriber
        .disconnect(midge_client::ReasonCode::SUCCESS)
        .await;
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Polls `check` until it is true, for at most [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
