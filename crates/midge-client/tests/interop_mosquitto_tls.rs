//! The client over TLS, WebSocket (plain and over TLS) and a Unix socket, against a real
//! mosquitto (Debian package `mosquitto`) started by the test with certificates generated at
//! test time (`midge_testkit::certs::TestPki`). Skipped loudly when mosquitto is missing; a
//! failure under `MIDGE_REQUIRE_PEERS=1`. One IPv6 URL test runs against the midge broker.
//!
//! mosquitto 2.0.11 refuses to start with only a WebSocket listener ("Unable to start any
//! listening sockets"), so its WebSocket configurations carry a plain listener beside.
#![cfg(all(feature = "tls", feature = "ws"))]

mod common;

use std::time::Duration;

use common::*;
use midge_client::tls::{ClientTlsOptions, Roots, TlsVersions};
use midge_client::{
    ClientBuilder, CloseReason, ConnectError, Connector, ProtocolVersion, PublishOptions, QoS,
    ReasonCode, SubscribeOptions, TlsFailure, WebSocketFailure,
};
use midge_testkit::certs::TestPki;

/// mosquitto with one TLS listener on the PKI's server certificate; with
/// `require_certificate`, clients must present a certificate signed by the PKI's CA.
async fn mosquitto_tls(name: &str, pki: &TestPki, require_certificate: bool) -> Option<Mosquitto> {
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
    );
    Mosquitto::start_with(name, move |port, _| {
        format!(
            "listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate {require_certificate}\nallow_anonymous true\n\
             log_dest stderr\nlog_type error\n"
        )
    })
    .await
}

fn tls_options(pki: &TestPki) -> ClientTlsOptions {
    ClientTlsOptions::new(Roots::File(pki.ca.clone()))
}

/// Subscribes, publishes at QoS 1 and receives it back: the connection carries MQTT.
async fn round_trip(builder: ClientBuilder, topic: &str) {
    let client = within("connect", builder.reconnect(None).connect())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let (granted, mut messages) = client
        .subscribe(topic, SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("subscribe");
    assert_eq!(granted, ReasonCode::GRANTED_QOS_1);
    let outcome = client
        .publish(
            topic,
            "over the wire",
            PublishOptions::with_qos(QoS::AtLeastOnce),
        )
        .await
        .expect("publish");
    assert!(outcome.is_success());
    let message = within("message", messages.recv()).await.expect("message");
    assert_eq!(&message.payload()[..], b"over the wire");
    client.disconnect(ReasonCode::SUCCESS).await;
}

/// The close reason of a connection attempt expected to fail.
async fn failure(builder: ClientBuilder) -> CloseReason {
    match within("connect", builder.reconnect(None).connect()).await {
        Ok(_) => panic!("connected where it should have failed"),
        Err(ConnectError::Failed(reason)) => {
            // What the application (and `midge pub`) shows.
            eprintln!("refused as expected: {reason}");
            reason
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_the_ca_file_under_both_versions() {
    let pki = TestPki::generate();
    let Some(mosquitto) = mosquitto_tls("tls-ca", &pki, false).await else {
        return;
    };
    let port = mosquitto.addr.port();
    for (host, versions, mqtt) in [
        ("localhost", TlsVersions::Both, ProtocolVersion::V5),
        ("127.0.0.1", TlsVersions::Tls12, ProtocolVersion::V3_1_1),
        ("localhost", TlsVersions::Tls13, ProtocolVersion::V5),
    ] {
        let mut tls = tls_options(&pki);
        tls.versions = versions;
        tls.alpn = vec![b"mqtt".to_vec()];
        let url = format!("mqtts://{host}:{port}");
        let builder = ClientBuilder::from_url_with_tls(&url, &tls)
            .expect("connector")
            .version(mqtt);
        round_trip(builder, "tls/ca").await;
    }
    // The CA certificates of a directory (mosquitto's --capath).
    let tls = ClientTlsOptions::new(Roots::Dir(pki.dir.clone()));
    let url = format!("mqtts://localhost:{port}");
    round_trip(
        ClientBuilder::from_url_with_tls(&url, &tls).unwrap(),
        "tls/capath",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_client_certificate_where_mosquitto_requires_one() {
    let pki = TestPki::generate();
    let Some(mosquitto) = mosquitto_tls("tls-cert", &pki, true).await else {
        return;
    };
    let url = format!("mqtts://localhost:{}", mosquitto.addr.port());
    let mut tls = tls_options(&pki);
    tls.identity = Some((pki.client_cert.clone(), pki.client_key.clone()));
    round_trip(
        ClientBuilder::from_url_with_tls(&url, &tls).unwrap(),
        "tls/cert",
    )
    .await;

    // Without a certificate, mosquitto (OpenSSL) refuses: under TLS 1.3 with the alert
    // certificate_required, which reaches the client after its side of the handshake.
    let reason = failure(ClientBuilder::from_url_with_tls(&url, &tls_options(&pki)).unwrap()).await;
    assert!(
        matches!(reason, CloseReason::Tls(TlsFailure::AlertReceived(_))),
        "{reason:?}"
    );
    assert!(
        reason
            .to_string()
            .starts_with("TLS: the broker refused the TLS handshake with alert"),
        "{reason}"
    );

    // An expired certificate from the right CA.
    let mut expired = tls_options(&pki);
    expired.identity = Some((pki.expired_cert.clone(), pki.expired_key.clone()));
    let reason = failure(ClientBuilder::from_url_with_tls(&url, &expired).unwrap()).await;
    assert_eq!(
        reason,
        CloseReason::Tls(TlsFailure::AlertReceived(45)),
        "{reason}"
    );
    assert!(
        reason.to_string().contains("CertificateExpired"),
        "{reason}"
    );

    // A certificate from another CA.
    let mut foreign = tls_options(&pki);
    foreign.identity = Some((pki.other_cert.clone(), pki.other_key.clone()));
    let reason = failure(ClientBuilder::from_url_with_tls(&url, &foreign).unwrap()).await;
    assert!(
        matches!(reason, CloseReason::Tls(TlsFailure::AlertReceived(_))),
        "{reason:?}"
    );
    assert!(
        reason
            .to_string()
            .contains("refused the client certificate"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_an_untrusted_ca_is_refused_clearly() {
    let pki = TestPki::generate();
    let Some(mosquitto) = mosquitto_tls("tls-wrong-ca", &pki, false).await else {
        return;
    };
    let url = format!("mqtts://localhost:{}", mosquitto.addr.port());
    let wrong = ClientTlsOptions::new(Roots::File(pki.other_ca.clone()));
    let reason = failure(ClientBuilder::from_url_with_tls(&url, &wrong).unwrap()).await;
    assert_eq!(reason, CloseReason::Tls(TlsFailure::UnknownIssuer));
    assert_eq!(
        reason.to_string(),
        "TLS: the broker's certificate is not signed by a trusted CA (unknown issuer)"
    );

    // The switch for tests accepts it anyway.
    let mut insecure = wrong;
    insecure.insecure_skip_verify_for_testing = true;
    round_trip(
        ClientBuilder::from_url_with_tls(&url, &insecure).unwrap(),
        "tls/insecure",
    )
    .await;

    // A plain MQTT client on the TLS port gets no CONNACK it can read.
    let plain = format!("mqtt://127.0.0.1:{}", mosquitto.addr.port());
    let builder = ClientBuilder::from_url(&plain)
        .unwrap()
        .response_timeout(Duration::from_secs(2));
    failure(builder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_and_wss_with_mosquitto() {
    let pki = TestPki::generate();
    let (plain, wss) = (free_port(), free_port());
    let (cert, key) = (
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
    );
    let Some(mosquitto) = Mosquitto::start_with("ws", move |port, _| {
        format!(
            "listener {plain} 127.0.0.1\nlistener {port} 127.0.0.1\nprotocol websockets\n\
             listener {wss} 127.0.0.1\nprotocol websockets\ncertfile {cert}\nkeyfile {key}\n\
             allow_anonymous true\nlog_dest stderr\nlog_type error\n"
        )
    })
    .await
    else {
        return;
    };
    let ws = mosquitto.addr.port();
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let url = format!("ws://127.0.0.1:{ws}/mqtt");
        round_trip(
            ClientBuilder::from_url(&url).unwrap().version(version),
            "ws/t",
        )
        .await;
    }
    // The default path (/mqtt), and a large message that spans WebSocket frames both ways.
    let client = ClientBuilder::from_url(&format!("ws://localhost:{ws}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (_, mut messages) = client
        .subscribe("ws/big", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let big = vec![7u8; 300_000];
    client
        .publish(
            "ws/big",
            big.clone(),
            PublishOptions::with_qos(QoS::AtLeastOnce),
        )
        .await
        .unwrap();
    let m = within("big message", messages.recv()).await.unwrap();
    assert_eq!(&m.payload()[..], &big[..]);
    client.disconnect(ReasonCode::SUCCESS).await;

    // wss: WebSocket over TLS.
    let url = format!("wss://localhost:{wss}/mqtt");
    round_trip(
        ClientBuilder::from_url_with_tls(&url, &tls_options(&pki)).unwrap(),
        "wss/t",
    )
    .await;

    // A WebSocket client on mosquitto's plain MQTT port: refused as no WebSocket server.
    let reason = failure(
        ClientBuilder::from_url(&format!("ws://127.0.0.1:{plain}/mqtt"))
            .unwrap()
            .connect_timeout(Duration::from_secs(3)),
    )
    .await;
    assert!(
        matches!(
            reason,
            CloseReason::WebSocket(WebSocketFailure::Refused | WebSocketFailure::Protocol)
                | CloseReason::Io(_)
                | CloseReason::ConnectTimeout
        ),
        "{reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_with_mosquitto() {
    let mut socket = None;
    let Some(mosquitto) = Mosquitto::start_with("unix", |port, dir| {
        let path = dir.join("mqtt.sock");
        socket = Some(path.clone());
        format!(
            "listener {port} 127.0.0.1\nlistener 0 {}\nallow_anonymous true\n\
             log_dest stderr\nlog_type error\n",
            path.display()
        )
    })
    .await
    else {
        return;
    };
    let path = socket.expect("socket path");
    // mosquitto opens its listeners one after the other: the TCP one answered first.
    within("the socket", async {
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let url = format!("unix://{}", path.display());
    round_trip(ClientBuilder::from_url(&url).unwrap(), "unix/t").await;
    drop(mosquitto);
}

/// A server that accepts TCP connections and never says a word: the TLS handshake and the
/// WebSocket upgrade are part of the connect attempt, which `connect_timeout` bounds.
#[tokio::test]
async fn connect_timeout_bounds_the_tls_handshake_and_the_websocket_upgrade() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let pki = TestPki::generate();
    for url in [
        format!("mqtts://localhost:{port}"),
        format!("ws://127.0.0.1:{port}/mqtt"),
        format!("wss://localhost:{port}/mqtt"),
    ] {
        let builder = ClientBuilder::from_url_with_tls(&url, &tls_options(&pki))
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .response_timeout(Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        let reason = failure(builder).await;
        assert_eq!(reason, CloseReason::ConnectTimeout, "{url}");
        assert!(started.elapsed() < Duration::from_secs(5), "{url}");
    }
    held.abort();
}

#[test]
fn connectors_show_their_url_without_the_password() {
    let connector = Connector::url("wss://[::1]:8884/ws").unwrap();
    assert_eq!(
        format!("{connector:?}"),
        r#"Connector("wss://[::1]:8884/ws")"#
    );
    let builder = ClientBuilder::from_url("mqtt://alice:hunter2@localhost").unwrap();
    let shown = format!("{builder:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("mqtt://alice@localhost:1883"), "{shown}");
    // A connector sends no CONNECT: credentials in its URL would be lost, so they are refused.
    assert!(Connector::url("mqtt://alice:hunter2@localhost").is_err());
    assert!(Connector::url("mqtt://localhost/a/topic").is_err());
}

/// `mqtt://[::1]:port`: the IPv6 loopback, against the midge broker.
#[tokio::test]
async fn ipv6_urls_reach_a_broker_on_the_ipv6_loopback() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    };
    drop(probe);
    let broker = start_broker_on("[::1]:0".parse().unwrap()).await;
    let url = format!("mqtt://[::1]:{}", broker.local_addr().port());
    round_trip(ClientBuilder::from_url(&url).unwrap(), "ipv6/t").await;
}
