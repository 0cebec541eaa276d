#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
pub mod peers;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge_codec::ReasonCode;
use midge_proto::client::{Client, ClientConfig, Event};
use midge_proto::server::{ServerConfig, ServerConnection, ServerEvent};
use midge_proto::session::{Delivery, Session};
use midge_proto::Message;
use midge_topic::{TopicFilter, TopicName};

/// The client identifier the simulated broker assigns to a client that sends none. Fixed, so
/// that a simulation is reproducible; a real broker's must be unguessable.
pub const ASSIGNED_CLIENT_ID: &str = "testkit-assigned";

/// What travels on one direction of the virtual network.
#[derive(Debug)]
enum Segment {
    Data(Bytes),
    /// The sender closed the transport.
    Close,
}

/// One direction of the virtual network: segments in order, each due after the latency.
#[derive(Debug, Default)]
struct Pipe {
    in_flight: VecDeque<(Instant, Segment)>,
}

impl Pipe {
    fn send(&mut self, at: Instant, segment: Segment) {
        self.in_flight.push_back((at, segment));
    }

    fn next_due(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _)| *at)
    }

    fn take_due(&mut self, now: Instant) -> Option<Segment> {
        if self.next_due()? <= now {
            self.in_flight.pop_front().map(|(_, s)| s)
        } else {
            None
        }
    }
}

/// A client and a server connection on a virtual network and clock, with a router that
/// delivers each published message to the (single) client's matching subscriptions.
#[derive(Debug)]
pub struct Pair {
    /// The virtual clock.
    pub now: Instant,
    /// One-way latency of the network.
    pub latency: Duration,
    /// The client under test.
    pub client: Client,
    /// The server's side of the current connection.
    pub server: Option<ServerConnection>,
    /// Reconnect as soon as the client's connection has closed.
    pub auto_reconnect: bool,
    server_config: Arc<ServerConfig>,
    stored_session: Option<Session>,
    to_server: Pipe,
    to_client: Pipe,
    client_rx: BytesMut,
    server_rx: BytesMut,
    connections: u64,
    /// Every event the client reported, in order.
    pub client_events: Vec<Event>,
    /// Every message the server passed to routing, in order.
    pub routed: Vec<Message>,
    /// Steps taken so far.
    pub steps: u64,
}

impl Pair {
    /// A pair that is not connected yet.
    pub fn new(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Self {
        let now = Instant::now();
        Self {
            now,
            latency: Duration::from_millis(10),
            client: Client::new(client, now).expect("the test's client config encodes"),
            server: None,
            auto_reconnect: true,
            server_config: server,
            stored_session: None,
            to_server: Pipe::default(),
            to_client: Pipe::default(),
            client_rx: BytesMut::new(),
            server_rx: BytesMut::new(),
            connections: 0,
            client_events: Vec::new(),
            routed: Vec::new(),
            steps: 0,
        }
    }

    /// Opens a new transport: a fresh server connection, and CONNECT from the client.
    pub fn connect(&mut self) {
        self.cut_transport();
        self.connections += 1;
        self.server = Some(ServerConnection::new(self.server_config.clone(), self.now));
        self.client.connect(self.now);
    }

    /// Cuts the network: everything in flight is lost, and both ends learn that the transport
    /// closed.
    pub fn cut(&mut self) {
        self.cut_transport();
        self.client.connection_lost();
        self.drain_client_events();
    }

    fn cut_transport(&mut self) {
        self.to_server = Pipe::default();
        self.to_client = Pipe::default();
        self.client_rx.clear();
        self.server_rx.clear();
        if let Some(mut server) = self.server.take() {
            server.connection_lost();
            self.drain_server_events(&mut server);
            if let Some(session) = server.take_session() {
                self.stored_session = Some(session);
            }
        }
    }

    /// Number of connections opened so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Runs one step: delivers what is due, fires due timers, handles events, and transmits.
    /// Then advances the clock to the next instant at which anything is due. Returns `false`
    /// when nothing is pending at all.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        let now = self.now;
        if self.auto_reconnect && self.server.is_none() && !self.client.is_connected() {
            self.connect();
        }
        while let Some(segment) = self.to_server.take_due(now) {
            match (segment, self.server.as_mut()) {
                (Segment::Data(bytes), Some(server)) => {
                    self.server_rx.extend_from_slice(&bytes);
                    server.handle_bytes(now, &mut self.server_rx);
                    self.handle_server_events();
                }
                (Segment::Close, Some(server)) => {
                    server.connection_lost();
                    self.handle_server_events();
                }
                (_, None) => {}
            }
        }
        while let Some(segment) = self.to_client.take_due(now) {
            match segment {
                Segment::Data(bytes) => {
                    self.client_rx.extend_from_slice(&bytes);
                    self.client.handle_bytes(now, &mut self.client_rx);
                }
                Segment::Close => self.client.connection_lost(),
            }
            self.drain_client_events();
        }
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
            self.drain_client_events();
        }
        if let Some(server) = self.server.as_mut() {
            if server.poll_timeout().is_some_and(|t| t <= now) {
                server.handle_timeout(now);
                self.handle_server_events();
            }
        }
        self.transmit();
        self.advance_clock()
    }

    fn transmit(&mut self) {
        let at = self.now + self.latency;
        let mut buf = BytesMut::new();
        while self.client.poll_transmit(self.now, &mut buf) {}
        if !buf.is_empty() {
            self.to_server.send(at, Segment::Data(buf.split().freeze()));
        }
        if let Some(server) = self.server.as_mut() {
            while server.poll_transmit(self.now, &mut buf) {}
            if !buf.is_empty() {
                self.to_client.send(at, Segment::Data(buf.split().freeze()));
            }
            if server.is_closed() {
                // The server flushed its last packets; now it closes the transport.
                self.to_client.send(at, Segment::Close);
                if let Some(session) = server.take_session() {
                    self.stored_session = Some(session);
                }
                self.server = None;
            }
        }
    }

    fn advance_clock(&mut self) -> bool {
        let next = [
            self.to_server.next_due(),
            self.to_client.next_due(),
            self.client.poll_timeout(),
            self.server
                .as_ref()
                .and_then(ServerConnection::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) => {
                self.now = self.now.max(at);
                true
            }
            None => false,
        }
    }

    fn drain_client_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            if matches!(event, Event::Closed(_)) {
                // The client closed the transport (or saw it close): tell the server.
                self.to_server.send(self.now + self.latency, Segment::Close);
            }
            self.client_events.push(event);
        }
    }

    fn handle_server_events(&mut self) {
        if let Some(mut server) = self.server.take() {
            self.drain_server_events(&mut server);
            self.server = Some(server);
        }
    }

    /// The router: the broker's part, reduced to one client.
    fn drain_server_events(&mut self, server: &mut ServerConnection) {
        loop {
            self.answer_server_events(server);
            // Input may have waited for the answers: go on with what the buffer holds, until
            // nothing more can be decoded.
            let before = self.server_rx.len();
            if before == 0 {
                return;
            }
            server.handle_bytes(self.now, &mut self.server_rx);
            if self.server_rx.len() == before {
                return;
            }
        }
    }

    fn answer_server_events(&mut self, server: &mut ServerConnection) {
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Connect { client_id, .. } => {
                    if client_id.is_empty() {
                        server.assign_client_id(ASSIGNED_CLIENT_ID.into());
                    }
                    server.accept(self.now, self.stored_session.take());
                    // Packets that arrived right after CONNECT wait in the buffer.
                    server.handle_bytes(self.now, &mut self.server_rx);
                }
                ServerEvent::Publish { message, packet_id } => {
                    self.routed.push(message.clone());
                    route(server, self.now, message);
                    if let Some(id) = packet_id {
                        server.acknowledge(id, ReasonCode::SUCCESS);
                    }
                }
                ServerEvent::Subscribe {
                    packet_id,
                    requests,
                    ..
                } => {
                    let codes = requests
                        .iter()
                        .map(|r| match r.verdict {
                            Ok(()) => ReasonCode(r.options.qos as u8),
                            Err(code) => code,
                        })
                        .collect();
                    server.subscribe_ack(packet_id, codes);
                }
                ServerEvent::Unsubscribe { packet_id, .. } => {
                    server.unsubscribe_ack(packet_id);
                }
                // Closed, and events added to midge-proto later.
                _ => {}
            }
        }
    }

    fn drain_all(&mut self) {
        self.drain_client_events();
        self.handle_server_events();
    }

    /// Steps until `done` holds or `max_steps` steps have run. Returns whether `done` held.
    pub fn run_until(&mut self, max_steps: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        self.drain_all();
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.step() && !self.auto_reconnect {
                return done(self);
            }
        }
        done(self)
    }

    /// Messages the client's application received, in order.
    pub fn received(&self) -> impl Iterator<Item = &Message> {
        self.client_events.iter().filter_map(|e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
    }
}

/// Delivers `message` to every matching subscription of the connection's session.
fn route(server: &mut ServerConnection, now: Instant, message: Message) {
    let Ok(topic) = TopicName::new(message.topic.as_str()) else {
        return;
    };
    let Some(session) = server.session() else {
        return;
    };
    let matches: Vec<_> = session
        .subscriptions()
        .filter(|(filter, _)| TopicFilter::new(filter.as_str()).is_ok_and(|f| f.matches(&topic)))
        .map(|(_, sub)| (sub.options.qos, sub.id))
        .collect();
    let message = Arc::new(message);
    for (qos, id) in matches {
        let mut delivery = Delivery::new(message.clone(), now);
        delivery.qos = qos.min(message.qos);
        delivery.retain = false;
        delivery.subscription_ids = id.into_iter().collect();
        server.deliver(delivery);
    }
}
