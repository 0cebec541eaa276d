//! The broker's listeners: TLS, client certificates, WebSocket, Unix sockets, the PROXY
//! protocol and per-listener limits, each with what a client does right and what a hostile
//! one does wrong. Every bad connection is closed alone, within its timeout, and counted.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{assert_healthy, Peer, V311, V5};
use futures_util::{SinkExt, StreamExt};
use midge_broker::{Broker, BrokerConfig, BrokerHandle, ConnectRequest, Hooks};
use midge_codec::{Connect, Packet, QoS, ReasonCode};
use midge_testkit::certs::{TestPki, CLIENT_CN};
use midge_transport::tls::tokio_rustls::{client::TlsStream, TlsConnector};
use midge_transport::tls::{server_name, ClientTlsOptions, Roots};
use midge_transport::ws::tokio_tungstenite::tungstenite::{self, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a bad connection may stay open: the test configuration's `connect_timeout_ms`
/// (500), and room for a slow machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(3);

fn config(listeners: &str) -> BrokerConfig {
    let text = format!(
        "{listeners}\n[limits]\nconnect_timeout_ms = 500\nclose_timeout_ms = 500\nmax_packet_size = 4096\n[sys]\ninterval_secs = 0\n"
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

async fn start(config: BrokerConfig) -> BrokerHandle {
    start_with(config, midge_broker::AllowAll).await
}

async fn start_with(config: BrokerConfig, hooks: impl Hooks) -> BrokerHandle {
    Broker::builder()
        .config(config)
        .hooks(hooks)
        .start()
        .await
        .expect("broker starts")
}

fn tls_listener(pki: &TlsFiles, extra: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n{extra}\n[listener.tls]\ncert = {:?}\nkey = {:?}\n",
        pki.cert, pki.key
    )
}

/// The server's files, as the listener names them.
struct TlsFiles {
    cert: String,
    key: String,
}

fn server_files(pki: &TestPki) -> TlsFiles {
    TlsFiles {
        cert: pki.server_cert.display().to_string(),
        key: pki.server_key.display().to_string(),
    }
}

fn client_tls(
    pki: &TestPki,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> TlsConnector {
    let mut options = ClientTlsOptions::new(Roots::File(pki.ca.clone()));
    options.identity = identity.map(|(c, k)| (c.to_owned(), k.to_owned()));
    options.alpn = vec![b"mqtt".to_vec()];
    TlsConnector::from(options.load().expect("client TLS"))
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(server_name("localhost").expect("name"), tcp)
        .await
}

/// Waits until the peer closes `stream` (EOF or an error), failing after [`CLOSED_WITHIN`].
/// Returns what the broker sent before closing.
async fn closed_by_broker<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + CLOSED_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the broker kept the connection open past {CLOSED_WITHIN:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits for the broker's counters to settle: `open` connections, `transport_errors` at
/// `errors`.
async fn settles(broker: &BrokerHandle, open: usize, errors: u64) {
    let deadline = Instant::now() + CLOSED_WITHIN;
    loop {
        let stats = broker.stats();
        if stats.connections == open && stats.transport_errors == errors {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connections {} transport_errors {} (want {open} and {errors})",
            stats.connections,
            stats.transport_errors
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn mqtt_over_tls_with_alpn_mqtt_and_a_plain_listener_beside_it() {
    let pki = TestPki::generate();
    let files = server_files(&pki);
    let broker = start(config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n{}",
        tls_listener(&files, "")
    )))
    .await;
    let plain = broker.listener_addr(0).expect("plain");
    let tls = broker.listener_addr(1).expect("tls");
    assert_ne!(plain, tls);

    let stream = tls_connect(tls, &client_tls(&pki, None))
        .await
        .expect("TLS");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));
    let mut secure = Peer::new(stream, V5);
    let ack = secure
        .handshake(Connect::new(V5, "secure".to_owned()))
        .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    secure.subscribe("t/#", QoS::AtLeastOnce).await;

    // A message from the plain listener reaches the TLS client, and back.
    let mut open = Peer::connect(plain, V311, "open").await;
    open.subscribe("t/#", QoS::AtLeastOnce).await;
    open.publish("t/plain", "from tcp", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(
        secure.recv_publish().await.payload,
        Bytes::from_static(b"from tcp")
    );
    secure
        .publish("t/tls", "from tls", QoS::AtLeastOnce, false)
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(open.recv_publish().await.payload);
    }
    assert!(got.contains(&Bytes::from_static(b"from tls")), "{got:?}");
    assert_eq!(broker.stats().transport_errors, 0);
}

#[tokio::test]
async fn tls_1_2_only_clients_connect() {
    let pki = TestPki::generate();
    let broker = start(config(&tls_listener(&server_files(&pki), ""))).await;
    let mut options = ClientTlsOptions::new(Roots::File(pki.ca.clone()));
    options.versions = midge_transport::tls::TlsVersions::Tls12;
    let connector = TlsConnector::from(options.load().expect("client TLS"));
    let stream = tls_connect(broker.local_addr(), &connector)
        .await
        .expect("TLS 1.2");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(midge_transport::tls::rustls::ProtocolVersion::TLSv1_2)
    );
    let mut peer = Peer::new(stream, V311);
    let ack = peer.handshake(Connect::new(V311, "old".to_owned())).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

/// Records the user names that CONNECTs are authenticated with.
#[derive(Clone, Default)]
struct Usernames(Arc<Mutex<Vec<Option<String>>>>);

impl Hooks for Usernames {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        self.0
            .lock()
            .expect("lock")
            .push(request.username.map(str::to_owned));
        Ok(())
    }
}

#[tokio::test]
async fn client_certificates_required_and_their_cn_as_user_name() {
    let pki = TestPki::generate();
    let files = server_files(&pki);
    let listener = format!(
        "{}client_ca = {:?}\nrequire_client_cert = true\nuse_identity_as_username = true\n",
        tls_listener(&files, ""),
        pki.ca.display().to_string()
    );
    let usernames = Usernames::default();
    let broker = start_with(config(&listener), usernames.clone()).await;
    let addr = broker.local_addr();

    // With its certificate, the client's user name is the certificate's CN, whatever the
    // CONNECT says.
    let connector = client_tls(&pki, Some((&pki.client_cert, &pki.client_key)));
    let stream = tls_connect(addr, &connector).await.expect("TLS");
    let mut device = Peer::new(stream, V5);
    let mut connect = Connect::new(V5, "device".to_owned());
    connect.username = Some("admin".to_owned().into());
    let ack = device.handshake(connect).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        *usernames.0.lock().expect("lock"),
        vec![Some(CLIENT_CN.to_owned())]
    );

    // Without a certificate, with an expired one, or with one from another CA: no MQTT.
    let refused = [
        client_tls(&pki, None),
        client_tls(&pki, Some((&pki.expired_cert, &pki.expired_key))),
        client_tls(&pki, Some((&pki.other_cert, &pki.other_key))),
    ];
    for (i, connector) in refused.iter().enumerate() {
        // TLS 1.3 reports the server's refusal of a client certificate after the client's
        // handshake completes: on the first read.
        if let Ok(stream) = tls_connect(addr, connector).await {
            let mut peer = Peer::new(stream, V5);
            peer.send(Packet::Connect(Box::new(Connect::new(
                V5,
                format!("refused-{i}"),
            ))))
            .await;
            let mut stream = peer;
            let _ = closed_by_broker(stream.stream_mut()).await;
        }
        settles_connections(&broker, 1).await;
    }
    assert_eq!(
        usernames.0.lock().expect("lock").len(),
        1,
        "no other CONNECT got through"
    );
    assert!(broker.stats().transport_errors >= 3);
    device
        .publish("still/here", "yes", QoS::AtLeastOnce, false)
        .await;
}

async fn settles_connections(broker: &BrokerHandle, open: usize) {
    let deadline = Instant::now() + CLOSED_WITHIN;
    while broker.stats().connections != open {
        assert!(
            Instant::now() < deadline,
            "{} connections open",
            broker.stats().connections
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn plain_mqtt_or_garbage_on_a_tls_port_closes_only_that_connection() {
    let pki = TestPki::generate();
    let broker = start(config(&format!(
        "{}[[listener]]\nbind = \"127.0.0.1:0\"\n",
        tls_listener(&server_files(&pki), "")
    )))
    .await;
    let tls = broker.listener_addr(0).expect("tls");
    let plain = broker.listener_addr(1).expect("plain");
    let mut bystander = Peer::connect(plain, V5, "bystander").await;
    bystander.subscribe("b", QoS::AtMostOnce).await;

    // A CONNECT where a ClientHello belongs.
    let mut mqtt = Peer::tcp(tls, V5).await;
    mqtt.send(Packet::Connect(Box::new(Connect::new(
        V5,
        "plain".to_owned(),
    ))))
    .await;
    let answer = closed_by_broker(mqtt.stream_mut()).await;
    assert!(
        !answer.starts_with(&[0x20]),
        "no CONNACK over a TLS port: {answer:?}"
    );
    // Garbage, and a megabyte of it: closed at the first bytes, never buffered.
    let mut garbage = TcpStream::connect(tls).await.expect("connect");
    let junk = vec![0x5a_u8; 1 << 20];
    let _ = garbage.write_all(&junk).await;
    let _ = closed_by_broker(&mut garbage).await;
    settles(&broker, 1, 2).await;
    assert_eq!(broker.stats().connections_total, 3);

    bystander.publish("b", "fine", QoS::AtMostOnce, false).await;
    assert_eq!(
        bystander.recv_publish().await.payload,
        Bytes::from_static(b"fine")
    );
    drop(bystander);
    assert_healthy(plain).await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_within_connect_timeout() {
    let pki = TestPki::generate();
    let broker = start(config(&tls_listener(&server_files(&pki), ""))).await;
    let addr = broker.local_addr();
    let started = Instant::now();
    // Slowloris: the first bytes of a TLS record header, then nothing.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let _ = closed_by_broker(&mut slow).await;
    let _ = closed_by_broker(&mut silent).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "closed after {took:?}, before the timeout"
    );
    settles(&broker, 0, 2).await;
}

#[tokio::test]
async fn the_handshake_counts_against_connect_timeout() {
    // A client that completes TLS at once but then sends no CONNECT is closed
    // connect_timeout_ms after it was accepted, not after its handshake.
    let pki = TestPki::generate();
    let broker = start(config(&tls_listener(&server_files(&pki), ""))).await;
    let started = Instant::now();
    let mut stream = tls_connect(broker.local_addr(), &client_tls(&pki, None))
        .await
        .expect("TLS");
    let _ = closed_by_broker(&mut stream).await;
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1500)).contains(&took),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn certificates_reload_without_dropping_connections_and_a_bad_file_keeps_the_old() {
    let pki = TestPki::generate();
    let first = TestPki::generate();
    // The listener's files are copies that the test replaces.
    let cert = pki.path("live.pem");
    let key = pki.path("live.key");
    std::fs::copy(&pki.server_cert, &cert).expect("copy");
    std::fs::copy(&pki.server_key, &key).expect("copy");
    let files = TlsFiles {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
    };
    let broker = start(config(&tls_listener(&files, ""))).await;
    let addr = broker.local_addr();
    let stream = tls_connect(addr, &client_tls(&pki, None))
        .await
        .expect("TLS");
    let mut open = Peer::new(stream, V5);
    open.handshake(Connect::new(V5, "open".to_owned())).await;
    open.subscribe("r", QoS::AtLeastOnce).await;

    // A broken certificate file: the reload fails, naming it, and handshakes go on as before.
    std::fs::write(&cert, "not a certificate").expect("write");
    let errors = broker.reload().expect_err("broken file");
    assert!(errors[0].contains("live.pem"), "{errors:?}");
    tls_connect(addr, &client_tls(&pki, None))
        .await
        .expect("old certificate still served");

    // The other PKI's certificate: new handshakes see it; clients trusting only the first CA
    // now fail, and the connection already open goes on.
    std::fs::copy(&first.server_cert, &cert).expect("copy");
    std::fs::copy(&first.server_key, &key).expect("copy");
    broker.reload().expect("reloads");
    assert!(tls_connect(addr, &client_tls(&pki, None)).await.is_err());
    tls_connect(addr, &client_tls(&first, None))
        .await
        .expect("new certificate");
    open.publish("r", "after reload", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(
        open.recv_publish().await.payload,
        Bytes::from_static(b"after reload")
    );
}

fn ws_listener(path_and_more: &str) -> String {
    format!("[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n{path_and_more}\n")
}

type Ws = midge_transport::ws::tokio_tungstenite::WebSocketStream<TcpStream>;

/// A raw WebSocket client that offers `mqtt`, for frames a well-behaved client never sends.
async fn raw_ws(addr: SocketAddr, path: &str) -> Result<Ws, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
    let stream = TcpStream::connect(addr)
        .await
        .map_err(tungstenite::Error::Io)?;
    let (ws, response) =
        midge_transport::ws::tokio_tungstenite::client_async(request, stream).await?;
    // [MQTT-6.0.0-4]: the server selects the subprotocol `mqtt`.
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().expect("ascii")),
        Some("mqtt")
    );
    Ok(ws)
}

fn encode(packet: Packet, version: midge_codec::ProtocolVersion) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    packet.encode(version, &mut out).expect("encodes");
    out.to_vec()
}

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match tokio::time::timeout(CLOSED_WITHIN, ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => return data.to_vec(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn mqtt_6_0_0_2_packets_span_frames_and_frames_hold_several_packets() {
    // [MQTT-5:6.0.0-2] [MQTT-3.1.1:6.0.0-2]: a 3.1.1 client here; `raw_ws` checks that the
    // broker selected the subprotocol `mqtt` [MQTT-5:6.0.0-4] [MQTT-3.1.1:6.0.0-4].
    let broker = start(config(&ws_listener(""))).await;
    let addr = broker.local_addr();
    let mut ws = raw_ws(addr, "/mqtt").await.expect("upgrade");
    // One CONNECT split over three binary messages.
    let connect = encode(
        Packet::Connect(Box::new(Connect::new(V311, "ws-client".to_owned()))),
        V311,
    );
    for part in [&connect[..1], &connect[1..5], &connect[5..]] {
        ws.send(Message::Binary(Bytes::copy_from_slice(part)))
            .await
            .expect("send");
    }
    let connack = next_binary(&mut ws).await;
    assert_eq!(connack[0], 0x20, "CONNACK: {connack:?}");
    // SUBSCRIBE and PUBLISH in a single message.
    let subscribe = midge_codec::Subscribe {
        packet_id: common::pid(1),
        filters: vec![(
            "ws/t".to_owned().into(),
            midge_codec::SubscriptionOptions::qos(QoS::AtMostOnce),
        )],
        properties: Default::default(),
    };
    let mut both = encode(Packet::Subscribe(subscribe), V311);
    let publish = midge_codec::Publish {
        topic: "ws/t".to_owned().into(),
        payload: Bytes::from_static(b"hi"),
        ..Default::default()
    };
    both.extend(encode(Packet::Publish(publish), V311));
    ws.send(Message::Binary(both.into())).await.expect("send");
    let mut got = Vec::new();
    while got.len() < 5 + 8 {
        got.extend(next_binary(&mut ws).await);
    }
    assert_eq!(got[0], 0x90, "SUBACK first: {got:?}");
    assert_eq!(
        got[5..].to_vec(),
        b"\x30\x08\x00\x04ws/thi".to_vec(),
        "{got:?}"
    );
}

#[tokio::test]
async fn mqtt_6_0_0_1_a_text_frame_closes_the_connection() {
    // [MQTT-5:6.0.0-1] [MQTT-3.1.1:6.0.0-1]
    let broker = start(config(&ws_listener(""))).await;
    let addr = broker.local_addr();
    let mut ws = raw_ws(addr, "/mqtt").await.expect("upgrade");
    ws.send(Message::Binary(
        encode(
            Packet::Connect(Box::new(Connect::new(V5, "texter".to_owned()))),
            V5,
        )
        .into(),
    ))
    .await
    .expect("send");
    assert_eq!(next_binary(&mut ws).await[0], 0x20);
    ws.send(Message::Text("hello".into())).await.expect("send");
    let deadline = tokio::time::Instant::now() + CLOSED_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("a text frame left the connection open"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(_))) => {}
        }
    }
    settles_connections(&broker, 0).await;
}

#[tokio::test]
async fn websocket_pings_are_answered() {
    let broker = start(config(&ws_listener(""))).await;
    let mut ws = raw_ws(broker.local_addr(), "/mqtt").await.expect("upgrade");
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .expect("ping");
    let answer = tokio::time::timeout(CLOSED_WITHIN, ws.next())
        .await
        .expect("in time");
    match answer {
        Some(Ok(Message::Pong(data))) => assert_eq!(&data[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_announcing_more_than_max_packet_size_closes_before_its_payload() {
    let broker = start(config(&ws_listener(""))).await;
    let addr = broker.local_addr();
    let mut ws = TcpStream::connect(addr).await.expect("connect");
    let upgrade = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    ws.write_all(upgrade.as_bytes()).await.expect("write");
    let mut response = vec![0u8; 1024];
    let n = ws.read(&mut response).await.expect("response");
    assert!(
        response[..n].starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&response[..n])
    );
    // A masked binary frame header announcing 1 GiB (the limit is 4096), and no payload.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    ws.write_all(&header).await.expect("write");
    let _ = closed_by_broker(&mut ws).await;
    settles_connections(&broker, 0).await;
}

/// Sends `request` on a new connection and returns the broker's whole answer.
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    String::from_utf8_lossy(&closed_by_broker(&mut stream).await).into_owned()
}

#[tokio::test]
async fn http_without_upgrade_a_wrong_path_or_origin_is_refused() {
    let broker = start(config(&ws_listener(
        "path = \"/mqtt\"\nallowed_origins = [\"https://app.example.com\"]",
    )))
    .await;
    let addr = broker.local_addr();
    let answer = http(addr, "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 4"), "no Upgrade: {answer:?}");
    let upgrade = |path: &str, origin: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\nOrigin: {origin}\r\n\r\n"
        )
    };
    let answer = http(addr, &upgrade("/other", "https://app.example.com")).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "wrong path: {answer:?}");
    let answer = http(addr, &upgrade("/mqtt", "https://evil.example.com")).await;
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "wrong origin: {answer:?}"
    );
    let answer = http(addr, &upgrade("/mqtt", "https://app.example.com")).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "allowed: {answer:?}");
    settles(&broker, 0, 3).await;
}

#[tokio::test]
async fn mqtt_over_wss() {
    let pki = TestPki::generate();
    let listener = tls_listener(&server_files(&pki), "protocol = \"ws\"");
    let broker = start(config(&listener)).await;
    let addr = broker.local_addr();
    let mut options = ClientTlsOptions::new(Roots::File(pki.ca.clone()));
    // What browsers offer.
    options.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = TlsConnector::from(options.load().expect("TLS"))
        .connect(server_name("localhost").expect("name"), tcp)
        .await
        .expect("TLS");
    let ws =
        midge_transport::ws::connect(tls, &format!("wss://localhost:{}/mqtt", addr.port()), 4096)
            .await
            .expect("upgrade");
    let mut peer = Peer::new(ws, V5);
    let ack = peer.handshake(Connect::new(V5, "wss".to_owned())).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    peer.subscribe("wss/t", QoS::AtLeastOnce).await;
    peer.publish("wss/t", "over wss", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(
        peer.recv_publish().await.payload,
        Bytes::from_static(b"over wss")
    );
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_listener() {
    let pki = TestPki::generate();
    let path = pki.path("midge.sock");
    let broker = start(config(&format!(
        "[[listener]]\nbind = \"unix:{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
        path.display()
    )))
    .await;
    assert_eq!(broker.listener_addr(0), None);
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let mut local = Peer::new(stream, V5);
    let ack = local.handshake(Connect::new(V5, "local".to_owned())).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    local.subscribe("u", QoS::AtLeastOnce).await;
    let mut remote = Peer::connect(broker.listener_addr(1).expect("tcp"), V5, "remote").await;
    remote
        .publish("u", "via tcp", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(
        local.recv_publish().await.payload,
        Bytes::from_static(b"via tcp")
    );
    drop(local);
    broker.shutdown().await;
    assert!(
        !path.exists(),
        "the socket file is removed when the broker stops"
    );
}

#[tokio::test]
async fn a_listener_refuses_connections_past_its_own_limit() {
    let broker = start(config(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nmax_connections = 2\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
    ))
    .await;
    let limited = broker.listener_addr(0).expect("limited");
    let a = Peer::connect(limited, V5, "a").await;
    let _b = Peer::connect(limited, V5, "b").await;
    let mut c = Peer::tcp(limited, V5).await;
    let _ = closed_by_broker(c.stream_mut()).await;
    // The other listener is not limited by it.
    assert_healthy(broker.listener_addr(1).expect("other")).await;
    drop(a);
    settles_connections(&broker, 1).await;
    let _c = Peer::connect(limited, V5, "c").await;
}

/// Records the peer addresses that CONNECTs come from.
#[derive(Clone, Default)]
struct Peers(Arc<Mutex<Vec<SocketAddr>>>);

impl Hooks for Peers {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        self.0.lock().expect("lock").push(request.peer);
        Ok(())
    }
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_give_the_client_address() {
    let peers = Peers::default();
    let broker = start_with(
        config(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\nallow_anonymous = true\n",
        ),
        peers.clone(),
    )
    .await;
    let addr = broker.local_addr();
    let mut v1 = Peer::tcp(addr, V5).await;
    v1.send_raw(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 1883\r\n")
        .await;
    let ack = v1.handshake(Connect::new(V5, "v1".to_owned())).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);

    let mut v2 = Peer::tcp(addr, V5).await;
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]); // PROXY, TCP over IPv6, 36 bytes
    header.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    header.extend_from_slice(
        &"2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    header.extend_from_slice(&[0x9c, 0x40, 0x07, 0x5b]);
    v2.send_raw(&header).await;
    let ack = v2.handshake(Connect::new(V5, "v2".to_owned())).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        *peers.0.lock().expect("lock"),
        vec![
            "203.0.113.7:40000".parse::<SocketAddr>().expect("addr"),
            "[2001:db8::1]:40000".parse().expect("addr"),
        ]
    );

    // Missing where one is required: closed, no CONNACK.
    let mut missing = Peer::tcp(addr, V5).await;
    missing
        .send(Packet::Connect(Box::new(Connect::new(
            V5,
            "direct".to_owned(),
        ))))
        .await;
    let answer = closed_by_broker(missing.stream_mut()).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(peers.0.lock().expect("lock").len(), 2);
    assert_eq!(broker.stats().transport_errors, 1);
}

#[tokio::test]
async fn a_proxy_header_where_none_is_configured_closes_the_connection() {
    let peers = Peers::default();
    let broker = start_with(
        config("[[listener]]\nbind = \"127.0.0.1:0\"\n"),
        peers.clone(),
    )
    .await;
    let addr = broker.local_addr();
    let mut spoof = Peer::tcp(addr, V5).await;
    spoof
        .send_raw(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 1883\r\n")
        .await;
    spoof
        .send(Packet::Connect(Box::new(Connect::new(
            V5,
            "spoof".to_owned(),
        ))))
        .await;
    let answer = closed_by_broker(spoof.stream_mut()).await;
    assert!(
        !answer.starts_with(&[0x20, 0x03, 0x00, 0x00]),
        "accepted: {answer:?}"
    );
    assert!(peers.0.lock().expect("lock").is_empty());
    assert_healthy(addr).await;
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_asked_for() {
    let default = TestPki::generate();
    let named = TestPki::generate();
    let listener = format!(
        "{}[[listener.tls.sni]]\nserver_name = \"LocalHost\"\ncert = {:?}\nkey = {:?}\n",
        tls_listener(&server_files(&default), ""),
        named.server_cert.display().to_string(),
        named.server_key.display().to_string()
    );
    let broker = start(config(&listener)).await;
    let addr = broker.local_addr();
    // Asking for `localhost`: the named certificate, which only the second CA vouches for.
    tls_connect(addr, &client_tls(&named, None))
        .await
        .expect("the SNI certificate");
    assert!(tls_connect(addr, &client_tls(&default, None))
        .await
        .is_err());
    // An IP address sends no SNI: the default certificate.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    client_tls(&default, None)
        .connect(server_name("127.0.0.1").expect("name"), tcp)
        .await
        .expect("the default certificate");
}

#[cfg(unix)]
#[tokio::test]
async fn a_unix_listener_never_replaces_a_file_that_is_not_a_stale_socket() {
    let pki = TestPki::generate();
    let path = pki.path("data.db");
    std::fs::write(&path, "precious").expect("write");
    let config = config(&format!(
        "[[listener]]\nbind = \"unix:{}\"\n",
        path.display()
    ));
    let err = Broker::builder()
        .config(config.clone())
        .start()
        .await
        .expect_err("the path is taken");
    assert!(err.to_string().contains("data.db"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("still there"),
        "precious"
    );
    // A socket left behind by a broker that did not stop cleanly is replaced.
    let stale = pki.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let broker = start(self::config(&format!(
        "[[listener]]\nbind = \"unix:{}\"\n",
        stale.display()
    )))
    .await;
    tokio::net::UnixStream::connect(&stale)
        .await
        .expect("the new socket listens");
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_connections_in_their_handshakes() {
    let pki = TestPki::generate();
    let mut config = config(&format!(
        "{}{}",
        tls_listener(&server_files(&pki), ""),
        ws_listener("")
    ));
    config.limits.connect_timeout_ms = 20_000;
    let broker = start(config).await;
    let stalled = [
        TcpStream::connect(broker.listener_addr(0).expect("tls"))
            .await
            .expect("connect"),
        TcpStream::connect(broker.listener_addr(1).expect("ws"))
            .await
            .expect("connect"),
    ];
    // The accept loops take them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), broker.shutdown())
        .await
        .expect("shutdown waited for the handshakes");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[tokio::test]
async fn alpn_other_than_the_listeners_is_refused_unless_alpn_is_turned_off() {
    let pki = TestPki::generate();
    let files = server_files(&pki);
    let broker = start(config(&format!(
        "{}{}alpn = []\n",
        tls_listener(&files, ""),
        tls_listener(&files, "")
    )))
    .await;
    let mut options = ClientTlsOptions::new(Roots::File(pki.ca.clone()));
    options.alpn = vec![b"x-amzn-mqtt-ca".to_vec()];
    let connector = TlsConnector::from(options.load().expect("client TLS"));
    let strict = broker.listener_addr(0).expect("default ALPN");
    assert!(
        tls_connect(strict, &connector).await.is_err(),
        "no common ALPN protocol"
    );
    let open = broker.listener_addr(1).expect("no ALPN");
    let stream = tls_connect(open, &connector)
        .await
        .expect("served without ALPN");
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let mut peer = Peer::new(stream, V5);
    let ack = peer
        .handshake(Connect::new(V5, "aws-style".to_owned()))
        .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

/// A transport that takes every write at once and sends it on only when flushed, as TLS and
/// WebSocket streams do, over a pipe with room for a few bytes.
struct Holding {
    held: Vec<u8>,
    pipe: tokio::io::DuplexStream,
}

impl tokio::io::AsyncRead for Holding {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.pipe).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Holding {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.held.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        while !this.held.is_empty() {
            let n =
                std::task::ready!(std::pin::Pin::new(&mut this.pipe).poll_write(cx, &this.held))?;
            this.held.drain(..n);
        }
        std::pin::Pin::new(&mut this.pipe).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        std::pin::Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn output_a_transport_took_but_could_not_flush_yet_goes_out_when_it_can() {
    let broker = start(config("[[listener]]\nbind = \"127.0.0.1:0\"\n")).await;
    // 8 bytes of room: every answer takes several flushes, each finished only after the
    // client read what the one before it sent.
    let (client, server) = tokio::io::duplex(8);
    broker.serve(
        Holding {
            held: Vec::new(),
            pipe: server,
        },
        "127.0.0.1:9".parse().expect("addr"),
    );
    let mut peer = Peer::new(client, V5);
    let mut connect = Connect::new(V5, "held".to_owned());
    connect.keep_alive = 0;
    let ack = peer.handshake(connect).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    peer.subscribe("held/t", QoS::AtLeastOnce).await;
    peer.publish(
        "held/t",
        "a message longer than the pipe",
        QoS::AtLeastOnce,
        false,
    )
    .await;
    assert_eq!(
        peer.recv_publish().await.payload,
        Bytes::from_static(b"a message longer than the pipe")
    );
}
