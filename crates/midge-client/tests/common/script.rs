//! A scripted broker on an in-memory network, for tests on tokio's paused clock: the client
//! connects through a [`Connector`] that hands it one end of a `tokio::io::duplex` pipe, and
//! the test plays the broker on the other end, packet by packet, with midge-codec.
//!
//! Everything runs in the test's runtime and no byte passes through the kernel, so tokio
//! advances its paused clock only when the client and the test both wait: a timer fires
//! exactly when it is due, and a test of a 30 s keepalive takes no real time.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use midge_client::codec::{
    ConnAck, Connect, Packet, PacketId, Publish, PublishProperties, SubAck, Subscribe,
    SubscriptionId, MAX_PACKET_SIZE,
};
use midge_client::{ClientBuilder, Connector, ProtocolVersion, QoS, ReasonCode, ReconnectPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::WAIT;

/// What the network does with the client's next connection attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Connect: the test accepts the other end with [`Network::accept`].
    Accept,
    /// Fail at once with `ConnectionRefused`.
    Refuse,
    /// Never complete (a black hole), until the client gives up.
    Hang,
}

struct State {
    mode: Mode,
    /// When each attempt was made, on tokio's clock.
    attempts: Vec<Instant>,
}

/// The in-memory network of one client.
pub struct Network {
    state: Arc<Mutex<State>>,
    accepted: mpsc::UnboundedReceiver<DuplexStream>,
    version: ProtocolVersion,
}

impl Network {
    /// A network in [`Mode::Accept`], and a connector for the client.
    pub fn new(version: ProtocolVersion) -> (Self, Connector) {
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Accept,
            attempts: Vec::new(),
        }));
        let (tx, accepted) = mpsc::unbounded_channel();
        let connector = Connector::from_fn({
            let state = state.clone();
            move || {
                let mode = {
                    let mut state = state.lock().expect("network state");
                    state.attempts.push(Instant::now());
                    state.mode
                };
                let tx = tx.clone();
                async move {
                    match mode {
                        Mode::Accept => {
                            let (client, server) = tokio::io::duplex(256 * 1024);
                            tx.send(server)
                                .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
                            Ok(client)
                        }
                        Mode::Refuse => Err(io::ErrorKind::ConnectionRefused.into()),
                        Mode::Hang => std::future::pending().await,
                    }
                }
            }
        });
        let network = Self {
            state,
            accepted,
            version,
        };
        (network, connector)
    }

    /// A builder for a client on a new network: `version`, client identifier `id`, jitter-free
    /// reconnection after 100 ms doubling up to 1 s.
    pub fn client(version: ProtocolVersion, id: &str) -> (Self, ClientBuilder) {
        let (network, connector) = Self::new(version);
        let builder = ClientBuilder::with_connector(connector)
            .version(version)
            .client_id(id)
            .reconnect(Some(
                ReconnectPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
                    .jitter(false),
            ));
        (network, builder)
    }

    /// What the next attempts get.
    pub fn set(&self, mode: Mode) {
        self.state.lock().expect("network state").mode = mode;
    }

    /// When the client tried to connect, on tokio's clock.
    pub fn attempts(&self) -> Vec<Instant> {
        self.state.lock().expect("network state").attempts.clone()
    }

    /// The broker's end of the next connection; panics if none comes within [`WAIT`].
    pub async fn accept(&mut self) -> Peer {
        let stream = tokio::time::timeout(WAIT, self.accepted.recv())
            .await
            .expect("timed out: the client connects")
            .expect("the connector is alive");
        Peer {
            stream,
            buf: BytesMut::new(),
            version: self.version,
        }
    }

    /// Whether another connection arrives within `wait`.
    pub async fn connects_within(&mut self, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, self.accepted.recv()).await,
            Ok(Some(_))
        )
    }
}

/// What [`Peer::read`] found.
enum Read {
    Packet(Packet),
    /// The client closed the connection.
    Closed,
    /// Nothing came in time.
    Silent,
}

/// The broker's end of one connection.
pub struct Peer {
    stream: DuplexStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Peer {
    /// The broker's end `stream` of a connection made outside a [`Network`].
    pub fn new(stream: DuplexStream, version: ProtocolVersion) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// The next packet, or `None` if none comes within `wait` or the client closes the
    /// connection.
    pub async fn next(&mut self, wait: Duration) -> Option<Packet> {
        match self.read(Instant::now() + wait).await {
            Read::Packet(packet) => Some(packet),
            Read::Closed | Read::Silent => None,
        }
    }

    async fn read(&mut self, deadline: Instant) -> Read {
        loop {
            if let Some(packet) = Packet::decode(&mut self.buf, self.version, MAX_PACKET_SIZE)
                .expect("the client sends well-formed packets")
            {
                return Read::Packet(packet);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Read::Closed,
                Err(_) => return Read::Silent,
            }
        }
    }

    /// The next packet; panics if none comes within [`WAIT`].
    pub async fn expect(&mut self, what: &str) -> Packet {
        self.next(WAIT)
            .await
            .unwrap_or_else(|| panic!("expected {what}, got nothing"))
    }

    /// Reads until the client closes the connection; returns what came before. Panics if it
    /// does not close within [`WAIT`].
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let deadline = Instant::now() + WAIT;
        let mut packets = Vec::new();
        loop {
            match self.read(deadline).await {
                Read::Packet(packet) => packets.push(packet),
                Read::Closed => return packets,
                Read::Silent => panic!("the client did not close; it sent {packets:?}"),
            }
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out).expect("encodable");
        // The client may have closed; the test's next read says so.
        let _ = self.stream.write_all(&out).await;
    }

    /// Reads CONNECT and returns it.
    pub async fn connect(&mut self) -> Connect {
        match self.expect("CONNECT").await {
            Packet::Connect(connect) => *connect,
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }

    /// Reads CONNECT, answers with `connack`, and returns the CONNECT.
    pub async fn accept_with(&mut self, connack: ConnAck) -> Connect {
        let connect = self.connect().await;
        self.send(Packet::ConnAck(Box::new(connack))).await;
        connect
    }

    /// Reads CONNECT and accepts it.
    pub async fn accept_connect(&mut self, session_present: bool) -> Connect {
        self.accept_with(ConnAck {
            session_present,
            ..ConnAck::default()
        })
        .await
    }

    /// Reads a SUBSCRIBE and grants it; returns it.
    pub async fn grant_subscribe(&mut self) -> Subscribe {
        let packet = self.expect("SUBSCRIBE").await;
        let Packet::Subscribe(subscribe) = packet else {
            panic!("expected SUBSCRIBE, got {packet:?}");
        };
        self.send(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reason_codes: vec![ReasonCode(1); subscribe.filters.len()],
            properties: Default::default(),
        }))
        .await;
        subscribe
    }

    /// Sends a QoS 1 PUBLISH.
    pub async fn publish(&mut self, topic: &str, id: u16, payload: &'static str) {
        self.publish_with(topic, id, payload, QoS::AtLeastOnce, &[])
            .await;
    }

    /// Sends a PUBLISH with these Subscription Identifiers.
    pub async fn publish_with(
        &mut self,
        topic: &str,
        id: u16,
        payload: &'static str,
        qos: QoS,
        subscription_ids: &[u32],
    ) {
        let mut properties = PublishProperties::default();
        let ids: Vec<_> = subscription_ids
            .iter()
            .map(|&id| SubscriptionId::new(id).expect("a valid identifier"))
            .collect();
        properties.set_subscription_identifiers(&ids);
        self.send(Packet::Publish(Publish {
            qos,
            topic: topic.to_owned().into(),
            packet_id: PacketId::new(id),
            payload: Bytes::from_static(payload.as_bytes()),
            properties,
            ..Publish::default()
        }))
        .await;
    }
}
