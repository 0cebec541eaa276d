//! The driver task: the one owner of the `midge-proto` state machine, the socket and the
//! routing of received messages. Handles talk to it over channels and never block it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use midge_codec::{ByteStr, PacketId, ReasonCode, SubscribeProperties, UnsubscribeProperties};
use midge_proto::client::{CloseReason, Event};
use midge_topic::{TopicFilter, TopicName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::client::{
    AckOnDrop, Command, ConnectionEvent, Delivery, Internal, PublishCommand, State, Subscription,
};
use crate::error::{ClientError, Disconnect};
use crate::message::Message;
use crate::options::{Limits, ReconnectPolicy};

/// Bytes of encoded packets the driver keeps ready for the socket; it asks the state machine
/// for more only below this.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Publishes and acknowledgements taken from the handles per turn of the loop, so that one
/// busy source cannot starve the socket.
const BATCH: usize = 256;
/// How long the final DISCONNECT may take to write.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Setup {
    pub(crate) proto: midge_proto::client::Client,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) limits: Limits,
    pub(crate) reconnect: Option<ReconnectPolicy>,
    pub(crate) connect_timeout: Duration,
    pub(crate) publishes: mpsc::UnboundedReceiver<PublishCommand>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    pub(crate) state: watch::Sender<State>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) seed: u64,
}

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// A subscription stream as the driver sees it.
struct Route {
    id: u64,
    filter: ByteStr,
    tx: mpsc::UnboundedSender<Delivery>,
    qos0_buffered: Arc<AtomicU64>,
}

struct PendingSubscribe {
    reply: Reply<(ReasonCode, Subscription)>,
    subscription: Subscription,
}

/// One TCP connection.
struct Conn {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    rx: BytesMut,
    tx: BytesMut,
}

/// Why the loop is leaving a connection.
enum Ended {
    Mqtt(CloseReason),
    Io(io::ErrorKind),
}

pub(crate) struct Driver {
    proto: midge_proto::client::Client,
    host: String,
    port: u16,
    limits: Limits,
    reconnect: Option<ReconnectPolicy>,
    connect_timeout: Duration,
    publishes: mpsc::UnboundedReceiver<PublishCommand>,
    commands: mpsc::Receiver<Command>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    events: broadcast::Sender<ConnectionEvent>,
    state: watch::Sender<State>,
    dropped: Arc<AtomicU64>,
    rng: u64,
    waiters: HashMap<PacketId, (Reply<ReasonCode>, OwnedSemaphorePermit)>,
    subscribing: HashMap<PacketId, PendingSubscribe>,
    unsubscribing: HashMap<PacketId, (ByteStr, Option<Reply<ReasonCode>>)>,
    routes: Vec<Route>,
    next_route: u64,
    /// QoS 1 and 2 messages that matched no subscription stream, for example those a resumed
    /// session delivers before the application subscribes again: held unacknowledged until a
    /// subscription that matches them is made. Held messages count against our Receive
    /// Maximum, so the broker sends at most that many of them.
    unclaimed: VecDeque<(Instant, Message, Arc<AckOnDrop>)>,
    /// Number of the current connection, counted from 1.
    connection_number: u64,
    /// Failed attempts in a row.
    attempt: u32,
    /// Set when the client is to close: by `disconnect`, or because every handle is gone.
    closing: bool,
    handles_gone: bool,
    disconnect_replies: Vec<oneshot::Sender<()>>,
    /// Set by the state machine's `Closed` event.
    closed: Option<CloseReason>,
}

impl Driver {
    pub(crate) fn new(setup: Setup) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        Self {
            proto: setup.proto,
            host: setup.host,
            port: setup.port,
            limits: setup.limits,
            reconnect: setup.reconnect,
            connect_timeout: setup.connect_timeout,
            publishes: setup.publishes,
            commands: setup.commands,
            internal_tx,
            internal_rx,
            events: setup.events,
            state: setup.state,
            dropped: setup.dropped,
            rng: setup.seed | 1,
            waiters: HashMap::new(),
            subscribing: HashMap::new(),
            unsubscribing: HashMap::new(),
            routes: Vec::new(),
            next_route: 0,
            unclaimed: VecDeque::new(),
            connection_number: 0,
            attempt: 0,
            closing: false,
            handles_gone: false,
            disconnect_replies: Vec::new(),
            closed: None,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: jitter needs spread, not quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn emit(&self, event: ConnectionEvent) {
        let _ = self.events.send(event);
    }

    /// Whether another publish may be handed to the state machine: it holds QoS 0 messages
    /// until they are sent, so they are bounded here (QoS 1 and 2 by the handles' permits).
    fn accepts_publishes(&self) -> bool {
        !self.handles_gone && self.proto.queued_messages() < self.limits.queued_publishes_bound()
    }

    pub(crate) async fn run(mut self) {
        let mut reason = None;
        loop {
            let ended = match self.dial().await {
                Some(Ok(stream)) => self.connection(stream).await,
                Some(Err(ended)) => ended,
                None => break,
            };
            let disconnect = match ended {
                Ended::Io(kind) => Disconnect::Io(kind),
                Ended::Mqtt(reason) => Disconnect::Mqtt(reason),
            };
            if !matches!(disconnect, Disconnect::Mqtt(CloseReason::Disconnected)) {
                self.emit(ConnectionEvent::Disconnected(disconnect));
            }
            reason = Some(disconnect);
            if self.closing {
                break;
            }
            let retry = match (&self.reconnect, ended) {
                (None, _) => None,
                (Some(_), Ended::Mqtt(CloseReason::Rejected(code))) if !transient(code) => None,
                (Some(policy), _) => {
                    let policy = *policy;
                    self.attempt += 1;
                    match policy.max_attempts {
                        Some(max) if self.attempt > max => None,
                        _ => Some(policy.delay(self.attempt - 1, self.random())),
                    }
                }
            };
            let Some(delay) = retry else { break };
            if !matches!(*self.state.borrow(), State::Connecting) {
                self.state.send_replace(State::Connecting);
            }
            self.emit(ConnectionEvent::Reconnecting {
                attempt: self.attempt,
                delay,
            });
            if !self.idle(Instant::now() + delay).await {
                break;
            }
        }
        self.finish(reason);
    }

    /// Opens a TCP connection, serving the handles meanwhile. `None` if the client is to
    /// close instead.
    async fn dial(&mut self) -> Option<Result<TcpStream, Ended>> {
        let host = self.host.clone();
        let connect =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, self.port)));
        tokio::pin!(connect);
        loop {
            if self.closing {
                return None;
            }
            tokio::select! {
                result = &mut connect => {
                    return Some(match result {
                        Ok(Ok(stream)) => Ok(stream),
                        Ok(Err(err)) => Err(Ended::Io(err.kind())),
                        Err(_) => Err(Ended::Io(io::ErrorKind::TimedOut)),
                    });
                }
                command = self.commands.recv(), if !self.handles_gone => self.command(command),
                publish = self.publishes.recv(), if self.accepts_publishes() => {
                    self.publish_batch(publish)
                }
                Some(internal) = self.internal_rx.recv() => self.internal(internal),
            }
            self.drain_events();
        }
    }

    /// Waits until `until`, serving the handles. `false` if the client is to close instead.
    async fn idle(&mut self, until: Instant) -> bool {
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        loop {
            if self.closing {
                return false;
            }
            tokio::select! {
                () = &mut sleep => return true,
                command = self.commands.recv(), if !self.handles_gone => self.command(command),
                publish = self.publishes.recv(), if self.accepts_publishes() => {
                    self.publish_batch(publish)
                }
                Some(internal) = self.internal_rx.recv() => self.internal(internal),
            }
            self.drain_events();
        }
    }

    /// Runs one connection until it ends.
    async fn connection(&mut self, stream: TcpStream) -> Ended {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let mut conn = Conn {
            read,
            write,
            rx: BytesMut::with_capacity(64 * 1024),
            tx: BytesMut::with_capacity(64 * 1024),
        };
        self.closed = None;
        self.connection_number += 1;
        self.proto.connect(std::time::Instant::now());
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed = None;
        let ended = loop {
            self.drain_events();
            self.fill(&mut conn.tx);
            if let Some(reason) = self.closed.take() {
                // Whatever the state machine queued last (DISCONNECT) goes out, briefly.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    let _ = conn.write.write_all(&conn.tx).await;
                    let _ = conn.write.shutdown().await;
                })
                .await;
                break Ended::Mqtt(reason);
            }
            let held = self.unclaimed.front().map(|(until, ..)| *until);
            let deadline = match (self.proto.poll_timeout().map(Instant::from_std), held) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if deadline != armed {
                armed = deadline;
                if let Some(at) = deadline {
                    sleep.as_mut().reset(at);
                }
            }
            if conn.rx.capacity() - conn.rx.len() < 8 * 1024 {
                conn.rx.reserve(64 * 1024);
            }
            tokio::select! {
                biased;
                // Output first, so that a flood of input cannot starve acknowledgements and
                // pings; and no input while a full buffer of output waits, so that a peer that
                // sends without reading cannot make the state machine queue without bound.
                written = conn.write.write(&conn.tx), if !conn.tx.is_empty() => match written {
                    Ok(0) => break Ended::Io(io::ErrorKind::WriteZero),
                    Ok(n) => conn.tx.advance(n),
                    Err(err) => break Ended::Io(err.kind()),
                },
                read = conn.read.read_buf(&mut conn.rx), if conn.tx.len() < WRITE_HIGH_WATER => match read {
                    Ok(0) => break Ended::Io(io::ErrorKind::UnexpectedEof),
                    Ok(_) => self.proto.handle_bytes(std::time::Instant::now(), &mut conn.rx),
                    Err(err) => break Ended::Io(err.kind()),
                },
                Some(internal) = self.internal_rx.recv() => self.internal(internal),
                command = self.commands.recv(), if !self.handles_gone => self.command(command),
                publish = self.publishes.recv(), if self.accepts_publishes() => {
                    self.publish_batch(publish)
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.expire_unclaimed(Instant::now());
                    self.proto.handle_timeout(std::time::Instant::now());
                }
            }
        };
        if let Ended::Io(_) = ended {
            self.proto.connection_lost();
            self.drain_events();
            self.closed = None;
        }
        ended
    }

    /// Moves due packets from the state machine into `tx`, up to the high-water mark.
    fn fill(&mut self, tx: &mut BytesMut) {
        let now = std::time::Instant::now();
        while tx.len() < WRITE_HIGH_WATER && self.proto.poll_transmit(now, tx) {}
        // Sending may free places for QoS 0 publishes and complete refused ones.
        self.drain_events();
    }

    fn publish_batch(&mut self, first: Option<PublishCommand>) {
        let Some(first) = first else {
            self.handles_gone();
            return;
        };
        self.publish(first);
        for _ in 1..BATCH {
            if !self.accepts_publishes() {
                break;
            }
            match self.publishes.try_recv() {
                Ok(command) => self.publish(command),
                Err(_) => break,
            }
        }
    }

    fn publish(&mut self, command: PublishCommand) {
        let PublishCommand {
            message,
            reply,
            permit,
        } = command;
        match self.proto.publish(message) {
            Ok(Some(id)) => {
                self.waiters.insert(id, (reply, permit));
            }
            Ok(None) => {
                let _ = reply.send(Ok(ReasonCode::SUCCESS));
            }
            Err(err) => {
                let _ = reply.send(Err(err.into()));
            }
        }
    }

    fn handles_gone(&mut self) {
        if !self.handles_gone {
            self.handles_gone = true;
            self.start_closing(ReasonCode::SUCCESS);
        }
    }

    fn start_closing(&mut self, reason: ReasonCode) {
        self.closing = true;
        if self.proto.is_connected() {
            self.proto.disconnect(reason);
        } else {
            // Not connected (or CONNECT still unanswered): nothing to say to the broker.
            self.proto.connection_lost();
        }
    }

    fn command(&mut self, command: Option<Command>) {
        match command {
            None => self.handles_gone(),
            Some(Command::Subscribe {
                filter,
                options,
                reply,
            }) => self.subscribe(filter, options, reply),
            Some(Command::Unsubscribe { filter, reply }) => {
                self.routes.retain(|r| r.filter != filter);
                match self
                    .proto
                    .unsubscribe(vec![filter.clone()], UnsubscribeProperties::default())
                {
                    Ok(id) => {
                        self.unsubscribing.insert(id, (filter, Some(reply)));
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                    }
                }
            }
            Some(Command::Disconnect { reason, reply }) => {
                self.disconnect_replies.push(reply);
                if !self.closing {
                    self.start_closing(reason);
                }
            }
        }
    }

    fn subscribe(
        &mut self,
        filter: ByteStr,
        options: crate::options::SubscribeOptions,
        reply: Reply<(ReasonCode, Subscription)>,
    ) {
        let mut properties = SubscribeProperties::default();
        properties.subscription_identifier = options.subscription_identifier;
        let id = match self
            .proto
            .subscribe(vec![(filter.clone(), options.options)], properties)
        {
            Ok(id) => id,
            Err(err) => {
                let _ = reply.send(Err(err.into()));
                return;
            }
        };
        // The route exists from now on, so that nothing sent right after SUBACK (retained
        // messages) is missed.
        let route_id = self.next_route;
        self.next_route += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let qos0_buffered = Arc::new(AtomicU64::new(0));
        self.routes.push(Route {
            id: route_id,
            filter: filter.clone(),
            tx,
            qos0_buffered: qos0_buffered.clone(),
        });
        let subscription = Subscription {
            id: route_id,
            filter,
            rx,
            qos0_buffered,
            internal: self.internal_tx.clone(),
        };
        self.subscribing.insert(
            id,
            PendingSubscribe {
                reply,
                subscription,
            },
        );
    }

    fn internal(&mut self, first: Internal) {
        self.one_internal(first);
        for _ in 1..BATCH {
            match self.internal_rx.try_recv() {
                Ok(internal) => self.one_internal(internal),
                Err(_) => break,
            }
        }
    }

    fn one_internal(&mut self, internal: Internal) {
        match internal {
            // A message from an earlier connection is not acknowledged on this one: after a
            // resumed session the broker sends it again (and that copy is acknowledged), and
            // after a lost session its identifier may name another message.
            Internal::Ack(id, connection) if connection == self.connection_number => {
                self.proto.acknowledge(id);
            }
            Internal::Ack(..) => {}
            Internal::Dropped(route) => {
                let Some(pos) = self.routes.iter().position(|r| r.id == route) else {
                    return;
                };
                let filter = self.routes.swap_remove(pos).filter;
                if self.closing || self.routes.iter().any(|r| r.filter == filter) {
                    return;
                }
                // The last stream of this filter is gone: stop the broker sending it.
                if let Ok(id) = self
                    .proto
                    .unsubscribe(vec![filter.clone()], UnsubscribeProperties::default())
                {
                    self.unsubscribing.insert(id, (filter, None));
                }
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.proto.poll_event() {
            match event {
                Event::Connected(connack) => {
                    self.attempt = 0;
                    if connack.session_present {
                        // The broker sends the held messages of the last connection again.
                        // (With a lost session they stay: nobody else has them now.)
                        self.unclaimed.clear();
                    }
                    // The event first: whoever sees the state change can rely on it.
                    self.emit(ConnectionEvent::Connected {
                        session_present: connack.session_present,
                    });
                    self.state.send_replace(State::Connected);
                }
                Event::Message(message) => self.route(message, None),
                Event::MessageToAcknowledge { packet_id, message } => {
                    self.route(message, Some(packet_id));
                }
                Event::Published {
                    packet_id,
                    reason_code,
                } => {
                    if let Some((reply, _permit)) = self.waiters.remove(&packet_id) {
                        let _ = reply.send(outcome(reason_code));
                    }
                }
                Event::Subscribed {
                    packet_id,
                    reason_codes,
                } => self.subscribed(packet_id, &reason_codes),
                Event::SubscriptionLost {
                    filter,
                    reason_code,
                } => {
                    // Its streams end (they return `None`), and the application hears why.
                    self.routes.retain(|r| r.filter != filter);
                    self.emit(ConnectionEvent::SubscriptionLost {
                        filter: filter.as_str().to_owned(),
                        reason_code,
                    });
                }
                Event::Unsubscribed {
                    packet_id,
                    reason_codes,
                } => {
                    if let Some((_, reply)) = self.unsubscribing.remove(&packet_id) {
                        let code = reason_codes.first().copied().unwrap_or(ReasonCode::SUCCESS);
                        if let Some(reply) = reply {
                            let _ = reply.send(outcome(code));
                        }
                    }
                }
                Event::Closed(reason) => {
                    if self.state.borrow().eq(&State::Connected) {
                        self.state.send_replace(State::Connecting);
                    }
                    self.closed = Some(reason);
                }
            }
        }
    }

    fn subscribed(&mut self, packet_id: PacketId, reason_codes: &[ReasonCode]) {
        // SUBACKs of the automatic resubscription have no pending request.
        let Some(pending) = self.subscribing.remove(&packet_id) else {
            return;
        };
        let code = reason_codes
            .first()
            .copied()
            .unwrap_or(ReasonCode::UNSPECIFIED_ERROR);
        if code.is_success() {
            let id = pending.subscription.id;
            if !pending.reply.is_closed() {
                // Held messages go to the new stream only once it is sure to reach the
                // application.
                self.claim(id);
            }
            // If the caller gave up waiting, the subscription comes back here and is dropped,
            // which unsubscribes.
            let _ = pending.reply.send(Ok((code, pending.subscription)));
        } else {
            let id = pending.subscription.id;
            self.routes.retain(|r| r.id != id);
            let _ = pending.reply.send(Err(ClientError::Refused(code)));
        }
    }

    /// Hands a received message to every subscription whose filter matches it. A QoS 1/2
    /// message is acknowledged when the last of them has handed it out; one that matches no
    /// subscription is held, unacknowledged, until a new subscription claims it or
    /// `Limits::hold_unclaimed` passes.
    fn route(&mut self, message: midge_proto::Message, packet_id: Option<PacketId>) {
        let ack = packet_id.map(|packet_id| {
            Arc::new(AckOnDrop {
                packet_id,
                connection: self.connection_number,
                internal: self.internal_tx.clone(),
            })
        });
        let topic_text = message.topic.clone();
        let Ok(topic) = TopicName::new(topic_text.as_str()) else {
            self.dropped.fetch_add(1, Relaxed);
            return;
        };
        let message = Message::new(message);
        let (mut matched, mut delivered) = (false, false);
        for route in &self.routes {
            if !TopicFilter::new(route.filter.as_str()).is_ok_and(|f| f.matches(&topic)) {
                continue;
            }
            matched = true;
            if ack.is_none() {
                // QoS 0 has no flow control: a full buffer drops the newest.
                if route.qos0_buffered.load(Relaxed) >= self.limits.max_buffered_qos0 as u64 {
                    self.dropped.fetch_add(1, Relaxed);
                    continue;
                }
                route.qos0_buffered.fetch_add(1, Relaxed);
            }
            let delivery = Delivery {
                message: message.clone(),
                ack: ack.clone(),
            };
            if route.tx.send(delivery).is_ok() {
                delivered = true;
            } else if ack.is_none() {
                route.qos0_buffered.fetch_sub(1, Relaxed);
            }
        }
        if delivered {
            return;
        }
        match ack {
            // Held for a subscription to claim it, for at most `Limits::hold_unclaimed`.
            Some(ack) if self.unclaimed.len() < usize::from(self.limits.receive_maximum.max(1)) => {
                self.unclaimed.push_back((
                    Instant::now() + self.limits.hold_unclaimed,
                    message,
                    ack,
                ));
            }
            // A QoS 0 message that found only full buffers was counted there.
            None if matched => {}
            // QoS 0 that matched nothing, or a broker that exceeds our Receive Maximum.
            _ => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Gives up on held messages that no subscription claimed in time: they are acknowledged
    /// and counted as dropped, so that messages nobody will ask for (late ones for a stream
    /// just dropped, say) cannot hold the broker's window shut.
    fn expire_unclaimed(&mut self, now: Instant) {
        while self
            .unclaimed
            .front()
            .is_some_and(|(until, ..)| *until <= now)
        {
            self.unclaimed.pop_front();
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Hands the held messages that match the new route `route_id` to it.
    fn claim(&mut self, route_id: u64) {
        if self.unclaimed.is_empty() {
            return;
        }
        let Some(route) = self.routes.iter().find(|r| r.id == route_id) else {
            return;
        };
        let Ok(filter) = TopicFilter::new(route.filter.as_str()) else {
            return;
        };
        let held = std::mem::take(&mut self.unclaimed);
        for (until, message, ack) in held {
            let matches = TopicName::new(message.topic()).is_ok_and(|t| filter.matches(&t));
            if matches {
                let delivery = Delivery {
                    message,
                    ack: Some(ack),
                };
                // A closed stream gives the delivery back, dropping it acknowledges it.
                let _ = route.tx.send(delivery);
            } else {
                self.unclaimed.push_back((until, message, ack));
            }
        }
    }

    /// The client closes for good: every pending operation fails, subscriptions end.
    fn finish(mut self, reason: Option<Disconnect>) {
        self.emit(ConnectionEvent::Closed);
        self.state.send_replace(State::Closed(reason));
        for (_, (reply, _)) in self.waiters.drain() {
            let _ = reply.send(Err(ClientError::Closed));
        }
        for (_, pending) in self.subscribing.drain() {
            let _ = pending.reply.send(Err(ClientError::Closed));
        }
        for (_, (_, reply)) in self.unsubscribing.drain() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ClientError::Closed));
            }
        }
        self.routes.clear();
        self.publishes.close();
        while let Ok(command) = self.publishes.try_recv() {
            let _ = command.reply.send(Err(ClientError::Closed));
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                Command::Unsubscribe { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                Command::Disconnect { reply, .. } => self.disconnect_replies.push(reply),
            }
        }
        for reply in self.disconnect_replies.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// The result of an acknowledgement code: failure codes are errors.
fn outcome(code: ReasonCode) -> Result<ReasonCode, ClientError> {
    if code.is_success() {
        Ok(code)
    } else {
        Err(ClientError::Refused(code))
    }
}

/// CONNACK refusals worth retrying: the broker is busy or unavailable, not refusing us.
fn transient(code: ReasonCode) -> bool {
    [
        ReasonCode::SERVER_UNAVAILABLE,
        ReasonCode::SERVER_BUSY,
        ReasonCode::QUOTA_EXCEEDED,
        ReasonCode::CONNECTION_RATE_EXCEEDED,
        ReasonCode::SERVER_SHUTTING_DOWN,
        ReasonCode::USE_ANOTHER_SERVER,
        ReasonCode::SERVER_MOVED,
    ]
    .contains(&code)
}
