//! A bare MQTT client for load generation: CONNECT, SUBSCRIBE and pre-encoded PUBLISH
//! templates over one stream (TCP, TLS, WebSocket over either, or a Unix socket), with
//! packets from `midge-codec`.
//!
//! The bench speaks the protocol directly instead of through a full client: it needs no
//! retransmission or session state of its own (a persistent subscriber's session lives in the
//! broker, which sends again what it had in flight, and the bench acknowledges it as any
//! delivery), and copying a template and patching a few bytes is the cheapest way to produce a
//! message, which keeps the load generator faster than the brokers it measures.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use midge_codec::{
    ByteStr, Connect, Packet, PacketId, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions, MAX_PACKET_SIZE,
};
use midge_transport::tls::rustls::pki_types::ServerName;
use midge_transport::tls::tokio_rustls::{client::TlsStream, TlsConnector};
use midge_transport::ws::WsStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio::time::timeout_at;

use super::track::{Header, HEADER_LEN};

/// Where and over what every bench client connects.
#[derive(Clone)]
pub(crate) enum Dial {
    Tcp(SocketAddr),
    /// TLS with this configuration, verifying the broker's certificate for this name.
    Tls(SocketAddr, TlsConnector, ServerName<'static>),
    /// WebSocket to this URL (which names the Host header and path), over TLS with `wss`.
    Ws(
        SocketAddr,
        String,
        Option<(TlsConnector, ServerName<'static>)>,
    ),
    Unix(PathBuf),
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp {addr}"),
            Self::Tls(addr, _, name) => write!(f, "tls {addr} ({name:?})"),
            Self::Ws(addr, url, _) => write!(f, "websocket {url} at {addr}"),
            Self::Unix(path) => write!(f, "unix {}", path.display()),
        }
    }
}

/// Largest WebSocket message read: a whole largest packet and the start of the next.
const MAX_WS_MESSAGE: usize = 2 * MAX_PACKET_SIZE as usize;

impl Dial {
    /// Opens the stream: connection, TLS handshake and WebSocket upgrade.
    async fn open(&self) -> Result<Stream, SetupError> {
        Ok(match self {
            Self::Tcp(addr) => Stream::Tcp(tcp(*addr).await?),
            Self::Tls(addr, connector, name) => Stream::Tls(Box::new(
                connector.connect(name.clone(), tcp(*addr).await?).await?,
            )),
            Self::Ws(addr, url, None) => {
                let ws = midge_transport::ws::connect(tcp(*addr).await?, url, MAX_WS_MESSAGE)
                    .await
                    .map_err(|e| SetupError::Protocol(e.to_string()))?;
                Stream::Ws(Box::new(ws))
            }
            Self::Ws(addr, url, Some((connector, name))) => {
                let tls = connector.connect(name.clone(), tcp(*addr).await?).await?;
                let ws = midge_transport::ws::connect(tls, url, MAX_WS_MESSAGE)
                    .await
                    .map_err(|e| SetupError::Protocol(e.to_string()))?;
                Stream::Wss(Box::new(ws))
            }
            #[cfg(unix)]
            Self::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
            #[cfg(not(unix))]
            Self::Unix(_) => {
                return Err(SetupError::Protocol(
                    "Unix sockets need a Unix system".into(),
                ))
            }
        })
    }
}

async fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One client's stream. An enum rather than a boxed trait object, so that plain TCP costs
/// what it did before the other transports came.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WsStream<TcpStream>>),
    Wss(Box<WsStream<TlsStream<TcpStream>>>),
    #[cfg(unix)]
    Unix(UnixStream),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Tls($s) => $e,
            Stream::Ws($s) => $e,
            Stream::Wss($s) => $e,
            #[cfg(unix)]
            Stream::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

fn would_block<T>() -> io::Result<T> {
    Err(io::ErrorKind::WouldBlock.into())
}

impl Stream {
    /// Writes all of `buf` and flushes it: TLS and WebSocket streams hold what is written
    /// until they are flushed (for TCP, flushing does nothing).
    pub(crate) async fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf).await?;
        self.flush().await
    }

    /// Reads what has arrived, without waiting: `WouldBlock` if nothing has. For held
    /// connections that many are polled in turn, without a task each.
    pub(crate) fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_read(buf),
            #[cfg(unix)]
            Self::Unix(s) => s.try_read(buf),
            other => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut buf = ReadBuf::new(buf);
                match Pin::new(other).poll_read(&mut cx, &mut buf) {
                    Poll::Ready(Ok(())) => Ok(buf.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => would_block(),
                }
            }
        }
    }

    /// Writes what fits now, without waiting (a TLS or WebSocket stream takes all of a small
    /// packet, and sends it as far as the socket lets it). For held connections.
    pub(crate) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write(buf),
            #[cfg(unix)]
            Self::Unix(s) => s.try_write(buf),
            other => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut pinned = Pin::new(other);
                let written = match pinned.as_mut().poll_write(&mut cx, buf) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => return would_block(),
                };
                // What does not go out now goes with the next write or flush.
                if let Poll::Ready(Err(e)) = pinned.poll_flush(&mut cx) {
                    return Err(e);
                }
                Ok(written)
            }
        }
    }
}

/// A password: its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Password(pub(crate) String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(hidden)")
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

/// How every bench client connects.
#[derive(Clone, Debug)]
pub(crate) struct ConnectOptions {
    pub(crate) dial: Dial,
    /// The broker as messages name it.
    pub(crate) broker: Arc<str>,
    pub(crate) version: ProtocolVersion,
    pub(crate) keep_alive: u16,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Password>,
    /// Limit for the connection (TLS handshake and WebSocket upgrade included) plus the
    /// CONNACK.
    pub(crate) timeout: Duration,
}

/// A connected client.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) buf: BytesMut,
    pub(crate) version: ProtocolVersion,
    /// The server's Receive Maximum (5.0), if it announced one.
    pub(crate) receive_maximum: Option<u16>,
    /// CONNACK said the broker still held the client's session.
    pub(crate) session_present: bool,
}

/// The session a client asks for in CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Session {
    /// Clean Session (3.x) or Clean Start with no Session Expiry Interval (5.0): the session
    /// ends with the connection.
    Clean,
    /// Clean Session 0 (3.x), or Clean Start 0 with a Session Expiry Interval that never
    /// expires (5.0): the broker keeps the session, and queues QoS 1 and 2 messages for it,
    /// while the client is away.
    Persistent,
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
        Self::connect_with(opts, client_id, Session::Clean).await
    }

    /// Connects, sends CONNECT asking for `session` and waits for a successful CONNACK.
    pub(crate) async fn connect_with(
        opts: &ConnectOptions,
        client_id: &str,
        session: Session,
    ) -> Result<Self, SetupError> {
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let stream = match timeout_at(deadline, opts.dial.open()).await {
            Ok(s) => s?,
            Err(_) => return Err(SetupError::Timeout),
        };
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(4096),
            version: opts.version,
            receive_maximum: None,
            session_present: false,
        };
        let mut connect = Connect::new(opts.version, client_id.to_owned());
        if session == Session::Persistent {
            connect.clean_start = false;
            // 0xFFFFFFFF: the session never expires, as a 3.x session without Clean Session
            // does not (5.0 §3.1.2.11.2). Ignored by 3.x encoders.
            if opts.version == ProtocolVersion::V5 {
                connect.properties.session_expiry_interval = Some(u32::MAX);
            }
        }
        connect.keep_alive = opts.keep_alive;
        connect.username = opts.username.clone().map(ByteStr::from);
        connect.password = opts.password.clone().map(|p| Bytes::from(p.0));
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        match timeout_at(deadline, conn.read_packet()).await {
            Err(_) => Err(SetupError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Packet::ConnAck(ack))) if ack.reason_code.is_success() => {
                conn.receive_maximum = ack.properties.receive_maximum.map(|r| r.get());
                conn.session_present = ack.session_present;
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
        self.stream.send(&out).await?;
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

    /// Subscribes to `filters` in one SUBSCRIBE and checks every SUBACK code. What arrives
    /// before the SUBACK (a resumed session's queued messages, above all) stays for the reader
    /// of the connection: a QoS 1 or 2 message read here and dropped would never be
    /// acknowledged.
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
        let mut early = BytesMut::new();
        loop {
            match timeout_at(deadline.into(), self.read_packet()).await {
                Err(_) => return Err(SetupError::Timeout),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Packet::SubAck(ack))) => {
                    if !early.is_empty() {
                        early.extend_from_slice(&self.buf);
                        self.buf = early;
                    }
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
                // Encoded again as it came (decoding dropped its bytes), ahead of what follows.
                Ok(Ok(other)) => other.encode(self.version, &mut early).map_err(|e| {
                    SetupError::Protocol(format!(
                        "cannot keep a {:?} that came before the SUBACK: {e}",
                        other.packet_type()
                    ))
                })?,
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

#[cfg(test)]
mod password_tests {
    use super::Password;

    #[test]
    fn debug_never_shows_a_password() {
        let password: Password = "s3cret".parse().expect("any text");
        assert_eq!(format!("{password:?}"), "(hidden)");
        assert_eq!(password.0, "s3cret");
    }
}
