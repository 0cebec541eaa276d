//! The client against the midge broker over every transport a URL names: TCP, TLS with a
//! client certificate, WebSocket, WebSocket over TLS and a Unix socket, all listeners of one
//! broker; the WebSocket upgrade refused by a wrong path; a certificate for another name.
#![cfg(all(feature = "tls", feature = "ws"))]

mod common;

use common::*;
use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_client::tls::{ClientTlsOptions, Roots};
use midge_client::{
    ClientBuilder, CloseReason, ConnectError, PublishOptions, QoS, ReasonCode, SubscribeOptions,
    TlsFailure, WebSocketFailure,
};
use midge_testkit::certs::TestPki;

async fn start(listeners: &str) -> BrokerHandle {
    let text = format!("{listeners}\n[sys]\ninterval_secs = 0\n");
    let config: BrokerConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    Broker::builder()
        .config(config)
        .start()
        .await
        .expect("broker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_reaches_subscribers_on_every_transport() {
    let pki = TestPki::generate();
    let socket = pki.path("midge.sock");
    let tls = format!(
        "[listener.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nrequire_client_cert = true\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let broker = start(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n{tls}\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/secure\"\n{tls}\
         [[listener]]\nbind = \"unix:{}\"\n",
        socket.display()
    ))
    .await;
    let port = |i: usize| broker.listener_addr(i).expect("TCP listener").port();
    let urls = [
        format!("mqtt://127.0.0.1:{}", port(0)),
        format!("mqtts://localhost:{}", port(1)),
        format!("ws://127.0.0.1:{}/mqtt", port(2)),
        format!("wss://localhost:{}/secure", port(3)),
        format!("unix://{}", socket.display()),
    ];
    let mut options = ClientTlsOptions::new(Roots::File(pki.ca.clone()));
    options.identity = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let mut clients = Vec::new();
    let mut streams = Vec::new();
    for url in &urls {
        // ALPN `mqtt` for MQTT over TLS; a WebSocket listener speaks HTTP first, and refuses
        // it (alert 120, no_application_protocol).
        let mut options = options.clone();
        if url.starts_with("mqtts") {
            options.alpn = vec![b"mqtt".to_vec()];
        }
        let client = within(
            url,
            ClientBuilder::from_url_with_tls(url, &options)
                .unwrap()
                .reconnect(None)
                .connect(),
        )
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
        let (granted, stream) = client
            .subscribe("all/+", SubscribeOptions::with_qos(QoS::ExactlyOnce))
            .await
            .unwrap();
        assert_eq!(granted, ReasonCode::GRANTED_QOS_2, "{url}");
        clients.push(client);
        streams.push(stream);
    }
    // Each publishes once, at QoS 2; everyone gets every message.
    for (i, client) in clients.iter().enumerate() {
        client
            .publish(
                format!("all/{i}"),
                vec![b'x'; 100_000],
                PublishOptions::with_qos(QoS::ExactlyOnce),
            )
            .await
            .unwrap();
    }
    for (url, stream) in urls.iter().zip(&mut streams) {
        let mut topics = Vec::new();
        for _ in 0..urls.len() {
            let m = within(url, stream.recv()).await.expect("message");
            assert_eq!(m.payload().len(), 100_000, "{url}");
            topics.push(m.topic().to_owned());
        }
        topics.sort();
        assert_eq!(
            topics,
            ["all/0", "all/1", "all/2", "all/3", "all/4"],
            "{url}"
        );
    }
    for client in clients {
        client.disconnect(ReasonCode::SUCCESS).await;
    }
}

#[tokio::test]
async fn a_wrong_websocket_path_is_a_refused_upgrade() {
    let broker =
        start("[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n").await;
    let url = format!("ws://127.0.0.1:{}/elsewhere", broker.local_addr().port());
    let outcome = ClientBuilder::from_url(&url)
        .unwrap()
        .reconnect(None)
        .connect()
        .await;
    let Err(ConnectError::Failed(reason)) = outcome else {
        panic!("connected through a wrong path");
    };
    assert_eq!(reason, CloseReason::WebSocket(WebSocketFailure::Refused));
    assert!(
        reason
            .to_string()
            .contains("is the URL's path its WebSocket path?"),
        "{reason}"
    );
}

/// The test certificate names localhost, 127.0.0.1 and ::1; a broker reached as 127.0.0.2
/// (a loopback address too, on Linux) presents it for a name it does not hold.
#[tokio::test]
async fn a_certificate_for_another_name_is_a_name_mismatch() {
    if std::net::TcpListener::bind("127.0.0.2:0").is_err() {
        eprintln!("SKIPPED: 127.0.0.2 is not a loopback address here");
        return;
    }
    let pki = TestPki::generate();
    let broker = start(&format!(
        "[[listener]]\nbind = \"127.0.0.2:0\"\n[listener.tls]\ncert = {:?}\nkey = {:?}\n",
        pki.server_cert, pki.server_key
    ))
    .await;
    let url = format!("mqtts://127.0.0.2:{}", broker.local_addr().port());
    let options = ClientTlsOptions::new(Roots::File(pki.ca.clone()));
    let outcome = ClientBuilder::from_url_with_tls(&url, &options)
        .unwrap()
        .reconnect(None)
        .connect()
        .await;
    let Err(ConnectError::Failed(reason)) = outcome else {
        panic!("connected to a broker whose certificate names another host");
    };
    assert_eq!(reason, CloseReason::Tls(TlsFailure::NameMismatch));
}

/// With the default reconnect policy, a failure that no retry can mend ends `connect()`
/// before any connection was accepted: a certificate the client does not trust, one for
/// another name, a broker that refuses the client for its (missing) certificate, a refused
/// WebSocket upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_end_connect_with_the_default_policy() {
    let pki = TestPki::generate();
    let tls = format!(
        "[listener.tls]\ncert = {:?}\nkey = {:?}\n",
        pki.server_cert, pki.server_key
    );
    let mtls = format!(
        "[listener.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nrequire_client_cert = true\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let loopback2 = std::net::TcpListener::bind("127.0.0.2:0").is_ok();
    let broker = start(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n{tls}\
         [[listener]]\nbind = \"127.0.0.1:0\"\n{mtls}\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n\
         [[listener]]\nbind = \"{}:0\"\n{tls}",
        if loopback2 { "127.0.0.2" } else { "127.0.0.1" }
    ))
    .await;
    let port = |i: usize| broker.listener_addr(i).expect("TCP listener").port();
    let trusted = ClientTlsOptions::new(Roots::File(pki.ca.clone()));
    let untrusted = ClientTlsOptions::new(Roots::File(pki.other_ca.clone()));
    let mut cases = vec![
        (
            format!("mqtts://localhost:{}", port(0)),
            untrusted,
            CloseReason::Tls(TlsFailure::UnknownIssuer),
        ),
        (
            format!("mqtts://localhost:{}", port(1)),
            trusted.clone(),
            CloseReason::Tls(TlsFailure::AlertReceived(116)),
        ),
        (
            format!("ws://127.0.0.1:{}/elsewhere", port(2)),
            trusted.clone(),
            CloseReason::WebSocket(WebSocketFailure::Refused),
        ),
    ];
    if loopback2 {
        cases.push((
            format!("mqtts://127.0.0.2:{}", port(3)),
            trusted,
            CloseReason::Tls(TlsFailure::NameMismatch),
        ));
    } else {
        eprintln!("SKIPPED the name mismatch: 127.0.0.2 is not a loopback address here");
    }
    for (url, options, expected) in cases {
        let connecting = ClientBuilder::from_url_with_tls(&url, &options)
            .unwrap()
            .connect();
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
            .await
            .unwrap_or_else(|_| panic!("{url}: connect() still retrying after 10 s"));
        match outcome {
            Err(ConnectError::Failed(reason)) => assert_eq!(reason, expected, "{url}"),
            Ok(_) => panic!("{url}: connected"),
            Err(e) => panic!("{url}: {e}"),
        }
    }
}

/// After a connection was accepted, the same failures are retried per the policy (the
/// broker's certificate may be put right again), and the events say why each attempt failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_connection_a_certificate_failure_is_retried_and_reported() {
    use midge_client::{ConnectionEvent, ReconnectPolicy};
    use std::time::Duration;

    let pki = TestPki::generate();
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    let broker = start(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert = {cert:?}\nkey = {key:?}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n"
    ))
    .await;
    let url = format!("mqtts://localhost:{}", broker.local_addr().port());
    let options = ClientTlsOptions::new(Roots::File(pki.ca.clone()));
    let client = ClientBuilder::from_url_with_tls(&url, &options)
        .unwrap()
        .client_id("changing-cert")
        .reconnect(Some(
            ReconnectPolicy::exponential(Duration::from_millis(10), Duration::from_millis(50))
                .jitter(false),
        ))
        .connect()
        .await
        .expect("connects with the first certificate");
    let mut events = client.events();

    // The broker now presents a certificate from a CA the client does not trust; another
    // client (over plain TCP) takes the session over, so the first one has to reconnect.
    std::fs::copy(&pki.other_cert, &cert).unwrap();
    std::fs::copy(&pki.other_key, &key).unwrap();
    broker.reload().expect("reload");
    let plain = broker.listener_addr(1).expect("TCP listener").port();
    let _thief = ClientBuilder::new("127.0.0.1", plain)
        .client_id("changing-cert")
        .connect()
        .await
        .expect("takes the session over");

    let mut tls_failures = 0;
    let mut last_attempt = 0;
    let watched = tokio::time::timeout(Duration::from_secs(10), async {
        while tls_failures < 3 {
            match events.recv().await.expect("events go on") {
                ConnectionEvent::Disconnected {
                    reason: CloseReason::Tls(failure),
                } => {
                    eprintln!("attempt failed: {failure}");
                    tls_failures += 1;
                }
                ConnectionEvent::Reconnecting { attempt, .. } => last_attempt = attempt,
                ConnectionEvent::Closed => panic!("gave up on a certificate failure"),
                other => eprintln!("{other:?}"),
            }
        }
    })
    .await;
    assert!(watched.is_ok(), "{tls_failures} TLS failures reported");
    assert!(last_attempt >= 3, "attempt {last_attempt}");
    assert!(!client.is_connected());
}
