//! Helpers shared by the flow tests: feed packets to a state machine, collect what it
//! transmitted (decoded back with the codec under the connection's version), drain events.

#![allow(dead_code, unreachable_pub)]

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::{
    ByteStr, ConnAck, Connect, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS, ReasonCode,
    MAX_PACKET_SIZE,
};
use midge_proto::client::{Client, ClientConfig, Event};
use midge_proto::server::{ServerConfig, ServerConnection, ServerEvent};
use midge_proto::session::Session;

pub const V3_1: ProtocolVersion = ProtocolVersion::V3_1;
pub const V3_1_1: ProtocolVersion = ProtocolVersion::V3_1_1;
pub const V5: ProtocolVersion = ProtocolVersion::V5;
pub const ALL: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];

pub const SEC: Duration = Duration::from_secs(1);

pub fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).expect("test packet ids are non-zero")
}

/// Decodes every packet in `bytes`; panics if anything is left over or fails to decode.
pub fn decode_all(bytes: &mut BytesMut, version: ProtocolVersion) -> Vec<Packet> {
    let mut packets = Vec::new();
    loop {
        match Packet::decode(bytes, version, MAX_PACKET_SIZE) {
            Ok(Some(p)) => packets.push(p),
            Ok(None) => break,
            Err(e) => panic!("transmitted bytes do not decode under {version:?}: {e:?}"),
        }
    }
    assert!(bytes.is_empty(), "a partial packet was transmitted");
    packets
}

/// Everything the client transmits now, decoded.
pub fn client_tx(client: &mut Client, now: Instant, version: ProtocolVersion) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    while client.poll_transmit(now, &mut buf) {}
    decode_all(&mut buf, version)
}

/// Everything the server transmits now, decoded, with Reason Strings removed: they are
/// diagnostics for people, and `server_tx_with_reasons` tests them where they matter.
pub fn server_tx(server: &mut ServerConnection, now: Instant) -> Vec<Packet> {
    let mut packets = server_tx_with_reasons(server, now);
    for packet in &mut packets {
        match packet {
            Packet::Disconnect(d) => d.properties.reason_string = None,
            Packet::ConnAck(c) => c.properties.reason_string = None,
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.properties.reason_string = None
            }
            Packet::SubAck(s) => s.properties.reason_string = None,
            _ => {}
        }
    }
    packets
}

/// Everything the server transmits now, decoded as sent.
pub fn server_tx_with_reasons(server: &mut ServerConnection, now: Instant) -> Vec<Packet> {
    let version = server.version();
    let mut buf = BytesMut::new();
    while server.poll_transmit(now, &mut buf) {}
    decode_all(&mut buf, version)
}

pub fn client_events(client: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

pub fn server_events(server: &mut ServerConnection) -> Vec<ServerEvent> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

/// Encodes `packet` under `version` and feeds the bytes, so the codec's checks apply too.
pub fn client_feed(client: &mut Client, now: Instant, version: ProtocolVersion, packet: Packet) {
    let mut buf = BytesMut::new();
    packet
        .encode(version, &mut buf)
        .expect("test packet encodes");
    client.handle_bytes(now, &mut buf);
}

pub fn server_feed(server: &mut ServerConnection, now: Instant, packet: Packet) {
    let version = match &packet {
        Packet::Connect(c) => c.protocol,
        _ => server.version(),
    };
    let mut buf = BytesMut::new();
    packet
        .encode(version, &mut buf)
        .expect("test packet encodes");
    server.handle_bytes(now, &mut buf);
}

// ----------------------------------------------------------------------------------- client

pub fn client_config(version: ProtocolVersion) -> ClientConfig {
    ClientConfig::new(version, "c1")
}

pub fn success_connack() -> ConnAck {
    ConnAck::default()
}

/// A client that sent CONNECT and got `connack`; events and transmit drained.
pub fn connected_client(config: ClientConfig, connack: ConnAck, now: Instant) -> Client {
    let version = config.version;
    let mut client = Client::new(Arc::new(config), now).expect("config encodes");
    client.connect(now);
    let sent = client_tx(&mut client, now, version);
    assert!(matches!(sent.as_slice(), [Packet::Connect(_)]), "{sent:?}");
    client_feed(
        &mut client,
        now,
        version,
        Packet::ConnAck(Box::new(connack)),
    );
    assert!(client.is_connected(), "{:?}", client_events(&mut client));
    let events = client_events(&mut client);
    assert!(
        matches!(events.as_slice(), [Event::Connected(_)]),
        "{events:?}"
    );
    client
}

pub fn publish(topic: &str, qos: QoS, id: Option<u16>) -> Publish {
    Publish {
        qos,
        topic: ByteStr::from(topic.to_owned()),
        packet_id: id.map(pid),
        payload: bytes::Bytes::from_static(b"hello"),
        ..Publish::default()
    }
}

pub fn ack(id: u16) -> PubAck {
    PubAck::new(pid(id))
}

pub fn ack_with(id: u16, code: ReasonCode) -> PubAck {
    PubAck {
        reason_code: code,
        ..PubAck::new(pid(id))
    }
}

// ----------------------------------------------------------------------------------- server

pub fn connect_packet(version: ProtocolVersion, id: &str) -> Connect {
    Connect::new(version, id.to_owned())
}

/// A server connection fed `connect`, with the Connect event checked and answered by
/// `accept(existing)`. Returns the connection and the CONNACK; anything sent with the CONNACK
/// (resent or queued messages) is discarded, see [`accepted_server_all`].
pub fn accepted_server(
    config: ServerConfig,
    connect: Connect,
    existing: Option<Session>,
    now: Instant,
) -> (ServerConnection, ConnAck) {
    let (server, sent) = accepted_server_all(config, connect, existing, now);
    let Some(Packet::ConnAck(connack)) = sent.first().cloned() else {
        panic!("no CONNACK: {sent:?}");
    };
    (server, *connack)
}

/// Like [`accepted_server`], returning everything sent after accept, CONNACK first.
pub fn accepted_server_all(
    config: ServerConfig,
    connect: Connect,
    existing: Option<Session>,
    now: Instant,
) -> (ServerConnection, Vec<Packet>) {
    let mut server = ServerConnection::new(Arc::new(config), now);
    server_feed(&mut server, now, Packet::Connect(Box::new(connect)));
    let events = server_events(&mut server);
    assert!(
        matches!(events.as_slice(), [ServerEvent::Connect { .. }]),
        "{events:?}"
    );
    server.accept(now, existing);
    let sent = server_tx(&mut server, now);
    assert!(matches!(sent.first(), Some(Packet::ConnAck(_))), "{sent:?}");
    assert!(server.is_connected());
    (server, sent)
}

/// The reason of the single Closed event among `events`, if any.
pub fn server_closed(events: &[ServerEvent]) -> Option<midge_proto::server::ServerCloseReason> {
    events.iter().find_map(|e| match e {
        ServerEvent::Closed { reason, .. } => Some(*reason),
        _ => None,
    })
}

pub fn client_closed(events: &[Event]) -> Option<midge_proto::client::CloseReason> {
    events.iter().find_map(|e| match e {
        Event::Closed(reason) => Some(*reason),
        _ => None,
    })
}

pub fn qos_of(n: u8) -> QoS {
    QoS::from_u8(n).expect("0, 1 or 2")
}

/// Feeds an UNSUBSCRIBE of `filters` and checks that it is reported.
pub fn server_unsubscribe(server: &mut ServerConnection, now: Instant, id: u16, filters: &[&str]) {
    let unsubscribe = midge_codec::Unsubscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|f| ByteStr::from(f.to_string()))
            .collect(),
        properties: Default::default(),
    };
    server_feed(server, now, Packet::Unsubscribe(unsubscribe));
    let events = server_events(server);
    assert!(
        matches!(events.as_slice(), [ServerEvent::Unsubscribe { packet_id, .. }] if packet_id.get() == id),
        "{events:?}"
    );
}
