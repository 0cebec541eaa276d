//! One client connection's broker side, sans-IO: it owns the [`ServerConnection`] and answers
//! its events against the [`Core`]: authentication, taking the session over, routing
//! publishes, subscriptions and retained messages, and the session's end. It reads no clock
//! and does no I/O: the driver hands it bytes and the time, and asks it for bytes to send and
//! for when to call again, as midge-proto's [`ServerConnection`] does for one connection.
//!
//! Two things make a connection wait, and both are values here rather than awaits: a CONNECT
//! whose client identifier another connection holds waits for that connection's session, and
//! a publish that found a subscriber's inbox full waits for room (at most
//! `limits.backpressure_timeout_ms`) before it is acknowledged. Meanwhile the connection takes
//! no input ([`Connection::wants_input`]), and the driver calls
//! [`Connection::handle_wakeup`] when [`Connection::poll_wakeup`] is ready and
//! [`Connection::handle_timeout`] at [`Connection::poll_timeout`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::{ProtocolVersion, ReasonCode, RetainHandling};
use midge_proto::server::{ServerCloseReason, ServerConnection, ServerEvent, SubscriptionRequest};
use midge_proto::session::{Delivery, Session, SessionChange, SessionSubscription};
use midge_topic::TopicFilter;

use super::handover::{self, Answer, Awaited, Handover, TakeOver};
use super::inbox::{Inbox, QueueUse, SHRINK_ABOVE};
use super::state::{Blocked, ClientView, Core, Offered, Registered, Routed, Slot, SlotState, Sub};
use super::verify::Ticket;
use crate::hooks::{AuthExchange, AuthRequest, AuthStep, ClientInfo, ConnectRequest};
use crate::stats::add;
use crate::store::{Change, Journal, JournalError, Retained, SessionRecord};
use midge_auth::acl::Access;

/// Deliveries taken from the inbox per transmit, so input is not starved.
const INBOX_BATCH: usize = 1024;

/// One client connection's broker side, sans-IO: it owns the [`ServerConnection`] and
/// answers its events against the [`Core`], reading no clock and doing no I/O.
///
/// A driver feeds it the bytes the client sent ([`Connection::handle_input`]), sends what
/// [`Connection::poll_transmit`] produces, calls [`Connection::handle_timeout`] at
/// [`Connection::poll_timeout`] and [`Connection::handle_wakeup`] when
/// [`Connection::poll_wakeup`] is ready, and tells it when the transport is gone
/// ([`Connection::connection_lost`]). Once [`Connection::is_closed`] and its last output is
/// sent, the driver drops it.
pub struct Connection {
    core: Arc<Core>,
    conn: ServerConnection,
    /// The connection's number in the broker: which connection owns a session.
    number: u64,
    /// Refuse the CONNECT: the broker has `limits.max_connections` open already.
    over_limit: bool,
    /// The client, once its CONNECT is accepted (`slot` is set then); before that only the
    /// peer address is filled in.
    info: ClientInfo,
    /// The client as the admin view shows it, with its slot, once its CONNECT is accepted.
    client: Option<Arc<ClientView>>,
    /// Deliveries, takeover requests and shutdown arrive here.
    inbox: Arc<Inbox>,
    /// Deliveries just taken from the inbox, and the ACL's recent answers; boxed, so that
    /// the connection's task stays within 1 KiB.
    scratch: Option<Box<Scratch>>,
    /// Set when another connection asked for our session.
    handover: Option<TakeOver>,
    /// The inbox was signalled (seen by [`Connection::poll_wakeup`]) and not yet acted on.
    signalled: bool,
    /// The broker is stopping, and the client was told.
    shutting_down: bool,
    /// The inbox signalled deliveries that are not taken yet.
    deliveries_waiting: bool,
    /// A transmit batch is under way: [`Connection::poll_transmit`] has not said false since
    /// it began.
    transmitting: bool,
    /// The CONNECT was just accepted: input that waited for the decision can go on.
    accepted: bool,
    /// The user name is the client certificate's ([`Connection::set_certificate_username`]),
    /// not the one in the CONNECT.
    username_from_certificate: bool,
    /// Bytes of this session's queue counted against the global memory budget: the budget
    /// covers online sessions' queues too, not only inboxes and offline sessions.
    counted: usize,
    /// Retained messages still to send for new subscriptions; boxed and made only when a
    /// subscription matches some.
    retained: Option<Box<RetainedBacklog>>,
    /// What the connection waits for, if anything; boxed, as it is rare.
    waiting: Option<Box<Waiting>>,
    /// An enhanced authentication exchange under way; boxed, as it is rare.
    auth: Option<Box<AuthState>>,
}

/// Where an enhanced authentication exchange is.
enum AuthState {
    /// The CONNECT's, before CONNACK.
    Exchanging {
        pending: Authenticating,
        exchange: Box<dyn AuthExchange>,
    },
    /// A re-authentication, once connected.
    Reauthenticating(Box<dyn AuthExchange>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("number", &self.number)
            .field("peer", &self.info.peer)
            .field("client_id", &self.info.client_id)
            .field("closed", &self.conn.is_closed())
            .finish_non_exhaustive()
    }
}

/// What a connection waits for.
#[derive(Debug)]
enum Waiting {
    /// A CONNECT accepted so far waits for the session of the connection it takes over.
    Takeover {
        connect: Accepting,
        awaited: Awaited,
        until: Instant,
        /// The transport was lost meanwhile: the connection closes once the session is here,
        /// so that the session goes on offline instead of being lost with the request.
        lost: bool,
    },
    /// A CONNECT waits for its credentials' check, on the broker's verification threads.
    Verify {
        connect: Authenticating,
        ticket: Arc<Ticket>,
        until: Instant,
    },
    /// A routed publish waits for room in full inboxes before it is acknowledged.
    Publish {
        pending: PendingPublish,
        until: Instant,
    },
}

/// A CONNECT whose credentials are being checked: what accepting it needs next.
#[derive(Debug)]
struct Authenticating {
    connect: Box<midge_codec::Connect>,
    client_id: midge_codec::ByteStr,
    username: Option<midge_codec::ByteStr>,
    /// The user name was proven (see [`ClientInfo::username_verified`]).
    verified: bool,
    /// By the password file of the client's listener.
    by_password_file: bool,
}

/// A CONNECT that passed authentication and owns its client's slot.
#[derive(Debug)]
struct Accepting {
    info: ClientInfo,
    slot: Arc<Slot>,
    clean_start: bool,
    version: ProtocolVersion,
    /// The Keep Alive in effect, in seconds.
    keep_alive: u16,
    /// The will, for the journal (only when the store has one).
    will: Option<midge_codec::Will>,
}

/// Retained messages matched by new subscriptions and not yet sent. They are moved into the
/// session's queue as it has room, so that any number of them reach a subscriber that reads,
/// under its Receive Maximum, while only their references wait here [MQTT-3.3.1-9]. Each entry
/// is counted against the global memory budget until it is sent.
#[derive(Default)]
struct RetainedBacklog {
    batches: VecDeque<RetainedBatch>,
    /// Bytes reserved against the global budget for the entries.
    reserved: usize,
}

/// The retained messages of one subscription, with what their deliveries take from it.
struct RetainedBatch {
    /// The subscription's filter: a later subscription to the same filter replaces the batch.
    filter: midge_codec::ByteStr,
    qos: midge_codec::QoS,
    subscription_id: Option<midge_codec::SubscriptionId>,
    messages: VecDeque<Retained>,
}

/// What a connection keeps between batches.
#[derive(Default)]
struct Scratch {
    /// Deliveries just taken from the inbox; kept to reuse its allocation.
    taken: Vec<Delivery>,
    /// Made only when the broker has an ACL file.
    acl: Option<Box<AclMemo>>,
    /// The journal ticket that output made so far waits for (0: none).
    hold: u64,
    /// Session changes on their way to the journal; kept to reuse the allocation.
    changes: Vec<SessionChange>,
}

/// The ACL's last answers for one client: an answer depends only on the client, the topic
/// and the rules, so it holds until the rules are reloaded. A client that publishes to (or
/// receives) the same few topics over and over is checked once per topic, not per message.
#[derive(Default)]
struct AclMemo {
    generation: u64,
    answers: [Option<(midge_codec::ByteStr, Access, bool)>; ACL_MEMO],
    next: usize,
}

/// Answers an [`AclMemo`] keeps, replaced in turn.
const ACL_MEMO: usize = 4;

/// The longest topic an [`AclMemo`] remembers an answer for, in bytes.
const ACL_MEMO_TOPIC: usize = 128;

impl AclMemo {
    /// Whether the ACL file, if any, lets `client` have `access` to `topic`.
    fn allows(
        memo: &mut Option<Box<Self>>,
        core: &Core,
        client: &ClientInfo,
        topic: &midge_codec::ByteStr,
        access: Access,
    ) -> bool {
        if client.internal {
            return true;
        }
        // Read before the answer, so that an answer from rules that a reload is replacing is
        // dropped at the next look.
        let generation = core.file_auth.acl_generation();
        if let Some(memo) = memo.as_deref_mut() {
            if memo.generation != generation {
                *memo = Self {
                    generation,
                    ..Self::default()
                };
            }
            let known = memo
                .answers
                .iter()
                .flatten()
                .find(|(t, a, _)| *a == access && t == topic);
            if let Some((_, _, allowed)) = known {
                return *allowed;
            }
        }
        let Some(allowed) = core.file_auth.acl_decision(client, topic.as_str(), access) else {
            return true;
        };
        // Remembered with bytes of its own (a received topic shares its whole packet's
        // buffer), and only when short: a short topic is kept inline, without an allocation.
        if topic.len() > ACL_MEMO_TOPIC {
            return allowed;
        }
        let memo = memo.get_or_insert_with(|| {
            Box::new(Self {
                generation,
                ..Self::default()
            })
        });
        let slot = memo.next % ACL_MEMO;
        memo.answers[slot] = Some((topic.unshared(), access, allowed));
        memo.next = slot + 1;
        allowed
    }
}

/// What one waiting retained message costs, counted against the global budget: its entry.
const RETAINED_ENTRY: usize = size_of::<Retained>();

impl Connection {
    /// A new connection from `peer`, counted among the broker's open connections until it is
    /// dropped. Past `limits.max_connections` its CONNECT is refused with 0x89 (Server busy).
    pub fn new(core: &Arc<Core>, peer: SocketAddr, now: Instant) -> Self {
        let core = core.clone();
        let open = core.counters.connections.fetch_add(1, Relaxed);
        core.counters.connections_total.fetch_add(1, Relaxed);
        let over_limit = open >= core.live.max_connections();
        let number = core.next_conn.fetch_add(1, Relaxed);
        let conn = ServerConnection::new(core.server_config.clone(), now);
        let inbox = Arc::new(Inbox::new());
        let mut connection = Self {
            conn,
            number,
            over_limit,
            info: ClientInfo {
                client_id: midge_codec::ByteStr::new(),
                username: None,
                version: ProtocolVersion::V5,
                peer,
                listener: 0,
                // `::ffff:127.0.0.1` from a dual-stack listener is loopback too.
                local: peer.ip().to_canonical().is_loopback(),
                verified: false,
                by_password_file: false,
                internal: false,
            },
            client: None,
            scratch: None,
            handover: None,
            signalled: false,
            shutting_down: false,
            deliveries_waiting: false,
            transmitting: false,
            accepted: false,
            username_from_certificate: false,
            counted: 0,
            retained: None,
            waiting: None,
            auth: None,
            inbox,
            core,
        };
        if connection
            .core
            .register_connection(number, &connection.inbox)
        {
            connection.shut_down();
        }
        connection
    }

    /// Makes `name`, from the client's TLS certificate, the connection's user name: what
    /// [`Hooks::authenticate`](crate::Hooks::authenticate) and every later hook see, whatever
    /// user name the CONNECT carries (the `use_identity_as_username` listener option). Call it
    /// before any input.
    pub fn set_certificate_username(&mut self, name: &str) {
        self.info.username = Some(midge_codec::ByteStr::from(name.to_owned()));
        self.username_from_certificate = true;
    }

    /// Says which listener the client came through (its index in
    /// [`BrokerConfig::listeners`](crate::BrokerConfig::listeners); 0 unless set), and whether
    /// the transport is local to this machine even though the peer address does not say so
    /// (a Unix socket). Loopback addresses are local already. Call it before any input.
    pub fn set_listener(&mut self, listener: usize, local: bool) {
        // Configurations have far fewer listeners; one past the range names none.
        self.info.listener = u16::try_from(listener).unwrap_or(u16::MAX);
        let index = self.info.listener;
        self.core
            .update_connection(self.number, |open| open.listener = index);
        self.info.local |= local;
    }

    /// Makes this the broker's own connection (a bridge's local end): no hook or ACL is asked
    /// about it, it may publish into `$SYS`, and it may take the client identifiers that start
    /// with [`BRIDGE_CLIENT_PREFIX`](super::BRIDGE_CLIENT_PREFIX), which other clients are
    /// refused. Call it before any input.
    pub fn set_internal(&mut self) {
        self.info.internal = true;
        self.info.local = true;
    }

    /// Handles the bytes the client sent: complete packets are taken from `input` and
    /// answered; an incomplete one stays for more bytes. While the connection waits
    /// ([`Connection::wants_input`] is false) packets stay in `input` too: call again once it
    /// wants input, even without new bytes.
    pub fn handle_input(&mut self, now: Instant, input: &mut BytesMut) {
        while self.wants_input() {
            let before = input.len();
            self.conn.handle_bytes(now, input);
            self.progress(now);
            // A CONNECT accepted at once, or SUBSCRIBE and UNSUBSCRIBE packets just answered:
            // the packets behind them may have waited for the answers (see
            // `ServerConnection::handle_bytes`). Go on until nothing more is taken.
            if !std::mem::take(&mut self.accepted) && input.len() == before {
                break;
            }
        }
        self.pump(now);
        self.journal_changes();
    }

    /// Whether the connection takes input now: not while it waits for a session it takes
    /// over or for room for a publish, and not once it is closed.
    pub fn wants_input(&self) -> bool {
        self.waiting.is_none() && !self.conn.is_closed()
    }

    /// Ready when something came for the connection from elsewhere in the broker:
    /// deliveries, a takeover request or its answer, the broker stopping, or room in an inbox
    /// a publish waits for. Then call [`Connection::handle_wakeup`]. Registers the task to be
    /// woken otherwise; for one task at a time.
    pub fn poll_wakeup(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.inbox.poll_ready(cx).is_ready() {
            self.signalled = true;
        }
        let mut room = false;
        if let Some(Waiting::Publish { pending, .. }) = self.waiting.as_deref() {
            for blocked in &pending.blocked {
                room |= blocked.poll_room(cx).is_ready();
            }
        }
        if self.signalled || room {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Acts on whatever came from elsewhere in the broker (see [`Connection::poll_wakeup`]).
    /// Cheap when nothing came and nothing waits, so that a driver may also call it for every
    /// connection in turn; a publish waiting for room is offered again each time.
    pub fn handle_wakeup(&mut self, now: Instant) {
        let signalled = std::mem::take(&mut self.signalled) | self.inbox.take_signal();
        if signalled && !self.is_deciding() {
            self.on_signalled();
        }
        self.progress(now);
        self.pump(now);
        self.journal_changes();
    }

    /// Handles the connection's timers due at `now`: keepalive, the CONNECT timeout,
    /// retransmission, and the end of a wait.
    pub fn handle_timeout(&mut self, now: Instant) {
        // While the connection waits (its CONNECT decided, or room for a publish), it reads no
        // input, so its own timers wait with it: a keepalive must not run out on a PINGREQ
        // that sits unread.
        if self.waiting.is_none() {
            self.conn.handle_timeout(now);
        }
        self.progress(now);
        self.pump(now);
        self.journal_changes();
    }

    /// When to call [`Connection::handle_timeout`] next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.waiting.as_deref() {
            Some(
                Waiting::Takeover { until, .. }
                | Waiting::Verify { until, .. }
                | Waiting::Publish { until, .. },
            ) => Some(*until),
            None => self.conn.poll_timeout(),
        }
    }

    /// Appends the next packet to send to `out`; false when there is none. A run of calls
    /// until false is one batch: at its start, deliveries routed to the client and retained
    /// messages of new subscriptions move into the session's queue (a batch at a time, so
    /// that input is not starved: [`Connection::has_work`] tells whether more wait), and at
    /// its end the session's queue is accounted against the broker's limits.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut BytesMut) -> bool {
        if !std::mem::replace(&mut self.transmitting, true) {
            self.pump(now);
        }
        if self.conn.poll_transmit(now, out) {
            // A QoS 2 PUBLISH just made is kept with its identifier before it goes out.
            self.journal_changes();
            return true;
        }
        self.transmitting = false;
        self.sync_budget();
        false
    }

    /// Whether work waits that nothing else will wake the driver for: retained messages that
    /// now fit the session's queue, or deliveries that waited for them. The driver should
    /// transmit again soon (after letting others run). False while a transmit batch is under
    /// way: the rest of the batch comes first, and waits for the transport to take output.
    pub fn has_work(&mut self) -> bool {
        !self.transmitting
            && self.conn.is_connected()
            && match self.retained {
                None => self.deliveries_waiting,
                Some(_) => self.retained_ready(),
            }
    }

    /// The transport is gone: the connection closes, its session goes offline or ends, and
    /// its will is published as its Will Delay says.
    pub fn connection_lost(&mut self, now: Instant) {
        match self.waiting.as_deref_mut() {
            Some(Waiting::Takeover { lost, .. }) => *lost = true,
            Some(Waiting::Verify { ticket, .. }) => {
                ticket.abandon();
                self.waiting = None;
                self.conn.connection_lost();
            }
            _ => self.conn.connection_lost(),
        }
        self.progress(now);
    }

    /// Whether the connection is closed; send what [`Connection::poll_transmit`] still has (a
    /// DISCONNECT or a refusing CONNACK), then drop it. A connection whose client closed it
    /// while a QoS 0 publish it sent waits for room is not closed yet: that publish, and what
    /// the client sent after it, are routed first (call [`Connection::handle_wakeup`] and
    /// [`Connection::handle_timeout`] as before).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed() && !matches!(self.waiting.as_deref(), Some(Waiting::Publish { .. }))
    }

    /// The broker core the connection belongs to.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Whether the connection waits for the session of the connection it takes over: its
    /// CONNECT is not decided yet.
    fn is_deciding(&self) -> bool {
        matches!(
            self.waiting.as_deref(),
            Some(Waiting::Takeover { .. } | Waiting::Verify { .. })
        )
    }

    /// Moves deliveries and retained messages into the session's queue: after every input,
    /// wakeup and timeout, and when a transmit batch begins. Deliveries are taken even while
    /// the transport is not taking output, so that the inbox does not fill for a slow reader:
    /// the session's queue holds them within its limits (and drops QoS 0 ones past them,
    /// counted), and publishers do not wait on an inbox nobody empties.
    fn pump(&mut self, now: Instant) {
        // Retained messages of new subscriptions go first: a message published after the
        // SUBSCRIBE must not arrive before the retained one it replaces.
        if self.retained.is_some() && self.conn.is_connected() {
            self.send_retained(now);
        }
        // What the inbox accepted already counts against the session's limits, so taking
        // it into the session's queue needs no room of its own.
        if self.deliveries_waiting && self.retained.is_none() && self.conn.is_connected() {
            self.deliveries_waiting = false;
            self.take_deliveries(now);
        }
    }

    /// Goes on with what the connection waits for, then answers its events, until it waits
    /// again or none is left.
    fn progress(&mut self, now: Instant) {
        loop {
            let Some(waiting) = self.waiting.take() else {
                match self.conn.poll_event() {
                    Some(event) => self.on_event(event, now),
                    None => return,
                }
                continue;
            };
            match *waiting {
                Waiting::Takeover {
                    connect,
                    awaited,
                    until,
                    lost,
                } => {
                    let handover = match awaited.poll() {
                        Answer::Waiting if now < until => {
                            self.waiting = Some(Box::new(Waiting::Takeover {
                                connect,
                                awaited,
                                until,
                                lost,
                            }));
                            return;
                        }
                        Answer::Waiting => awaited.give_up().map(|handover| *handover),
                        Answer::Answered(handover) => Some(*handover),
                        Answer::Refused => None,
                    };
                    if handover.is_none() {
                        tracing::warn!(client_id = ?connect.info.client_id.as_str(), "previous connection did not hand over its session");
                        // What the journal holds of that session must not come back inside
                        // the new one.
                        self.forget_session(&connect.info.client_id);
                    }
                    self.finish_connect(now, connect, handover);
                    if lost {
                        self.conn.connection_lost();
                    }
                }
                Waiting::Verify {
                    connect,
                    ticket,
                    until,
                } => {
                    if self.conn.is_closed() {
                        ticket.abandon();
                        continue;
                    }
                    match ticket.answer() {
                        Some(Ok(())) => self.authenticated(now, connect),
                        Some(Err(code)) => self.refuse_credentials(&connect.client_id, code),
                        None if now < until => {
                            self.waiting = Some(Box::new(Waiting::Verify {
                                connect,
                                ticket,
                                until,
                            }));
                            return;
                        }
                        None => {
                            ticket.abandon();
                            tracing::warn!(peer = %self.info.peer, client_id = ?connect.client_id.as_str(), "credentials not checked within the connect timeout, refusing CONNECT");
                            self.core
                                .counters
                                .rejected_connections
                                .fetch_add(1, Relaxed);
                            self.conn.reject(ReasonCode::SERVER_BUSY);
                        }
                    }
                    // A takeover request or the broker's stop that came meanwhile waited.
                    self.inbox.signal();
                }
                Waiting::Publish { pending, until } => {
                    if let Some(pending) = self.retry_publish(now, pending, until) {
                        self.waiting = Some(Box::new(Waiting::Publish { pending, until }));
                        return;
                    }
                }
            }
        }
    }

    /// Answers one event; a CONNECT or a publish may leave the connection waiting.
    fn on_event(&mut self, event: ServerEvent, now: Instant) {
        match event {
            ServerEvent::Connect {
                mut connect,
                client_id,
            } => {
                // Not used, and held across the decision: a CONNECT's user properties decode to
                // many times their wire size.
                connect.properties.user_properties = Vec::new();
                self.on_connect(now, connect, client_id);
            }
            ServerEvent::Auth { reason, data } => self.on_auth(now, reason, data),
            ServerEvent::Publish { message, packet_id } => {
                self.on_publish(now, message, packet_id);
            }
            // A SUBSCRIBE or UNSUBSCRIBE read together with what closed the connection (a
            // DISCONNECT after it, a protocol error) can no longer be answered: the client did
            // not see it done, and the session does not record it, so the index must not
            // either.
            ServerEvent::Subscribe { .. } | ServerEvent::Unsubscribe { .. }
                if self.conn.is_closed() => {}
            ServerEvent::Subscribe {
                packet_id,
                requests,
                subscription_id,
            } => self.on_subscribe(packet_id, &requests, subscription_id),
            ServerEvent::Unsubscribe { packet_id, filters } => {
                let codes = self.conn.unsubscribe_ack(packet_id);
                self.unsubscribe(&filters, &codes);
            }
            ServerEvent::Closed { reason, will } => {
                self.on_closed(reason, will, now);
                // Deliveries refused by the closed inbox wait for the session's next holder,
                // which is known now.
                self.inbox.made_room();
            }
            // Events added to midge-proto after this broker: nothing to answer.
            _ => {}
        }
    }

    fn on_connect(
        &mut self,
        now: Instant,
        mut connect: Box<midge_codec::Connect>,
        client_id: midge_codec::ByteStr,
    ) {
        let core = self.core.clone();
        if self.over_limit {
            core.counters.rejected_connections.fetch_add(1, Relaxed);
            tracing::warn!(peer = %self.info.peer, "connection limit reached, refusing CONNECT");
            return self.conn.reject(ReasonCode::SERVER_BUSY);
        }
        // A client that sent no identifier gets one nobody can guess [MQTT-3.1.3-6].
        let client_id = if !client_id.is_empty() {
            client_id
        } else if let Some(id) = crate::random::assigned_client_id() {
            self.conn.assign_client_id(id.clone());
            id
        } else {
            tracing::error!(peer = %self.info.peer, "no random source to assign a client identifier");
            return self.conn.reject(ReasonCode::SERVER_UNAVAILABLE);
        };
        // Taken out of the CONNECT: the password is not kept past this decision.
        let password = connect.password.take();
        if let Some(method) = connect.properties.authentication_method.clone() {
            return self.start_enhanced(now, connect, client_id, method.as_str());
        }
        let username = if self.username_from_certificate {
            self.info.username.clone()
        } else {
            // Kept for the connection's life (and a delayed will's): its own bytes.
            connect
                .username
                .as_ref()
                .map(midge_codec::ByteStr::unshared)
        };
        let pending = Authenticating {
            connect,
            client_id,
            username,
            verified: self.username_from_certificate,
            by_password_file: false,
        };
        self.check_credentials(now, pending, password);
    }

    /// Asks the hooks about a CONNECT's credentials, then goes on with it, or waits for the
    /// costly check they asked for.
    fn check_credentials(
        &mut self,
        now: Instant,
        pending: Authenticating,
        password: Option<bytes::Bytes>,
    ) {
        let core = self.core.clone();
        let Authenticating {
            connect,
            client_id,
            username,
            verified,
            by_password_file,
        } = pending;
        // The broker's own connection (a bridge's local end) is trusted; any other is refused
        // the identifiers reserved for it.
        if self.info.internal {
            let pending = Authenticating {
                connect,
                client_id,
                username,
                verified: true,
                by_password_file: false,
            };
            return self.authenticated(now, pending);
        }
        if super::is_bridge_client_id(client_id.as_str()) {
            return self.refuse_credentials(&client_id, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        let request = ConnectRequest {
            client_id: client_id.as_str(),
            username: username.as_ref().map(|u| u.as_str()),
            password: password.as_deref(),
            version: connect.protocol,
            peer: self.info.peer,
            clean_start: connect.clean_start,
            listener: self.info.listener(),
            local: self.info.local,
            username_verified: verified,
            now,
        };
        if let Err(code) = core.hooks.authenticate(&request) {
            return self.refuse_credentials(&client_id, code);
        }
        let check = core.hooks.verify(&request);
        // Once accepted, a user name is proven where a password file checked it, or hooks
        // that check passwords say they did.
        let checked_by_file = !verified && core.file_auth.checks_passwords(request.listener);
        let by_password_file = by_password_file || checked_by_file;
        let verified = verified || checked_by_file || core.hooks.proves_usernames();
        drop(password);
        let connect = Authenticating {
            connect,
            client_id,
            username,
            verified,
            by_password_file,
        };
        match check {
            None => self.authenticated(now, connect),
            Some(check) => {
                let ticket =
                    core.verifications
                        .push(check, self.inbox.clone(), core.live.max_connections());
                let until = now + Duration::from_millis(core.config.limits.connect_timeout_ms);
                self.waiting = Some(Box::new(Waiting::Verify {
                    connect,
                    ticket,
                    until,
                }));
            }
        }
    }

    /// Starts the enhanced authentication of a CONNECT that named `method` (MQTT 5.0 §4.12).
    fn start_enhanced(
        &mut self,
        now: Instant,
        mut connect: Box<midge_codec::Connect>,
        client_id: midge_codec::ByteStr,
        method: &str,
    ) {
        let Some(authenticator) = self.core.hooks.authenticator(method) else {
            // [MQTT-4.12.0-1]
            return self.refuse_credentials(&client_id, ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let data = connect.properties.authentication_data.take();
        let step = authenticator.start(
            &AuthRequest {
                client_id: client_id.as_str(),
                username: connect.username.as_ref().map(|u| u.as_str()),
                listener: self.info.listener(),
                peer: self.info.peer,
                now,
            },
            data.as_deref(),
        );
        let pending = Authenticating {
            connect,
            client_id,
            username: None,
            verified: false,
            by_password_file: false,
        };
        self.enhanced_step(now, pending, step);
    }

    /// Acts on a step of the enhanced authentication of a CONNECT.
    fn enhanced_step(&mut self, now: Instant, mut pending: Authenticating, step: AuthStep) {
        match step {
            AuthStep::Continue { data, exchange } => {
                self.conn.auth_continue(data);
                self.auth = Some(Box::new(AuthState::Exchanging { pending, exchange }));
            }
            // On a listener whose certificates name their clients, a method must prove the
            // same client the certificate did.
            AuthStep::Success { username, .. }
                if self.username_from_certificate
                    && self.info.username.as_ref().map(|u| u.as_str())
                        != Some(username.as_str()) =>
            {
                self.refuse_credentials(&pending.client_id, ReasonCode::NOT_AUTHORIZED);
            }
            AuthStep::Success { username, data } => {
                self.conn.set_auth_success_data(data);
                pending.username = Some(midge_codec::ByteStr::from(username));
                pending.verified = true;
                // SCRAM is the password file's, where the broker offers it.
                pending.by_password_file = pending
                    .connect
                    .properties
                    .authentication_method
                    .as_ref()
                    .is_some_and(|m| m.as_str() == midge_auth::scram::METHOD)
                    && self.core.file_auth.checks_passwords(self.info.listener());
                self.check_credentials(now, pending, None);
            }
            AuthStep::Failure(code) => self.refuse_credentials(&pending.client_id, code),
        }
    }

    /// The client's AUTH: the next step of its CONNECT's enhanced authentication, or of a
    /// re-authentication once connected [MQTT-4.12.1-1].
    fn on_auth(&mut self, now: Instant, reason: ReasonCode, data: Option<bytes::Bytes>) {
        let state = self.auth.take().map(|state| *state);
        if !self.conn.is_connected() {
            if let Some(AuthState::Exchanging { pending, exchange }) = state {
                let step = exchange.next(data.as_deref());
                self.enhanced_step(now, pending, step);
            }
            return;
        }
        let step = match (reason, state) {
            (ReasonCode::RE_AUTHENTICATE, _) => {
                let authenticator = self
                    .conn
                    .auth_method()
                    .and_then(|method| self.core.hooks.authenticator(method.as_str()));
                let Some(authenticator) = authenticator else {
                    return self.reauth_failed(ReasonCode::BAD_AUTHENTICATION_METHOD);
                };
                authenticator.start(
                    &AuthRequest {
                        client_id: self.info.client_id.as_str(),
                        username: self.info.username.as_ref().map(|u| u.as_str()),
                        listener: self.info.listener(),
                        peer: self.info.peer,
                        now,
                    },
                    data.as_deref(),
                )
            }
            (_, Some(AuthState::Reauthenticating(exchange))) => exchange.next(data.as_deref()),
            // The state machine lets no other AUTH through.
            _ => return,
        };
        match step {
            AuthStep::Continue { data, exchange } => {
                self.conn.auth_continue(data);
                self.auth = Some(Box::new(AuthState::Reauthenticating(exchange)));
            }
            // Re-authentication proves the same client again; it cannot make it another. The
            // hooks are asked again too: a user banned since may not go on.
            AuthStep::Success { username, data }
                if self.info.username.as_ref().map(|u| u.as_str()) == Some(username.as_str()) =>
            {
                let request = ConnectRequest {
                    client_id: self.info.client_id.as_str(),
                    username: Some(username.as_str()),
                    password: None,
                    version: self.info.version,
                    peer: self.info.peer,
                    clean_start: false,
                    listener: self.info.listener(),
                    local: self.info.local,
                    username_verified: true,
                    now,
                };
                match self.core.hooks.authenticate(&request) {
                    Ok(()) => self.conn.reauth_success(data),
                    Err(code) => self.reauth_failed(code),
                }
            }
            AuthStep::Success { .. } => self.reauth_failed(ReasonCode::NOT_AUTHORIZED),
            AuthStep::Failure(code) => self.reauth_failed(code),
        }
    }

    /// A re-authentication failed: the client is disconnected with `code` [MQTT-4.12.1-2].
    fn reauth_failed(&mut self, code: ReasonCode) {
        self.core.counters.auth_failures.fetch_add(1, Relaxed);
        tracing::info!(peer = %self.info.peer, client_id = ?self.info.client_id.as_str(), code = code.0, "re-authentication failed");
        self.conn.disconnect(code);
    }

    /// Refuses a CONNECT for its credentials (or for their absence), counted.
    fn refuse_credentials(&mut self, client_id: &midge_codec::ByteStr, code: ReasonCode) {
        let counters = &self.core.counters;
        counters.rejected_connections.fetch_add(1, Relaxed);
        counters.auth_failures.fetch_add(1, Relaxed);
        tracing::info!(peer = %self.info.peer, client_id = ?client_id.as_str(), code = code.0, "authentication refused");
        self.conn.reject(code);
    }

    /// Goes on with a CONNECT whose credentials were accepted: its will, then its session.
    fn authenticated(&mut self, now: Instant, authenticating: Authenticating) {
        let core = self.core.clone();
        let Authenticating {
            connect,
            client_id,
            username,
            verified,
            by_password_file,
        } = authenticating;
        let info = ClientInfo {
            client_id: client_id.clone(),
            username,
            version: connect.protocol,
            peer: self.info.peer,
            listener: self.info.listener,
            local: self.info.local,
            verified,
            by_password_file,
            internal: self.info.internal,
        };
        // A will is a publish: one the client may not make is refused now, not dropped
        // unseen when the client leaves.
        if let Some(will) = &connect.will {
            let message = Core::will_message(will.clone());
            if let Err(code) = core.authorize_publish(&info, &message) {
                core.counters.publishes_denied.fetch_add(1, Relaxed);
                core.counters.rejected_connections.fetch_add(1, Relaxed);
                tracing::debug!(peer = %self.info.peer, client_id = ?client_id.as_str(), topic = ?message.topic.as_str(), "will not authorized, refusing CONNECT");
                return self.conn.reject(code);
            }
        }
        // The will is kept for the connection's life (and a delayed one after it): it counts
        // against the memory budget like a queued message, and a CONNECT whose will does not
        // fit is refused.
        let will_bytes = connect
            .will
            .as_ref()
            .map_or(0, midge_codec::Will::held_bytes);
        if will_bytes > 0 {
            if !core.reserve(will_bytes) && !core.reserve_in_place_of_will(&client_id, will_bytes) {
                core.counters.rejected_connections.fetch_add(1, Relaxed);
                core.counters.dropped_memory_budget.fetch_add(1, Relaxed);
                tracing::warn!(peer = %self.info.peer, client_id = ?client_id.as_str(), "memory budget exhausted, refusing CONNECT with a will");
                return self.conn.reject(ReasonCode::QUOTA_EXCEEDED);
            }
            self.inbox.charge_will(will_bytes);
        }
        // Claim the client's slot: route new messages to our inbox from now on, and take the
        // session from its previous owner (offline, or a connection we take over).
        let max_sessions = core.live.max_sessions();
        let mut on_disk = 0;
        let mut floor = 0;
        let (slot, mut existing, awaited) = loop {
            let Some(slot) =
                Registered::find_or_add(&mut core.registry(), &client_id, max_sessions)
            else {
                core.release(self.inbox.take_will_charge());
                core.counters.rejected_connections.fetch_add(1, Relaxed);
                tracing::warn!(peer = %self.info.peer, client_id = ?client_id.as_str(), "session limit reached, refusing CONNECT");
                return self.conn.reject(ReasonCode::QUOTA_EXCEEDED);
            };
            let mut state = slot.lock();
            let online = SlotState::Online {
                conn: self.number,
                inbox: self.inbox.clone(),
            };
            match std::mem::replace(&mut *state, online) {
                SlotState::Vacant => break (slot.clone(), None, None),
                SlotState::Dead => {
                    // Removed from the registry after we looked it up: undo and look again.
                    *state = SlotState::Dead;
                    continue;
                }
                SlotState::Offline {
                    session,
                    will,
                    expiry,
                    on_disk: spilled,
                    ..
                } => {
                    on_disk = spilled.messages;
                    // Tags are taken under the slot's lock (`Core::deliver_to`): every
                    // delivery routed to us from now on is tagged above this, and comes
                    // through our inbox, never from the journal's queue.
                    if let Some(journal) = core.journal().filter(|_| on_disk > 0) {
                        floor = journal.next_tag();
                        slot.floor
                            .fetch_max(floor, std::sync::atomic::Ordering::Release);
                    }
                    core.cancel_deadlines(will.as_deref(), expiry);
                    // Back before the will's delay: the will is cancelled [MQTT-3.1.3-9],
                    // unless Clean Start 1 ends the session first, which publishes it
                    // [MQTT-3.1.2-8]; it goes on as a takeover's will does, below.
                    // The queue's bytes stay counted against the budget, now as ours.
                    self.counted = session.queued_bytes();
                    let (will, info) = match will {
                        Some(p) if connect.clean_start => {
                            let delay = p.will.properties.will_delay_interval.unwrap_or(0);
                            (Some((p.will, delay)), Some(p.info))
                        }
                        _ => (None, None),
                    };
                    break (
                        slot.clone(),
                        Some(Handover {
                            session: Some(*session),
                            will,
                            info,
                        }),
                        None,
                    );
                }
                SlotState::Online { inbox: old, .. } => {
                    if connect.clean_start {
                        old.end_session();
                    }
                    // Ask the old connection for the session while holding the slot lock, so
                    // that a connection closing at the same time finds the request.
                    let (reply, awaited) = handover::request(self.inbox.clone());
                    let asked = old.request_takeover(reply).is_ok();
                    break (slot.clone(), None, asked.then_some(awaited));
                }
            }
        };
        // A journaled session's queue waited in the journal: it comes back into memory now
        // (with the slot ours, so new deliveries queue behind it in our inbox).
        if let (Some(journal), false) =
            (core.journal().filter(|_| on_disk > 0), connect.clean_start)
        {
            if let Some(session) = existing.as_mut().and_then(|h| h.session.as_mut()) {
                let in_flight: std::collections::HashSet<u64> = session.in_flight_tags().collect();
                for delivery in journal.queued(&client_id, now) {
                    // Sent before the client left (a QoS 1 message is still queued in the
                    // journal until acknowledged): it is resent from the session already.
                    // Routed since the slot became ours: it is in our inbox too.
                    if in_flight.contains(&delivery.tag) || delivery.tag > floor {
                        continue;
                    }
                    let size = delivery.size();
                    self.counted += size;
                    add_bytes(&core, size);
                    session.enqueue_admitted(delivery);
                }
            }
        }
        let accepting = Accepting {
            info,
            slot,
            clean_start: connect.clean_start,
            version: connect.protocol,
            keep_alive: keep_alive_in_effect(connect.keep_alive, core.server_config.max_keep_alive),
            will: core.journal().and(connect.will.clone()),
        };
        match awaited {
            Some(awaited) => {
                // The old connection answers between two packets: it may first have to wait
                // up to the backpressure timeout for a full inbox. Giving up before that would
                // start a new session and lose the old one's queued messages.
                let wait = core
                    .live
                    .close_timeout()
                    .saturating_add(core.live.backpressure_timeout());
                self.waiting = Some(Box::new(Waiting::Takeover {
                    connect: accepting,
                    awaited,
                    until: now + wait,
                    lost: false,
                }));
            }
            None => self.finish_connect(now, accepting, existing),
        }
    }

    /// Accepts a CONNECT with the session it takes over, if any.
    fn finish_connect(&mut self, now: Instant, connect: Accepting, existing: Option<Handover>) {
        let core = self.core.clone();
        let client_id = connect.info.client_id.clone();
        let mut session = None;
        let mut old_will = None;
        if let Some(handover) = existing {
            // The will of the session's previous connection (taken over, or closed with its
            // delay running) is published unless its delay is running and the session goes
            // on [MQTT-3.1.3-9].
            if let (Some((will, delay)), Some(old)) = (handover.will, handover.info) {
                if delay == 0 || connect.clean_start {
                    old_will = Some((will, old));
                }
            }
            session = handover.session;
        }
        let mut ended = false;
        if connect.clean_start {
            if let Some(old) = session.take() {
                core.remove_subscriptions(&old);
                ended = true;
                core.hooks.on_session_expired(client_id.as_str());
            }
            // What reached our inbox before the old session's subscriptions were removed was
            // routed by them: it ends with the old session, as its queue does. The new session
            // has no subscription yet.
            let mut stale = Vec::new();
            self.inbox.take(usize::MAX, &mut stale, &core.inbox_limits);
            for delivery in stale {
                core.release(delivery.size());
                core.journal_finished(&connect.slot, delivery.tag);
            }
        }
        // Published once the old subscriptions are gone, so that it does not reach the new
        // session through them.
        if let Some((will, old)) = old_will {
            core.publish_will(will, &old, now);
        }
        // Forgotten by the journal once its will is published: a crash in between publishes
        // the will again rather than never.
        if ended {
            self.forget_session(&client_id);
        }
        if session.is_none() {
            core.hooks.on_session_created(client_id.as_str());
        }
        // A resumed session's queue was filled while its client was away, under the rules of
        // then: what the client may not read now is not sent.
        if let Some(session) = session.as_mut() {
            let info = &connect.info;
            let dropped = session.retain_queued(|d| core.hooks.authorize_read(info, &d.message));
            add(&core.counters.deliveries_denied, dropped as u64);
        }
        let present = session.is_some();
        // What the session dropped before is counted already; what accepting drops (in-flight
        // messages now too large for the client) is news.
        let drops_so_far = session.as_ref().map_or((0, 0), |s| {
            let stats = s.stats();
            (stats.dropped_expired, stats.dropped_too_large)
        });
        self.conn.accept(now, session);
        // The session's changes are written under its client identifier, which is ours from
        // here.
        self.info.client_id = connect.info.client_id.clone();
        self.journal_session(&connect, present, now);
        // Deliveries routed to our inbox since the slot became ours waited for this: the
        // session's queue, which they count against together with the inbox.
        self.sync_budget();
        core.counters.clients_connected.fetch_add(1, Relaxed);
        core.counters.connect_result(ReasonCode::SUCCESS);
        let info = &connect.info;
        tracing::info!(
            client_id = ?client_id.as_str(),
            peer = %info.peer,
            listener = info.listener,
            version = %version_name(connect.version),
            clean_start = connect.clean_start,
            keep_alive = connect.keep_alive,
            username = ?info.username.as_ref().map(|u| u.as_str()),
            session_present = present,
            "client connected"
        );
        core.hooks.on_connected(info, present);
        let view = Arc::new(ClientView {
            slot: connect.slot.clone(),
            info: connect.info.clone(),
            keep_alive: connect.keep_alive,
            clean_start: connect.clean_start,
            connected_at: now,
            in_flight: AtomicU32::new(0),
            expired_counted: AtomicU64::new(drops_so_far.0),
            too_large_counted: AtomicU64::new(drops_so_far.1),
        });
        core.update_connection(self.number, |open| open.client = Some(view.clone()));
        self.client = Some(view);
        self.info = connect.info;
        self.accepted = true;
        // A takeover request (or the broker's stop) that arrived while this CONNECT was
        // decided waited for it.
        self.inbox.signal();
    }

    /// Routes a publish, then acknowledges it: only once it is queued for every matching
    /// session, waiting (bounded) for room where a subscriber's inbox is full, so that no
    /// acknowledged QoS 1 or 2 message is silently lost. A 5.0 publisher learns of a
    /// subscriber that could not take it from 0x97 Quota exceeded.
    fn on_publish(
        &mut self,
        now: Instant,
        message: midge_proto::Message,
        packet_id: Option<midge_codec::PacketId>,
    ) {
        let core = self.core.clone();
        core.counters
            .per_thread
            .received(message.qos, message.payload.len());
        // The client's, once its CONNECT is accepted (fields apart: the memo is borrowed too).
        if self.client.is_none() {
            return;
        }
        let info = &self.info;
        let qos = message.qos;
        // A connection that only publishes gets its scratch box only once the ACL gives it
        // an answer to remember: without an ACL file it never needs one.
        let acl = match self.scratch.as_deref_mut() {
            Some(scratch) => {
                AclMemo::allows(&mut scratch.acl, &core, info, &message.topic, Access::Write)
            }
            None => {
                let mut memo = None;
                let allowed =
                    AclMemo::allows(&mut memo, &core, info, &message.topic, Access::Write);
                if memo.is_some() {
                    self.scratch = Some(Box::new(Scratch {
                        acl: memo,
                        ..Scratch::default()
                    }));
                }
                allowed
            }
        };
        let routed = match core.authorize_publish_given_acl(info, &message, acl) {
            Err(code) => {
                // 3.x cannot refuse a PUBLISH: its acknowledgement goes as usual, and the
                // message nowhere [MQTT-3.3.5-2].
                core.counters.publishes_denied.fetch_add(1, Relaxed);
                tracing::debug!(client_id = ?info.client_id.as_str(), topic = ?message.topic.as_str(), code = code.0, "publish not authorized");
                self.acknowledge(packet_id, code);
                return;
            }
            Ok(()) => match core.journal() {
                None => core.route_publish(message, Some(info), now, true),
                Some(journal) => {
                    if qos != midge_codec::QoS::AtMostOnce && !journal.has_room() {
                        return self.refuse_store_full(packet_id);
                    }
                    self.route_journaled(journal, message, packet_id, now)
                }
            },
        };
        let pending = PendingPublish {
            packet_id,
            qos,
            matched: routed.matched,
            refused: routed.refused,
            blocked: routed.blocked,
        };
        if pending.blocked.is_empty() {
            let reason = pending.reason();
            self.acknowledge(packet_id, reason);
            return;
        }
        // One deadline covers all of them: waiting the timeout for each in turn kept the
        // connection from answering a takeover for as many timeouts as there were stuck
        // subscribers, longer than the taking-over connection waits for its session.
        let until = now + core.live.backpressure_timeout();
        self.waiting = Some(Box::new(Waiting::Publish { pending, until }));
    }

    /// Offers a waiting publish's deliveries again; acknowledges the publish and returns
    /// `None` once none waits, or gives it back to wait on.
    ///
    /// Deliveries for this connection's own inbox are tried once more and then refused: only
    /// this connection makes room there. Before each try it moves deliveries from its own
    /// inbox into its session's queue, which frees room in the inbox: the publisher of what
    /// fills that inbox may be the very client this publish waits for, itself waiting for room
    /// here. Two clients publishing to each other would otherwise both wait out the timeout
    /// and drop. Only a full session, which only the client's reading drains, still ends in
    /// the timeout.
    fn retry_publish(
        &mut self,
        now: Instant,
        pending: PendingPublish,
        until: Instant,
    ) -> Option<PendingPublish> {
        let core = self.core.clone();
        match core.journal() {
            // The deliveries it drops and the QoS 2 identifier it frees are kept together:
            // a crash must not keep the identifier of a message that reached nobody.
            Some(journal) if pending.qos == midge_codec::QoS::ExactlyOnce => {
                let mut pending = Some(pending);
                let mut still = None;
                journal.atomically(&mut || {
                    if let Some(pending) = pending.take() {
                        still = self.retry_publish_now(now, pending, until);
                        self.journal_changes();
                    }
                });
                still
            }
            _ => self.retry_publish_now(now, pending, until),
        }
    }

    fn retry_publish_now(
        &mut self,
        now: Instant,
        mut pending: PendingPublish,
        until: Instant,
    ) -> Option<PendingPublish> {
        let core = self.core.clone();
        self.take_deliveries(now);
        // A connection taking over the session waits for it only so long: answer it now
        // rather than after this wait. The publish is not acknowledged then (the connection
        // closes), so its client sends it again.
        self.take_signals();
        // A QoS 0 publish read before the connection closed (typically together with its
        // client's DISCONNECT, from a client that publishes a burst and leaves) is never sent
        // again: it waits for room as it would have with the connection open, within the same
        // timeout, unless the connection must let go at once (taken over, kicked, or the
        // broker stopping). The connection reads nothing meanwhile, and the events after it
        // (the rest of the burst, the DISCONNECT) wait behind it, so the order holds.
        let must_leave = self.handover.is_some() || self.shutting_down;
        let give_up =
            must_leave || (self.conn.is_closed() && pending.qos != midge_codec::QoS::AtMostOnce);
        let mut still = Vec::new();
        for blocked in std::mem::take(&mut pending.blocked) {
            // A QoS 0 delivery may be dropped without failing the publish.
            let at_most_once = blocked.delivery.qos == midge_codec::QoS::AtMostOnce;
            let offered = if give_up {
                if pending.qos == midge_codec::QoS::ExactlyOnce && pending.matched > 0 {
                    // Some have the message, and its resend will not reach the rest (see
                    // `PendingPublish::reason`): this delivery goes on waiting, in the core.
                    core.detach(blocked, until);
                    continue;
                }
                core.abandon(blocked);
                Offered::Refused
            } else {
                match core.offer(blocked) {
                    Ok(offered) => offered,
                    Err(back) if now >= until || back.is_for(&self.inbox) => {
                        core.refuse(back);
                        Offered::Refused
                    }
                    Err(back) => {
                        still.push(back);
                        continue;
                    }
                }
            };
            match offered {
                Offered::Queued => pending.matched += 1,
                Offered::Refused if !at_most_once => pending.refused += 1,
                Offered::Refused | Offered::Gone => {}
            }
        }
        if !still.is_empty() {
            pending.blocked = still;
            return Some(pending);
        }
        let reason = pending.reason();
        self.acknowledge(pending.packet_id, reason);
        None
    }

    /// Routes a publish with its journal writes in one unit: the QoS 2 identifier the session
    /// now holds [MQTT-4.3.3-10] and every delivery to a persistent session become durable
    /// together, so that a crash never keeps the identifier without the message (the resend
    /// would be taken for a duplicate and lost) or the message without the identifier (the
    /// resend would be delivered twice). The acknowledgement waits for them.
    fn route_journaled(
        &mut self,
        journal: &dyn Journal,
        message: midge_proto::Message,
        packet_id: Option<midge_codec::PacketId>,
        now: Instant,
    ) -> Routed {
        let core = self.core.clone();
        let mut wrote = false;
        let mut message = Some(message);
        let mut routed = None;
        journal.atomically(&mut || {
            // Changes the session made before this publish go first (a PUBREL that freed
            // this identifier, say).
            self.journal_changes();
            let Some(message) = message.take() else {
                return;
            };
            let exactly_once = message.qos == midge_codec::QoS::ExactlyOnce;
            let outcome = core.route_publish(message, Some(&self.info), now, true);
            // Kept unless the publish is refused outright (PUBREC 0x97): a resend after a
            // crash must then be routed, not taken for a duplicate of nothing. One refused
            // only later, after waiting for room, is released in the unit that refuses it
            // (`retry_publish`).
            let refused = outcome.matched == 0 && outcome.blocked.is_empty() && outcome.refused > 0;
            if let (Some(packet_id), true, false) = (packet_id, exactly_once, refused) {
                if self.conn.session().is_some_and(Session::is_journaled) {
                    journal.write(Change::Delivery {
                        client_id: &self.info.client_id,
                        change: SessionChange::IncomingQos2 { packet_id },
                    });
                    wrote = true;
                }
            }
            routed = Some(outcome);
        });
        let routed = routed.unwrap_or_default();
        // Only what this publish wrote: a clean publisher's acknowledgement does not wait for
        // other clients' writes.
        if wrote || routed.journaled {
            self.hold_output(journal);
        }
        routed
    }

    /// Refuses a QoS 1 or 2 publish because the store is full (`max_disk_bytes`): 0x97 Quota
    /// exceeded under 5.0; a 3.x client, which cannot be told, is disconnected rather than
    /// given an acknowledgement for a message that would not be kept.
    fn refuse_store_full(&mut self, packet_id: Option<midge_codec::PacketId>) {
        let refused = self.core.counters.refused_store_full.fetch_add(1, Relaxed);
        // Once, then every thousandth: a full store refuses every message until it has room.
        if refused.is_multiple_of(1000) {
            tracing::warn!(client_id = ?self.info.client_id.as_str(), refused = refused + 1, "the store is full (max_disk_bytes): refusing QoS 1 and 2 messages");
        }
        if self.info.version.is_v5() {
            self.acknowledge(packet_id, ReasonCode::QUOTA_EXCEEDED);
        } else {
            if let Some(id) = packet_id {
                self.conn.forget_publish(id);
            }
            self.conn.disconnect(ReasonCode::QUOTA_EXCEEDED);
        }
    }

    /// Writes the session's record when its CONNECT is accepted: a persistent session (to
    /// come back after a restart) or a connection with a will (to be published if the broker
    /// dies with it). Marks the slot and the session journaled when the session persists.
    fn journal_session(&mut self, connect: &Accepting, resumed: bool, now: Instant) {
        let core = self.core.clone();
        let Some(journal) = core.journal() else {
            return;
        };
        let expiry = self.conn.session().map_or(0, Session::expiry_interval);
        let persistent = expiry > 0;
        connect.slot.journaled.store(persistent, Relaxed);
        connect
            .slot
            .recorded
            .store(persistent || connect.will.is_some(), Relaxed);
        self.conn.set_session_journaled(persistent);
        if !persistent && resumed {
            // A resumed session that now ends with its connection: a crash must not bring
            // it back.
            journal.write(Change::RemoveSession {
                client_id: &connect.info.client_id,
            });
            self.hold_output(journal);
        }
        if persistent || connect.will.is_some() {
            let mut record =
                SessionRecord::new(connect.info.client_id.clone(), connect.version, expiry, now);
            record.username = connect.info.username.clone();
            record.will = connect.will.clone().map(|will| {
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                (will, delay)
            });
            journal.write(Change::Session(&record));
            // The session's queued messages changed as it resumed (expired ones, ones the
            // client may no longer read).
            self.journal_changes();
            self.hold_output(journal);
        }
    }

    /// Tells the journal that the client's previous session ended (a Clean Start, a session
    /// that was not handed over), and holds the CONNACK until that is durable: a crash must
    /// not bring back a session the client was told is gone [MQTT-3.1.2-4].
    fn forget_session(&mut self, client_id: &midge_codec::ByteStr) {
        let core = self.core.clone();
        if let Some(journal) = core.journal() {
            journal.write(Change::RemoveSession { client_id });
            self.hold_output(journal);
        }
    }

    /// Output made from now on waits until everything written to the journal so far is
    /// durable.
    fn hold_output(&mut self, journal: &dyn Journal) {
        self.scratch.get_or_insert_with(Box::default).hold = journal.submitted();
    }

    /// Writes the session's changes to the journal: what became of its deliveries, and its
    /// incoming QoS 2 identifiers. Output waits for all but a finished delivery: a QoS 2
    /// PUBLISH must not reach the client before its identifier is kept, nor a PUBREL before
    /// its PUBREC is, nor a PUBCOMP before the identifier is free [MQTT-4.3.3-10].
    fn journal_changes(&mut self) {
        if !self.core.journaled {
            return;
        }
        let Some(journal) = self.core.journal() else {
            return;
        };
        let scratch = self.scratch.get_or_insert_with(Box::default);
        self.conn.take_session_changes(&mut scratch.changes);
        if scratch.changes.is_empty() {
            return;
        }
        let mut hold = false;
        for change in scratch.changes.drain(..) {
            hold |= !matches!(change, SessionChange::Finished { .. });
            journal.write(Change::Delivery {
                client_id: &self.info.client_id,
                change,
            });
        }
        if hold {
            scratch.hold = journal.submitted();
        }
    }

    /// The journal ticket that output made so far waits for: write it to the transport only
    /// once [`Connection::poll_durable`] is ready for that ticket. 0 when nothing waits (and
    /// always, without a journal).
    pub fn output_ticket(&self) -> u64 {
        self.scratch.as_ref().map_or(0, |s| s.hold)
    }

    /// Ready once the journal has made `ticket` durable, or failed (then the connection's
    /// held output must never be sent: drop it and call [`Connection::connection_lost`]).
    pub fn poll_durable(
        &self,
        ticket: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), JournalError>> {
        match self.core.journal() {
            Some(journal) if ticket != 0 => journal.poll_durable(ticket, cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Whether the journal has made `ticket` durable (always, without a journal).
    pub fn is_durable(&self, ticket: u64) -> bool {
        match self.core.journal() {
            Some(journal) if ticket != 0 => journal.is_durable(ticket),
            _ => true,
        }
    }

    fn acknowledge(&mut self, packet_id: Option<midge_codec::PacketId>, reason: ReasonCode) {
        if let Some(id) = packet_id {
            self.conn.acknowledge(id, reason);
        }
    }

    /// The client's slot, once its CONNECT is accepted.
    fn slot(&self) -> Option<&Arc<Slot>> {
        self.client.as_ref().map(|c| &c.slot)
    }

    /// The client, once its CONNECT is accepted.
    fn client(&self) -> Option<&ClientInfo> {
        self.client.as_ref().map(|_| &self.info)
    }

    /// The inbox signalled: the broker is stopping, another connection asks for the session,
    /// or deliveries arrived.
    fn on_signalled(&mut self) {
        self.take_signals();
        self.deliveries_waiting = true;
    }

    /// Acts on a takeover request or the broker's shutdown, if either came.
    fn take_signals(&mut self) {
        let signals = self.inbox.signals(self.client.is_some());
        if let Some(reason) = signals.disconnect {
            self.close_with(reason);
        }
        if let Some(reply) = signals.takeover {
            self.handover = Some(reply);
            self.conn.take_over();
        }
    }

    /// Tells the client the broker is stopping (DISCONNECT 0x8B under 5.0), once.
    fn shut_down(&mut self) {
        self.close_with(ReasonCode::SERVER_SHUTTING_DOWN);
    }

    /// Closes the connection from the broker's side, once: DISCONNECT with `reason` under
    /// 5.0 (0x8B stopping, 0x98 kicked); a 3.x client's connection just closes.
    fn close_with(&mut self, reason: ReasonCode) {
        if !std::mem::replace(&mut self.shutting_down, true) {
            self.conn.disconnect(reason);
        }
    }

    /// Moves deliveries from the inbox into the session's queue, at most [`INBOX_BATCH`] per
    /// wake-up so that input is not starved.
    fn take_deliveries(&mut self, now: Instant) {
        let mut scratch = self.scratch.take().unwrap_or_default();
        let mut taken = std::mem::take(&mut scratch.taken);
        self.inbox
            .take(INBOX_BATCH, &mut taken, &self.core.inbox_limits);
        for delivery in taken.drain(..) {
            if self.slot().is_some_and(|s| s.holds_copy_of(delivery.tag)) {
                // Read back from the journal already (see `Slot::floor`).
                self.core.release(delivery.size());
                continue;
            }
            // Read access is checked as a message is delivered: a wildcard subscription
            // brings only what its client may read, and rules that changed since the
            // subscription apply from the next message on.
            let topic = &delivery.message.topic;
            if AclMemo::allows(
                &mut scratch.acl,
                &self.core,
                &self.info,
                topic,
                Access::Read,
            ) && (self.info.internal
                || self
                    .core
                    .user_hooks
                    .authorize_read(&self.info, &delivery.message))
            {
                // From the PUBLISH's arrival to here: routing, the inbox and this task's turn.
                let latency = now.saturating_duration_since(delivery.received_at);
                self.core.counters.per_thread.delivered_after(latency);
                self.admit(delivery);
            } else {
                self.core.release(delivery.size());
                self.core.counters.deliveries_denied.fetch_add(1, Relaxed);
                if let Some(slot) = self.slot() {
                    self.core.journal_finished(slot, delivery.tag);
                }
            }
        }
        // Kept for the next batch unless a burst made it large: an idle connection should not
        // hold a burst's worth of room. The ACL's answers stay either way.
        if taken.capacity() <= SHRINK_ABOVE {
            scratch.taken = taken;
        }
        self.scratch = Some(scratch);
    }

    /// Whether the next retained message of new subscriptions can go into the session's queue
    /// now: it fits the queue's limits, counted as the session counts them. One that could
    /// never fit (larger than the whole byte limit) goes once the queue is empty, and is
    /// refused and counted there. Drops the backlog's finished batches on the way.
    fn retained_ready(&mut self) -> bool {
        let limits = &self.core.server_config.queue_limits;
        let (queued, bytes) = self
            .conn
            .session()
            .map_or((0, 0), |s| (s.queued_messages(), s.queued_bytes()));
        let Some(backlog) = self.retained.as_mut() else {
            return false;
        };
        while backlog
            .batches
            .front()
            .is_some_and(|b| b.messages.is_empty())
        {
            backlog.batches.pop_front();
        }
        let Some(next) = backlog.batches.front().and_then(|b| b.messages.front()) else {
            self.core.release(backlog.reserved);
            self.retained = None;
            return false;
        };
        let size = Delivery::size_of(&next.message);
        queued == 0 || (queued < limits.max_messages && bytes + size <= limits.max_bytes)
    }

    /// Moves retained messages of new subscriptions into the session's queue while they fit.
    /// Expired ones are skipped, and removed from the store [MQTT-3.3.2-5].
    fn send_retained(&mut self, now: Instant) {
        let core = self.core.clone();
        let mut released = 0;
        let mut expired = Vec::new();
        while self.retained_ready() {
            let Some(backlog) = self.retained.as_mut() else {
                break;
            };
            let Some(batch) = backlog.batches.front_mut() else {
                break;
            };
            let Some(r) = batch.messages.pop_front() else {
                break;
            };
            backlog.reserved -= RETAINED_ENTRY;
            released += RETAINED_ENTRY;
            let mut delivery = Delivery::new(r.message.clone(), r.received_at);
            delivery.qos = batch.qos.min(r.message.qos);
            delivery.retain = true;
            delivery.subscription_ids = batch.subscription_id.into_iter().collect();
            if delivery.is_expired(now) {
                expired.push(r);
            } else if !core.hooks.authorize_read(&self.info, &delivery.message) {
                core.counters.deliveries_denied.fetch_add(1, Relaxed);
            } else {
                // Into a persistent session's queue: kept as routed messages are, in order
                // with them.
                let slot = self.slot().filter(|s| s.journaled.load(Relaxed));
                if let (Some(slot), Some(journal)) = (slot, core.journal()) {
                    delivery.tag = journal.next_tag();
                    journal.write(Change::Enqueue {
                        client_id: &slot.client_id,
                        delivery: &delivery,
                    });
                }
                let tag = delivery.tag;
                let (qos, payload) = (delivery.qos, delivery.message.payload.len());
                if self.conn.deliver(delivery) {
                    core.counters.per_thread.sent(qos, 1, payload);
                } else {
                    core.counters.dropped_queue_full.fetch_add(1, Relaxed);
                    if let Some(slot) = self.slot() {
                        core.journal_finished(slot, tag);
                    }
                }
            }
        }
        core.release(released);
        // Expired retained messages are gone for good [MQTT-3.3.2-5]: found here, they are
        // removed instead of being skipped on every later SUBSCRIBE.
        for r in expired {
            if let Ok(topic) = midge_topic::TopicName::new(r.message.topic.as_str()) {
                core.remove_expired_retained(&topic, &r);
            }
        }
    }

    /// Moves a delivery from the inbox into the session's queue. The inbox admitted it against
    /// the session's limits, so the queue keeps it whatever it holds now: it may already be
    /// acknowledged to its publisher. Its reservation against the global budget moves with it,
    /// and is released as the queue drains ([`Self::sync_budget`]).
    fn admit(&mut self, delivery: Delivery) {
        self.counted += delivery.size();
        let (qos, payload) = (delivery.qos, delivery.message.payload.len());
        self.conn.deliver_admitted(delivery);
        self.core.counters.per_thread.sent(qos, 1, payload);
    }

    /// Brings the global budget and the inbox's view of the session's queue in line with the
    /// queue after it was drained by `poll_transmit` (or grew by retained messages, which are
    /// not reserved on the way in).
    fn sync_budget(&mut self) {
        let Some(session) = self.conn.session() else {
            return;
        };
        let queued = QueueUse {
            messages: session.queued_messages(),
            bytes: session.queued_bytes(),
        };
        if queued.bytes > self.counted {
            add_bytes(&self.core, queued.bytes - self.counted);
        } else {
            self.core.release(self.counted - queued.bytes);
        }
        self.counted = queued.bytes;
        self.inbox.report_session_queue(queued);
        if let Some(view) = &self.client {
            let in_flight = u32::try_from(session.in_flight()).unwrap_or(u32::MAX);
            if view.in_flight.load(Relaxed) != in_flight {
                view.in_flight.store(in_flight, Relaxed);
            }
            // The session counts what it drops itself; the broker's figures take the news
            // (rare: the shared counters are written only then).
            let stats = session.stats();
            let counters = &self.core.counters;
            for (total, counted, counter) in [
                (
                    stats.dropped_expired,
                    &view.expired_counted,
                    &counters.dropped_expired,
                ),
                (
                    stats.dropped_too_large,
                    &view.too_large_counted,
                    &counters.dropped_too_large,
                ),
            ] {
                let new = total.saturating_sub(counted.load(Relaxed));
                if new > 0 {
                    counted.store(total, Relaxed);
                    add(counter, new);
                }
            }
        }
    }

    fn on_subscribe(
        &mut self,
        packet_id: midge_codec::PacketId,
        requests: &[SubscriptionRequest],
        subscription_id: Option<midge_codec::SubscriptionId>,
    ) {
        let core = self.core.clone();
        let (Some(info), Some(slot)) = (self.client(), self.slot()) else {
            return;
        };
        let limits = core.config.topic_limits();
        // Ask the hooks and check the filters first, under no lock: a hook may take its time,
        // and publishers match against the index meanwhile.
        let mut codes = Vec::with_capacity(requests.len());
        let mut accepted = Vec::with_capacity(requests.len());
        for request in requests {
            let verdict = request
                .verdict
                .and_then(|()| match info.internal {
                    true => Ok(()),
                    false => core.hooks.authorize_subscribe(
                        info,
                        request.filter.as_str(),
                        &request.options,
                    ),
                })
                .and_then(|()| {
                    TopicFilter::with_limits(request.filter.as_str(), &limits)
                        .map_err(|_| ReasonCode::TOPIC_FILTER_INVALID)
                });
            match verdict {
                Err(code) => {
                    if code == ReasonCode::NOT_AUTHORIZED {
                        core.counters.subscriptions_denied.fetch_add(1, Relaxed);
                        tracing::debug!(client_id = ?info.client_id.as_str(), filter = ?request.filter.as_str(), "subscription not authorized");
                    }
                    codes.push(code);
                }
                Ok(filter) => {
                    codes.push(ReasonCode(request.options.qos as u8));
                    accepted.push((request, filter));
                }
            }
        }
        // Then insert the granted ones under one write lock.
        // (request, its filter, whether the subscription existed before)
        let mut granted = Vec::with_capacity(accepted.len());
        if !accepted.is_empty() {
            let mut index = core.index_write();
            for (request, filter) in accepted {
                let sub = Sub {
                    options: request.options,
                    id: subscription_id,
                    slot: slot.clone(),
                };
                let existed = index.insert(&filter, info.client_id.clone(), sub).is_some();
                if !existed {
                    core.counters.subscribed(&filter);
                }
                granted.push((request, filter, existed));
            }
        }
        let journal = core.journal().filter(|_| slot.journaled.load(Relaxed));
        if let Some(journal) = journal {
            for (request, _, _) in &granted {
                journal.write(Change::Subscribe {
                    client_id: &info.client_id,
                    filter: &request.filter,
                    subscription: SessionSubscription::new(request.options, subscription_id),
                });
            }
        }
        self.conn.subscribe_ack(packet_id, codes);
        if let (Some(journal), false) = (journal, granted.is_empty()) {
            self.hold_output(journal);
        }
        // Retained messages, after SUBACK [MQTT-3.3.1-9]; never for shared subscriptions.
        for (request, filter, existed) in granted {
            let send = match request.options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
            if !send || filter.share_name().is_some() {
                continue;
            }
            // A subscription that replaces one whose retained messages are still waiting
            // replaces them too: they are the same messages.
            if let Some(backlog) = self.retained.as_mut() {
                backlog.batches.retain(|b| {
                    let same = b.filter == request.filter;
                    if same {
                        backlog.reserved -= b.messages.len() * RETAINED_ENTRY;
                        core.release(b.messages.len() * RETAINED_ENTRY);
                    }
                    !same
                });
            }
            let mut batch = RetainedBatch {
                filter: request.filter.unshared(),
                qos: request.options.qos,
                subscription_id,
                messages: VecDeque::new(),
            };
            // One connection waits for at most as many as the broker retains, whatever its
            // subscriptions: more can only be the same messages again.
            let waiting = self
                .retained
                .as_ref()
                .map_or(0, |b| b.reserved / RETAINED_ENTRY);
            let room = core.live.max_retained_messages().saturating_sub(waiting);
            let mut refused = 0u64;
            core.store.retained_matching(&filter, &mut |r| {
                if batch.messages.len() < room && core.reserve(RETAINED_ENTRY) {
                    batch.messages.push_back(r.clone());
                } else {
                    refused += 1;
                }
            });
            if refused > 0 {
                add(&core.counters.dropped_memory_budget, refused);
                tracing::warn!(client_id = ?self.info.client_id.as_str(), refused, "retained messages not sent to a new subscription: memory budget exhausted, or as many already waiting as the broker retains");
            }
            if !batch.messages.is_empty() {
                let backlog = self.retained.get_or_insert_with(Box::default);
                backlog.reserved += batch.messages.len() * RETAINED_ENTRY;
                backlog.batches.push_back(batch);
            }
        }
    }

    fn unsubscribe(&mut self, filters: &[midge_codec::ByteStr], codes: &[ReasonCode]) {
        let Some(info) = self.client() else {
            return;
        };
        let limits = self.core.config.topic_limits();
        let mut index = self.core.index_write();
        for (filter, code) in filters.iter().zip(codes) {
            if !code.is_success() {
                continue;
            }
            if let Ok(f) = TopicFilter::with_limits(filter.as_str(), &limits) {
                if index.remove(&f, &info.client_id).is_some() {
                    self.core.counters.unsubscribed(&f);
                }
            }
        }
        drop(index);
        let core = self.core.clone();
        let journaled = self.slot().is_some_and(|s| s.journaled.load(Relaxed));
        if let Some(journal) = core.journal().filter(|_| journaled) {
            for (filter, code) in filters.iter().zip(codes) {
                if code.is_success() {
                    journal.write(Change::Unsubscribe {
                        client_id: &self.info.client_id,
                        filter,
                    });
                }
            }
            self.hold_output(journal);
        }
    }

    fn on_closed(
        &mut self,
        reason: ServerCloseReason,
        will: Option<(midge_codec::Will, u32)>,
        now: Instant,
    ) {
        let core = self.core.clone();
        if matches!(reason, ServerCloseReason::ProtocolViolation(_)) {
            core.counters.protocol_errors.fetch_add(1, Relaxed);
        }
        core.counters.closed(reason);
        match reason {
            ServerCloseReason::Refused(code) => {
                core.counters.connect_result(code);
                tracing::info!(
                    client_id = ?self.conn.client_id().as_str(),
                    peer = %self.info.peer,
                    reason = %code,
                    "connection refused"
                );
            }
            _ if self.client.is_some() => tracing::info!(
                client_id = ?self.info.client_id.as_str(),
                peer = %self.info.peer,
                reason = %close_reason_text(reason),
                "client disconnected"
            ),
            _ => tracing::debug!(peer = %self.info.peer, ?reason, "connection closed"),
        }
        // Gone from the admin view at once, though the connection may take a while to close:
        // its session goes on offline or with another connection.
        core.update_connection(self.number, |open| open.client = None);
        // The will leaves this connection: published, dropped, or kept with the offline
        // session, which counts it again.
        core.release(self.inbox.take_will_charge());
        let (Some(info), Some(slot)) = (self.client().cloned(), self.slot().cloned()) else {
            return;
        };
        core.counters.clients_connected.fetch_sub(1, Relaxed);
        // Retained messages not sent yet end with the connection: they were never acknowledged
        // to anyone.
        if let Some(backlog) = self.retained.take() {
            core.release(backlog.reserved);
        }
        // Deliveries still in the inbox belong to the session: QoS 1 and 2 ones were admitted
        // against its limits, and may be acknowledged already [MQTT-4.3.2-3]; QoS 0 ones are
        // kept as far as the session has room, and dropped and counted past it.
        for delivery in self.inbox.close() {
            if slot.holds_copy_of(delivery.tag) {
                self.core.release(delivery.size());
                continue;
            }
            if delivery.qos == midge_codec::QoS::AtMostOnce {
                let size = delivery.size();
                let payload = delivery.message.payload.len();
                if self.conn.deliver(delivery) {
                    self.counted += size;
                    self.core
                        .counters
                        .per_thread
                        .sent(midge_codec::QoS::AtMostOnce, 1, payload);
                } else {
                    self.core.release(size);
                    self.core.counters.dropped_queue_full.fetch_add(1, Relaxed);
                }
            } else {
                self.admit(delivery);
            }
        }
        // Changes made with the close (a PUBACK read together with a DISCONNECT) are written
        // now, and what `close` still sends waits for them.
        self.journal_changes();
        let session = self.conn.take_session();
        // The queue's bytes leave this connection's account; `session_offline` (or the taking-
        // over connection, via `sync_budget`) counts them again.
        self.core.release(std::mem::take(&mut self.counted));
        core.hooks.on_disconnected(&info, reason);
        if let Some(reply) = self.handover.take() {
            core.hand_over(reply, session, will, info, now);
            return;
        }
        let Some(session) = session else {
            return;
        };
        core.session_offline(&slot, self.number, session, will, &info, &self.inbox, now);
    }
}

/// A routed publish whose acknowledgement waits for room in full inboxes.
#[derive(Debug)]
struct PendingPublish {
    packet_id: Option<midge_codec::PacketId>,
    qos: midge_codec::QoS,
    /// Sessions the message was queued for.
    matched: usize,
    /// QoS 1 and 2 deliveries that were refused.
    refused: usize,
    blocked: Vec<Blocked>,
}

impl PendingPublish {
    /// The acknowledgement's reason code.
    ///
    /// A QoS 2 message that reached anyone is acknowledged with success whatever else became
    /// of it: the broker owns it now [MQTT-4.3.3-8]. A PUBREC of 0x97 would make a later
    /// PUBLISH with its packet identifier a new message [MQTT-4.3.3-9], and the PUBREC may
    /// never reach the client (the connection may be lost, known here or not yet): the client
    /// then resends the PUBLISH on its resumed session [MQTT-4.4.0-1], which would be routed
    /// again to those who have it. Success keeps the identifier in the session until PUBREL,
    /// so that resend is answered as a duplicate [MQTT-4.3.3-10]. Those it did not reach were
    /// refused and counted, as for a 3.x publisher, or go on waiting in the core.
    fn reason(&self) -> ReasonCode {
        if self.qos == midge_codec::QoS::ExactlyOnce && self.matched > 0 {
            ReasonCode::SUCCESS
        } else if self.refused > 0 {
            ReasonCode::QUOTA_EXCEEDED
        } else if self.matched == 0 {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        }
    }
}

/// Counts bytes that are already queued against the global budget, without refusing them.
fn add_bytes(core: &Core, size: usize) {
    core.counters.queued_bytes.fetch_add(size, Relaxed);
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A check still waiting for a thread is not run for a connection that is gone.
        if let Some(Waiting::Verify { ticket, .. }) = self.waiting.as_deref() {
            ticket.abandon();
        }
        self.core.deregister_connection(self.number);
        self.core.counters.connections.fetch_sub(1, Relaxed);
    }
}

/// The Keep Alive a client gets: its own, lowered to `max` (when not 0) as a 5.0 CONNACK
/// says with Server Keep Alive (a 3.x client asking for more is refused).
fn keep_alive_in_effect(asked: u16, max: u16) -> u16 {
    if max != 0 && asked > max {
        max
    } else {
        asked
    }
}

/// How logs and the admin view name a protocol version.
pub(crate) fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        _ => "5.0",
    }
}

/// Why a connection ended, in a log line.
fn close_reason_text(reason: ServerCloseReason) -> String {
    match reason {
        ServerCloseReason::DisconnectedByClient(code) => format!("client sent DISCONNECT {code}"),
        ServerCloseReason::ProtocolViolation(code) => format!("protocol error {code}"),
        ServerCloseReason::KeepAliveTimeout => "keepalive timeout".into(),
        ServerCloseReason::ConnectTimeout => "connect timeout".into(),
        ServerCloseReason::Refused(code) => format!("refused {code}"),
        ServerCloseReason::TakenOver => "session taken over".into(),
        ServerCloseReason::DisconnectedByServer(code) => {
            format!("disconnected by the broker {code}")
        }
        ServerCloseReason::ConnectionLost => "connection lost".into(),
        _ => format!("{reason:?}"),
    }
}
