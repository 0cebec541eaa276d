//! The real broker core on a virtual clock, driven by scripted clients that speak raw packets.
//!
//! [`VirtualBroker`] runs `midge_broker::core` (the broker without its runtime) with no
//! sockets and no sleeping: each client is a pair of byte buffers, and time moves only when a
//! test calls [`VirtualBroker::advance`], which fires every deadline on the way in time order.
//! A test of a session expiring after an hour takes microseconds, and does the same thing on
//! every run.
//!
//! ```
//! use std::time::Duration;
//!
//! use midge_broker::BrokerConfig;
//! use midge_codec::{Connect, ProtocolVersion, QoS};
//! use midge_testkit::broker::VirtualBroker;
//!
//! let mut broker = VirtualBroker::new(BrokerConfig::default());
//! let mut connect = Connect::new(ProtocolVersion::V5, "device");
//! connect.clean_start = false;
//! connect.properties.session_expiry_interval = Some(60);
//! let (device, ack) = broker.connect(connect.clone());
//! assert!(!ack.session_present);
//! broker.disconnect(device);
//! broker.advance(Duration::from_secs(59));
//! let (device, ack) = broker.connect(connect.clone());
//! assert!(ack.session_present, "within its expiry");
//! broker.disconnect(device);
//! broker.advance(Duration::from_secs(61));
//! let (_device, ack) = broker.connect(connect);
//! assert!(!ack.session_present, "expired");
//! ```

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_broker::core::{Connection, Core};
use midge_broker::{AllowAll, BrokerConfig, Hooks, MemoryStore, Standalone, Store};
use midge_codec::{
    ConnAck, Connect, Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};

use crate::raw::{acknowledgement, PacketIds};

/// A client of a [`VirtualBroker`], by the order it connected in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(usize);

/// One scripted client: its connection's broker side and the bytes in each direction.
#[derive(Debug)]
struct Client {
    version: ProtocolVersion,
    /// `None` once the broker side is closed and dropped.
    connection: Option<Connection>,
    /// Sent by the client, not yet taken by the broker.
    to_broker: BytesMut,
    /// Sent by the broker, not yet read by the client.
    from_broker: BytesMut,
    /// Packets the client has decoded and not yet handed to the test.
    received: VecDeque<Packet>,
    packet_ids: PacketIds,
}

/// The broker core with scripted clients on a virtual clock; see the [module
/// documentation](self).
#[derive(Debug)]
pub struct VirtualBroker {
    core: Arc<Core>,
    now: Instant,
    clients: Vec<Client>,
}

/// Rounds of [`VirtualBroker::settle`] after which a broker that still makes progress is
/// taken to be looping.
const MAX_SETTLE_ROUNDS: usize = 10_000;

impl VirtualBroker {
    /// A broker with `config`, letting everyone in, on an in-memory store.
    pub fn new(config: BrokerConfig) -> Self {
        Self::with(config, Arc::new(AllowAll), Arc::new(MemoryStore::new()))
    }

    /// A broker with `config`, `hooks` and `store`.
    ///
    /// # Panics
    /// If `config` is invalid.
    pub fn with(config: BrokerConfig, hooks: Arc<dyn Hooks>, store: Arc<dyn Store>) -> Self {
        let now = Instant::now();
        let core = Core::new(config, hooks, store, Arc::new(Standalone), now)
            .expect("a valid configuration");
        Self {
            core,
            now,
            clients: Vec::new(),
        }
    }

    /// The broker core, for its counters ([`Core::stats`]) and deadlines.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Opens a connection of a client speaking `version`, which has sent nothing yet.
    pub fn open(&mut self, version: ProtocolVersion) -> ClientId {
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000 + self.clients.len() as u16));
        self.clients.push(Client {
            version,
            connection: Some(Connection::new(&self.core, peer, self.now)),
            to_broker: BytesMut::new(),
            from_broker: BytesMut::new(),
            received: VecDeque::new(),
            packet_ids: PacketIds::new(),
        });
        ClientId(self.clients.len() - 1)
    }

    /// Connects a client with `connect` and returns the broker's CONNACK.
    ///
    /// # Panics
    /// If the broker answers anything else.
    pub fn connect(&mut self, connect: Connect) -> (ClientId, ConnAck) {
        let client = self.open(connect.protocol);
        self.send(client, Packet::Connect(Box::new(connect)));
        match self.recv(client) {
            Some(Packet::ConnAck(ack)) => (client, *ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends a packet from a client, and lets the broker answer everything it can.
    ///
    /// # Panics
    /// If the packet cannot be encoded for the client's protocol version.
    pub fn send(&mut self, client: ClientId, packet: Packet) {
        let c = &mut self.clients[client.0];
        packet
            .encode(c.version, &mut c.to_broker)
            .expect("an encodable packet");
        self.settle();
    }

    /// Subscribes a client to `filter` and returns the SUBACK's reason code.
    ///
    /// # Panics
    /// If the broker does not answer with a SUBACK.
    pub fn subscribe(&mut self, client: ClientId, filter: &str, qos: QoS) -> ReasonCode {
        let packet_id = self.clients[client.0].packet_ids.allocate();
        let subscribe = Subscribe {
            packet_id,
            filters: vec![(filter.to_owned().into(), SubscriptionOptions::qos(qos))],
            properties: Default::default(),
        };
        self.send(client, Packet::Subscribe(subscribe));
        match self.recv(client) {
            Some(Packet::SubAck(ack)) => ack.reason_codes[0],
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes from a client; a QoS 1 or 2 message gets the next packet identifier. The
    /// acknowledgement, if any, waits in the client's received packets.
    pub fn publish(&mut self, client: ClientId, topic: &str, payload: &str, qos: QoS) {
        let publish = Publish {
            qos,
            topic: topic.to_owned().into(),
            packet_id: (qos != QoS::AtMostOnce)
                .then(|| self.clients[client.0].packet_ids.allocate()),
            payload: payload.as_bytes().to_vec().into(),
            ..Publish::default()
        };
        self.send(client, Packet::Publish(publish));
    }

    /// Sends DISCONNECT 0x00 from a client: its will is discarded [MQTT-3.1.2-10].
    pub fn disconnect(&mut self, client: ClientId) {
        self.send(client, Packet::Disconnect(Disconnect::default()));
    }

    /// The transport of a client breaks, with no DISCONNECT: its will stays [MQTT-3.1.2-8].
    pub fn drop_connection(&mut self, client: ClientId) {
        let now = self.now;
        if let Some(connection) = self.clients[client.0].connection.as_mut() {
            connection.connection_lost(now);
        }
        self.settle();
    }

    /// The next packet the broker sent a client, if any.
    ///
    /// # Panics
    /// If the broker sent bytes that do not decode.
    pub fn recv(&mut self, client: ClientId) -> Option<Packet> {
        let c = &mut self.clients[client.0];
        while let Some(packet) = Packet::decode(&mut c.from_broker, c.version, u32::MAX)
            .expect("the broker sends valid packets")
        {
            c.received.push_back(packet);
        }
        c.received.pop_front()
    }

    /// The next PUBLISH the broker sent a client, skipping other packets; acknowledges it at
    /// QoS 1 (PUBACK) and answers PUBREC for QoS 2, as a client would.
    pub fn recv_publish(&mut self, client: ClientId) -> Option<Publish> {
        loop {
            match self.recv(client)? {
                Packet::Publish(publish) => {
                    if let Some(ack) = acknowledgement(&publish) {
                        self.send(client, ack);
                    }
                    return Some(publish);
                }
                _ => continue,
            }
        }
    }

    /// Whether the broker has closed a client's connection.
    pub fn is_closed(&self, client: ClientId) -> bool {
        self.clients[client.0]
            .connection
            .as_ref()
            .is_none_or(Connection::is_closed)
    }

    /// Moves the clock forward by `by`, firing every deadline of the broker and its
    /// connections on the way, each at its own time and in time order.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            self.settle();
            let next = self
                .clients
                .iter()
                .filter_map(|c| c.connection.as_ref()?.poll_timeout())
                .chain(self.core.poll_timeout())
                .filter(|at| *at <= until)
                .min();
            let Some(at) = next else {
                break;
            };
            self.now = self.now.max(at);
            let now = self.now;
            self.core.handle_timeout(now);
            for c in &mut self.clients {
                if let Some(connection) = c.connection.as_mut() {
                    if connection.poll_timeout().is_some_and(|t| t <= now) {
                        connection.handle_timeout(now);
                    }
                }
            }
        }
        self.now = until;
        self.settle();
    }

    /// Lets the broker do everything it can without time passing: input is handled, wakeups
    /// answered and output moved to the clients, until nothing changes.
    ///
    /// # Panics
    /// If the broker keeps making progress for 10,000 rounds.
    pub fn settle(&mut self) {
        let now = self.now;
        for _ in 0..MAX_SETTLE_ROUNDS {
            let mut progress = false;
            self.core.handle_timeout(now);
            for c in &mut self.clients {
                let Some(connection) = c.connection.as_mut() else {
                    continue;
                };
                connection.handle_wakeup(now);
                let before = c.to_broker.len();
                if !c.to_broker.is_empty() && connection.wants_input() {
                    connection.handle_input(now, &mut c.to_broker);
                }
                progress |= c.to_broker.len() != before;
                let sent = c.from_broker.len();
                while connection.poll_transmit(now, &mut c.from_broker) {}
                progress |= c.from_broker.len() != sent || connection.has_work();
                if connection.is_closed() {
                    c.connection = None;
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
        panic!("the broker did not settle in {MAX_SETTLE_ROUNDS} rounds");
    }
}
