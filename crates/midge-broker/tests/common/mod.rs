//! A raw-packet MQTT test client over a real TCP socket, built on midge-codec, and helpers to
//! start an in-process broker on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::large_enum_variant)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_codec::{
    ConnAck, Connect, Disconnect, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscriptionId, SubscriptionOptions, Unsubscribe,
    MAX_PACKET_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const V5: ProtocolVersion = ProtocolVersion::V5;
pub const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
pub const WAIT: Duration = Duration::from_secs(3);

/// Short timeouts, no `$SYS`, so that tests run fast.
pub fn test_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.limits.connect_timeout_ms = 500;
    config.limits.close_timeout_ms = 500;
    config.sys.interval_secs = 0;
    config
}

pub async fn start(config: BrokerConfig) -> BrokerHandle {
    Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("broker starts")
}

#[derive(Debug)]
pub enum Recv {
    Packet(Packet),
    Eof,
    Timeout,
    Error(String),
}

pub struct TestClient {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
    next_id: u16,
    aliases: HashMap<u16, midge_codec::ByteStr>,
}

pub fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("non-zero")
}

impl TestClient {
    pub async fn raw(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: BytesMut::new(),
            version,
            next_id: 0,
            aliases: HashMap::new(),
        }
    }

    /// Connects with a clean start and the given client id; asserts success.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> Self {
        let (client, ack) =
            Self::connect_with(addr, Connect::new(version, client_id.to_owned())).await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "CONNACK {ack:?}");
        client
    }

    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let mut client = Self::raw(addr, connect.protocol).await;
        client.send(Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Recv::Packet(Packet::ConnAck(ack)) => (client, *ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out).expect("encodes");
        self.stream.write_all(&out).await.expect("writes");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Recv {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match Packet::decode(&mut self.buf, self.version, MAX_PACKET_SIZE) {
                Ok(Some(packet)) => return Recv::Packet(packet),
                Ok(None) => {}
                Err(err) => return Recv::Error(format!("{err:?}")),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Recv::Timeout,
                Ok(Ok(0)) => return Recv::Eof,
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Recv::Error(err.to_string()),
            }
        }
    }

    pub async fn recv(&mut self) -> Recv {
        self.recv_within(WAIT).await
    }

    pub async fn recv_packet(&mut self) -> Packet {
        match self.recv().await {
            Recv::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    fn next_id(&mut self) -> PacketId {
        self.next_id = self.next_id % 60000 + 1;
        pid(self.next_id)
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_opts(&[(filter, SubscriptionOptions::qos(qos))], None)
            .await
    }

    pub async fn subscribe_opts(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        id: Option<u32>,
    ) -> SubAck {
        let packet_id = self.next_id();
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

    pub async fn unsubscribe(&mut self, filter: &str) {
        let packet_id = self.next_id();
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
            packet_id: (qos != QoS::AtMostOnce).then(|| self.next_id()),
            payload: Bytes::from(payload.to_owned()),
            ..Publish::default()
        }
    }

    /// Publishes and completes the QoS flow; returns the acknowledgement's reason code.
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

    /// Receives the next PUBLISH (topic alias resolved) and acknowledges it.
    pub async fn recv_publish(&mut self) -> Publish {
        self.try_recv_publish(WAIT)
            .await
            .unwrap_or_else(|r| panic!("expected PUBLISH, got {r:?}"))
    }

    pub async fn try_recv_publish(&mut self, wait: Duration) -> Result<Publish, Recv> {
        match self.recv_within(wait).await {
            Recv::Packet(Packet::Publish(mut publish)) => {
                if let Some(alias) = publish.properties.topic_alias {
                    if publish.topic.is_empty() {
                        publish.topic = self
                            .aliases
                            .get(&alias.get())
                            .cloned()
                            .expect("known alias");
                    } else {
                        // A copy: the topic shares this client's read buffer.
                        let topic = publish.topic.as_str().to_owned().into();
                        self.aliases.insert(alias.get(), topic);
                    }
                }
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        self.send(Packet::PubAck(PubAck::new(id))).await
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        self.send(Packet::PubRec(PubAck::new(id))).await;
                        match self.recv_packet().await {
                            Packet::PubRel(rel) if rel.packet_id == id => {}
                            other => panic!("expected PUBREL, got {other:?}"),
                        }
                        self.send(Packet::PubComp(PubAck::new(id))).await;
                    }
                    _ => {}
                }
                Ok(publish)
            }
            other => Err(other),
        }
    }

    /// Asserts no packet arrives within `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        match self.recv_within(Duration::from_millis(ms)).await {
            Recv::Timeout => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    /// Reads until the broker closes the connection; returns the packets received before EOF.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        loop {
            match self.recv().await {
                Recv::Packet(p) => packets.push(p),
                Recv::Eof => return packets,
                Recv::Error(e) if e.contains("reset") => return packets,
                other => panic!("expected the broker to close, got {other:?} after {packets:?}"),
            }
        }
    }

    /// Asserts the broker sends DISCONNECT with `code` and closes.
    pub async fn expect_disconnect(&mut self, code: ReasonCode) {
        let packets = self.until_closed().await;
        assert!(
            packets
                .iter()
                .any(|p| matches!(p, Packet::Disconnect(d) if d.reason_code == code)),
            "expected DISCONNECT {code:?}, got {packets:?}"
        );
    }

    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Disconnect::default())).await;
        let _ = self.stream.shutdown().await;
    }
}

/// A 5.0 CONNECT with Receive Maximum 1, keep-alive off and a session that outlives it.
pub fn receive_maximum_1(id: &str, clean: bool) -> Connect {
    let mut c = Connect::new(V5, id.to_owned());
    c.clean_start = clean;
    c.keep_alive = 0;
    c.properties.receive_maximum = std::num::NonZeroU16::new(1);
    c.properties.session_expiry_interval = Some(600);
    c
}

/// A subscriber to `topic` that reads nothing, with Receive Maximum 1, made full by two QoS 1
/// messages from `filler`: one in flight, one queued. With `max_queued_messages = 1` and
/// `inbox_capacity = 1`, the next delivery to it waits for room.
pub async fn full_subscriber(
    addr: SocketAddr,
    filler: &mut TestClient,
    id: &str,
    topic: &str,
) -> TestClient {
    let (mut s, _) = TestClient::connect_with(addr, receive_maximum_1(id, true)).await;
    s.subscribe(topic, QoS::AtLeastOnce).await;
    for _ in 0..2 {
        let code = filler.publish(topic, "fill", QoS::AtLeastOnce, false).await;
        assert_eq!(code, ReasonCode::SUCCESS);
    }
    s
}

/// Resident set size of this process, in KiB (Linux).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Asserts the broker still serves: a fresh client connects, subscribes and gets its message.
pub async fn assert_healthy(addr: SocketAddr) {
    let mut c = TestClient::connect(addr, V5, "").await;
    c.subscribe("health/check", QoS::AtLeastOnce).await;
    c.publish("health/check", "ok", QoS::AtLeastOnce, false)
        .await;
    let p = c.recv_publish().await;
    assert_eq!(p.payload, Bytes::from_static(b"ok"));
    c.disconnect().await;
}
