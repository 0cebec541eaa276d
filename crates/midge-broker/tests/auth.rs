//! Authentication and authorization from the broker's configuration: who may connect without
//! credentials, password files, the failed-attempt limit, SCRAM-SHA-256, ACL files, and
//! reloading them.

mod common;

use common::auth::{config, connect, password_file, start};

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Peer, Recv, TempDir, V311, V5};
use midge_auth::passwd::Scheme;
use midge_auth::scram::{ScramClient, METHOD};
use midge_broker::{Broker, BrokerHandle};
use midge_codec::{Auth, AuthProperties, Connect, Packet, QoS, ReasonCode};

/// The CONNACK a client at `peer` gets, served over an in-memory stream (so that the peer
/// address can be any).
async fn connack_from(broker: &BrokerHandle, peer: SocketAddr, connect: Connect) -> ReasonCode {
    let (client, server) = tokio::io::duplex(64 * 1024);
    broker.serve(server, peer);
    let mut p = Peer::new(client, connect.protocol);
    p.handshake(connect).await.reason_code
}

async fn connack(addr: SocketAddr, connect: Connect) -> ReasonCode {
    Peer::connect_with(addr, connect).await.1.reason_code
}

const REMOTE: &str = "203.0.113.7:40000";

#[tokio::test]
async fn without_auth_configured_only_local_clients_get_in() {
    let dir = TempDir::new("local");
    let socket = dir.path("midge.sock");
    let broker = start(config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener]]\nbind = \"unix:{}\"\n",
        socket.display()
    )))
    .await;
    let remote: SocketAddr = REMOTE.parse().expect("addr");
    // From the network: refused, 0x87 for 5.0 and 5 (Not authorized) for 3.1.1.
    for version in [V5, V311] {
        let code = connack_from(&broker, remote, connect(version, "far", None, None)).await;
        assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{version:?}");
        // A user name is no credential where nothing checks it.
        let code = connack_from(
            &broker,
            remote,
            connect(version, "far", Some("bob"), Some("x")),
        )
        .await;
        assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{version:?}");
    }
    // Over loopback and a Unix socket: in.
    assert_eq!(
        connack(broker.local_addr(), connect(V5, "near", None, None)).await,
        ReasonCode::SUCCESS
    );
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("unix");
    let mut unix = Peer::new(stream, V311);
    let ack = unix.handshake(connect(V311, "unix", None, None)).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let stats = broker.stats();
    assert_eq!(stats.auth_failures, 4);
}

#[tokio::test]
async fn allow_anonymous_opens_the_network_and_a_listener_can_override_it() {
    let broker = start(config(
        "[auth]\nallow_anonymous = true\n[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener]]\nbind = \"127.0.0.1:0\"\nallow_anonymous = false\n",
    ))
    .await;
    let remote: SocketAddr = REMOTE.parse().expect("addr");
    assert_eq!(
        connack_from(&broker, remote, connect(V5, "far", None, None)).await,
        ReasonCode::SUCCESS
    );
    let closed = broker.listener_addr(1).expect("second listener");
    assert_eq!(
        connack(closed, connect(V5, "near", None, None)).await,
        ReasonCode::NOT_AUTHORIZED
    );
}

#[tokio::test]
async fn a_password_file_checks_every_user_the_same_way() {
    let dir = TempDir::new("passwords");
    let file = dir.path("passwd");
    password_file(&file, &[("alice", "wonderland")], Scheme::Argon2id);
    let broker = start(config(&format!(
        "[auth]\npassword_file = {file:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    let addr = broker.local_addr();
    for version in [V5, V311] {
        let right = connect(version, "a", Some("alice"), Some("wonderland"));
        assert_eq!(
            connack(addr, right).await,
            ReasonCode::SUCCESS,
            "{version:?}"
        );
        // A wrong password and an unknown user get the same answer: 0x86 (3.x: 4).
        let wrong = connect(version, "a", Some("alice"), Some("looking-glass"));
        assert_eq!(
            connack(addr, wrong).await,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        let unknown = connect(version, "a", Some("mallory"), Some("wonderland"));
        assert_eq!(
            connack(addr, unknown).await,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        let no_password = connect(version, "a", Some("alice"), None);
        assert_eq!(
            connack(addr, no_password).await,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        // With a password file, no anonymous client, not even a local one.
        let anonymous = connect(version, "a", None, None);
        assert_eq!(connack(addr, anonymous).await, ReasonCode::NOT_AUTHORIZED);
    }
    // 5.0 allows a password without a user name; it names nobody.
    let nameless = connect(V5, "a", None, Some("wonderland"));
    assert_eq!(
        connack(addr, nameless).await,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(broker.stats().auth_failures, 9);
}

#[tokio::test]
async fn failed_attempts_from_one_address_are_refused_at_once_past_the_limit() {
    let dir = TempDir::new("limit");
    let file = dir.path("passwd");
    password_file(&file, &[("alice", "wonderland")], Scheme::SCRAM_DEFAULT);
    let broker = start(config(&format!(
        "[auth]\npassword_file = {file:?}\nmax_failed_attempts = 3\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    let attacker: SocketAddr = "198.51.100.1:1000".parse().expect("addr");
    for _ in 0..3 {
        let wrong = connect(V5, "m", Some("alice"), Some("guess"));
        assert_eq!(
            connack_from(&broker, attacker, wrong).await,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
    }
    // Past the limit, even the right password from that address is refused, without a check.
    let right = connect(V5, "m", Some("alice"), Some("wonderland"));
    assert_eq!(
        connack_from(&broker, attacker, right).await,
        ReasonCode::CONNECTION_RATE_EXCEEDED
    );
    // 3.x has no such code: 3, Server unavailable.
    let right = connect(V311, "m", Some("alice"), Some("wonderland"));
    assert_eq!(
        connack_from(&broker, attacker, right).await,
        ReasonCode::SERVER_UNAVAILABLE
    );
    // Another address is not held back.
    let other: SocketAddr = "198.51.100.2:1000".parse().expect("addr");
    let right = connect(V5, "m", Some("alice"), Some("wonderland"));
    assert_eq!(
        connack_from(&broker, other, right).await,
        ReasonCode::SUCCESS
    );
}

#[tokio::test]
async fn a_listener_may_use_a_password_file_of_its_own() {
    let dir = TempDir::new("per-listener");
    let (main, guests) = (dir.path("main"), dir.path("guests"));
    password_file(&main, &[("alice", "wonderland")], Scheme::SCRAM_DEFAULT);
    password_file(&guests, &[("guest", "guest")], Scheme::SCRAM_DEFAULT);
    let broker = start(config(&format!(
        "[auth]\npassword_file = {main:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener]]\nbind = \"127.0.0.1:0\"\npassword_file = {guests:?}\n"
    )))
    .await;
    let (first, second) = (
        broker.local_addr(),
        broker.listener_addr(1).expect("second"),
    );
    assert_eq!(
        connack(first, connect(V5, "a", Some("alice"), Some("wonderland"))).await,
        ReasonCode::SUCCESS
    );
    assert_eq!(
        connack(first, connect(V5, "g", Some("guest"), Some("guest"))).await,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(
        connack(second, connect(V5, "g", Some("guest"), Some("guest"))).await,
        ReasonCode::SUCCESS
    );
    assert_eq!(
        connack(second, connect(V5, "a", Some("alice"), Some("wonderland"))).await,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
}

#[tokio::test]
async fn a_reload_replaces_the_passwords_and_a_bad_file_keeps_the_old_ones() {
    let dir = TempDir::new("reload");
    let file = dir.path("passwd");
    password_file(&file, &[("alice", "old")], Scheme::SCRAM_DEFAULT);
    let broker = start(config(&format!(
        "[auth]\npassword_file = {file:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    let addr = broker.local_addr();
    assert_eq!(
        connack(addr, connect(V5, "a", Some("alice"), Some("old"))).await,
        ReasonCode::SUCCESS
    );
    password_file(&file, &[("alice", "new")], Scheme::SCRAM_DEFAULT);
    broker.reload().expect("reloads");
    assert_eq!(
        connack(addr, connect(V5, "a", Some("alice"), Some("old"))).await,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(
        connack(addr, connect(V5, "a", Some("alice"), Some("new"))).await,
        ReasonCode::SUCCESS
    );
    // A malformed line: the reload fails naming the file and the line, and nothing changes.
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, format!("{text}no colon here\n")).expect("write");
    let errors = broker.reload().expect_err("malformed");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("passwd") && errors[0].contains("line 2"),
        "{errors:?}"
    );
    assert_eq!(
        connack(addr, connect(V5, "a", Some("alice"), Some("new"))).await,
        ReasonCode::SUCCESS
    );
}

#[tokio::test]
async fn a_malformed_password_file_stops_the_broker_from_starting() {
    let dir = TempDir::new("malformed");
    let file = dir.path("passwd");
    std::fs::write(&file, "alice:$7$101$c2FsdA==\n").expect("write");
    let err = Broker::builder()
        .config(config(&format!(
            "[auth]\npassword_file = {file:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
        )))
        .start()
        .await
        .expect_err("a malformed file");
    let text = err.to_string();
    assert!(
        text.contains(&file.display().to_string()) && text.contains("line 1"),
        "{text}"
    );
}

/// Runs a SCRAM-SHA-256 exchange over a raw connection: CONNECT with client-first, AUTH 0x18
/// both ways, then the CONNACK, whose server-final the client checks.
async fn scram_connect(addr: SocketAddr, user: &str, password: &str) -> (Peer, ReasonCode) {
    let mut scram = ScramClient::new(user, password.as_bytes()).expect("client");
    let mut c = Connect::new(V5, format!("scram-{user}"));
    c.properties.authentication_method = Some(METHOD.into());
    c.properties.authentication_data = Some(scram.client_first().into());
    let mut peer = Peer::tcp(addr, V5).await;
    peer.send(Packet::Connect(Box::new(c))).await;
    let server_first = match peer.recv().await {
        Recv::Packet(Packet::Auth(auth)) => {
            assert_eq!(auth.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
            assert_eq!(
                auth.properties
                    .authentication_method
                    .as_ref()
                    .map(|m| m.as_str()),
                Some(METHOD)
            );
            auth.properties.authentication_data.expect("server-first")
        }
        Recv::Packet(Packet::ConnAck(ack)) => return (peer, ack.reason_code),
        other => panic!("expected AUTH, got {other:?}"),
    };
    let client_final = scram
        .handle_server_first(&server_first)
        .expect("server-first");
    let mut properties = AuthProperties::default();
    properties.authentication_method = Some(METHOD.into());
    properties.authentication_data = Some(client_final.into());
    let auth = Auth {
        reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
        properties,
    };
    peer.send(Packet::Auth(Box::new(auth))).await;
    let ack = match peer.recv().await {
        Recv::Packet(Packet::ConnAck(ack)) => ack,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    if ack.reason_code == ReasonCode::SUCCESS {
        assert_eq!(
            ack.properties
                .authentication_method
                .as_ref()
                .map(|m| m.as_str()),
            Some(METHOD)
        );
        let server_final = ack
            .properties
            .authentication_data
            .clone()
            .expect("server-final");
        scram
            .handle_server_final(&server_final)
            .expect("the server proves it knows the key");
    }
    (peer, ack.reason_code)
}

#[tokio::test]
async fn scram_sha_256_authenticates_against_the_password_file() {
    // AUTH 0x18 and the CONNACK carry the method and the data (`scram_connect`):
    // [MQTT-5:4.12.0-2] [MQTT-5:4.12.0-5]
    let dir = TempDir::new("scram");
    let file = dir.path("passwd");
    password_file(&file, &[("alice", "wonderland")], Scheme::SCRAM_DEFAULT);
    let broker = start(config(&format!(
        "[auth]\npassword_file = {file:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    let addr = broker.local_addr();
    let (mut alice, code) = scram_connect(addr, "alice", "wonderland").await;
    assert_eq!(code, ReasonCode::SUCCESS);
    alice.subscribe("scram/t", QoS::AtLeastOnce).await;
    alice
        .publish("scram/t", "hi", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(
        alice.recv_publish().await.payload,
        Bytes::from_static(b"hi")
    );
    // A wrong password and an unknown user fail alike, after an exchange that looks the same.
    let (_, code) = scram_connect(addr, "alice", "looking-glass").await;
    assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_, code) = scram_connect(addr, "mallory", "wonderland").await;
    assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    // A method nobody offers: 0x8C [MQTT-5:4.12.0-1].
    let mut c = Connect::new(V5, "kerberos".to_owned());
    c.properties.authentication_method = Some("GSSAPI".into());
    assert_eq!(
        connack(addr, c).await,
        ReasonCode::BAD_AUTHENTICATION_METHOD
    );
    // The same SCRAM entry takes a plain password too.
    assert_eq!(
        connack(addr, connect(V5, "p", Some("alice"), Some("wonderland"))).await,
        ReasonCode::SUCCESS
    );
}

#[tokio::test]
async fn a_connect_waiting_for_its_password_check_does_not_hold_up_others() {
    // One verification thread, argon2id hashes: a queue of checks forms, and a client that
    // is already connected goes on publishing meanwhile.
    let dir = TempDir::new("pool");
    let file = dir.path("passwd");
    password_file(&file, &[("alice", "wonderland")], Scheme::Argon2id);
    let broker = start(config(&format!(
        "[auth]\npassword_file = {file:?}\nverify_threads = 1\nmax_failed_attempts = 0\nallow_anonymous = true\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    let addr = broker.local_addr();
    let mut healthy = Peer::connect(addr, V5, "healthy").await;
    healthy.subscribe("flow", QoS::AtLeastOnce).await;
    let mut checks = Vec::new();
    for i in 0..20 {
        checks.push(tokio::spawn(async move {
            connack(
                addr,
                connect(V5, &format!("w{i}"), Some("alice"), Some("nope")),
            )
            .await
        }));
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        healthy.publish("flow", "x", QoS::AtLeastOnce, false).await;
        healthy.recv_publish().await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    for check in checks {
        assert_eq!(
            check.await.expect("task"),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
    }
}
