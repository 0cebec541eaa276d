//! A bare MQTT client for load generation: CONNECT, SUBSCRIBE and pre-encoded PUBLISH
//! templates over one TCP stream, with packets from `midge-codec`.
//!
//! The bench speaks the protocol directly instead of through a full client: it needs no
//! retransmission or session state (every session is clean and never resumed), and copying a
//! template and patching a few bytes is the cheapest way to produce a message, which keeps the
//! load generator faster than the brokers it measures.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use midge_codec::{
    ByteStr, Connect, Packet, PacketId, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions, MAX_PACKET_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use super::track::{Header, HEADER_LEN};

/// How every bench client connects.
#[derive(Clone, Debug)]
pub(crate) struct ConnectOptions {
    pub(crate) addr: SocketAddr,
    pub(crate) version: ProtocolVersion,
    pub(crate) keep_alive: u16,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// Limit for the TCP connect plus the CONNACK.
    pub(crate) timeout: Duration,
}

/// A connected client.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    pub(crate) version: ProtocolVersion,
    /// The server's Receive Maximum (5.0), if it announced one.
    pub(crate) receive_maximum: Option<u16>,
}

/// Why a client could not be set up.
#[derive(Debug)]
pub(crate) enum SetupError {
    Io(io::Error),
    Timeout,
    Refused(String),
    Protocol(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                write!(f, "{e} (is a broker listening there?)")
            }
            Self::Io(e) if e.raw_os_error() == Some(24) => {
                write!(f, "{e} (raise the open-file limit: ulimit -n)")
            }
            Self::Io(e) => write!(f, "{e}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Refused(what) | Self::Protocol(what) => f.write_str(what),
        }
    }
}

impl From<io::Error> for SetupError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl Conn {
    /// Connects, sends CONNECT with a clean session and waits for a successful CONNACK.
    pub(crate) async fn connect(
        opts: &ConnectOptions,
        client_id: &str,
    ) -> Result<Self, SetupError> {
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let stream = match timeout_at(deadline, TcpStream::connect(opts.addr)).await {
            Ok(s) => s?,
            Err(_) => return Err(SetupError::Timeout),
        };
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(4096),
            version: opts.version,
            receive_maximum: None,
        };
        let mut connect = Connect::new(opts.version, client_id.to_owned());
        connect.keep_alive = opts.keep_alive;
        connect.username = opts.username.clone().map(ByteStr::from);
        connect.password = opts.password.clone().map(Bytes::from);
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        match timeout_at(deadline, conn.read_packet()).await {
            Err(_) => Err(SetupError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Packet::ConnAck(ack))) if ack.reason_code.is_success() => {
                conn.receive_maximum = ack.properties.receive_maximum.map(|r| r.get());
                Ok(conn)
            }
            Ok(Ok(Packet::ConnAck(ack))) => Err(SetupError::Refused(format!(
                "CONNACK refused the connection: {:?}",
                ack.reason_code
            ))),
            Ok(Ok(other)) => Err(SetupError::Protocol(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Encodes and writes one packet.
    pub(crate) async fn send(&mut self, packet: &Packet) -> Result<(), SetupError> {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out).map_err(|e| {
            SetupError::Protocol(format!("cannot encode {:?}: {e}", packet.packet_type()))
        })?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Reads the next packet.
    pub(crate) async fn read_packet(&mut self) -> Result<Packet, SetupError> {
        loop {
            if let Some(p) =
                Packet::decode(&mut self.buf, self.version, MAX_PACKET_SIZE).map_err(|e| {
                    SetupError::Protocol(format!("undecodable packet from the broker: {e}"))
                })?
            {
                return Ok(p);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(SetupError::Protocol(
                    "the broker closed the connection".into(),
                ));
            }
        }
    }

    /// Subscribes to `filters` in one SUBSCRIBE and checks every SUBACK code.
    pub(crate) async fn subscribe(
        &mut self,
        filters: &[String],
        qos: QoS,
        deadline: Instant,
    ) -> Result<(), SetupError> {
        let sub = Subscribe {
            packet_id: PacketId::MIN,
            filters: filters
                .iter()
                .map(|f| (ByteStr::from(f.clone()), SubscriptionOptions::qos(qos)))
                .collect(),
            properties: Default::default(),
        };
        self.send(&Packet::Subscribe(sub)).await?;
        loop {
            match timeout_at(deadline.into(), self.read_packet()).await {
                Err(_) => return Err(SetupError::Timeout),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Packet::SubAck(ack))) => {
                    return match ack.reason_codes.iter().position(|c| c.0 >= 0x80) {
                        None if ack.reason_codes.len() == filters.len() => Ok(()),
                        None => Err(SetupError::Protocol(format!(
                            "SUBACK has {} codes for {} filters [MQTT-3.9.3-1]",
                            ack.reason_codes.len(),
                            filters.len()
                        ))),
                        Some(i) => Err(SetupError::Refused(format!(
                            "SUBACK refused {:?}: {:?}",
                            filters.get(i).map_or("?", String::as_str),
                            ack.reason_codes.get(i)
                        ))),
                    };
                }
                // Retained messages may arrive before the SUBACK; they are not part of the run.
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// A PUBLISH encoded once, copied for each message with its header and packet id patched in.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    bytes: Vec<u8>,
    /// Where the packet identifier is (QoS 1 and 2).
    id_at: Option<usize>,
    /// Where the payload starts.
    payload_at: usize,
}

impl Template {
    /// Encodes a PUBLISH of `topic` with a payload of `payload_len` zero bytes.
    pub(crate) fn new(
        version: ProtocolVersion,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload_len: usize,
    ) -> Result<Self, String> {
        let publish = Publish {
            qos,
            retain,
            topic: ByteStr::from(topic.to_owned()),
            packet_id: (qos != QoS::AtMostOnce).then_some(PacketId::MIN),
            payload: Bytes::from(vec![0u8; payload_len]),
            ..Publish::default()
        };
        let mut out = BytesMut::new();
        Packet::Publish(publish)
            .encode(version, &mut out)
            .map_err(|e| format!("cannot encode a PUBLISH to {topic:?}: {e}"))?;
        let payload_at = out.len() - payload_len;
        // The packet identifier ends the variable header, before the 5.0 properties (empty
        // here: one length byte) [MQTT-3.3.2].
        let props = usize::from(version == ProtocolVersion::V5);
        let id_at = (qos != QoS::AtMostOnce).then(|| payload_at - props - 2);
        Ok(Self {
            bytes: out.to_vec(),
            id_at,
            payload_at,
        })
    }

    /// Appends one message to `out`.
    pub(crate) fn put(&self, out: &mut BytesMut, id: Option<PacketId>, header: &Header) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let packet = &mut out[start..];
        if let (Some(at), Some(id)) = (self.id_at, id) {
            packet[at..at + 2].copy_from_slice(&id.get().to_be_bytes());
        }
        if packet.len() - self.payload_at >= HEADER_LEN {
            header.write(&mut packet[self.payload_at..]);
        }
    }

    /// Encoded size of one message.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// PINGREQ (§3.12).
pub(crate) const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// When a client that last wrote at `last_write` sends a PINGREQ: after half the Keep Alive,
/// well within the 1.5 times the server allows [MQTT-3.1.2-24].
pub(crate) fn ping_time(last_write: Instant, keep_alive: u16) -> Option<Instant> {
    (keep_alive > 0).then(|| last_write + Duration::from_millis(u64::from(keep_alive) * 500))
}

pub(crate) fn put_ack(out: &mut BytesMut, first: u8, id: PacketId) {
    // PUBACK/PUBREC/PUBREL/PUBCOMP with Remaining Length 2: success in every version (5.0
    // §3.4.2.1 allows leaving the reason code out).
    out.put_slice(&[first, 0x02]);
    out.put_u16(id.get());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(version: ProtocolVersion, bytes: &mut BytesMut) -> Publish {
        match Packet::decode(bytes, version, MAX_PACKET_SIZE) {
            Ok(Some(Packet::Publish(p))) => p,
            other => panic!("not a PUBLISH: {other:?}"),
        }
    }

    #[test]
    fn template_patches_id_and_header_in_every_version() {
        let header = Header {
            run: 1,
            publisher: 2,
            stream: 3,
            seq: 4,
            sent_ns: 5,
        };
        for version in [
            ProtocolVersion::V3_1_1,
            ProtocolVersion::V5,
            ProtocolVersion::V3_1,
        ] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let t = Template::new(version, "bench/1", qos, true, 64).expect("encodes");
                let mut out = BytesMut::new();
                let id = PacketId::new(0xBEEF);
                t.put(&mut out, id, &header);
                t.put(&mut out, PacketId::new(2), &header);
                assert_eq!(out.len(), 2 * t.len());
                let p = decode(version, &mut out);
                assert_eq!(p.topic.as_str(), "bench/1");
                assert_eq!(p.qos, qos);
                assert!(p.retain);
                assert_eq!(p.payload.len(), 64);
                assert_eq!(Header::read(&p.payload), Some(header));
                let expected_id = if qos == QoS::AtMostOnce { None } else { id };
                assert_eq!(p.packet_id, expected_id, "{version:?} {qos:?}");
                let second = decode(version, &mut out);
                assert_eq!(second.packet_id.map(PacketId::get), expected_id.map(|_| 2));
            }
        }
    }

    #[test]
    fn small_payloads_carry_no_header() {
        let t = Template::new(ProtocolVersion::V3_1_1, "t", QoS::AtMostOnce, false, 5)
            .expect("encodes");
        let mut out = BytesMut::new();
        let header = Header {
            run: 1,
            publisher: 0,
            stream: 0,
            seq: 0,
            sent_ns: 0,
        };
        t.put(&mut out, None, &header);
        let p = decode(ProtocolVersion::V3_1_1, &mut out);
        assert_eq!(&p.payload[..], &[0u8; 5]);
    }

    #[test]
    fn pings_at_half_the_keep_alive() {
        let t = Instant::now();
        assert_eq!(ping_time(t, 0), None);
        assert_eq!(ping_time(t, 1), Some(t + Duration::from_millis(500)));
        assert_eq!(ping_time(t, 60), Some(t + Duration::from_secs(30)));
    }
}
