//! Enhanced authentication (MQTT 5.0 §4.12) and re-authentication (§4.12.1), driven packet by
//! packet on both sides: the exchange of AUTH packets before CONNACK, its refusals and
//! timeouts, re-authentication while messages flow, and the AUTH packets that break the
//! protocol. Every byte either side transmits is decoded back with the codec.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use midge_codec::{
    Auth, ByteStr, ConnAck, Connect, Disconnect, Packet, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, Will,
};
use midge_proto::client::{AuthError, Client, ClientConfig, CloseReason, Event};
use midge_proto::server::{ServerCloseReason, ServerConfig, ServerConnection, ServerEvent};

const METHOD: &str = "SCRAM-SHA-256";

fn data(bytes: &'static [u8]) -> Option<Bytes> {
    Some(Bytes::from_static(bytes))
}

fn auth(reason: ReasonCode, method: Option<&str>, data: Option<Bytes>) -> Packet {
    let mut auth = Auth {
        reason_code: reason,
        ..Auth::default()
    };
    auth.properties.authentication_method = method.map(|m| ByteStr::from(m.to_owned()));
    auth.properties.authentication_data = data;
    Packet::Auth(Box::new(auth))
}

/// A client's AUTH 0x18 with our method.
fn answer(data: Option<Bytes>) -> Packet {
    auth(ReasonCode::CONTINUE_AUTHENTICATION, Some(METHOD), data)
}

fn disconnect(code: ReasonCode) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: code,
        ..Disconnect::default()
    })
}

fn connack_code(sent: &[Packet]) -> ReasonCode {
    match sent {
        [Packet::ConnAck(c)] => c.reason_code,
        other => panic!("not a lone CONNACK: {other:?}"),
    }
}

/// The Authentication Method and Data of a lone AUTH, with its reason code; checks that it
/// carries nothing else.
fn lone_auth(sent: &[Packet]) -> (ReasonCode, Option<ByteStr>, Option<Bytes>) {
    let [Packet::Auth(a)] = sent else {
        panic!("not a lone AUTH: {sent:?}")
    };
    assert_eq!(a.properties.reason_string, None);
    assert!(a.properties.user_properties.is_empty());
    (
        a.reason_code,
        a.properties.authentication_method.clone(),
        a.properties.authentication_data.clone(),
    )
}

// ----------------------------------------------------------------------------------- server

fn method_connect(initial: Option<Bytes>) -> Connect {
    let mut connect = connect_packet(V5, "c1");
    connect.properties.authentication_method = Some(ByteStr::from(METHOD));
    connect.properties.authentication_data = initial;
    connect
}

/// A server connection fed `connect`, its Connect event taken.
fn started_with(config: ServerConfig, connect: Connect, now: Instant) -> ServerConnection {
    let mut server = ServerConnection::new(Arc::new(config), now);
    server_feed(&mut server, now, Packet::Connect(Box::new(connect)));
    let events = server_events(&mut server);
    assert!(
        matches!(events.as_slice(), [ServerEvent::Connect { .. }]),
        "{events:?}"
    );
    server
}

fn started(now: Instant) -> ServerConnection {
    started_with(ServerConfig::default(), method_connect(data(b"first")), now)
}

/// A server connection that has sent AUTH 0x18 and waits for the client's answer.
fn challenging(now: Instant) -> ServerConnection {
    let mut server = started(now);
    server.auth_continue(data(b"challenge"));
    let (reason, ..) = lone_auth(&server_tx(&mut server, now));
    assert_eq!(reason, ReasonCode::CONTINUE_AUTHENTICATION);
    server
}

/// A server connection accepted after enhanced authentication without a round trip.
fn authenticated(connect: Connect, now: Instant) -> ServerConnection {
    let mut server = started_with(ServerConfig::default(), connect, now);
    server.set_auth_success_data(None);
    server.accept(now, None);
    let sent = server_tx(&mut server, now);
    assert!(matches!(sent.as_slice(), [Packet::ConnAck(_)]), "{sent:?}");
    assert!(server.is_connected());
    server
}

fn server_auth_event(server: &mut ServerConnection) -> (ReasonCode, Option<Bytes>) {
    let events = server_events(server);
    match events.as_slice() {
        [ServerEvent::Auth { reason, data }] => (*reason, data.clone()),
        other => panic!("not a lone Auth event: {other:?}"),
    }
}

// Conformance: [MQTT-5:4.12.0-2] [MQTT-5:4.12.0-5] [MQTT-5:3.2.0-1] [MQTT-5:3.15.2-2] [MQTT-5:3.15.2-3]
#[test]
fn the_server_leads_an_exchange_of_several_round_trips_to_a_connack_with_its_final_data() {
    let t0 = Instant::now();
    let mut server = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
    let mut connect = method_connect(data(b"client-first"));
    connect.properties.user_properties = vec![(ByteStr::from("k"), ByteStr::from("v"))];
    server_feed(&mut server, t0, Packet::Connect(Box::new(connect)));
    // The broker gets the method and the client's first data with the CONNECT.
    let events = server_events(&mut server);
    let [ServerEvent::Connect { connect, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(
        connect
            .properties
            .authentication_method
            .as_ref()
            .map(|m| m.as_str()),
        Some(METHOD)
    );
    assert_eq!(
        connect.properties.authentication_data,
        data(b"client-first")
    );
    assert_eq!(server.auth_method().map(|m| m.as_str()), Some(METHOD));
    // Every round: AUTH 0x18 with the method and the server's data, nothing else; the
    // client's AUTH comes back as an event.
    for (ours, theirs) in [
        (&b"server-first"[..], &b"client-final"[..]),
        (b"server-more", b"client-more"),
    ] {
        server.auth_continue(Some(Bytes::from_static(ours)));
        let (reason, method, sent_data) = lone_auth(&server_tx(&mut server, t0));
        assert_eq!(reason, ReasonCode::CONTINUE_AUTHENTICATION);
        assert_eq!(method.as_ref().map(|m| m.as_str()), Some(METHOD));
        assert_eq!(sent_data.as_deref(), Some(ours));
        assert!(!server.is_connected());
        server_feed(&mut server, t0, answer(Some(Bytes::from_static(theirs))));
        assert_eq!(
            server_auth_event(&mut server),
            (
                ReasonCode::CONTINUE_AUTHENTICATION,
                Some(Bytes::from_static(theirs))
            )
        );
        // Nothing goes out while the broker decides: no CONNACK, no other packet.
        assert!(server_tx(&mut server, t0).is_empty());
    }
    server.set_auth_success_data(data(b"server-final"));
    server.accept(t0, None);
    let sent = server_tx(&mut server, t0);
    let [Packet::ConnAck(connack)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        connack
            .properties
            .authentication_method
            .as_ref()
            .map(|m| m.as_str()),
        Some(METHOD)
    );
    assert_eq!(
        connack.properties.authentication_data,
        data(b"server-final")
    );
    assert!(server.is_connected());
    // The connection works as any other.
    server_feed(&mut server, t0, Packet::PingReq);
    assert_eq!(server_tx(&mut server, t0), [Packet::PingResp]);
}

#[test]
fn a_method_without_a_round_trip_accepts_on_the_connect_alone() {
    let t0 = Instant::now();
    for success in [None, data(b"token-ok")] {
        let mut server = started(t0);
        server.set_auth_success_data(success.clone());
        server.accept(t0, None);
        let sent = server_tx(&mut server, t0);
        let [Packet::ConnAck(connack)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
        assert_eq!(
            connack
                .properties
                .authentication_method
                .as_ref()
                .map(|m| m.as_str()),
            Some(METHOD)
        );
        assert_eq!(connack.properties.authentication_data, success);
        assert!(server.is_connected());
    }
}

// Conformance: [MQTT-5:4.12.0-4]
#[test]
fn the_server_may_refuse_at_any_step_and_closes() {
    let t0 = Instant::now();
    // After CONNECT, after the server's AUTH (while the client answers), and after the
    // client's AUTH: CONNACK with the code, closed, no will.
    for step in 0..3 {
        let connect = with_will(method_connect(data(b"first")));
        let mut server = started_with(ServerConfig::default(), connect, t0);
        if step > 0 {
            server.auth_continue(data(b"challenge"));
            let _ = server_tx(&mut server, t0);
        }
        if step > 1 {
            server_feed(&mut server, t0, answer(data(b"proof")));
            let _ = server_auth_event(&mut server);
        }
        server.reject(ReasonCode::NOT_AUTHORIZED);
        assert_eq!(
            connack_code(&server_tx(&mut server, t0)),
            ReasonCode::NOT_AUTHORIZED
        );
        assert!(server.is_closed());
        let events = server_events(&mut server);
        assert!(
            matches!(
                events.as_slice(),
                [ServerEvent::Closed {
                    reason: ServerCloseReason::Refused(ReasonCode::NOT_AUTHORIZED),
                    will: None
                }]
            ),
            "{events:?}"
        );
        // Nothing more is handled, nor sent.
        server_feed(&mut server, t0, answer(data(b"late")));
        assert!(server_tx(&mut server, t0).is_empty());
        assert!(server_events(&mut server).is_empty());
    }
    // A refusal is never a success, whatever code the broker passes.
    let mut server = challenging(t0);
    server.reject(ReasonCode::SUCCESS);
    assert_eq!(
        connack_code(&server_tx(&mut server, t0)),
        ReasonCode::UNSPECIFIED_ERROR
    );
    assert!(server.is_closed());
}

fn with_will(mut connect: Connect) -> Connect {
    connect.will = Some(Will {
        topic: ByteStr::from("will/t"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    connect
}

#[test]
fn the_server_accepts_only_when_the_broker_took_up_the_method() {
    // A broker that accepts without calling `set_auth_success_data` never looked at the
    // method: the client is refused with 0x8C [MQTT-4.12.0-1], even after a round trip.
    let t0 = Instant::now();
    let mut server = challenging(t0);
    server_feed(&mut server, t0, answer(None));
    let _ = server_auth_event(&mut server);
    server.accept(t0, None);
    assert_eq!(
        connack_code(&server_tx(&mut server, t0)),
        ReasonCode::BAD_AUTHENTICATION_METHOD
    );
    assert!(server.is_closed());
    // Success data set while the client is to answer is ignored: it is not the broker's turn.
    let mut server = challenging(t0);
    server.set_auth_success_data(data(b"early"));
    server_feed(&mut server, t0, answer(None));
    let _ = server_auth_event(&mut server);
    server.accept(t0, None);
    assert_eq!(
        connack_code(&server_tx(&mut server, t0)),
        ReasonCode::BAD_AUTHENTICATION_METHOD
    );
    // Nor does `accept` act while the client is to answer.
    let mut server = challenging(t0);
    server.accept(t0, None);
    assert!(server_tx(&mut server, t0).is_empty());
    assert!(!server.is_connected() && !server.is_closed());
}

#[test]
fn before_connack_a_client_that_named_a_method_may_send_only_auth_or_disconnect() {
    // [MQTT-3.1.2-30] binds the client; the server refuses one that breaks it.
    let t0 = Instant::now();
    let others = [
        Packet::PingReq,
        Packet::Publish(publish("t", QoS::AtLeastOnce, Some(1))),
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![(ByteStr::from("t"), SubscriptionOptions::default())],
            properties: Default::default(),
        }),
    ];
    for packet in others {
        let mut server = challenging(t0);
        server_feed(&mut server, t0, packet);
        // No DISCONNECT before CONNACK [MQTT-3.14.0-1]: a CONNACK refusal.
        assert_eq!(
            connack_code(&server_tx(&mut server, t0)),
            ReasonCode::PROTOCOL_ERROR
        );
        assert_eq!(
            server_closed(&server_events(&mut server)),
            Some(ServerCloseReason::ProtocolViolation(
                ReasonCode::PROTOCOL_ERROR
            ))
        );
    }
    // The client gives up with DISCONNECT: closed, nothing sent, no will.
    let mut server = started_with(ServerConfig::default(), with_will(method_connect(None)), t0);
    server.auth_continue(None);
    let _ = server_tx(&mut server, t0);
    server_feed(&mut server, t0, disconnect(ReasonCode::UNSPECIFIED_ERROR));
    assert!(server_tx(&mut server, t0).is_empty());
    let events = server_events(&mut server);
    assert!(
        matches!(
            events.as_slice(),
            [ServerEvent::Closed {
                reason: ServerCloseReason::DisconnectedByClient(ReasonCode::UNSPECIFIED_ERROR),
                will: None
            }]
        ),
        "{events:?}"
    );
    // Packets handed over while the broker decided wait for its answer, and then break the
    // exchange as they would have.
    let mut server = started(t0);
    server.handle_packet(t0, Packet::PingReq);
    assert!(server_tx(&mut server, t0).is_empty());
    server.auth_continue(None);
    let sent = server_tx(&mut server, t0);
    assert!(
        matches!(sent.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ReasonCode::PROTOCOL_ERROR),
        "{sent:?}"
    );
    // An answer handed over early is taken as the answer.
    let mut server = started(t0);
    server.handle_packet(t0, answer(data(b"eager")));
    server.auth_continue(None);
    let _ = server_tx(&mut server, t0);
    assert_eq!(
        server_auth_event(&mut server),
        (ReasonCode::CONTINUE_AUTHENTICATION, data(b"eager"))
    );
}

#[test]
fn a_client_auth_with_another_method_or_none_is_a_protocol_error() {
    let t0 = Instant::now();
    for method in [Some("SCRAM-SHA-1"), Some("scram-sha-256"), None] {
        // Before CONNACK: refused with 0x82.
        let mut server = challenging(t0);
        server_feed(
            &mut server,
            t0,
            auth(ReasonCode::CONTINUE_AUTHENTICATION, method, None),
        );
        assert_eq!(
            connack_code(&server_tx(&mut server, t0)),
            ReasonCode::PROTOCOL_ERROR
        );
        assert!(server.is_closed());
        // Re-authenticating: DISCONNECT 0x82.
        let mut server = authenticated(method_connect(None), t0);
        server_feed(
            &mut server,
            t0,
            auth(ReasonCode::RE_AUTHENTICATE, method, None),
        );
        assert_eq!(
            server_tx(&mut server, t0),
            [disconnect(ReasonCode::PROTOCOL_ERROR)]
        );
        assert!(server.is_closed());
    }
}

// Conformance: [MQTT-5:3.15.2-1]
#[test]
fn a_client_auth_reason_code_out_of_place_is_a_protocol_error() {
    let t0 = Instant::now();
    // Before CONNACK the client only continues: 0x19 needs a CONNACK first, 0x00 is the
    // server's.
    for reason in [ReasonCode::RE_AUTHENTICATE, ReasonCode::SUCCESS] {
        let mut server = challenging(t0);
        server_feed(&mut server, t0, auth(reason, Some(METHOD), None));
        assert_eq!(
            connack_code(&server_tx(&mut server, t0)),
            ReasonCode::PROTOCOL_ERROR
        );
    }
    // Connected: 0x00 is the server's, and 0x18 answers nothing when no re-authentication
    // runs.
    for reason in [ReasonCode::SUCCESS, ReasonCode::CONTINUE_AUTHENTICATION] {
        let mut server = authenticated(method_connect(None), t0);
        server_feed(&mut server, t0, auth(reason, Some(METHOD), None));
        assert_eq!(
            server_tx(&mut server, t0),
            [disconnect(ReasonCode::PROTOCOL_ERROR)]
        );
    }
    // A code AUTH does not define is malformed: AUTH, 0x01, no properties.
    let mut server = challenging(t0);
    server.handle_bytes(t0, &mut BytesMut::from(&b"\xf0\x02\x01\x00"[..]));
    assert_eq!(
        connack_code(&server_tx(&mut server, t0)),
        ReasonCode::MALFORMED_PACKET
    );
    let mut server = authenticated(method_connect(None), t0);
    server.handle_bytes(t0, &mut BytesMut::from(&b"\xf0\x02\x01\x00"[..]));
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::MALFORMED_PACKET)]
    );
}

// Conformance: [MQTT-5:3.15.1-1]
#[test]
fn a_client_auth_with_fixed_header_flags_set_is_malformed() {
    let t0 = Instant::now();
    let mut server = challenging(t0);
    server.handle_bytes(t0, &mut BytesMut::from(&b"\xf1\x00"[..]));
    assert_eq!(
        connack_code(&server_tx(&mut server, t0)),
        ReasonCode::MALFORMED_PACKET
    );
    assert!(server.is_closed());
    let mut server = authenticated(method_connect(None), t0);
    server.handle_bytes(t0, &mut BytesMut::from(&b"\xf8\x00"[..]));
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::MALFORMED_PACKET)]
    );
    assert!(server.is_closed());
}

#[test]
fn auth_on_3_1_1_is_malformed() {
    // 3.1.1 has no packet type 15: the connection closes, without a DISCONNECT, which 3.1.1
    // does not have for servers.
    let t0 = Instant::now();
    let (mut server, _) = accepted_server(
        ServerConfig::default(),
        connect_packet(V3_1_1, "c"),
        None,
        t0,
    );
    server.handle_bytes(t0, &mut BytesMut::from(&b"\xf0\x00"[..]));
    assert!(server_tx(&mut server, t0).is_empty());
    assert_eq!(
        server_closed(&server_events(&mut server)),
        Some(ServerCloseReason::ProtocolViolation(
            ReasonCode::MALFORMED_PACKET
        ))
    );
    // The broker's AUTH calls do nothing on a 3.1.1 connection either.
    let (mut server, _) = accepted_server(
        ServerConfig::default(),
        connect_packet(V3_1_1, "c"),
        None,
        t0,
    );
    server.auth_continue(data(b"x"));
    server.reauth_success(data(b"x"));
    assert!(server_tx(&mut server, t0).is_empty());
    assert!(server.is_connected());
}

// Conformance: [MQTT-5:4.12.0-5]
#[test]
fn the_server_re_authenticates_while_messages_flow() {
    let t0 = Instant::now();
    let mut server = authenticated(method_connect(data(b"first")), t0);
    for round in 0..2 {
        server_feed(
            &mut server,
            t0,
            auth(ReasonCode::RE_AUTHENTICATE, Some(METHOD), data(b"again")),
        );
        assert_eq!(
            server_auth_event(&mut server),
            (ReasonCode::RE_AUTHENTICATE, data(b"again"))
        );
        // Traffic goes on while the broker decides, and while the client answers.
        server_feed(
            &mut server,
            t0,
            Packet::Publish(publish("a", QoS::AtLeastOnce, Some(1 + round))),
        );
        let events = server_events(&mut server);
        assert!(
            matches!(events.as_slice(), [ServerEvent::Publish { .. }]),
            "{events:?}"
        );
        server.acknowledge(pid(1 + round), ReasonCode::SUCCESS);
        server.auth_continue(data(b"challenge"));
        let sent = server_tx(&mut server, t0);
        assert!(matches!(
            sent.as_slice(),
            [Packet::PubAck(_), Packet::Auth(_)]
        ));
        let (reason, method, sent_data) = lone_auth(&sent[1..]);
        assert_eq!(reason, ReasonCode::CONTINUE_AUTHENTICATION);
        assert_eq!(method.as_ref().map(|m| m.as_str()), Some(METHOD));
        assert_eq!(sent_data, data(b"challenge"));
        server_feed(&mut server, t0, Packet::PingReq);
        assert_eq!(server_tx(&mut server, t0), [Packet::PingResp]);
        server_feed(&mut server, t0, answer(data(b"proof")));
        assert_eq!(
            server_auth_event(&mut server),
            (ReasonCode::CONTINUE_AUTHENTICATION, data(b"proof"))
        );
        server.reauth_success(data(b"server-final"));
        let (reason, method, sent_data) = lone_auth(&server_tx(&mut server, t0));
        assert_eq!(reason, ReasonCode::SUCCESS);
        assert_eq!(method.as_ref().map(|m| m.as_str()), Some(METHOD));
        assert_eq!(sent_data, data(b"server-final"));
        assert!(server.is_connected());
    }
    // A re-authentication may also end at once.
    server_feed(
        &mut server,
        t0,
        auth(ReasonCode::RE_AUTHENTICATE, Some(METHOD), None),
    );
    let _ = server_auth_event(&mut server);
    server.reauth_success(None);
    let (reason, ..) = lone_auth(&server_tx(&mut server, t0));
    assert_eq!(reason, ReasonCode::SUCCESS);
    // Answers out of turn are ignored.
    server.reauth_success(None);
    server.auth_continue(None);
    assert!(server_tx(&mut server, t0).is_empty());
}

#[test]
fn a_re_authentication_out_of_sequence_is_a_protocol_error() {
    let t0 = Instant::now();
    // A second 0x19 while one runs, whoever's turn it is; a 0x18 while the broker decides.
    let cases: [(bool, ReasonCode); 3] = [
        (false, ReasonCode::RE_AUTHENTICATE),
        (true, ReasonCode::RE_AUTHENTICATE),
        (false, ReasonCode::CONTINUE_AUTHENTICATION),
    ];
    for (challenged, reason) in cases {
        let mut server = authenticated(method_connect(None), t0);
        server_feed(
            &mut server,
            t0,
            auth(ReasonCode::RE_AUTHENTICATE, Some(METHOD), None),
        );
        let _ = server_auth_event(&mut server);
        if challenged {
            server.auth_continue(None);
            let _ = server_tx(&mut server, t0);
        }
        server_feed(&mut server, t0, auth(reason, Some(METHOD), None));
        assert_eq!(
            server_tx(&mut server, t0),
            [disconnect(ReasonCode::PROTOCOL_ERROR)],
            "{challenged} {reason:?}"
        );
        assert!(server.is_closed());
    }
}

// Conformance: [MQTT-5:4.12.1-2]
#[test]
fn a_failed_re_authentication_disconnects_the_client() {
    let t0 = Instant::now();
    let mut server = authenticated(with_will(method_connect(None)), t0);
    server_feed(
        &mut server,
        t0,
        auth(ReasonCode::RE_AUTHENTICATE, Some(METHOD), data(b"wrong")),
    );
    let _ = server_auth_event(&mut server);
    server.disconnect(ReasonCode::NOT_AUTHORIZED);
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::NOT_AUTHORIZED)]
    );
    assert!(server.is_closed());
    let events = server_events(&mut server);
    assert!(
        matches!(
            events.as_slice(),
            [ServerEvent::Closed {
                reason: ServerCloseReason::DisconnectedByServer(ReasonCode::NOT_AUTHORIZED),
                will: Some(_)
            }]
        ),
        "{events:?}"
    );
}

#[test]
fn a_client_that_named_no_method_may_not_re_authenticate() {
    // [MQTT-4.12.0-7] is the client's; the server treats its AUTH as a Protocol Error.
    let t0 = Instant::now();
    for reason in [
        ReasonCode::RE_AUTHENTICATE,
        ReasonCode::CONTINUE_AUTHENTICATION,
    ] {
        let (mut server, _) =
            accepted_server(ServerConfig::default(), connect_packet(V5, "c"), None, t0);
        server_feed(&mut server, t0, auth(reason, Some(METHOD), None));
        assert_eq!(
            server_tx(&mut server, t0),
            [disconnect(ReasonCode::PROTOCOL_ERROR)]
        );
    }
}

#[test]
fn the_exchange_ends_by_the_connect_deadline() {
    let t0 = Instant::now();
    let mut config = ServerConfig::default();
    config.connect_timeout = Duration::from_secs(10);
    let deadline = t0 + Duration::from_secs(10);
    let mut server = started_with(config.clone(), method_connect(None), t0);
    // While the broker decides, no timer runs out.
    assert_eq!(server.poll_timeout(), None);
    server.handle_timeout(t0 + Duration::from_secs(60));
    assert!(!server.is_closed());
    // Waiting for the client's answer, the connect deadline holds: the exchange cannot be
    // stretched by more round trips.
    server.auth_continue(None);
    assert_eq!(server.poll_timeout(), Some(deadline));
    let _ = server_tx(&mut server, t0);
    server_feed(&mut server, t0 + 5 * SEC, answer(None));
    let _ = server_auth_event(&mut server);
    server.auth_continue(None);
    assert_eq!(server.poll_timeout(), Some(deadline));
    let _ = server_tx(&mut server, t0);
    server.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!server.is_closed());
    server.handle_timeout(deadline);
    assert!(server.is_closed());
    assert!(server_tx(&mut server, deadline).is_empty());
    assert_eq!(
        server_closed(&server_events(&mut server)),
        Some(ServerCloseReason::ConnectTimeout)
    );
    // Accepted in time, the deadline is gone and keep-alive takes over.
    let mut server = started_with(config, method_connect(None), t0);
    server.auth_continue(None);
    server_feed(&mut server, t0 + SEC, answer(None));
    let _ = server_auth_event(&mut server);
    server.set_auth_success_data(None);
    server.accept(t0 + SEC, None);
    assert!(server.is_connected());
    assert_ne!(server.poll_timeout(), Some(deadline));
    server.handle_timeout(deadline);
    assert!(server.is_connected());
}

#[test]
fn authentication_data_the_client_cannot_take_ends_the_exchange() {
    // AUTH and CONNACK must fit the client's Maximum Packet Size [MQTT-3.1.2-24]; the data a
    // method needs cannot be dropped, so the client is refused.
    let t0 = Instant::now();
    let mut connect = method_connect(None);
    connect.properties.maximum_packet_size = std::num::NonZeroU32::new(64);
    let big = Bytes::from(vec![b'x'; 100]);
    let mut server = started_with(ServerConfig::default(), connect.clone(), t0);
    server.auth_continue(Some(big.clone()));
    assert_eq!(
        connack_code(&server_tx(&mut server, t0)),
        ReasonCode::UNSPECIFIED_ERROR
    );
    assert!(server.is_closed());
    let mut server = started_with(ServerConfig::default(), connect.clone(), t0);
    server.set_auth_success_data(Some(big.clone()));
    server.accept(t0, None);
    assert_eq!(
        connack_code(&server_tx(&mut server, t0)),
        ReasonCode::UNSPECIFIED_ERROR
    );
    assert!(server.is_closed());
    // Connected: DISCONNECT 0x80.
    let mut server = authenticated(connect, t0);
    server_feed(
        &mut server,
        t0,
        auth(ReasonCode::RE_AUTHENTICATE, Some(METHOD), None),
    );
    let _ = server_auth_event(&mut server);
    server.reauth_success(Some(big));
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::UNSPECIFIED_ERROR)]
    );
    assert!(server.is_closed());
}

#[test]
fn server_events_never_show_authentication_data() {
    let t0 = Instant::now();
    let mut server = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
    server_feed(
        &mut server,
        t0,
        Packet::Connect(Box::new(method_connect(data(b"s3cret-first")))),
    );
    let connect = format!("{:?}", server_events(&mut server));
    assert!(connect.contains(METHOD), "{connect}");
    assert!(!connect.contains("s3cret"), "{connect}");
    server.auth_continue(None);
    server_feed(&mut server, t0, answer(data(b"s3cret-proof")));
    let shown = format!("{:?}", server_events(&mut server));
    assert!(
        shown.contains("Auth") && shown.contains("<hidden>"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
    // Nor does the connection, with the final data set, or with an AUTH to send.
    server.set_auth_success_data(data(b"s3cret-final"));
    let shown = format!("{server:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let mut server = authenticated(method_connect(None), t0);
    server_feed(
        &mut server,
        t0,
        auth(ReasonCode::RE_AUTHENTICATE, Some(METHOD), None),
    );
    let _ = server_auth_event(&mut server);
    server.reauth_success(data(b"s3cret-final"));
    let shown = format!("{server:?}");
    assert!(shown.contains("Auth"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn the_exchange_keeps_what_it_needs_only() {
    // The client's data goes to the broker in the events and is not kept; what is kept is
    // the method, once, however many rounds there are.
    let t0 = Instant::now();
    let mut connect = method_connect(Some(Bytes::from(vec![b'd'; 4096])));
    connect.properties.user_properties = (0..100)
        .map(|i| (ByteStr::from(format!("k{i}")), ByteStr::from("v")))
        .collect();
    let mut server = started_with(ServerConfig::default(), connect, t0);
    for _ in 0..100 {
        server.auth_continue(None);
        let _ = server_tx(&mut server, t0);
        server_feed(&mut server, t0, answer(Some(Bytes::from(vec![b'd'; 4096]))));
        let _ = server_auth_event(&mut server);
    }
    let kept = format!("{server:?}");
    assert!(!kept.contains("k99"), "user properties kept");
    assert!(kept.len() < 4096, "{} bytes of state", kept.len());
}

// ----------------------------------------------------------------------------------- client

fn method_config() -> ClientConfig {
    let mut config = client_config(V5);
    config.authentication_method = Some(ByteStr::from(METHOD));
    config
}

/// A client that sent CONNECT with our method and `initial` data.
fn connecting(config: ClientConfig, initial: Option<Bytes>, now: Instant) -> Client {
    let mut client = Client::new(Arc::new(config), now).expect("config encodes");
    client.connect_with_auth_data(now, initial);
    let sent = client_tx(&mut client, now, V5);
    assert!(matches!(sent.as_slice(), [Packet::Connect(_)]), "{sent:?}");
    client
}

/// A server's AUTH 0x18 with our method.
fn challenge(data: Option<Bytes>) -> Packet {
    auth(ReasonCode::CONTINUE_AUTHENTICATION, Some(METHOD), data)
}

fn method_connack(data: Option<Bytes>) -> Packet {
    let mut connack = ConnAck::default();
    connack.properties.authentication_method = Some(ByteStr::from(METHOD));
    connack.properties.authentication_data = data;
    Packet::ConnAck(Box::new(connack))
}

/// Feeds a CONNACK that accepts the client, checks that the final data is reported, and
/// completes the connection.
fn complete(client: &mut Client, now: Instant, connack: Packet) {
    client_feed(client, now, V5, connack);
    let events = client_events(client);
    assert!(
        matches!(events.as_slice(), [Event::Authenticated { .. }]),
        "{events:?}"
    );
    client.auth_complete(now).unwrap();
    assert!(client.is_connected());
}

/// A client connected after enhanced authentication, events drained.
fn authenticated_client(now: Instant) -> Client {
    let mut client = connecting(method_config(), None, now);
    complete(&mut client, now, method_connack(None));
    let _ = client_events(&mut client);
    client
}

fn client_challenge_event(client: &mut Client) -> Option<Bytes> {
    let events = client_events(client);
    match events.as_slice() {
        [Event::AuthChallenge { data }] => data.clone(),
        other => panic!("not a lone challenge: {other:?}"),
    }
}

fn client_violation(client: &mut Client, now: Instant, code: ReasonCode) {
    assert_eq!(client_tx(client, now, V5), [disconnect(code)]);
    assert_eq!(
        client_closed(&client_events(client)),
        Some(CloseReason::ProtocolViolation(code))
    );
    assert!(!client.is_connected());
}

// Conformance: [MQTT-5:4.12.0-3] [MQTT-5:4.12.0-5] [MQTT-5:3.15.2-2] [MQTT-5:3.15.2-3]
#[test]
fn the_client_names_its_method_answers_challenges_and_reports_the_final_data() {
    let t0 = Instant::now();
    let mut client = Client::new(Arc::new(method_config()), t0).unwrap();
    client.connect_with_auth_data(t0, data(b"client-first"));
    let sent = client_tx(&mut client, t0, V5);
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(
        connect
            .properties
            .authentication_method
            .as_ref()
            .map(|m| m.as_str()),
        Some(METHOD)
    );
    assert_eq!(
        connect.properties.authentication_data,
        data(b"client-first")
    );
    for (theirs, ours) in [
        (&b"server-first"[..], &b"client-final"[..]),
        (b"server-more", b"client-more"),
    ] {
        client_feed(
            &mut client,
            t0,
            V5,
            challenge(Some(Bytes::from_static(theirs))),
        );
        assert_eq!(
            client_challenge_event(&mut client),
            Some(Bytes::from_static(theirs))
        );
        assert!(client_tx(&mut client, t0, V5).is_empty());
        client.auth_respond(Some(Bytes::from_static(ours))).unwrap();
        let (reason, method, sent_data) = lone_auth(&client_tx(&mut client, t0, V5));
        assert_eq!(reason, ReasonCode::CONTINUE_AUTHENTICATION);
        assert_eq!(method.as_ref().map(|m| m.as_str()), Some(METHOD));
        assert_eq!(sent_data.as_deref(), Some(ours));
        // One answer per challenge.
        assert_eq!(client.auth_respond(None), Err(AuthError::NoChallenge));
    }
    client_feed(&mut client, t0, V5, method_connack(data(b"server-final")));
    // The final data first, for the application to check, then the CONNACK without it.
    let events = client_events(&mut client);
    let [Event::Authenticated { data: final_data }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(*final_data, data(b"server-final"));
    assert!(!client.is_connected());
    client.auth_complete(t0).unwrap();
    assert!(client.is_connected());
    let events = client_events(&mut client);
    let [Event::Connected(connack)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(
        connack
            .properties
            .authentication_method
            .as_ref()
            .map(|m| m.as_str()),
        Some(METHOD)
    );
    assert_eq!(connack.properties.authentication_data, None);
    assert_eq!(client.auth_complete(t0), Err(AuthError::NotAuthenticated));
    // A plain `connect` sends the configured data.
    let mut config = method_config();
    config.authentication_data = data(b"configured");
    let mut client = Client::new(Arc::new(config), t0).unwrap();
    client.connect(t0);
    let sent = client_tx(&mut client, t0, V5);
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(connect.properties.authentication_data, data(b"configured"));
}

// Conformance: [MQTT-5:3.1.2-30]
#[test]
fn before_connack_the_client_sends_only_auth_or_disconnect() {
    let t0 = Instant::now();
    let mut client = connecting(method_config(), None, t0);
    client
        .publish(midge_proto::Message::new(
            "t".to_owned(),
            &b"m"[..],
            QoS::AtLeastOnce,
        ))
        .unwrap();
    client
        .publish(midge_proto::Message::new(
            "t".to_owned(),
            &b"m"[..],
            QoS::AtMostOnce,
        ))
        .unwrap();
    client
        .subscribe(
            vec![(ByteStr::from("s"), SubscriptionOptions::default())],
            Default::default(),
        )
        .unwrap();
    client.handle_timeout(t0 + 5 * SEC);
    assert!(client_tx(&mut client, t0, V5).is_empty());
    client_feed(&mut client, t0, V5, challenge(None));
    let _ = client_challenge_event(&mut client);
    client.auth_respond(None).unwrap();
    let sent = client_tx(&mut client, t0, V5);
    assert!(matches!(sent.as_slice(), [Packet::Auth(_)]), "{sent:?}");
    // After CONNACK, and once the application has checked the server, what waited goes out.
    complete(&mut client, t0, method_connack(None));
    let sent = client_tx(&mut client, t0, V5);
    assert_eq!(sent.len(), 3, "{sent:?}");
    // The client may give up at any point with DISCONNECT.
    let mut client = connecting(method_config(), None, t0);
    client_feed(&mut client, t0, V5, challenge(None));
    let _ = client_challenge_event(&mut client);
    client.disconnect(ReasonCode::UNSPECIFIED_ERROR);
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::UNSPECIFIED_ERROR)]
    );
    assert_eq!(
        client_closed(&client_events(&mut client)),
        Some(CloseReason::DisconnectedByClient)
    );
}

// Conformance: [MQTT-5:4.12.0-7]
#[test]
fn a_client_without_a_method_sends_no_auth() {
    let t0 = Instant::now();
    let mut client = connected_client(client_config(V5), ConnAck::default(), t0);
    assert_eq!(client.reauthenticate(data(b"x")), Err(AuthError::NoMethod));
    assert_eq!(client.auth_respond(data(b"x")), Err(AuthError::NoMethod));
    assert!(client_tx(&mut client, t0, V5).is_empty());
    // An AUTH from the server is a Protocol Error, answered with DISCONNECT, never AUTH:
    // before CONNACK and after.
    client_feed(&mut client, t0, V5, challenge(None));
    client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
    let mut client = Client::new(Arc::new(client_config(V5)), t0).unwrap();
    client.connect_with_auth_data(t0, data(b"ignored"));
    let sent = client_tx(&mut client, t0, V5);
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(connect.properties.authentication_method, None);
    assert_eq!(connect.properties.authentication_data, None);
    client_feed(&mut client, t0, V5, challenge(None));
    client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
    // A successful CONNACK naming a method the client never sent breaks [MQTT-4.12.0-6].
    let mut client = Client::new(Arc::new(client_config(V5)), t0).unwrap();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    client_feed(&mut client, t0, V5, method_connack(None));
    client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn a_server_auth_or_connack_with_another_method_is_a_protocol_error() {
    let t0 = Instant::now();
    for method in [Some("SCRAM-SHA-1"), None] {
        let mut client = connecting(method_config(), None, t0);
        client_feed(
            &mut client,
            t0,
            V5,
            auth(ReasonCode::CONTINUE_AUTHENTICATION, method, None),
        );
        client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
        // A successful CONNACK repeats the method [MQTT-4.12.0-5].
        let mut client = connecting(method_config(), None, t0);
        let mut connack = ConnAck::default();
        connack.properties.authentication_method = method.map(ByteStr::from);
        client_feed(&mut client, t0, V5, Packet::ConnAck(Box::new(connack)));
        client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
        // Re-authenticating.
        let mut client = authenticated_client(t0);
        client.reauthenticate(None).unwrap();
        let _ = client_tx(&mut client, t0, V5);
        client_feed(&mut client, t0, V5, auth(ReasonCode::SUCCESS, method, None));
        client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
    }
    // A refusal carries no method, and is a refusal.
    let mut client = connecting(method_config(), None, t0);
    client_feed(&mut client, t0, V5, challenge(None));
    let _ = client_challenge_event(&mut client);
    client.auth_respond(None).unwrap();
    let _ = client_tx(&mut client, t0, V5);
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::ConnAck(Box::new(ConnAck {
            reason_code: ReasonCode::NOT_AUTHORIZED,
            ..ConnAck::default()
        })),
    );
    assert!(client_tx(&mut client, t0, V5).is_empty());
    assert_eq!(
        client_closed(&client_events(&mut client)),
        Some(CloseReason::Refused(ReasonCode::NOT_AUTHORIZED))
    );
}

// Conformance: [MQTT-5:3.15.2-1]
#[test]
fn a_server_auth_reason_code_out_of_place_is_a_protocol_error() {
    let t0 = Instant::now();
    // Before CONNACK: 0x00 (the server accepts with CONNACK), 0x19 (the client's only), and a
    // second challenge before the client answered the first.
    for reason in [ReasonCode::SUCCESS, ReasonCode::RE_AUTHENTICATE] {
        let mut client = connecting(method_config(), None, t0);
        client_feed(&mut client, t0, V5, auth(reason, Some(METHOD), None));
        client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
    }
    let mut client = connecting(method_config(), None, t0);
    client_feed(&mut client, t0, V5, challenge(None));
    let _ = client_challenge_event(&mut client);
    client_feed(&mut client, t0, V5, challenge(None));
    client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
    // Connected without a re-authentication running: no AUTH at all is expected.
    for reason in [
        ReasonCode::SUCCESS,
        ReasonCode::CONTINUE_AUTHENTICATION,
        ReasonCode::RE_AUTHENTICATE,
    ] {
        let mut client = authenticated_client(t0);
        client_feed(&mut client, t0, V5, auth(reason, Some(METHOD), None));
        client_violation(&mut client, t0, ReasonCode::PROTOCOL_ERROR);
    }
    // A code AUTH does not define is malformed.
    let mut client = connecting(method_config(), None, t0);
    client.handle_bytes(t0, &mut BytesMut::from(&b"\xf0\x02\x01\x00"[..]));
    client_violation(&mut client, t0, ReasonCode::MALFORMED_PACKET);
}

// Conformance: [MQTT-5:3.15.1-1]
#[test]
fn a_server_auth_with_fixed_header_flags_set_is_malformed() {
    let t0 = Instant::now();
    let mut client = connecting(method_config(), None, t0);
    client.handle_bytes(t0, &mut BytesMut::from(&b"\xf2\x00"[..]));
    client_violation(&mut client, t0, ReasonCode::MALFORMED_PACKET);
}

#[test]
fn auth_on_3_1_1_is_malformed_and_a_3_1_1_client_names_no_method() {
    let t0 = Instant::now();
    let mut client = connected_client(client_config(V3_1_1), ConnAck::default(), t0);
    client.handle_bytes(t0, &mut BytesMut::from(&b"\xf0\x00"[..]));
    // No DISCONNECT in 3.1.1: closed.
    assert!(client_tx(&mut client, t0, V3_1_1).is_empty());
    assert_eq!(
        client_closed(&client_events(&mut client)),
        Some(CloseReason::ProtocolViolation(ReasonCode::MALFORMED_PACKET))
    );
    // A 3.1.1 CONNECT cannot carry a method: the configuration is refused.
    let mut config = client_config(V3_1_1);
    config.authentication_method = Some(ByteStr::from(METHOD));
    assert!(Client::new(Arc::new(config), t0).is_err());
}

// Conformance: [MQTT-5:4.12.1-1] [MQTT-5:4.12.0-5]
#[test]
fn the_client_re_authenticates_with_its_method_while_messages_flow() {
    let t0 = Instant::now();
    let mut client = Client::new(Arc::new(method_config()), t0).unwrap();
    // Only once connected.
    assert_eq!(client.reauthenticate(None), Err(AuthError::NotConnected));
    let mut client = authenticated_client(t0);
    for _ in 0..2 {
        client.reauthenticate(data(b"again")).unwrap();
        assert_eq!(client.reauthenticate(None), Err(AuthError::InProgress));
        let (reason, method, sent_data) = lone_auth(&client_tx(&mut client, t0, V5));
        assert_eq!(reason, ReasonCode::RE_AUTHENTICATE);
        assert_eq!(method.as_ref().map(|m| m.as_str()), Some(METHOD));
        assert_eq!(sent_data, data(b"again"));
        // Messages flow both ways meanwhile.
        client
            .publish(midge_proto::Message::new(
                "t".to_owned(),
                &b"m"[..],
                QoS::AtMostOnce,
            ))
            .unwrap();
        assert!(matches!(
            client_tx(&mut client, t0, V5).as_slice(),
            [Packet::Publish(_)]
        ));
        client_feed(
            &mut client,
            t0,
            V5,
            Packet::Publish(publish("in", QoS::AtMostOnce, None)),
        );
        assert!(matches!(
            client_events(&mut client).as_slice(),
            [Event::Message(_)]
        ));
        client_feed(&mut client, t0, V5, challenge(data(b"server-first")));
        assert_eq!(client_challenge_event(&mut client), data(b"server-first"));
        assert_eq!(client.reauthenticate(None), Err(AuthError::InProgress));
        client.auth_respond(data(b"client-final")).unwrap();
        let (reason, method, sent_data) = lone_auth(&client_tx(&mut client, t0, V5));
        assert_eq!(reason, ReasonCode::CONTINUE_AUTHENTICATION);
        assert_eq!(method.as_ref().map(|m| m.as_str()), Some(METHOD));
        assert_eq!(sent_data, data(b"client-final"));
        client_feed(
            &mut client,
            t0,
            V5,
            auth(ReasonCode::SUCCESS, Some(METHOD), data(b"server-final")),
        );
        let events = client_events(&mut client);
        assert!(
            matches!(events.as_slice(), [Event::Reauthenticated { data }] if *data == Some(Bytes::from_static(b"server-final"))),
            "{events:?}"
        );
        assert!(client.is_connected());
    }
}

// Conformance: [MQTT-5:4.12.1-2]
#[test]
fn a_failed_re_authentication_closes_the_connection() {
    let t0 = Instant::now();
    // The server refuses: DISCONNECT, closed.
    let mut client = authenticated_client(t0);
    client.reauthenticate(None).unwrap();
    let _ = client_tx(&mut client, t0, V5);
    client_feed(&mut client, t0, V5, disconnect(ReasonCode::NOT_AUTHORIZED));
    assert_eq!(
        client_closed(&client_events(&mut client)),
        Some(CloseReason::DisconnectedByServer(
            ReasonCode::NOT_AUTHORIZED
        ))
    );
    assert!(!client.is_connected());
    // The application finds the server's final data wrong: DISCONNECT, closed. A new
    // connection starts without the old exchange.
    let mut client = authenticated_client(t0);
    client.reauthenticate(None).unwrap();
    let _ = client_tx(&mut client, t0, V5);
    client_feed(
        &mut client,
        t0,
        V5,
        auth(ReasonCode::SUCCESS, Some(METHOD), data(b"forged")),
    );
    let _ = client_events(&mut client);
    client.disconnect(ReasonCode::UNSPECIFIED_ERROR);
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::UNSPECIFIED_ERROR)]
    );
    assert!(!client.is_connected());
    assert_eq!(client.auth_respond(None), Err(AuthError::NoChallenge));
}

#[test]
fn the_wait_for_connack_restarts_with_every_challenge() {
    let t0 = Instant::now();
    let mut config = method_config();
    config.response_timeout = 10 * SEC;
    let mut client = connecting(config, None, t0);
    assert_eq!(client.poll_timeout(), Some(t0 + 10 * SEC));
    client_feed(&mut client, t0 + 8 * SEC, V5, challenge(None));
    let _ = client_challenge_event(&mut client);
    assert_eq!(client.poll_timeout(), Some(t0 + 18 * SEC));
    client.auth_respond(None).unwrap();
    client.handle_timeout(t0 + 17 * SEC);
    assert!(client_events(&mut client).is_empty());
    client.handle_timeout(t0 + 18 * SEC);
    assert_eq!(
        client_closed(&client_events(&mut client)),
        Some(CloseReason::ResponseTimeout)
    );
}

#[test]
fn an_auth_the_server_cannot_take_is_not_sent() {
    // The server's Maximum Packet Size holds for AUTH too [MQTT-3.2.2-15].
    let t0 = Instant::now();
    let mut client = connecting(method_config(), None, t0);
    let mut connack = ConnAck::default();
    connack.properties.authentication_method = Some(ByteStr::from(METHOD));
    connack.properties.maximum_packet_size = std::num::NonZeroU32::new(64);
    complete(&mut client, t0, Packet::ConnAck(Box::new(connack)));
    let _ = client_events(&mut client);
    let big = Bytes::from(vec![b'x'; 100]);
    assert_eq!(
        client.reauthenticate(Some(big)),
        Err(AuthError::PacketTooLarge)
    );
    assert!(client_tx(&mut client, t0, V5).is_empty());
    // Nothing started: a smaller one may go.
    client.reauthenticate(data(b"small")).unwrap();
    assert_eq!(client_tx(&mut client, t0, V5).len(), 1);
}

#[test]
fn client_debug_output_never_shows_authentication_data() {
    let t0 = Instant::now();
    let mut config = method_config();
    config.authentication_data = data(b"s3cret-config");
    config.properties.authentication_data = data(b"s3cret-unused");
    let shown = format!("{config:?}");
    assert!(shown.contains(METHOD), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let mut client = connecting(method_config(), None, t0);
    client_feed(&mut client, t0, V5, challenge(data(b"s3cret-challenge")));
    client.auth_respond(data(b"s3cret-answer")).unwrap();
    client_feed(&mut client, t0, V5, method_connack(data(b"s3cret-final")));
    let shown = format!("{:?} {client:?}", client_events(&mut client));
    assert!(shown.contains("AuthChallenge") && shown.contains("Authenticated"));
    assert!(!shown.contains("s3cret"), "{shown}");
    // Nor while it waits for the check, or has an AUTH to send.
    client.auth_complete(t0).unwrap();
    client.reauthenticate(data(b"s3cret-again")).unwrap();
    client_feed(
        &mut client,
        t0,
        V5,
        auth(ReasonCode::SUCCESS, Some(METHOD), data(b"s3cret-done")),
    );
    let shown = format!("{:?} {client:?}", client_events(&mut client));
    assert!(shown.contains("Reauthenticated"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn a_client_and_a_server_complete_an_exchange_and_a_re_authentication() {
    // Both state machines, byte for byte: the client answers each challenge with the
    // challenge reversed, which the broker checks.
    let t0 = Instant::now();
    let mut client = Client::new(Arc::new(method_config()), t0).unwrap();
    let mut server = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
    client.connect_with_auth_data(t0, data(b"hello"));
    let mut to_server = BytesMut::new();
    let mut to_client = BytesMut::new();
    let mut rounds = 0;
    let mut reauthenticated = false;
    for _ in 0..20 {
        while client.poll_transmit(t0, &mut to_server) {}
        server.handle_bytes(t0, &mut to_server);
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Connect { connect, .. } => {
                    assert_eq!(connect.properties.authentication_data, data(b"hello"));
                    server.auth_continue(data(b"abc"));
                }
                ServerEvent::Auth { reason, data } => {
                    assert_eq!(data.as_deref(), Some(&b"cba"[..]));
                    rounds += 1;
                    match (reason, server.is_connected()) {
                        (ReasonCode::CONTINUE_AUTHENTICATION, false) => {
                            server.set_auth_success_data(Some(Bytes::from_static(b"ok")));
                            server.accept(t0, None);
                        }
                        (ReasonCode::RE_AUTHENTICATE, true) => {
                            server.auth_continue(Some(Bytes::from_static(b"abc")))
                        }
                        (ReasonCode::CONTINUE_AUTHENTICATION, true) => {
                            server.reauth_success(Some(Bytes::from_static(b"ok")))
                        }
                        other => panic!("{other:?}"),
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        while server.poll_transmit(t0, &mut to_client) {}
        client.handle_bytes(t0, &mut to_client);
        while let Some(event) = client.poll_event() {
            match event {
                Event::AuthChallenge { data } => {
                    let mut answer = data.unwrap_or_default().to_vec();
                    answer.reverse();
                    client.auth_respond(Some(answer.into())).unwrap();
                }
                Event::Authenticated { data } => {
                    assert_eq!(data.as_deref(), Some(&b"ok"[..]));
                    client.auth_complete(t0).unwrap();
                }
                Event::Reauthenticated { data } => {
                    assert_eq!(data.as_deref(), Some(&b"ok"[..]));
                }
                Event::Connected(_) => client.reauthenticate(data(b"cba")).unwrap(),
                other => panic!("{other:?}"),
            }
            reauthenticated |= client.is_connected() && rounds == 3;
        }
    }
    assert!(client.is_connected() && server.is_connected());
    assert_eq!(rounds, 3);
    assert!(reauthenticated);
}

#[test]
fn the_client_sends_and_handles_nothing_until_the_application_checked_the_server() {
    let t0 = Instant::now();
    let message = || midge_proto::Message::new("t".to_owned(), &b"m"[..], QoS::AtLeastOnce);
    // CONNACK, then a message from the server, in one read.
    let mut bytes = BytesMut::new();
    method_connack(data(b"server-final"))
        .encode(V5, &mut bytes)
        .unwrap();
    Packet::Publish(publish("in", QoS::AtLeastOnce, Some(1)))
        .encode(V5, &mut bytes)
        .unwrap();
    let start = |bytes: &mut BytesMut| {
        let mut client = connecting(method_config(), None, t0);
        client.publish(message()).unwrap();
        client.handle_bytes(t0, bytes);
        let events = client_events(&mut client);
        assert!(
            matches!(events.as_slice(), [Event::Authenticated { .. }]),
            "{events:?}"
        );
        assert!(client_tx(&mut client, t0, V5).is_empty());
        assert!(!client.is_connected());
        client
    };
    // The check fails: DISCONNECT, and nothing else ever went out.
    let mut rx = bytes.clone();
    let mut client = start(&mut rx);
    assert!(!rx.is_empty(), "the PUBLISH waits undecoded");
    client.disconnect(ReasonCode::UNSPECIFIED_ERROR);
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::UNSPECIFIED_ERROR)]
    );
    assert_eq!(
        client_closed(&client_events(&mut client)),
        Some(CloseReason::DisconnectedByClient)
    );
    // The check passes: connected, and what waited goes on.
    let mut rx = bytes.clone();
    let mut client = start(&mut rx);
    client.auth_complete(t0).unwrap();
    client.handle_bytes(t0, &mut rx);
    let events = client_events(&mut client);
    assert!(
        matches!(events.as_slice(), [Event::Connected(_), Event::Message(_)]),
        "{events:?}"
    );
    let sent = client_tx(&mut client, t0, V5);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().any(|p| matches!(p, Packet::Publish(_))));
    assert!(sent.iter().any(|p| matches!(p, Packet::PubAck(_))));
    // Packets handed over one by one are held, and handled after the check.
    let mut client = connecting(method_config(), None, t0);
    client.handle_packet(t0, method_connack(None));
    client.handle_packet(t0, Packet::Publish(publish("in", QoS::AtMostOnce, None)));
    assert!(matches!(
        client_events(&mut client).as_slice(),
        [Event::Authenticated { .. }]
    ));
    client.auth_complete(t0).unwrap();
    assert!(matches!(
        client_events(&mut client).as_slice(),
        [Event::Connected(_), Event::Message(_)]
    ));
    // An application that never answers: the CONNACK deadline closes the connection.
    let mut config = method_config();
    config.response_timeout = 10 * SEC;
    let mut client = connecting(config, None, t0);
    client_feed(&mut client, t0 + 5 * SEC, V5, method_connack(None));
    let _ = client_events(&mut client);
    assert_eq!(client.poll_timeout(), Some(t0 + 15 * SEC));
    client.handle_timeout(t0 + 15 * SEC);
    assert_eq!(
        client_closed(&client_events(&mut client)),
        Some(CloseReason::ResponseTimeout)
    );
    assert_eq!(client.auth_complete(t0), Err(AuthError::NotAuthenticated));
}
