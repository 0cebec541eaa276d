//! A raw MQTT peer for tests: it encodes packets with midge-codec, writes them to a byte
//! stream, and reads and decodes what comes back, with timeouts.
//!
//! [`Peer`] follows no protocol rules of its own. It sends what the test tells it to (packets,
//! or bytes that need not be valid MQTT) and hands back what it receives, so that a test can
//! hold another implementation to the specification packet by packet. It only encodes and
//! decodes, so it plays either end of a connection:
//!
//! - a client against a broker, over TCP ([`Peer::connect`], [`Peer::tcp`]) or over any
//!   stream the broker serves, such as one end of a `tokio::io::duplex` pipe ([`Peer::new`]);
//! - a scripted broker against a client, on the stream the client connected with
//!   ([`Peer::accept_connect`], [`Peer::grant_subscribe`]).
//!
//! It speaks the protocol version it is made with, and decodes a CONNECT by the version the
//! CONNECT names. Every wait is bounded: by the peer's wait ([`WAIT`] unless
//! [`Peer::with_wait`] says otherwise) or by the one a call is given. On tokio's paused
//! clock the waits are virtual time, like the timers of whatever is on the other end.
//!
//! ```
//! use midge_codec::{Connect, Packet, ProtocolVersion, QoS};
//! use midge_testkit::raw::Peer;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let mut client = Peer::new(a, ProtocolVersion::V5);
//! let mut broker = Peer::new(b, ProtocolVersion::V5);
//! let (ack, connect) = tokio::join!(
//!     client.handshake(Connect::new(ProtocolVersion::V5, "device")),
//!     broker.accept_connect(false),
//! );
//! assert!(ack.reason_code.is_success());
//! assert_eq!(connect.client_id, "device");
//!
//! let (suback, subscribe) = tokio::join!(
//!     client.subscribe("sensors/#", QoS::AtLeastOnce),
//!     broker.grant_subscribe(),
//! );
//! assert_eq!(suback.packet_id, subscribe.packet_id);
//!
//! client.disconnect().await;
//! assert!(matches!(broker.until_closed().await[..], [Packet::Disconnect(_)]));
//! # });
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use midge_codec::{
    ByteStr, ConnAck, Connect, DecodeError, Disconnect, Packet, PacketId, ProtocolVersion, PubAck,
    Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionId, SubscriptionOptions, Unsubscribe,
    MAX_PACKET_SIZE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a [`Peer`] waits for what it expects, unless [`Peer::with_wait`] says otherwise.
pub const WAIT: Duration = Duration::from_secs(3);

/// The packet identifier `id`.
///
/// # Panics
///
/// If `id` is zero.
pub fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("a packet identifier is not zero")
}

/// Packet identifiers for one sender: 1, 2, … 65535, then 1 again.
#[derive(Clone, Debug)]
pub struct PacketIds {
    next: u16,
}

impl PacketIds {
    /// Identifiers from 1.
    pub fn new() -> Self {
        Self { next: 1 }
    }

    /// The next identifier.
    pub fn allocate(&mut self) -> PacketId {
        let id = pid(self.next);
        self.next = self.next.checked_add(1).unwrap_or(1);
        id
    }
}

impl Default for PacketIds {
    fn default() -> Self {
        Self::new()
    }
}

/// What a receiver of `publish` answers at once: PUBACK at QoS 1, PUBREC at QoS 2, nothing at
/// QoS 0.
pub fn acknowledgement(publish: &Publish) -> Option<Packet> {
    match (publish.qos, publish.packet_id) {
        (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubAck::new(id))),
        (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(PubAck::new(id))),
        _ => None,
    }
}

/// What [`Peer::recv_within`] found.
#[derive(Debug)]
pub enum Recv {
    /// The next packet.
    Packet(Packet),
    /// The other end closed the stream: end of input.
    Closed,
    /// Reading failed (on TCP, a reset is the usual failure).
    Failed(io::Error),
    /// The bytes received do not decode as a packet of the peer's protocol version. They stay
    /// in the buffer, so every later receive finds the same.
    Invalid(DecodeError),
    /// Nothing came in time.
    Timeout,
}

/// A raw MQTT peer on a byte stream; see the [module documentation](self).
///
/// The stream is any `AsyncRead + AsyncWrite + Unpin`: a `TcpStream` by default, one end of a
/// `tokio::io::duplex` pipe, or anything else a broker serves or a client connects with.
#[derive(Debug)]
pub struct Peer<S = TcpStream> {
    stream: S,
    /// Received, not yet decoded.
    buf: BytesMut,
    version: ProtocolVersion,
    wait: Duration,
    ids: PacketIds,
    /// Topic aliases the other end set, for [`Peer::try_recv_publish`].
    aliases: HashMap<u16, ByteStr>,
}

impl Peer<TcpStream> {
    /// A peer on a new TCP connection to `addr` (with `TCP_NODELAY`), which has sent nothing
    /// yet.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub async fn tcp(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Self::new(stream, version)
    }

    /// A client connected to the broker at `addr` with a CONNECT of `version` and `client_id`
    /// (clean start, the codec's defaults otherwise).
    ///
    /// # Panics
    ///
    /// If the broker does not accept it with CONNACK 0x00.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> Self {
        let (client, ack) =
            Self::connect_with(addr, Connect::new(version, client_id.to_owned())).await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "CONNACK {ack:?}");
        client
    }

    /// A client that sent `connect` to the broker at `addr` over a new TCP connection, in the
    /// CONNECT's protocol version, and the broker's CONNACK, whatever its reason code.
    ///
    /// # Panics
    ///
    /// If the broker answers anything but a CONNACK in time.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let mut client = Self::tcp(addr, connect.protocol).await;
        let ack = client.handshake(connect).await;
        (client, ack)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    /// A peer on `stream`, speaking `version`, waiting [`WAIT`].
    pub fn new(stream: S, version: ProtocolVersion) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            version,
            wait: WAIT,
            ids: PacketIds::new(),
            aliases: HashMap::new(),
        }
    }

    /// The same peer, waiting `wait` for what it expects.
    #[must_use]
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The protocol version it encodes and decodes.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The stream, for what this type does not do.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    // ------------------------------------------------------------------------ bytes out

    /// Sends `packet`.
    ///
    /// # Panics
    ///
    /// If it does not encode in the peer's version, or the stream refuses the bytes.
    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet
            .encode(self.version, &mut out)
            .unwrap_or_else(|e| panic!("encoding {packet:?}: {e:?}"));
        self.stream
            .write_all(&out)
            .await
            .unwrap_or_else(|e| panic!("sending {packet:?}: {e}"));
    }

    /// Sends `bytes` as they are. A failed write is ignored: raw bytes are often what the
    /// other end closes the connection over, and the next receive reports the close.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Shuts down the sending side: the other end reads the end of the stream.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    // ------------------------------------------------------------------------- bytes in

    /// The next packet, or what came instead within `wait`. A `wait` too long to represent
    /// (`Duration::MAX`) waits for ever.
    ///
    /// Cancel-safe: bytes read before a cancellation stay buffered for the next call.
    pub async fn recv_within(&mut self, wait: Duration) -> Recv {
        self.recv_until(Instant::now().checked_add(wait)).await
    }

    /// The next packet, or what came instead within the peer's wait.
    pub async fn recv(&mut self) -> Recv {
        self.recv_within(self.wait).await
    }

    /// The next packet.
    ///
    /// # Panics
    ///
    /// If none comes within the peer's wait.
    pub async fn recv_packet(&mut self) -> Packet {
        match self.recv().await {
            Recv::Packet(packet) => packet,
            other => panic!("expected a packet within {:?}, got {other:?}", self.wait),
        }
    }

    /// The next packet, or `None` if none comes within `wait` because the other end is
    /// silent or has closed the stream.
    ///
    /// # Panics
    ///
    /// If what comes does not decode.
    pub async fn next(&mut self, wait: Duration) -> Option<Packet> {
        match self.recv_within(wait).await {
            Recv::Packet(packet) => Some(packet),
            Recv::Closed | Recv::Failed(_) | Recv::Timeout => None,
            Recv::Invalid(e) => panic!("the other end sent a malformed packet: {e:?}"),
        }
    }

    /// Asserts that nothing arrives within `wait`, and that the stream stays open.
    pub async fn expect_silence(&mut self, wait: Duration) {
        match self.recv_within(wait).await {
            Recv::Timeout => {}
            other => panic!("expected nothing for {wait:?}, got {other:?}"),
        }
    }

    /// Reads until the other end closes the stream (or resets the connection); returns the
    /// packets that came before.
    ///
    /// # Panics
    ///
    /// If it is not closed within the peer's wait.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let deadline = Instant::now().checked_add(self.wait);
        let mut packets = Vec::new();
        loop {
            match self.recv_until(deadline).await {
                Recv::Packet(packet) => packets.push(packet),
                Recv::Closed => return packets,
                Recv::Failed(e) if e.kind() == io::ErrorKind::ConnectionReset => return packets,
                other => panic!(
                    "expected the other end to close within {:?}, got {other:?} after {packets:?}",
                    self.wait
                ),
            }
        }
    }

    /// Asserts that the other end sends DISCONNECT with `code` and closes the stream.
    pub async fn expect_disconnect(&mut self, code: ReasonCode) {
        let packets = self.until_closed().await;
        assert!(
            packets
                .iter()
                .any(|p| matches!(p, Packet::Disconnect(d) if d.reason_code == code)),
            "expected DISCONNECT {code:?}, got {packets:?}"
        );
    }

    /// `None` waits for ever.
    async fn recv_until(&mut self, deadline: Option<Instant>) -> Recv {
        loop {
            match Packet::decode(&mut self.buf, self.version, MAX_PACKET_SIZE) {
                Ok(Some(packet)) => return Recv::Packet(packet),
                Ok(None) => {}
                Err(e) => return Recv::Invalid(e),
            }
            let read = self.stream.read_buf(&mut self.buf);
            let read = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
                    Ok(read) => read,
                    Err(_) => return Recv::Timeout,
                },
                None => read.await,
            };
            match read {
                Ok(0) => return Recv::Closed,
                Ok(_) => {}
                Err(e) => return Recv::Failed(e),
            }
        }
    }

    // ------------------------------------------------------------------- as a client

    /// Sends `connect` and returns the CONNACK, whatever its reason code.
    ///
    /// # Panics
    ///
    /// If anything else comes, or nothing in time.
    pub async fn handshake(&mut self, connect: Connect) -> ConnAck {
        self.send(Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Recv::Packet(Packet::ConnAck(ack)) => *ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Subscribes to `filter` at `qos` and returns the SUBACK.
    ///
    /// # Panics
    ///
    /// If the next packet is not the SUBACK of this SUBSCRIBE.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_opts(&[(filter, SubscriptionOptions::qos(qos))], None)
            .await
    }

    /// Subscribes to `filters` in one SUBSCRIBE, with Subscription Identifier `id` if any, and
    /// returns the SUBACK.
    ///
    /// # Panics
    ///
    /// If the next packet is not the SUBACK of this SUBSCRIBE.
    pub async fn subscribe_opts(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        id: Option<u32>,
    ) -> SubAck {
        let packet_id = self.ids.allocate();
        let mut subscribe = Subscribe {
            packet_id,
            filters: filters
                .iter()
                .map(|(f, o)| ((*f).to_owned().into(), *o))
                .collect(),
            properties: Default::default(),
        };
        subscribe.properties.subscription_identifier = id.and_then(SubscriptionId::new);
        self.send(Packet::Subscribe(subscribe)).await;
        match self.recv_packet().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.packet_id, packet_id);
                ack
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Unsubscribes from `filter`.
    ///
    /// # Panics
    ///
    /// If the next packet is not an UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) {
        let packet_id = self.ids.allocate();
        self.send(Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters: vec![filter.to_owned().into()],
            properties: Default::default(),
        }))
        .await;
        match self.recv_packet().await {
            Packet::UnsubAck(_) => {}
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// A PUBLISH of `payload` to `topic`; at QoS 1 and 2 with the peer's next packet
    /// identifier. Nothing is sent.
    pub fn publish_packet(
        &mut self,
        topic: &str,
        payload: &str,
        qos: QoS,
        retain: bool,
    ) -> Publish {
        Publish {
            qos,
            retain,
            topic: topic.to_owned().into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| self.ids.allocate()),
            payload: Bytes::from(payload.to_owned()),
            ..Publish::default()
        }
    }

    /// Publishes and completes the QoS flow; returns the reason code of the PUBACK or PUBREC
    /// (0x00 at QoS 0).
    ///
    /// # Panics
    ///
    /// As [`Peer::publish_full`].
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &str,
        qos: QoS,
        retain: bool,
    ) -> ReasonCode {
        let publish = self.publish_packet(topic, payload, qos, retain);
        self.publish_full(publish).await
    }

    /// Sends `publish` and completes its QoS flow (PUBACK; or PUBREC, PUBREL, PUBCOMP);
    /// returns the reason code of the PUBACK or PUBREC (0x00 at QoS 0).
    ///
    /// # Panics
    ///
    /// If the next packets are not the acknowledgements of this PUBLISH.
    pub async fn publish_full(&mut self, publish: Publish) -> ReasonCode {
        let qos = publish.qos;
        let id = publish.packet_id;
        self.send(Packet::Publish(publish)).await;
        match (qos, id) {
            (QoS::AtLeastOnce, Some(id)) => match self.recv_packet().await {
                Packet::PubAck(ack) if ack.packet_id == id => ack.reason_code,
                other => panic!("expected PUBACK, got {other:?}"),
            },
            (QoS::ExactlyOnce, Some(id)) => {
                let code = match self.recv_packet().await {
                    Packet::PubRec(ack) if ack.packet_id == id => ack.reason_code,
                    other => panic!("expected PUBREC, got {other:?}"),
                };
                self.send(Packet::PubRel(PubAck::new(id))).await;
                match self.recv_packet().await {
                    Packet::PubComp(ack) if ack.packet_id == id => {}
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
                code
            }
            _ => ReasonCode::SUCCESS,
        }
    }

    /// Receives the next PUBLISH, its topic alias resolved, and completes its QoS flow.
    ///
    /// # Panics
    ///
    /// If the next packet is not a PUBLISH, as [`Peer::try_recv_publish`].
    pub async fn recv_publish(&mut self) -> Publish {
        self.try_recv_publish(self.wait)
            .await
            .unwrap_or_else(|r| panic!("expected PUBLISH, got {r:?}"))
    }

    /// Receives the next packet within `wait`. A PUBLISH gets its topic alias resolved (or
    /// remembered) and its QoS flow completed (PUBACK; or PUBREC, PUBREL, PUBCOMP), and is
    /// returned; anything else is returned as the error.
    ///
    /// # Panics
    ///
    /// If a PUBLISH names an alias that was never set, or a PUBLISH at QoS 2 is not followed
    /// by its PUBREL.
    pub async fn try_recv_publish(&mut self, wait: Duration) -> Result<Publish, Recv> {
        let mut publish = match self.recv_within(wait).await {
            Recv::Packet(Packet::Publish(publish)) => publish,
            other => return Err(other),
        };
        if let Some(alias) = publish.properties.topic_alias {
            if publish.topic.is_empty() {
                publish.topic = self
                    .aliases
                    .get(&alias.get())
                    .cloned()
                    .expect("known alias");
            } else {
                // A copy: the topic shares the read buffer.
                let topic = publish.topic.as_str().to_owned().into();
                self.aliases.insert(alias.get(), topic);
            }
        }
        if let Some(ack) = acknowledgement(&publish) {
            self.send(ack).await;
        }
        if let (QoS::ExactlyOnce, Some(id)) = (publish.qos, publish.packet_id) {
            match self.recv_packet().await {
                Packet::PubRel(rel) if rel.packet_id == id => {}
                other => panic!("expected PUBREL, got {other:?}"),
            }
            self.send(Packet::PubComp(PubAck::new(id))).await;
        }
        Ok(publish)
    }

    /// Sends DISCONNECT 0x00 and shuts down the stream.
    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Disconnect::default())).await;
        self.shutdown().await;
    }

    // ------------------------------------------------------------------- as a broker

    /// Receives a CONNECT and returns it.
    ///
    /// # Panics
    ///
    /// If anything else comes, or nothing in time.
    pub async fn expect_connect(&mut self) -> Connect {
        match self.recv_packet().await {
            Packet::Connect(connect) => *connect,
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }

    /// Receives a CONNECT, answers `connack`, and returns the CONNECT.
    ///
    /// # Panics
    ///
    /// As [`Peer::expect_connect`].
    pub async fn accept_with(&mut self, connack: ConnAck) -> Connect {
        let connect = self.expect_connect().await;
        self.send(Packet::ConnAck(Box::new(connack))).await;
        connect
    }

    /// Receives a CONNECT, accepts it with CONNACK 0x00 and `session_present`, and returns it.
    ///
    /// # Panics
    ///
    /// As [`Peer::expect_connect`].
    pub async fn accept_connect(&mut self, session_present: bool) -> Connect {
        self.accept_with(ConnAck {
            session_present,
            ..ConnAck::default()
        })
        .await
    }

    /// Answers `subscribe` with a SUBACK that grants QoS 1 to each of its filters.
    pub async fn grant(&mut self, subscribe: &Subscribe) {
        self.send(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reason_codes: vec![ReasonCode::GRANTED_QOS_1; subscribe.filters.len()],
            properties: Default::default(),
        }))
        .await;
    }

    /// Receives a SUBSCRIBE, grants it ([`Peer::grant`]), and returns it.
    ///
    /// # Panics
    ///
    /// If anything else comes, or nothing in time.
    pub async fn grant_subscribe(&mut self) -> Subscribe {
        let subscribe = match self.recv_packet().await {
            Packet::Subscribe(subscribe) => subscribe,
            other => panic!("expected SUBSCRIBE, got {other:?}"),
        };
        self.grant(&subscribe).await;
        subscribe
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use tokio::io::DuplexStream;

    use super::*;

    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn pair(version: ProtocolVersion) -> (Peer<DuplexStream>, Peer<DuplexStream>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (Peer::new(a, version), Peer::new(b, version))
    }

    #[test]
    fn packet_ids_run_from_one_and_skip_zero_when_they_wrap() {
        let mut ids = PacketIds::new();
        assert_eq!(ids.allocate(), pid(1));
        assert_eq!(ids.allocate(), pid(2));
        let mut ids = PacketIds { next: u16::MAX };
        assert_eq!(ids.allocate(), pid(u16::MAX));
        assert_eq!(ids.allocate(), pid(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_qos_2_flow_completes_between_two_peers() {
        for version in [V5, ProtocolVersion::V3_1_1] {
            let (mut sender, mut receiver) = pair(version);
            let (code, publish) = tokio::join!(
                sender.publish("a/b", "m", QoS::ExactlyOnce, false),
                receiver.recv_publish(),
            );
            assert_eq!(code, ReasonCode::SUCCESS);
            assert_eq!(
                (publish.topic.as_str(), &publish.payload[..]),
                ("a/b", &b"m"[..])
            );
            assert_eq!(publish.packet_id, Some(pid(1)));
            receiver.expect_silence(Duration::from_secs(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn topic_aliases_are_resolved() {
        let (mut sender, mut receiver) = pair(V5);
        let mut first = sender.publish_packet("long/topic", "1", QoS::AtMostOnce, false);
        first.properties.topic_alias = NonZeroU16::new(3);
        let mut second = sender.publish_packet("", "2", QoS::AtMostOnce, false);
        second.properties.topic_alias = NonZeroU16::new(3);
        sender.send(Packet::Publish(first)).await;
        sender.send(Packet::Publish(second)).await;
        assert_eq!(receiver.recv_publish().await.topic, "long/topic");
        assert_eq!(receiver.recv_publish().await.topic, "long/topic");
    }

    #[tokio::test(start_paused = true)]
    async fn receiving_reports_silence_close_and_malformed_bytes() {
        let (mut a, mut b) = pair(V5);
        let started = Instant::now();
        assert!(matches!(a.recv().await, Recv::Timeout));
        assert_eq!(started.elapsed(), WAIT);
        b.send_raw(&[0xC0, 0x01, 0x00]).await;
        assert!(matches!(a.recv().await, Recv::Invalid(_)));
        let (mut a, b) = pair(V5);
        b.disconnect().await;
        assert!(matches!(
            a.until_closed().await[..],
            [Packet::Disconnect(_)]
        ));
        assert!(matches!(a.recv().await, Recv::Closed));
        assert_eq!(a.next(Duration::from_secs(1)).await, None);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "expected the other end to close")]
    async fn until_closed_fails_when_the_other_end_stays() {
        let (mut a, _b) = pair(V5);
        a.until_closed().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_too_long_to_represent_waits_for_ever() {
        let (mut a, mut b) = pair(V5);
        let waiting = tokio::spawn(async move { a.recv_within(Duration::MAX).await });
        tokio::time::sleep(Duration::from_secs(365 * 24 * 3600)).await;
        assert!(!waiting.is_finished());
        b.send(Packet::PingReq).await;
        assert!(matches!(
            waiting.await.unwrap(),
            Recv::Packet(Packet::PingReq)
        ));
    }
}
