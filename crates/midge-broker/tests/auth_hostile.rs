//! The broker's authentication against hostile and broken clients, with the raw MQTT peer
//! (`midge_testkit::raw`): credentials the flags do not allow, a storm of wrong passwords
//! beside healthy clients, AUTH packets out of sequence or on 3.1.1, unknown methods, garbage
//! and abandoned SCRAM exchanges, and the secure default for anonymous clients from the
//! network behind a PROXY-protocol listener.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{config_with, password_file, start, test_config, Peer, Recv, TempDir, V311, V5};
use midge_auth::passwd::Scheme;
use midge_auth::scram::ScramClient;
use midge_broker::BrokerHandle;
use midge_codec::{Auth, ConnAck, Connect, Packet, ProtocolVersion, QoS, ReasonCode};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const SCRAM: &str = "SCRAM-SHA-256";

/// How long a refused or broken connection may take to be closed.
const CLOSED_WITHIN: Duration = Duration::from_secs(3);

/// A CONNECT of `version` with `username` and `password`.
fn connect(
    version: ProtocolVersion,
    id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Connect {
    let mut c = Connect::new(version, id.to_owned());
    c.keep_alive = 0;
    c.username = username.map(|u| u.to_owned().into());
    c.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    c
}

/// A 5.0 CONNECT naming Authentication Method `method`, with `data`.
fn method_connect(id: &str, method: &str, data: Option<&[u8]>) -> Connect {
    let mut c = Connect::new(V5, id.to_owned());
    c.keep_alive = 0;
    c.properties.authentication_method = Some(method.to_owned().into());
    c.properties.authentication_data = data.map(Bytes::copy_from_slice);
    c
}

/// An AUTH with `reason`, naming `method` and carrying `data`.
fn auth(reason: ReasonCode, method: Option<&str>, data: Option<&[u8]>) -> Packet {
    let mut a = Auth {
        reason_code: reason,
        ..Auth::default()
    };
    a.properties.authentication_method = method.map(|m| m.to_owned().into());
    a.properties.authentication_data = data.map(Bytes::copy_from_slice);
    Packet::Auth(Box::new(a))
}

/// Sends `connect` over a new connection and returns the client with the CONNACK.
async fn try_connect(addr: SocketAddr, connect: Connect) -> (Peer, ConnAck) {
    Peer::connect_with(addr, connect).await
}

/// Reads until the broker closes `peer`'s connection, within [`CLOSED_WITHIN`]; returns what
/// came before.
async fn until_closed(peer: &mut Peer) -> Vec<Packet> {
    let deadline = Instant::now() + CLOSED_WITHIN;
    let mut packets = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match peer.recv_within(left).await {
            Recv::Packet(p) => packets.push(p),
            Recv::Closed | Recv::Failed(_) => return packets,
            other => panic!("expected the broker to close, got {other:?} after {packets:?}"),
        }
    }
}

/// Asserts that the broker closes `peer`'s connection and sends nothing more.
async fn closed_silently(peer: &mut Peer) {
    let rest = until_closed(peer).await;
    assert!(rest.is_empty(), "expected no more packets, got {rest:?}");
}

/// Sends `connect` at 3.1.1 and returns the CONNACK's return code as it is on
/// the wire, after checking that the broker then closes the connection.
async fn v311_return_code(addr: SocketAddr, connect: Connect) -> u8 {
    let mut peer = Peer::tcp(addr, V311).await;
    peer.send(Packet::Connect(Box::new(connect))).await;
    let mut connack = [0u8; 4];
    tokio::time::timeout(CLOSED_WITHIN, peer.stream_mut().read_exact(&mut connack))
        .await
        .expect("a CONNACK in time")
        .expect("a CONNACK");
    assert_eq!(connack[..3], [0x20, 0x02, 0x00], "CONNACK {connack:?}");
    if connack[3] != 0 {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(CLOSED_WITHIN, peer.stream_mut().read_to_end(&mut rest))
            .await
            .expect("closed after the refusal");
        assert!(rest.is_empty(), "after the refusal: {rest:?}");
    }
    connack[3]
}

/// A SCRAM-SHA-256 exchange with `user` and `password` over a new connection, up to the
/// CONNACK, which is returned with the client and the SCRAM client (to check the server-final
/// message).
async fn scram_connect(
    addr: SocketAddr,
    id: &str,
    user: &str,
    password: &str,
) -> (Peer, ConnAck, ScramClient) {
    let mut scram = ScramClient::new(user, password.as_bytes()).expect("a SCRAM client");
    let first = scram.client_first();
    let mut peer = Peer::tcp(addr, V5).await;
    peer.send(Packet::Connect(Box::new(method_connect(
        id,
        SCRAM,
        Some(&first),
    ))))
    .await;
    let server_first = expect_continue(&mut peer).await;
    let last = scram
        .handle_server_first(&server_first)
        .expect("a well-formed server-first message");
    peer.send(auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        Some(SCRAM),
        Some(&last),
    ))
    .await;
    let ack = match peer.recv_packet().await {
        Packet::ConnAck(ack) => *ack,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    (peer, ack, scram)
}

/// The broker's AUTH 0x18 Continue authentication, naming SCRAM-SHA-256: its data.
async fn expect_continue(peer: &mut Peer) -> Vec<u8> {
    match peer.recv_packet().await {
        Packet::Auth(a) => {
            assert_eq!(a.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
            assert_eq!(
                a.properties
                    .authentication_method
                    .as_ref()
                    .map(|m| m.as_str()),
                Some(SCRAM)
            );
            a.properties
                .authentication_data
                .as_deref()
                .expect("server-first data")
                .to_vec()
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

// ---------------------------------------------------------------------- password checks

/// 5.0 allows a password without a user name: with a password file it names nobody, and is
/// refused 0x86; without one, on loopback, the client is anonymous and accepted. 3.1.1 forbids
/// the Password Flag without the User Name Flag [MQTT-3.1.2-22]: such a CONNECT is malformed,
/// and the connection is closed without a CONNACK.
#[tokio::test]
async fn a_password_without_a_user_name() {
    // [MQTT-3.1.1:3.1.2-22] [MQTT-3.1.1:3.1.4-1] [MQTT-5:3.1.4-2]
    let dir = TempDir::new("no-user");
    let file = password_file(&dir, &[("alice", "secret", Scheme::SCRAM_DEFAULT)]);
    let broker = start(config_with(&file)).await;
    let addr = broker.local_addr();
    let (mut peer, ack) = try_connect(addr, connect(V5, "p1", None, Some("secret"))).await;
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    closed_silently(&mut peer).await;
    assert_eq!(broker.stats().auth_failures, 1);

    // 3.1.1: Password Flag (0x40) and Clean Session (0x02), no User Name Flag.
    let mut raw = Peer::tcp(addr, V311).await;
    let mut packet = vec![0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 60];
    packet.extend_from_slice(&[0, 1, b'c', 0, 2, b'p', b'w']);
    assert_eq!(usize::from(packet[1]), packet.len() - 2);
    raw.send_raw(&packet).await;
    let mut answer = Vec::new();
    tokio::time::timeout(CLOSED_WITHIN, raw.stream_mut().read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("closed");
    assert!(answer.is_empty(), "no CONNACK expected, got {answer:?}");
    assert_eq!(broker.stats().protocol_errors, 1);
    assert_eq!(broker.stats().clients_connected, 0);
    broker.shutdown().await;

    // No [auth]: a client with only a password is an anonymous one, local here.
    let broker = start(test_config()).await;
    let (peer, ack) = try_connect(
        broker.local_addr(),
        connect(V5, "p2", None, Some("whatever")),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    peer.disconnect().await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Each refusal carries the code of the client's version: a wrong password or an unknown user
/// 0x86 / 4, an anonymous client where a password file is configured 0x87 / 5, and an address
/// past `max_failed_attempts` 0x9F / 3, even with the right password.
#[tokio::test]
async fn refusals_carry_the_code_of_each_version() {
    // [MQTT-3.1.1:3.2.2-5] [MQTT-5:3.2.2-7] [MQTT-5:3.2.2-6] [MQTT-3.1.1:3.2.2-4]
    let dir = TempDir::new("codes");
    let file = password_file(&dir, &[("alice", "secret", Scheme::SCRAM_DEFAULT)]);
    let mut config = config_with(&file);
    config.auth.max_failed_attempts = 4;
    let broker = start(config).await;
    let addr = broker.local_addr();

    let right = |v| connect(v, "right", Some("alice"), Some("secret"));
    let (peer, ack) = try_connect(addr, right(V5)).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    peer.disconnect().await;
    assert_eq!(v311_return_code(addr, right(V311)).await, 0);

    let wrong = |v| connect(v, "wrong", Some("alice"), Some("Secret"));
    let unknown = |v| connect(v, "unknown", Some("mallory"), Some("secret"));
    let anonymous = |v| connect(v, "anonymous", None, None);
    for (make, v5, v311) in [
        (&wrong as &dyn Fn(ProtocolVersion) -> Connect, 0x86, 4),
        (&unknown, 0x86, 4),
        (&anonymous, 0x87, 5),
    ] {
        let (mut peer, ack) = try_connect(addr, make(V5)).await;
        assert_eq!(ack.reason_code, ReasonCode(v5), "{ack:?}");
        assert!(!ack.session_present);
        closed_silently(&mut peer).await;
        assert_eq!(v311_return_code(addr, make(V311)).await, v311);
    }
    // Four wrong passwords (anonymous refusals are not password checks): the address is
    // refused at once from now on, whatever it sends.
    assert_eq!(broker.stats().auth_failures, 6);
    for v in [V5, V311] {
        let code = if v == V5 {
            let (mut peer, ack) = try_connect(addr, right(v)).await;
            closed_silently(&mut peer).await;
            ack.reason_code.0
        } else {
            v311_return_code(addr, right(v)).await
        };
        assert_eq!(code, if v == V5 { 0x9F } else { 3 }, "{v:?}");
    }
    // SCRAM too: refused at the CONNECT, before any AUTH.
    let (mut peer, ack) = try_connect(
        addr,
        method_connect("scram", SCRAM, Some(b"n,,n=alice,r=abcdefgh")),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::CONNECTION_RATE_EXCEEDED);
    closed_silently(&mut peer).await;
    assert_eq!(broker.stats().auth_failures, 9);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Asserts the broker still serves: `user` connects with `password` at 5.0, subscribes and
/// gets its own message.
async fn assert_serving(addr: SocketAddr, user: &str, password: &str) {
    let (mut c, ack) = try_connect(addr, connect(V5, "", Some(user), Some(password))).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{user}: {ack:?}");
    c.subscribe("health/check", QoS::AtLeastOnce).await;
    c.publish("health/check", "ok", QoS::AtLeastOnce, false)
        .await;
    let p = c.recv_publish().await;
    assert_eq!(p.payload, Bytes::from_static(b"ok"));
    c.disconnect().await;
}

// ------------------------------------------------------------------- a storm of failures

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.2, say: every
/// 127.0.0.0/8 address is this machine's).
async fn tcp_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .unwrap_or_else(|e| panic!("binding to {from:?}: {e}"));
    let stream = socket.connect(addr).await.expect("connecting");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// 1,000 wrong passwords against argon2id entries, 50 connections at a time, while an
/// already-connected publisher and subscriber keep exchanging QoS 1 messages: every message
/// arrives, none later than two seconds; the rate limit turns the burst into 0x9F refusals
/// after `max_failed_attempts` checks (at most that many plus the connections in flight are
/// hashed); every refusal is counted; and a client with the right password from another
/// loopback address (127.0.0.2) connects during the burst, while the right password from the
/// burst's address is refused 0x9F afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wrong_passwords_leaves_healthy_clients_alone() {
    const ATTEMPTS: usize = 1000;
    const AT_ONCE: usize = 50;
    const MAX_FAILED: u32 = 10;
    let dir = TempDir::new("burst");
    let file = password_file(
        &dir,
        &[
            ("victim", "the victim's password", Scheme::Argon2id),
            ("healthy", "the healthy password", Scheme::Argon2id),
        ],
    );
    let mut config = config_with(&file);
    config.auth.max_failed_attempts = MAX_FAILED;
    config.auth.failed_attempts_window_secs = 60;
    // Room for a CONNECT whose check waits behind the burst's on the verification threads.
    config.limits.connect_timeout_ms = 10_000;
    let broker = Arc::new(start(config).await);
    let addr = broker.local_addr();
    let healthy = |id: &str| connect(V5, id, Some("healthy"), Some("the healthy password"));

    let (mut sub, ack) = try_connect(addr, healthy("sub")).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    sub.subscribe("healthy/flow", QoS::AtLeastOnce).await;
    let (mut publisher, ack) = try_connect(addr, healthy("pub")).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);

    // The healthy flow: a message every 10 ms until the burst is over, each stamped with
    // its send time (relative to `t0`, in microseconds).
    let t0 = Instant::now();
    let burst_over = Arc::new(tokio::sync::Notify::new());
    let publishing = {
        let over = burst_over.clone();
        tokio::spawn(async move {
            let mut sent = 0u32;
            loop {
                let stamp = t0.elapsed().as_micros().to_string();
                let code = publisher
                    .publish("healthy/flow", &stamp, QoS::AtLeastOnce, false)
                    .await;
                assert_eq!(code, ReasonCode::SUCCESS, "healthy publish {sent}");
                sent += 1;
                tokio::select! {
                    () = over.notified() => break,
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            publisher.disconnect().await;
            sent
        })
    };
    let receiving = tokio::spawn(async move {
        let mut latencies = Vec::new();
        loop {
            match sub.try_recv_publish(Duration::from_secs(3)).await {
                Ok(p) => {
                    let stamp: u128 = std::str::from_utf8(&p.payload)
                        .expect("UTF-8")
                        .parse()
                        .expect("a time stamp");
                    let latency = t0.elapsed().as_micros().saturating_sub(stamp);
                    latencies.push(Duration::from_micros(latency as u64));
                }
                Err(Recv::Timeout) => return latencies,
                Err(other) => panic!("the healthy subscriber got {other:?}"),
            }
        }
    });

    // The burst, 50 at a time.
    let answered = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut attempts = Vec::with_capacity(ATTEMPTS);
    for i in 0..ATTEMPTS {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let counted = answered.clone();
        attempts.push(tokio::spawn(async move {
            let wrong = connect(V5, &format!("w{i}"), Some("victim"), Some("guess"));
            let (mut peer, ack) = try_connect(addr, wrong).await;
            drop(permit);
            counted.fetch_add(1, Ordering::Relaxed);
            let rest = until_closed(&mut peer).await;
            assert!(rest.is_empty(), "after the refusal: {rest:?}");
            ack.reason_code
        }));
        // Once the first checks are under way, a healthy client comes from elsewhere.
        if i == AT_ONCE {
            let broker = broker.clone();
            let answered = answered.clone();
            attempts.push(tokio::spawn(async move {
                let stream = tcp_from([127, 0, 0, 2], addr).await;
                let mut other = Peer::new(stream, V5).with_wait(Duration::from_secs(10));
                let started = Instant::now();
                let before = answered.load(Ordering::Relaxed);
                let ack = other.handshake(healthy("elsewhere")).await;
                let took = started.elapsed();
                let after = answered.load(Ordering::Relaxed);
                eprintln!(
                    "127.0.0.2 connected in {took:?}, while the burst had {before}..{after} of {ATTEMPTS} answers"
                );
                assert!(took < Duration::from_secs(5), "127.0.0.2 took {took:?}");
                other.subscribe("elsewhere/ok", QoS::AtLeastOnce).await;
                assert!(broker.stats().clients_connected >= 3);
                other.disconnect().await;
                ack.reason_code
            }));
        }
    }
    let mut codes = Vec::with_capacity(ATTEMPTS);
    for attempt in attempts {
        codes.push(attempt.await.expect("an attempt"));
    }
    let burst_took = t0.elapsed();
    burst_over.notify_one();
    let elsewhere = codes.remove(AT_ONCE + 1);
    assert_eq!(
        elsewhere,
        ReasonCode::SUCCESS,
        "127.0.0.2 with the right password"
    );

    let bad = codes
        .iter()
        .filter(|c| **c == ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        .count();
    let limited = codes
        .iter()
        .filter(|c| **c == ReasonCode::CONNECTION_RATE_EXCEEDED)
        .count();
    eprintln!("{ATTEMPTS} wrong passwords in {burst_took:?}: {bad} checked (0x86), {limited} refused at once (0x9F)");
    assert_eq!(bad + limited, ATTEMPTS, "other codes: {codes:?}");
    // The limit kicked in once MAX_FAILED checks were under way or failed: no more were
    // hashed (two CONNECTs on the two workers may pass the limit together before either
    // counts).
    assert!(bad >= MAX_FAILED as usize, "{bad} checked");
    assert!(bad <= MAX_FAILED as usize + 2, "{bad} checked");
    assert!(limited >= ATTEMPTS - MAX_FAILED as usize - 2);
    assert_eq!(broker.stats().auth_failures, ATTEMPTS as u64);

    let sent = publishing.await.expect("the healthy publisher");
    let latencies = receiving.await.expect("the healthy subscriber");
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "healthy flow: {} of {sent} messages, worst latency {worst:?}",
        latencies.len()
    );
    assert_eq!(latencies.len(), sent as usize, "healthy messages lost");
    assert!(sent >= 10, "only {sent} healthy messages during the burst");
    assert!(
        worst < Duration::from_secs(2),
        "a healthy message took {worst:?}"
    );

    // The burst's address is blocked for the window, even with the right password.
    let (mut peer, ack) = try_connect(addr, healthy("late")).await;
    assert_eq!(ack.reason_code, ReasonCode::CONNECTION_RATE_EXCEEDED);
    closed_silently(&mut peer).await;
    let broker = Arc::into_inner(broker).expect("the only handle left");
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The same storm with no bound on concurrency: 300 wrong passwords against an argon2id entry,
/// all sent at once from one address. `max_failed_attempts` should bound the passwords the
/// broker hashes for that address whatever the number of connections: the checks in flight
/// count against it, not only those that failed already. Otherwise one address makes the
/// broker compute hundreds of hashes, and a client with the right password from elsewhere
/// waits behind all of them on the verification threads, past its connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_sent_all_at_once_are_limited_like_a_paced_burst() {
    const ATTEMPTS: usize = 300;
    const MAX_FAILED: u32 = 10;
    let dir = TempDir::new("all-at-once");
    let file = password_file(
        &dir,
        &[
            ("victim", "the victim's password", Scheme::Argon2id),
            ("healthy", "the healthy password", Scheme::Argon2id),
        ],
    );
    let mut config = config_with(&file);
    config.auth.max_failed_attempts = MAX_FAILED;
    config.auth.verify_threads = Some(1);
    config.limits.connect_timeout_ms = 5_000;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let started = Instant::now();
    let mut attempts = Vec::with_capacity(ATTEMPTS);
    for i in 0..ATTEMPTS {
        attempts.push(tokio::spawn(async move {
            let wrong = connect(V5, &format!("w{i}"), Some("victim"), Some("guess"));
            let mut peer = Peer::tcp(addr, V5).await.with_wait(Duration::from_secs(20));
            peer.handshake(wrong).await.reason_code
        }));
    }
    // Every CONNECT of the storm is in; then the healthy client comes from elsewhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = tcp_from([127, 0, 0, 2], addr).await;
    let mut other = Peer::new(stream, V5).with_wait(Duration::from_secs(20));
    let asked = Instant::now();
    let ack = other
        .handshake(connect(
            V5,
            "elsewhere",
            Some("healthy"),
            Some("the healthy password"),
        ))
        .await;
    let waited = asked.elapsed();
    let mut codes = Vec::with_capacity(ATTEMPTS);
    for attempt in attempts {
        codes.push(attempt.await.expect("an attempt"));
    }
    let hashed = codes
        .iter()
        .filter(|c| **c == ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        .count();
    let mut by_code = std::collections::BTreeMap::new();
    for code in &codes {
        *by_code.entry(format!("0x{:02X}", code.0)).or_insert(0) += 1;
    }
    eprintln!(
        "{ATTEMPTS} wrong passwords at once: {hashed} hashed in {:?} (answers {by_code:?}); 127.0.0.2 answered 0x{:02X} after {waited:?}",
        started.elapsed(),
        ack.reason_code.0
    );
    assert!(
        hashed <= 2 * MAX_FAILED as usize,
        "{hashed} wrong passwords hashed for one address, with max_failed_attempts = {MAX_FAILED}"
    );
    assert_eq!(
        ack.reason_code,
        ReasonCode::SUCCESS,
        "127.0.0.2 after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "127.0.0.2 waited {waited:?} behind another address's wrong passwords"
    );
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

// ------------------------------------------------------------------- enhanced authentication

/// The broker with a password file holding SCRAM entries, for the SCRAM tests.
async fn scram_broker(name: &str, connect_timeout_ms: u64) -> (BrokerHandle, TempDir) {
    let dir = TempDir::new(name);
    let file = password_file(
        &dir,
        &[
            ("alice", "alice's pencil", Scheme::SCRAM_DEFAULT),
            ("bob", "bob's password", Scheme::Argon2id),
        ],
    );
    let mut config = config_with(&file);
    config.limits.connect_timeout_ms = connect_timeout_ms;
    (start(config).await, dir)
}

/// AUTH packets out of sequence are Protocol Errors that close the connection: an AUTH before
/// CONNECT (closed without a CONNACK); an AUTH 0x18 from a connected client that named no
/// method (DISCONNECT 0x82); and, inside a SCRAM exchange, an AUTH naming another method,
/// an AUTH 0x19 Re-authenticate, an AUTH 0x00 or any other packet (CONNACK 0x82, since no
/// DISCONNECT comes before CONNACK). Connected after SCRAM, an AUTH 0x18 that no
/// re-authentication asked for is one too.
#[tokio::test]
async fn auth_packets_out_of_sequence_are_protocol_errors() {
    // [MQTT-5:4.13.1-1] [MQTT-5:4.12.0-4]
    let (broker, dir) = scram_broker("sequence", 2000).await;
    let addr = broker.local_addr();
    let mut errors = 0;

    // Before CONNECT.
    let mut peer = Peer::tcp(addr, V5).await;
    peer.send(auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        Some(SCRAM),
        Some(b"n,,n=alice,r=abc"),
    ))
    .await;
    closed_silently(&mut peer).await;
    errors += 1;
    assert_eq!(broker.stats().protocol_errors, errors);

    // Connected without a method: AUTH 0x18, with or without a method of its own.
    for method in [None, Some(SCRAM)] {
        let (mut peer, ack) = try_connect(
            addr,
            connect(V5, "plain", Some("alice"), Some("alice's pencil")),
        )
        .await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        assert_eq!(ack.properties.authentication_method, None);
        peer.send(auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            method,
            Some(b"x"),
        ))
        .await;
        peer.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
        errors += 1;
        assert_eq!(broker.stats().protocol_errors, errors);
    }

    // Inside the exchange, in place of the client-final message.
    let out_of_place = [
        auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            Some("SCRAM-SHA-1"),
            Some(b"c=biws"),
        ),
        auth(ReasonCode::CONTINUE_AUTHENTICATION, None, Some(b"c=biws")),
        auth(ReasonCode::RE_AUTHENTICATE, Some(SCRAM), Some(b"c=biws")),
        auth(ReasonCode::SUCCESS, Some(SCRAM), None),
        Packet::PingReq,
    ];
    for packet in out_of_place {
        let mut scram = ScramClient::new("alice", b"alice's pencil").expect("client");
        let first = scram.client_first();
        let mut peer = Peer::tcp(addr, V5).await;
        peer.send(Packet::Connect(Box::new(method_connect(
            "x",
            SCRAM,
            Some(&first),
        ))))
        .await;
        expect_continue(&mut peer).await;
        let what = format!("{packet:?}");
        peer.send(packet).await;
        let answer = until_closed(&mut peer).await;
        match answer.as_slice() {
            [Packet::ConnAck(ack)] => {
                assert_eq!(ack.reason_code, ReasonCode::PROTOCOL_ERROR, "{what}");
                assert!(!ack.session_present);
            }
            other => panic!("{what}: expected CONNACK 0x82, got {other:?}"),
        }
        errors += 1;
        assert_eq!(broker.stats().protocol_errors, errors, "{what}");
    }

    // Connected after SCRAM: an AUTH 0x18 that answers nothing.
    let (mut peer, ack, mut scram) = scram_connect(addr, "reauth", "alice", "alice's pencil").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    scram
        .handle_server_final(
            ack.properties
                .authentication_data
                .as_deref()
                .expect("server-final"),
        )
        .expect("the server signature verifies");
    peer.send(auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        Some(SCRAM),
        Some(b"c=biws"),
    ))
    .await;
    peer.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    errors += 1;
    assert_eq!(broker.stats().protocol_errors, errors);
    assert_eq!(broker.stats().clients_connected, 0);
    assert_serving(addr, "alice", "alice's pencil").await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// AUTH does not exist in 3.1.1 (packet type 15 is reserved): on a 3.1.1 connection it is a
/// malformed packet, and the connection is closed without an answer. Other clients go on.
#[tokio::test]
async fn auth_on_a_3_1_1_connection_closes_it() {
    // [MQTT-3.1.1:4.8.0-1]
    let (broker, dir) = scram_broker("v311-auth", 2000).await;
    let addr = broker.local_addr();
    for bytes in [
        // AUTH with no Remaining Length: 5.0's shortest AUTH (0x00 Success).
        &[0xF0, 0x00][..],
        // AUTH 0x18 naming SCRAM-SHA-256, as a 5.0 client would send it.
        &[
            0xF0, 17, 0x18, 15, 0x15, 0, 13, b'S', b'C', b'R', b'A', b'M', b'-', b'S', b'H', b'A',
            b'-', b'2', b'5', b'6',
        ][..],
    ] {
        let (mut peer, ack) = try_connect(
            addr,
            connect(V311, "v311", Some("alice"), Some("alice's pencil")),
        )
        .await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        peer.send_raw(bytes).await;
        let mut answer = Vec::new();
        tokio::time::timeout(CLOSED_WITHIN, peer.stream_mut().read_to_end(&mut answer))
            .await
            .expect("closed in time")
            .expect("closed");
        assert!(answer.is_empty(), "{bytes:?}: answered {answer:?}");
    }
    // Before CONNECT too, with a 3.1.1 CONNECT after it: closed, no CONNACK.
    let mut peer = Peer::tcp(addr, V311).await;
    peer.send_raw(&[0xF0, 0x00]).await;
    peer.send(Packet::Connect(Box::new(connect(
        V311,
        "late",
        Some("alice"),
        Some("alice's pencil"),
    ))))
    .await;
    closed_silently(&mut peer).await;
    assert_eq!(broker.stats().protocol_errors, 3);
    assert_eq!(broker.stats().clients_connected, 0);
    assert_serving(addr, "alice", "alice's pencil").await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A CONNECT naming an Authentication Method the broker does not offer is refused with
/// CONNACK 0x8C Bad authentication method, and closed: another method, SCRAM-SHA-256 spelled
/// in another case, and SCRAM-SHA-256 itself on a broker without a password file.
#[tokio::test]
async fn an_unknown_authentication_method_gets_0x8c() {
    // [MQTT-5:4.12.0-1] [MQTT-5:3.2.2-7]
    let (broker, dir) = scram_broker("unknown-method", 2000).await;
    let addr = broker.local_addr();
    for method in [
        "PLAIN",
        "SCRAM-SHA-1",
        "scram-sha-256",
        "SCRAM-SHA-256-PLUS",
        "",
    ] {
        let (mut peer, ack) =
            try_connect(addr, method_connect("m", method, Some(b"n,,n=alice,r=abc"))).await;
        assert_eq!(
            ack.reason_code,
            ReasonCode::BAD_AUTHENTICATION_METHOD,
            "{method:?}"
        );
        assert_eq!(ack.properties.authentication_method, None, "{method:?}");
        closed_silently(&mut peer).await;
    }
    assert_eq!(broker.stats().auth_failures, 5);
    broker.shutdown().await;

    // No password file, so no SCRAM credentials: SCRAM-SHA-256 is not offered.
    let broker = start(test_config()).await;
    let (mut peer, ack) = try_connect(
        broker.local_addr(),
        method_connect("m", SCRAM, Some(b"n,,n=alice,r=abc")),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    closed_silently(&mut peer).await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A SCRAM exchange: the right password connects, with a server-final message whose signature
/// the client verifies; a wrong password, an unknown user and a user without a SCRAM entry
/// fail alike, with 0x86 after one round trip; a client-first message that is not one
/// (garbage, a channel-binding header, no nonce, no data at all) is refused at once, with no
/// AUTH, and the connection closed.
#[tokio::test]
async fn scram_exchanges_right_wrong_and_garbage() {
    // [MQTT-5:4.12.0-2] [MQTT-5:4.12.0-4] [MQTT-5:4.12.0-5] [MQTT-5:3.2.2-7]
    let (broker, dir) = scram_broker("scram", 2000).await;
    let addr = broker.local_addr();
    let (mut peer, ack, mut scram) = scram_connect(addr, "ok", "alice", "alice's pencil").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        ack.properties
            .authentication_method
            .as_ref()
            .map(|m| m.as_str()),
        Some(SCRAM)
    );
    scram
        .handle_server_final(
            ack.properties
                .authentication_data
                .as_deref()
                .expect("server-final"),
        )
        .expect("the server signature verifies");
    peer.subscribe("scram/ok", QoS::AtLeastOnce).await;
    peer.disconnect().await;

    for (user, password) in [
        ("alice", "bob's password"),
        ("nobody", "alice's pencil"),
        ("bob", "bob's password"),
    ] {
        let (mut peer, ack, _) = scram_connect(addr, "no", user, password).await;
        assert_eq!(
            ack.reason_code,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "{user}"
        );
        closed_silently(&mut peer).await;
    }
    assert_eq!(broker.stats().auth_failures, 3);

    let garbage: [Option<&[u8]>; 6] = [
        Some(b"\xff\x00\xfe garbage"),
        Some(b""),
        Some(b"n,,n=alice"),
        Some(b"p=tls-server-end-point,,n=alice,r=abcdefgh"),
        Some(b"n,,m=ext,n=alice,r=abcdefgh"),
        None,
    ];
    for data in garbage {
        let (mut peer, ack) = try_connect(addr, method_connect("g", SCRAM, data)).await;
        assert!(ack.reason_code.0 >= 0x80, "{data:?} accepted: {ack:?}");
        eprintln!("client-first {data:?}: CONNACK 0x{:02X}", ack.reason_code.0);
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{data:?}");
        closed_silently(&mut peer).await;
    }
    assert_eq!(broker.stats().auth_failures, 9);
    assert_eq!(broker.stats().clients_connected, 0);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A client that starts a SCRAM exchange and never answers the server-first message is
/// closed when `limits.connect_timeout_ms` runs out, counted from the connection's start,
/// without a CONNACK; a client that sends half of its client-final AUTH is closed alike.
#[tokio::test]
async fn a_scram_client_that_stops_mid_exchange_is_closed_at_the_connect_timeout() {
    let (broker, dir) = scram_broker("stalled", 300).await;
    let addr = broker.local_addr();
    for half in [false, true] {
        let mut scram = ScramClient::new("alice", b"alice's pencil").expect("client");
        let first = scram.client_first();
        let started = Instant::now();
        let mut peer = Peer::tcp(addr, V5).await;
        peer.send(Packet::Connect(Box::new(method_connect(
            "s",
            SCRAM,
            Some(&first),
        ))))
        .await;
        let server_first = expect_continue(&mut peer).await;
        if half {
            let last = scram
                .handle_server_first(&server_first)
                .expect("server-first");
            let mut bytes = bytes::BytesMut::new();
            auth(
                ReasonCode::CONTINUE_AUTHENTICATION,
                Some(SCRAM),
                Some(&last),
            )
            .encode(V5, &mut bytes)
            .expect("encodes");
            peer.send_raw(&bytes[..bytes.len() / 2]).await;
        }
        let rest = until_closed(&mut peer).await;
        let took = started.elapsed();
        eprintln!("stalled (half an AUTH: {half}): closed after {took:?} with {rest:?}");
        assert!(
            rest.iter()
                .all(|p| !matches!(p, Packet::ConnAck(a) if a.reason_code.is_success())),
            "{rest:?}"
        );
        assert!(took >= Duration::from_millis(250), "closed after {took:?}");
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
    }
    assert_eq!(broker.stats().clients_connected, 0);
    assert_serving(addr, "alice", "alice's pencil").await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

// ------------------------------------------------------------------- the secure default

/// A connection to a PROXY-protocol listener that says it comes from `source`.
async fn proxied(addr: SocketAddr, source: &str, version: ProtocolVersion) -> Peer {
    let mut peer = Peer::tcp(addr, version).await;
    let header = format!("PROXY TCP4 {source} 192.0.2.1 40000 1883\r\n");
    peer.send_raw(header.as_bytes()).await;
    peer
}

/// Without `[auth]`, anonymous clients are accepted from this machine only: behind a
/// PROXY-protocol listener, a client whose header says it is 203.0.113.7 is refused 0x87 (5
/// at 3.1.1), one that says 127.0.0.1 is accepted. With `allow_anonymous = true` on the
/// listener, both are accepted.
#[tokio::test]
async fn anonymous_clients_from_the_network_need_allow_anonymous() {
    // [MQTT-5:3.1.4-2] [MQTT-3.1.1:3.2.2-5]
    for allow in [None, Some(true)] {
        let mut config = test_config();
        config.listeners[0].proxy_protocol = true;
        config.listeners[0].allow_anonymous = allow;
        let broker = start(config).await;
        let addr = broker.local_addr();
        for version in [V5, V311] {
            let mut remote = proxied(addr, "203.0.113.7", version).await;
            let ack = remote
                .handshake(Connect::new(version, "remote".to_owned()))
                .await;
            if allow == Some(true) {
                assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{version:?}");
                remote.disconnect().await;
            } else {
                // 0x87 at 5.0; the codec maps 3.1.1's return code 5 onto it.
                assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{version:?}");
                closed_silently(&mut remote).await;
            }
            let mut local = proxied(addr, "127.0.0.1", version).await;
            let ack = local
                .handshake(Connect::new(version, "local".to_owned()))
                .await;
            assert_eq!(
                ack.reason_code,
                ReasonCode::SUCCESS,
                "{version:?} {allow:?}"
            );
            local.subscribe("local/ok", QoS::AtMostOnce).await;
            local.disconnect().await;
        }
        let refused = if allow == Some(true) { 0 } else { 2 };
        assert_eq!(broker.stats().auth_failures, refused, "{allow:?}");
        broker.shutdown().await;
    }

    // The 3.1.1 return code on the wire is 5.
    let mut config = test_config();
    config.listeners[0].proxy_protocol = true;
    let broker = start(config).await;
    let mut remote = proxied(broker.local_addr(), "203.0.113.7", V311).await;
    remote
        .send(Packet::Connect(Box::new(Connect::new(
            V311,
            "r".to_owned(),
        ))))
        .await;
    let mut connack = [0u8; 4];
    tokio::time::timeout(CLOSED_WITHIN, remote.stream_mut().read_exact(&mut connack))
        .await
        .expect("a CONNACK in time")
        .expect("a CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 5]);
    broker.shutdown().await;
}
