//! The driver task: the one owner of the `midge-proto` state machine, the transport and the
//! routing of received messages. Handles talk to it over channels and never block it.
//!
//! One clock: every instant, the state machine's included, comes from tokio's clock
//! ([`now`]), so that keepalive, timeouts and backoff all follow it (and tokio's paused
//! clock in tests).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use midge_codec::{
    ByteStr, DisconnectProperties, PacketId, QoS, ReasonCode, SubscribeProperties, SubscriptionId,
    UnsubscribeProperties, UserProperties,
};
use midge_proto::client::Event;
use midge_topic::{TopicFilter, TopicName};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::auth::{AuthError, SharedAuthenticator};
use crate::client::{
    AckGroup, AckKey, AckToken, Command, ConnectionEvent, Delivery, Internal, PublishCommand,
    State, StreamState, Subscription,
};
use crate::connector::{BoxedTransport, Connector, OpenParams};
use crate::error::{self, AuthFailure, ClientError, CloseReason};
use crate::message::{Ack, Message};
use crate::options::{Limits, ReconnectPolicy};

/// Bytes of encoded packets the driver keeps ready for the socket; it asks the state machine
/// for more only below this.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Publishes and acknowledgements taken from the handles per turn of the loop, so that one
/// busy source cannot starve the socket.
const BATCH: usize = 256;
/// How long the final DISCONNECT may take to write.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Filters unsubscribed on this connection that are remembered, so that messages the broker
/// still delivers for them [MQTT-3.10.4-3] are recognised and not held for a stream.
const UNSUBSCRIBED_MEMORY: usize = 64;
/// The largest Subscription Identifier (a Variable Byte Integer, §3.8.2.1.2).
const MAX_SUBSCRIPTION_ID: u32 = 268_435_455;

/// Received topics are bounded by the packet size, not by a level count: a topic the broker
/// delivered is never refused for its depth.
const DEEP: midge_topic::Limits = midge_topic::Limits::DEFAULT.with_max_levels(usize::MAX);

/// Now, on tokio's clock, as the state machine takes it.
pub(crate) fn now() -> std::time::Instant {
    Instant::now().into_std()
}

pub(crate) struct Setup {
    pub(crate) proto: midge_proto::client::Client,
    pub(crate) connector: Connector,
    pub(crate) limits: Limits,
    pub(crate) reconnect: Option<ReconnectPolicy>,
    pub(crate) connect_timeout: Duration,
    pub(crate) linger: Duration,
    pub(crate) authenticator: Option<SharedAuthenticator>,
    pub(crate) v5: bool,
    pub(crate) manual_acks: bool,
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
    /// The 5.0 Subscription Identifier of its filter, if it has one.
    subscription_id: Option<u32>,
    tx: mpsc::UnboundedSender<Delivery>,
    state: Arc<StreamState>,
    /// QoS 1/2 messages for this stream that did not fit in its buffer: unacknowledged until
    /// they are moved in. With manual acknowledgements the message carries its `Ack`, and
    /// there is no token.
    backlog: VecDeque<(Message, Option<Arc<AckToken>>)>,
}

/// A QoS 1/2 message that matched no stream, waiting for one.
struct Unclaimed {
    until: Instant,
    message: Message,
    token: AckToken,
}

struct PendingSubscribe {
    reply: Reply<(ReasonCode, Subscription)>,
    subscription: Subscription,
}

/// One open connection.
struct Conn {
    stream: BoxedTransport,
    rx: BytesMut,
    tx: BytesMut,
    /// Bytes were written since the last flush: a transport that buffers (TLS) may hold
    /// them until it is flushed.
    unflushed: bool,
}

/// What one turn of [`Conn::poll_io`] did.
enum IoStep {
    /// Bytes of `tx` went out, or were flushed.
    Wrote,
    /// Bytes came in, into `rx`.
    Read,
    /// The transport failed or closed.
    Failed(CloseReason),
}

impl Conn {
    /// Writes `tx` (and flushes it once it is all written) if `write`; reads into `rx` if
    /// `read` and writing has to wait. Output goes first, so that a flood of input cannot
    /// starve acknowledgements and pings.
    fn poll_io(&mut self, cx: &mut Context<'_>, write: bool, read: bool) -> Poll<IoStep> {
        if write {
            if let Poll::Ready(step) = self.poll_write(cx) {
                return Poll::Ready(step);
            }
        }
        if read {
            // `read_buf` is cancel-safe: dropped unfinished, it has read nothing.
            let reading = pin!(self.stream.read_buf(&mut self.rx));
            if let Poll::Ready(read) = reading.poll(cx) {
                return Poll::Ready(match read {
                    Ok(0) => IoStep::Failed(CloseReason::Io(io::ErrorKind::UnexpectedEof)),
                    Ok(_) => IoStep::Read,
                    Err(err) => IoStep::Failed(error::transport_failure(&err)),
                });
            }
        }
        Poll::Pending
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<IoStep> {
        if !self.tx.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.tx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(IoStep::Failed(CloseReason::Io(io::ErrorKind::WriteZero)))
                }
                Poll::Ready(Ok(n)) => {
                    self.tx.advance(n);
                    self.unflushed = true;
                    if !self.tx.is_empty() {
                        return Poll::Ready(IoStep::Wrote);
                    }
                }
                Poll::Ready(Err(err)) => {
                    return Poll::Ready(IoStep::Failed(error::transport_failure(&err)))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        // All written: a transport that buffers (TLS) sends it when flushed. A flush that
        // has to wait wakes the task when it can go on.
        Pin::new(&mut self.stream)
            .poll_flush(cx)
            .map(|flushed| match flushed {
                Ok(()) => {
                    self.unflushed = false;
                    IoStep::Wrote
                }
                Err(err) => IoStep::Failed(error::transport_failure(&err)),
            })
    }
}

/// Why the loop is leaving a connection.
#[derive(Clone, Copy)]
enum Ended {
    Mqtt(midge_proto::client::CloseReason),
    /// The transport failed (or did not open).
    Transport(CloseReason),
    ConnectTimeout,
}

pub(crate) struct Driver {
    proto: midge_proto::client::Client,
    connector: Connector,
    limits: Limits,
    reconnect: Option<ReconnectPolicy>,
    connect_timeout: Duration,
    linger: Duration,
    /// Enhanced authentication, when the application set an authenticator.
    authenticator: Option<SharedAuthenticator>,
    /// Why the client closed the connection: its authenticator failed.
    auth_failed: Option<AuthFailure>,
    /// Callers of `reauthenticate` waiting for the re-authentication that runs; not empty
    /// exactly while one runs.
    reauthenticating: Vec<Reply<()>>,
    /// The state machine takes input again after it waited for the authenticator's check
    /// of the broker's final data: what it left in the read buffer is to be handled.
    input_resumed: bool,
    v5: bool,
    /// The application acknowledges QoS 1/2 messages itself (`Ack`).
    manual_acks: bool,
    /// With manual acknowledgements: messages of this connection handed out with an `Ack`
    /// that the application has not settled yet.
    held_acks: usize,
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
    next_subscription_id: u32,
    /// The broker of this connection takes Subscription Identifiers (5.0).
    subscription_ids: bool,
    /// QoS 1 and 2 messages of a resumed session that matched no subscription stream (its
    /// backlog arrives before the application has subscribed again): held unacknowledged
    /// until a subscription that matches them is made, at most `Limits::receive_maximum` of
    /// them (see `route`).
    unclaimed: VecDeque<Unclaimed>,
    /// Filters the application unsubscribed from on this connection, newest last.
    unsubscribed: VecDeque<ByteStr>,
    /// Number of the current connection, counted from 1.
    connection_number: u64,
    /// Number of the current session on the broker's side: it changes with every CONNACK
    /// without Session Present.
    session_number: u64,
    /// The current connection resumed a session.
    session_resumed: bool,
    /// Every handle is gone and publishes are still queued: they may go out until then.
    linger_until: Option<Instant>,
    /// The publish channel is closed and empty.
    publishes_done: bool,
    /// Failed attempts in a row.
    attempt: u32,
    /// A CONNACK has accepted a connection of this client.
    ever_connected: bool,
    /// Set when the client is to close: by `disconnect`, or because every handle is gone.
    closing: bool,
    handles_gone: bool,
    disconnect_replies: Vec<oneshot::Sender<()>>,
    /// What the application's DISCONNECT carries (5.0).
    disconnect_properties: DisconnectProperties,
    /// Set by the state machine's `Closed` event.
    closed: Option<midge_proto::client::CloseReason>,
}

impl Driver {
    pub(crate) fn new(setup: Setup) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        Self {
            proto: setup.proto,
            connector: setup.connector,
            limits: setup.limits,
            reconnect: setup.reconnect,
            connect_timeout: setup.connect_timeout,
            linger: setup.linger,
            authenticator: setup.authenticator,
            auth_failed: None,
            reauthenticating: Vec::new(),
            input_resumed: false,
            v5: setup.v5,
            manual_acks: setup.manual_acks,
            held_acks: 0,
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
            next_subscription_id: 1,
            subscription_ids: false,
            unclaimed: VecDeque::new(),
            unsubscribed: VecDeque::new(),
            connection_number: 0,
            session_number: 0,
            session_resumed: false,
            linger_until: None,
            publishes_done: false,
            attempt: 0,
            ever_connected: false,
            closing: false,
            handles_gone: false,
            disconnect_replies: Vec::new(),
            disconnect_properties: DisconnectProperties::default(),
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
        !self.publishes_done
            && !self.closing
            && self.proto.queued_messages() < self.limits.queued_publishes_bound()
    }

    /// QoS 1/2 messages held back for full streams.
    fn backlogged(&self) -> usize {
        self.routes.iter().map(|r| r.backlog.len()).sum()
    }

    /// Whether to read from the socket. Under 5.0 the broker's window (our Receive Maximum)
    /// bounds what it sends unacknowledged; 3.1.1 has no such limit, so the client stops
    /// reading while `receive_maximum` messages are held back for full streams (with manual
    /// acknowledgements, while the application holds that many unsettled), and reads again
    /// as the application reads (or settles) them.
    fn reads(&self) -> bool {
        let window = usize::from(self.limits.receive_maximum.max(1));
        self.v5 || (self.backlogged() < window && (!self.manual_acks || self.held_acks < window))
    }

    /// After the last handle is gone: closes once every queued publish is done, or when the
    /// linger time is up.
    fn check_linger(&mut self) {
        let Some(until) = self.linger_until else {
            return;
        };
        let done =
            self.publishes_done && self.proto.queued_messages() == 0 && self.waiters.is_empty();
        if !self.closing && (done || Instant::now() >= until) {
            self.linger_until = None;
            self.start_closing(ReasonCode::SUCCESS);
        }
    }

    pub(crate) async fn run(mut self) {
        let mut reason = None;
        loop {
            let ended = match self.dial().await {
                Some(Ok(stream)) => self.connection(stream).await,
                Some(Err(ended)) => ended,
                None => break,
            };
            let closed = match ended {
                Ended::Transport(reason) => Some(reason),
                Ended::ConnectTimeout => Some(CloseReason::ConnectTimeout),
                Ended::Mqtt(reason) => match self.auth_failed.take() {
                    Some(failure) => Some(CloseReason::Authentication(failure)),
                    None => error::close_reason(reason),
                },
            };
            // A connection the application closed itself is not reported.
            if let Some(closed) = closed {
                self.emit(ConnectionEvent::Disconnected { reason: closed });
                reason = Some(closed);
            }
            if self.closing {
                break;
            }
            let retry = match (&self.reconnect, closed) {
                (None, _) => None,
                (Some(policy), _) if policy.always_retry => self.next_delay(*policy),
                (Some(_), Some(CloseReason::Refused(code))) if !transient(code) => None,
                (Some(_), Some(reason)) if !self.ever_connected && misconfigured(reason) => None,
                (Some(policy), _) => self.next_delay(*policy),
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

    /// Counts a failed attempt: the delay before the next, or `None` when the policy gives
    /// up.
    fn next_delay(&mut self, policy: ReconnectPolicy) -> Option<Duration> {
        self.attempt += 1;
        match policy.max_attempts {
            Some(max) if self.attempt > max => None,
            _ => Some(policy.delay(self.attempt - 1, self.random())),
        }
    }

    /// Opens a connection's transport, serving the handles meanwhile. `None` if the client
    /// is to close instead.
    async fn dial(&mut self) -> Option<Result<BoxedTransport, Ended>> {
        let params = OpenParams {
            max_packet_size: self.limits.max_packet_size,
            connect_timeout: self.connect_timeout,
        };
        let bound = self.connector.open_timeout(self.connect_timeout);
        let connect = tokio::time::timeout(bound, self.connector.open(params));
        let result = self.serve_until(connect).await?;
        Some(match result {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => {
                tracing::debug!(connector = ?self.connector, error = %err, "cannot connect");
                Err(Ended::Transport(error::transport_failure(&err)))
            }
            Err(_) => Err(Ended::ConnectTimeout),
        })
    }

    /// Waits until `until`, serving the handles. `false` if the client is to close instead.
    async fn idle(&mut self, until: Instant) -> bool {
        self.serve_until(tokio::time::sleep_until(until))
            .await
            .is_some()
    }

    /// Serves the handles while no connection is up, until `done` completes. `None` if the
    /// client is to close first.
    async fn serve_until<F: Future>(&mut self, done: F) -> Option<F::Output> {
        tokio::pin!(done);
        loop {
            self.check_linger();
            if self.closing {
                return None;
            }
            let linger = self.linger_until;
            tokio::select! {
                output = &mut done => return Some(output),
                command = self.commands.recv(), if !self.handles_gone => self.command(command),
                publish = self.publishes.recv(), if self.accepts_publishes() => {
                    self.publish_batch(publish)
                }
                Some(internal) = self.internal_rx.recv() => self.internal(internal),
                () = sleep_until_some(linger) => {}
            }
            self.drain_events();
        }
    }

    /// Runs one connection until it ends.
    async fn connection(&mut self, stream: BoxedTransport) -> Ended {
        let mut conn = Conn {
            stream,
            rx: BytesMut::with_capacity(64 * 1024),
            tx: BytesMut::with_capacity(64 * 1024),
            unflushed: false,
        };
        self.closed = None;
        self.auth_failed = None;
        self.input_resumed = false;
        self.connection_number += 1;
        self.held_acks = 0;
        match self.start_auth() {
            Ok(data) => self.proto.connect_with_auth_data(now(), data),
            Err(error) => {
                tracing::warn!(%error, "enhanced authentication could not start");
                let _ = conn.stream.shutdown().await;
                return Ended::Transport(CloseReason::Authentication(AuthFailure::Start));
            }
        }
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed = None;
        let ended = loop {
            self.drain_events();
            if std::mem::take(&mut self.input_resumed) {
                self.proto.handle_bytes(now(), &mut conn.rx);
                continue;
            }
            self.check_linger();
            self.fill(&mut conn.tx);
            if let Some(reason) = self.closed.take() {
                // Whatever the state machine queued last (DISCONNECT) goes out, briefly.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    let _ = conn.stream.write_all(&conn.tx).await;
                    let _ = conn.stream.flush().await;
                    let _ = conn.stream.shutdown().await;
                })
                .await;
                break Ended::Mqtt(reason);
            }
            let deadline = [
                self.proto.poll_timeout().map(Instant::from_std),
                self.unclaimed.front().map(|held| held.until),
                self.linger_until,
            ]
            .into_iter()
            .flatten()
            .min();
            if deadline != armed {
                armed = deadline;
                if let Some(at) = deadline {
                    sleep.as_mut().reset(at);
                }
            }
            if conn.rx.capacity() - conn.rx.len() < 8 * 1024 {
                conn.rx.reserve(64 * 1024);
            }
            // Output first (see `Conn::poll_io`); and no input while a full buffer of output
            // waits, so that a peer that sends without reading cannot make the state machine
            // queue without bound.
            let write = !conn.tx.is_empty() || conn.unflushed;
            let read = conn.tx.len() < WRITE_HIGH_WATER && self.reads();
            tokio::select! {
                biased;
                step = std::future::poll_fn(|cx| conn.poll_io(cx, write, read)), if write || read => match step {
                    IoStep::Wrote => {}
                    IoStep::Read => self.proto.handle_bytes(now(), &mut conn.rx),
                    IoStep::Failed(reason) => break Ended::Transport(reason),
                },
                Some(internal) = self.internal_rx.recv() => self.internal(internal),
                command = self.commands.recv(), if !self.handles_gone => self.command(command),
                publish = self.publishes.recv(), if self.accepts_publishes() => {
                    self.publish_batch(publish)
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    let now = Instant::now();
                    self.expire_unclaimed(now);
                    self.proto.handle_timeout(now.into_std());
                }
            }
        };
        if let Ended::Transport(_) = ended {
            self.proto.connection_lost();
            self.drain_events();
            self.closed = None;
        }
        ended
    }

    /// Moves due packets from the state machine into `tx`, up to the high-water mark.
    fn fill(&mut self, tx: &mut BytesMut) {
        let now = now();
        while tx.len() < WRITE_HIGH_WATER && self.proto.poll_transmit(now, tx) {}
        // Sending may free places for QoS 0 publishes and complete refused ones.
        self.drain_events();
    }

    fn publish_batch(&mut self, first: Option<PublishCommand>) {
        let Some(first) = first else {
            self.publishes_done = true;
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
                let _ = reply.send(Err(error::publish_refused(err)));
            }
        }
    }

    /// Every `Client` handle is gone: the publishes already queued still go out, for at most
    /// the linger time, and then the client disconnects (reason 0).
    fn handles_gone(&mut self) {
        if !self.handles_gone {
            self.handles_gone = true;
            self.linger_until = Some(Instant::now() + self.linger);
            self.check_linger();
        }
    }

    fn start_closing(&mut self, reason: ReasonCode) {
        self.closing = true;
        if self.proto.is_connected() {
            let properties = std::mem::take(&mut self.disconnect_properties);
            self.proto.disconnect_with(reason, properties);
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
                user_properties,
                reply,
            }) => self.subscribe(filter, options, user_properties, reply),
            Some(Command::Unsubscribe {
                filter,
                properties,
                reply,
            }) => {
                self.remove_routes(|r| r.filter == filter);
                match self.proto.unsubscribe(vec![filter.clone()], properties) {
                    Ok(id) => {
                        self.remember_unsubscribed(filter.clone());
                        self.unsubscribing.insert(id, (filter, Some(reply)));
                    }
                    Err(err) => {
                        let _ = reply.send(Err(error::request_refused(err)));
                    }
                }
            }
            Some(Command::Disconnect {
                reason,
                properties,
                reply,
            }) => {
                self.disconnect_replies.push(reply);
                self.disconnect_properties = properties;
                if !self.closing {
                    self.start_closing(reason);
                }
            }
            Some(Command::Reauthenticate { reply }) => self.reauthenticate(reply),
        }
    }

    /// The first Authentication Data of a fresh exchange: `None` without an authenticator.
    fn start_auth(&mut self) -> Result<Option<Bytes>, AuthError> {
        match &self.authenticator {
            Some(authenticator) => authenticator.lock().start(),
            None => Ok(None),
        }
    }

    /// Starts a re-authentication (AUTH 0x19), or joins the one that runs.
    fn reauthenticate(&mut self, reply: Reply<()>) {
        if self.authenticator.is_none() {
            let _ = reply.send(Err(ClientError::NoAuthenticator));
            return;
        }
        if !self.proto.is_connected() || self.closing {
            let _ = reply.send(Err(ClientError::NotConnected));
            return;
        }
        if !self.reauthenticating.is_empty() {
            self.reauthenticating.push(reply);
            return;
        }
        let started = self.start_auth().and_then(|data| {
            self.proto
                .reauthenticate(data)
                .map_err(|e| AuthError::new(format!("AUTH cannot be sent: {e}")))
        });
        match started {
            Ok(()) => self.reauthenticating.push(reply),
            // Nothing was sent: the connection goes on as it was.
            Err(error) => {
                let _ = reply.send(Err(ClientError::Authentication(error)));
            }
        }
    }

    /// The broker's challenge: the authenticator answers it.
    fn auth_challenge(&mut self, data: Option<Bytes>) {
        let Some(authenticator) = &self.authenticator else {
            return;
        };
        let answered = authenticator
            .lock()
            .respond(data.as_deref())
            .and_then(|answer| {
                self.proto
                    .auth_respond(answer)
                    .map_err(|e| AuthError::new(format!("the answer cannot be sent: {e}")))
            });
        if let Err(error) = answered {
            self.auth_failure(AuthFailure::Challenge, error);
        }
    }

    /// The broker's final data, in CONNACK (`connecting`) or ending a re-authentication: the
    /// authenticator checks it.
    fn auth_finish(&mut self, data: Option<Bytes>, connecting: bool) {
        let Some(authenticator) = &self.authenticator else {
            return;
        };
        let checked = authenticator.lock().finish(data.as_deref());
        if let Err(error) = checked {
            return self.auth_failure(AuthFailure::Verification, error);
        }
        if connecting {
            // The connection goes on, and so does the input it left waiting.
            let _ = self.proto.auth_complete(now());
            self.input_resumed = true;
        } else {
            for reply in self.reauthenticating.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// The authenticator failed: the connection closes, with DISCONNECT 0x80 [MQTT-4.12.1-2].
    fn auth_failure(&mut self, failure: AuthFailure, error: AuthError) {
        tracing::warn!(%error, %failure, "enhanced authentication failed");
        self.auth_failed = Some(failure);
        for reply in self.reauthenticating.drain(..) {
            let _ = reply.send(Err(ClientError::Authentication(error.clone())));
        }
        self.proto.disconnect(ReasonCode::UNSPECIFIED_ERROR);
    }

    fn remember_unsubscribed(&mut self, filter: ByteStr) {
        if self.unsubscribed.len() == UNSUBSCRIBED_MEMORY {
            self.unsubscribed.pop_front();
        }
        self.unsubscribed.push_back(filter);
    }

    /// Removes the routes `which` selects. Their streams end; the messages held back for
    /// them are acknowledged (dropping their tokens), since the application gave them up.
    fn remove_routes(&mut self, which: impl Fn(&Route) -> bool) {
        self.routes.retain(|r| !which(r));
    }

    /// The Subscription Identifier for a new stream of `filter`: the one asked for; else,
    /// under 5.0 with a broker that takes them, the one its filter has already (a SUBSCRIBE
    /// replaces the subscription of the same filter [MQTT-3.8.4-3], identifier included) or a
    /// fresh one.
    fn subscription_id_for(
        &mut self,
        filter: &ByteStr,
        asked: Option<SubscriptionId>,
    ) -> Option<SubscriptionId> {
        if asked.is_some() {
            return asked;
        }
        if !(self.v5 && self.subscription_ids && self.proto.is_connected()) {
            return None;
        }
        if let Some(id) = self
            .routes
            .iter()
            .find(|r| r.filter == *filter)
            .and_then(|r| r.subscription_id)
        {
            return SubscriptionId::new(id);
        }
        // Skip identifiers in use (set by the application); 2^28 - 1 of them never run out
        // while streams are bounded by memory.
        for _ in 0..=self.routes.len() {
            let id = self.next_subscription_id;
            self.next_subscription_id = if id >= MAX_SUBSCRIPTION_ID { 1 } else { id + 1 };
            if !self.routes.iter().any(|r| r.subscription_id == Some(id)) {
                return SubscriptionId::new(id);
            }
        }
        None
    }

    fn subscribe(
        &mut self,
        filter: ByteStr,
        options: crate::options::SubscribeOptions,
        user_properties: UserProperties,
        reply: Reply<(ReasonCode, Subscription)>,
    ) {
        let subscription_id = self.subscription_id_for(&filter, options.subscription_identifier);
        let mut properties = SubscribeProperties::default();
        properties.subscription_identifier = subscription_id;
        properties.user_properties = user_properties;
        let id = match self
            .proto
            .subscribe(vec![(filter.clone(), options.options)], properties)
        {
            Ok(id) => id,
            Err(err) => {
                let _ = reply.send(Err(error::request_refused(err)));
                return;
            }
        };
        self.unsubscribed.retain(|f| *f != filter);
        let subscription_id = subscription_id.map(SubscriptionId::get);
        // The broker replaces the subscription of this filter, identifier included.
        for route in self.routes.iter_mut().filter(|r| r.filter == filter) {
            route.subscription_id = subscription_id;
        }
        // The route exists from now on, so that nothing sent right after SUBACK (retained
        // messages) is missed.
        let route_id = self.next_route;
        self.next_route += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(StreamState::default());
        self.routes.push(Route {
            id: route_id,
            filter: filter.clone(),
            subscription_id,
            tx,
            state: state.clone(),
            backlog: VecDeque::new(),
        });
        let subscription = Subscription {
            id: route_id,
            filter,
            rx,
            state,
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

    /// Whether an acknowledgement for `key` means the message it was taken for: a QoS 1
    /// message only on its own connection (after a resumed session the broker sends it
    /// again, and after a lost one its identifier may name another message), a QoS 2 message
    /// within its session (the state machine answers the broker's retransmission).
    fn current(&self, key: AckKey) -> bool {
        if key.qos2 {
            key.session == self.session_number
        } else {
            key.connection == self.connection_number
        }
    }

    fn acknowledge(&mut self, key: AckKey) {
        if self.current(key) {
            self.proto.acknowledge(key.packet_id);
        }
    }

    fn one_internal(&mut self, internal: Internal) {
        match internal {
            Internal::Ack(key) => self.acknowledge(key),
            Internal::Settled { key, acked } => {
                if key.connection == self.connection_number {
                    self.held_acks = self.held_acks.saturating_sub(1);
                }
                if !self.current(key) {
                    // From an earlier connection (QoS 1) or session: the broker sends the
                    // message again, or has forgotten it.
                } else if acked {
                    self.proto.acknowledge(key.packet_id);
                } else {
                    self.proto.abandon(key.packet_id);
                }
            }
            Internal::Room(route) => {
                if let Some(index) = self.routes.iter().position(|r| r.id == route) {
                    self.refill(index);
                }
            }
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
                    self.remember_unsubscribed(filter.clone());
                    self.unsubscribing.insert(id, (filter, None));
                }
            }
        }
    }

    /// Moves held-back messages of route `index` into its stream while it has room.
    fn refill(&mut self, index: usize) {
        let bound = self.limits.max_buffered_qos12.max(1) as u64;
        let Some(route) = self.routes.get_mut(index) else {
            return;
        };
        let mut ready = Vec::new();
        loop {
            while route.state.reliable.load(SeqCst) < bound {
                let Some((message, token)) = route.backlog.pop_front() else {
                    break;
                };
                route.state.reliable.fetch_add(1, SeqCst);
                let _ = route.tx.send(Delivery {
                    message,
                    reliable: true,
                });
                // The last stream that held it back has it now.
                if let Some(Ok(token)) = token.map(Arc::try_unwrap) {
                    ready.push(token.disarm());
                }
            }
            if route.backlog.is_empty() {
                break;
            }
            // Ask the stream to report room, then look again: a read between the check above
            // and this store would otherwise go unnoticed.
            route.state.waiting.store(true, SeqCst);
            if route.state.reliable.load(SeqCst) >= bound {
                break;
            }
        }
        for key in ready {
            self.acknowledge(key);
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.proto.poll_event() {
            match event {
                Event::Connected(connack) => {
                    self.attempt = 0;
                    self.session_resumed = connack.session_present;
                    if !connack.session_present {
                        self.session_number += 1;
                    }
                    self.subscription_ids = connack
                        .properties
                        .subscription_identifiers_available
                        .unwrap_or(true);
                    self.unsubscribed.clear();
                    if connack.session_present {
                        self.forget_resent();
                    }
                    // The event first: whoever sees the state change can rely on it.
                    self.ever_connected = true;
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
                    self.remove_routes(|r| r.filter == filter);
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
                Event::AuthChallenge { data } => self.auth_challenge(data),
                Event::Authenticated { data } => self.auth_finish(data, true),
                Event::Reauthenticated { data } => self.auth_finish(data, false),
                Event::Closed(reason) => {
                    if self.state.borrow().eq(&State::Connected) {
                        self.state.send_replace(State::Connecting);
                    }
                    // A re-authentication that runs ends with the connection: refused by the
                    // broker's DISCONNECT [MQTT-4.12.1-2], or cut short.
                    let error = match reason {
                        midge_proto::client::CloseReason::DisconnectedByServer(code) => {
                            ClientError::Refused(code)
                        }
                        _ => ClientError::NotConnected,
                    };
                    for reply in self.reauthenticating.drain(..) {
                        let _ = reply.send(Err(error.clone()));
                    }
                    self.closed = Some(reason);
                }
                // Events added to midge-proto after this driver: nothing to do.
                _ => {}
            }
        }
    }

    /// A resumed session: the broker sends again every QoS 1 message of earlier connections
    /// that we did not acknowledge, so the copies still held from them go (the new copies
    /// take their place). QoS 2 messages stay: the state machine does not report their
    /// retransmissions again.
    fn forget_resent(&mut self) {
        let connection = self.connection_number;
        let stale = |key: &AckKey| !key.qos2 && key.connection != connection;
        for held in std::mem::take(&mut self.unclaimed) {
            if stale(&held.token.key) {
                let _ = held.token.disarm();
            } else {
                self.unclaimed.push_back(held);
            }
        }
        for route in &mut self.routes {
            route.backlog.retain(|(message, token)| {
                let key = token.as_ref().map(|t| t.key).or_else(|| message.ack_key());
                !key.is_some_and(|key| stale(&key))
            });
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
            self.remove_routes(|r| r.id == id);
            let _ = pending.reply.send(Err(ClientError::Refused(code)));
        }
    }

    /// Hands a received message to its streams: each received PUBLISH reaches each stream at
    /// most once. Under 5.0 those whose Subscription Identifier it carries (see
    /// [`Subscription`]); without identifiers, or when none is ours (a subscription of an
    /// earlier process in a resumed session), every stream whose filter matches.
    ///
    /// A QoS 1/2 message is acknowledged once every one of its streams has taken it into its
    /// buffer (a full stream holds it back until it is read); the state machine sends the
    /// acknowledgements in arrival order [MQTT-4.6.0-2] [MQTT-4.6.0-3]. One that matches no
    /// stream is never acknowledged unseen:
    /// - in a session this client made, every subscription the broker has was made for a
    ///   stream, so it is for one the application unsubscribed or dropped, which the broker
    ///   may still deliver [MQTT-3.10.4-3]: acknowledged and counted as dropped;
    /// - in a resumed session it may be backlog for a stream not made again yet: held,
    ///   unacknowledged, until a subscription claims it. At most `Limits::receive_maximum`
    ///   are held (only a 3.1.1 broker can send more): one beyond is abandoned, never
    ///   acknowledged on this connection, so the broker keeps it and sends it again on the
    ///   next connection of the session. One not claimed within `Limits::hold_unclaimed`
    ///   (the application's choice, see there) is acknowledged, so that a subscription of
    ///   the session that nobody reads cannot hold the broker's window shut. Both are counted
    ///   as dropped.
    fn route(&mut self, message: midge_proto::Message, packet_id: Option<PacketId>) {
        let ids: Vec<u32> = message
            .properties
            .subscription_identifiers()
            .map(SubscriptionId::get)
            .collect();
        let message = Message::new(message, packet_id.map(PacketId::get));
        // Validated by the codec [MQTT-3.3.2-2]; only the depth is not limited here.
        let Ok(topic) = TopicName::with_limits(message.topic(), &DEEP) else {
            return self.unmatched(message, packet_id, false);
        };
        // Each filter is parsed and matched once per message.
        let mut targets: Vec<usize> = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                TopicFilter::with_limits(r.filter.as_str(), &DEEP).is_ok_and(|f| f.matches(&topic))
            })
            .map(|(i, _)| i)
            .collect();
        let routes = &self.routes;
        let has = |i: &usize, which: &dyn Fn(&Route) -> bool| routes.get(*i).is_some_and(which);
        let by_id = |r: &Route| r.subscription_id.is_some_and(|id| ids.contains(&id));
        let without_id = |r: &Route| r.subscription_id.is_none();
        if targets.iter().any(|i| has(i, &by_id)) {
            targets.retain(|i| has(i, &by_id));
        } else if ids.is_empty() && targets.iter().any(|i| has(i, &without_id)) {
            // A copy without identifiers is for the subscriptions made without one.
            targets.retain(|i| has(i, &without_id));
        }
        if targets.is_empty() {
            let unsubscribed = self.recently_unsubscribed(&message);
            return self.unmatched(message, packet_id, unsubscribed);
        }
        match packet_id {
            None => self.deliver_qos0(&targets, &message),
            Some(packet_id) => {
                let token = self.token(packet_id, message.qos());
                self.deliver(&targets, message, token);
            }
        }
    }

    fn recently_unsubscribed(&self, message: &Message) -> bool {
        let Ok(topic) = TopicName::with_limits(message.topic(), &DEEP) else {
            return false;
        };
        self.unsubscribed
            .iter()
            .any(|f| TopicFilter::with_limits(f.as_str(), &DEEP).is_ok_and(|f| f.matches(&topic)))
    }

    fn token(&self, packet_id: PacketId, qos: QoS) -> AckToken {
        AckToken {
            key: AckKey {
                packet_id,
                qos2: qos == QoS::ExactlyOnce,
                connection: self.connection_number,
                session: self.session_number,
            },
            armed: true,
            internal: self.internal_tx.clone(),
        }
    }

    /// QoS 0 has no flow control: a full buffer drops the newest.
    fn deliver_qos0(&self, targets: &[usize], message: &Message) {
        for &index in targets {
            let Some(route) = self.routes.get(index) else {
                continue;
            };
            if route.state.qos0.load(Relaxed) >= self.limits.max_buffered_qos0 as u64 {
                self.dropped.fetch_add(1, Relaxed);
                continue;
            }
            route.state.qos0.fetch_add(1, Relaxed);
            let delivery = Delivery {
                message: message.clone(),
                reliable: false,
            };
            if route.tx.send(delivery).is_err() {
                route.state.qos0.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Puts a QoS 1/2 message into the streams `targets`, holding it back for the full ones;
    /// acknowledges it at once when none is full (with manual acknowledgements, hands each
    /// copy an `Ack` instead).
    fn deliver(&mut self, targets: &[usize], message: Message, token: AckToken) {
        if self.manual_acks {
            return self.deliver_with_acks(targets, &message, token);
        }
        let bound = self.limits.max_buffered_qos12.max(1) as u64;
        let mut token = Some(token);
        let mut shared: Option<Arc<AckToken>> = None;
        let mut backlogged = Vec::new();
        for &index in targets {
            let Some(route) = self.routes.get_mut(index) else {
                continue;
            };
            if route.backlog.is_empty() && route.state.reliable.load(SeqCst) < bound {
                route.state.reliable.fetch_add(1, SeqCst);
                // A stream dropped meanwhile gives it back; the application gave it up.
                let _ = route.tx.send(Delivery {
                    message: message.clone(),
                    reliable: true,
                });
            } else {
                let held = match (&shared, token.take()) {
                    (Some(shared), _) => shared.clone(),
                    (None, Some(token)) => shared.insert(Arc::new(token)).clone(),
                    (None, None) => continue,
                };
                route.backlog.push_back((message.clone(), Some(held)));
                backlogged.push(index);
            }
        }
        if let Some(token) = token {
            let key = token.disarm();
            self.acknowledge(key);
        }
        drop(shared);
        for index in backlogged {
            self.refill(index);
        }
    }

    /// [`Driver::deliver`] with manual acknowledgements: every copy carries an `Ack` of one
    /// group, and the application settles the message (`Internal::Settled`).
    fn deliver_with_acks(&mut self, targets: &[usize], message: &Message, token: AckToken) {
        let bound = self.limits.max_buffered_qos12.max(1) as u64;
        let key = token.disarm();
        let group = Arc::new(AckGroup::new(key, self.internal_tx.clone()));
        if key.connection == self.connection_number {
            self.held_acks += 1;
        }
        let mut backlogged = Vec::new();
        let mut copies = 0;
        for &index in targets {
            let Some(route) = self.routes.get_mut(index) else {
                continue;
            };
            copies += 1;
            let copy = message.clone().with_ack(Ack::new(group.clone()));
            if route.backlog.is_empty() && route.state.reliable.load(SeqCst) < bound {
                route.state.reliable.fetch_add(1, SeqCst);
                // A stream dropped meanwhile gives it back, and dropping it abandons it.
                let _ = route.tx.send(Delivery {
                    message: copy,
                    reliable: true,
                });
            } else {
                route.backlog.push_back((copy, None));
                backlogged.push(index);
            }
        }
        if copies == 0 {
            // No stream took a copy: never acknowledged unseen. (Not the group's count: the
            // application may have acked every copy already.)
            group.abandon();
        }
        drop(group);
        for index in backlogged {
            self.refill(index);
        }
    }

    /// A message for no stream (see `route`).
    fn unmatched(&mut self, message: Message, packet_id: Option<PacketId>, unsubscribed: bool) {
        let Some(packet_id) = packet_id else {
            self.dropped.fetch_add(1, Relaxed);
            return;
        };
        let token = self.token(packet_id, message.qos());
        if !self.session_resumed || unsubscribed {
            // The application gave its subscription up: dropping the token acknowledges it.
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        if self.unclaimed.len() >= usize::from(self.limits.receive_maximum.max(1)) {
            self.abandon(token);
            return;
        }
        let now = Instant::now();
        let until = now
            .checked_add(self.limits.hold_unclaimed)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        self.unclaimed.push_back(Unclaimed {
            until,
            message,
            token,
        });
    }

    /// Gives a message up unacknowledged: the broker keeps it in flight and sends it again on
    /// the next connection of a resumed session.
    fn abandon(&mut self, token: AckToken) {
        let key = token.disarm();
        if self.current(key) {
            self.proto.abandon(key.packet_id);
        }
        self.dropped.fetch_add(1, Relaxed);
    }

    /// Gives up held messages that no subscription claimed in time (see `route`): dropping
    /// their tokens acknowledges them.
    fn expire_unclaimed(&mut self, now: Instant) {
        while self.unclaimed.front().is_some_and(|held| held.until <= now) {
            self.unclaimed.pop_front();
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Hands the held messages that match the new route `route_id` to it.
    fn claim(&mut self, route_id: u64) {
        if self.unclaimed.is_empty() {
            return;
        }
        let Some(index) = self.routes.iter().position(|r| r.id == route_id) else {
            return;
        };
        let filter = self.routes[index].filter.clone();
        let Ok(filter) = TopicFilter::with_limits(filter.as_str(), &DEEP) else {
            return;
        };
        for held in std::mem::take(&mut self.unclaimed) {
            let matches = TopicName::with_limits(held.message.topic(), &DEEP)
                .is_ok_and(|t| filter.matches(&t));
            if matches {
                self.deliver(&[index], held.message, held.token);
            } else {
                self.unclaimed.push_back(held);
            }
        }
    }

    /// The client closes for good: every pending operation fails, subscriptions end.
    fn finish(mut self, reason: Option<CloseReason>) {
        self.emit(ConnectionEvent::Closed);
        self.state.send_replace(State::Closed(reason));
        for (packet_id, (reply, _)) in self.waiters.drain() {
            // A QoS 2 message the broker acknowledged with PUBREC is with the broker: it must
            // not be published again.
            let error = if self.proto.is_awaiting_release(packet_id) {
                ClientError::ReleasePending
            } else {
                ClientError::Closed
            };
            let _ = reply.send(Err(error));
        }
        for (_, pending) in self.subscribing.drain() {
            let _ = pending.reply.send(Err(ClientError::Closed));
        }
        for reply in self.reauthenticating.drain(..) {
            let _ = reply.send(Err(ClientError::Closed));
        }
        for (_, (_, reply)) in self.unsubscribing.drain() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ClientError::Closed));
            }
        }
        self.routes.clear();
        self.unclaimed.clear();
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
                Command::Reauthenticate { reply } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
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

/// Failures that trying again will not mend before someone changes a setting or a
/// certificate: the broker's certificate is not accepted, the broker refused the TLS
/// handshake, the server refused the WebSocket upgrade, or the client's enhanced
/// authentication failed on its side. Before the first connection
/// they end the client; after one, the reconnect policy retries them (a broker's
/// certificate may be replaced again), and each attempt is reported with its reason.
fn misconfigured(reason: CloseReason) -> bool {
    use crate::error::{TlsFailure, WebSocketFailure};
    match reason {
        CloseReason::Tls(failure) => !matches!(failure, TlsFailure::Handshake),
        CloseReason::WebSocket(failure) => failure == WebSocketFailure::Refused,
        // Wrong credentials, or a broker that does not know them: the same next time.
        CloseReason::Authentication(_) => true,
        _ => false,
    }
}

/// Sleeps until `at`, or forever when it is `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
