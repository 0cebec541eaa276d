//! One task per connection: it owns the [`ServerConnection`] and the socket, and answers the
//! connection's events. A client that does not read never stalls the task: its output waits in
//! the write buffer while the task goes on, and deliveries pile up in the session's bounded
//! queue (and are dropped and counted past its limits).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use midge_codec::{ReasonCode, RetainHandling};
use midge_proto::server::{ServerCloseReason, ServerConnection, ServerEvent, SubscriptionRequest};
use midge_proto::session::Delivery;
use midge_topic::TopicFilter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::hooks::{ClientInfo, ConnectRequest, DisconnectReason};
use crate::inbox::{Inbox, QueueUse};
use crate::state::{Blocked, Handover, Registered, Shared, Slot, SlotState, Sub, TakeOver};
use crate::stats::add;
use crate::store::Retained;

/// Bytes gathered into one write before it is handed to the writer.
const MAX_WRITE: usize = 256 * 1024;
/// Deliveries taken from the inbox per wake-up, so input is not starved.
const INBOX_BATCH: usize = 1024;
/// Read buffer headroom per read.
const READ_CHUNK: usize = 8 * 1024;

struct Driver {
    shared: Arc<Shared>,
    conn: ServerConnection,
    /// This connection's number, unique in the broker.
    conn_id: u64,
    over_limit: bool,
    /// The client, once its CONNECT is accepted (`slot` is set then); before that only the
    /// peer address is filled in.
    info: ClientInfo,
    slot: Option<Arc<Slot>>,
    /// Deliveries, takeover requests and shutdown arrive here.
    inbox: Arc<Inbox>,
    /// Deliveries just taken from the inbox; kept to reuse its allocation.
    taken: Vec<Delivery>,
    /// Set when another connection asked for our session.
    handover: Option<TakeOver>,
    /// The CONNECT just accepted: re-run input that waited for the decision.
    accepted: bool,
    /// The broker is stopping, and the client was told.
    shutting_down: bool,
    /// The inbox signalled deliveries that are not taken yet.
    deliveries_waiting: bool,
    /// Bytes of this session's queue counted against the global memory budget: the budget
    /// covers online sessions' queues too, not only inboxes and offline sessions.
    counted: usize,
    /// Retained messages still to send for new subscriptions; boxed and made only when a
    /// subscription matches some.
    retained: Option<Box<RetainedBacklog>>,
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

/// What one waiting retained message costs, counted against the global budget: its entry.
const RETAINED_ENTRY: usize = size_of::<Retained>();

/// What woke the connection's task; any number of these at once.
#[derive(Default)]
struct Woken {
    readable: bool,
    writable: bool,
    inbox: bool,
    timer: bool,
    /// Work is waiting in this task itself (deliveries that now have room).
    again: bool,
    failed: bool,
}

/// Runs one connection to its end; the returned future ends when the socket is closed, and
/// drops `done` then.
///
/// One task owns the socket and the [`ServerConnection`]: it reads when the socket is readable,
/// writes when there is output and the socket takes it, and takes deliveries from the inbox.
/// A client that does not read never stalls routing: its output waits in the write buffer
/// (and stops this task reading from it once [`MAX_WRITE`] is pending), and further deliveries
/// wait in its session's bounded queue. Both buffers are allocated only while they hold
/// bytes, so an idle connection costs little memory.
///
/// The task of an idle connection is most of its memory, so the future is kept small: the
/// waits are polled by hand (socket readiness and the inbox keep their wakers themselves,
/// with no waiter stored in the task), the arguments are captured once, and what only the
/// end of a connection needs is boxed there.
pub(crate) fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    over_limit: bool,
    done: mpsc::Sender<()>,
) -> impl Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    let conn_number = shared.next_conn.fetch_add(1, Relaxed);
    let conn = ServerConnection::new(shared.server_config.clone(), Instant::now());
    let inbox = Arc::new(Inbox::new());
    let mut d = Driver {
        shared,
        conn,
        conn_id: conn_number,
        over_limit,
        info: ClientInfo {
            client_id: midge_codec::ByteStr::new(),
            username: None,
            version: midge_codec::ProtocolVersion::V5,
            peer,
        },
        slot: None,
        inbox,
        taken: Vec::new(),
        handover: None,
        accepted: false,
        shutting_down: false,
        deliveries_waiting: false,
        counted: 0,
        retained: None,
    };
    async move {
        let conn_id = d.conn_id;
        if d.shared.register_connection(conn_id, &d.inbox) {
            d.shut_down();
        }
        let unsent = d.drive(&stream).await;
        d.shared.deregister_connection(conn_id);
        let close_timeout = Duration::from_millis(d.shared.config.limits.close_timeout_ms);
        let _ = tokio::time::timeout(close_timeout, Box::pin(d.close(stream, unsent))).await;
        d.shared.counters.connections.fetch_sub(1, Relaxed);
        drop(done);
    }
}

/// A connection's input and output buffers, allocated only while they hold bytes.
#[derive(Default)]
struct Buffers {
    read: BytesMut,
    write: BytesMut,
}

impl Buffers {
    /// Frees the memory of a buffer that holds nothing. True when both are empty, so that the
    /// whole box can go.
    fn release_empty(&mut self) -> bool {
        for buf in [&mut self.read, &mut self.write] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
        self.read.is_empty() && self.write.is_empty()
    }
}

impl Driver {
    /// Serves the connection until it is closed. Returns output the socket did not take yet.
    async fn drive(&mut self, stream: &TcpStream) -> BytesMut {
        // Both buffers live in one box that exists only while either holds bytes: an idle
        // connection keeps one pointer instead of two empty buffers.
        let mut io: Option<Box<Buffers>> = None;
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        // Whether `sleep` runs to the connection's next deadline (its own deadline says which).
        let mut armed = false;
        loop {
            let bufs = io.get_or_insert_with(Box::default);
            self.answer_events(&mut bufs.read).await;
            // Retained messages of new subscriptions go first: a message published after the
            // SUBSCRIBE must not arrive before the retained one it replaces.
            if self.retained.is_some() && self.conn.is_connected() {
                self.send_retained();
            }
            // What the inbox accepted already counts against the session's limits, so taking
            // it into the session's queue needs no room of its own.
            if self.deliveries_waiting && self.retained.is_none() && self.conn.is_connected() {
                self.deliveries_waiting = false;
                self.take_deliveries();
            }
            // Transmit: as many packets as fit into the write buffer, then one write for them
            // all. The socket usually takes them at once, which saves a wait.
            let now = Instant::now();
            while bufs.write.len() < MAX_WRITE && self.conn.poll_transmit(now, &mut bufs.write) {}
            // Stopped by the buffer's limit, not for lack of output: more may be queued.
            let more_queued = bufs.write.len() >= MAX_WRITE;
            self.sync_budget();
            if !bufs.write.is_empty() && self.write_some(stream, &mut bufs.write).is_err() {
                // The peer is gone: what it did not take is dropped with the connection.
                bufs.write = BytesMut::new();
                self.conn.connection_lost();
                continue;
            }
            // A peer that does not read its output is not read from either, once a full
            // buffer of output waits for it.
            let can_read = bufs.write.len() < MAX_WRITE;
            // Output still queued waits for room in the socket too, even when the socket took
            // the whole buffer: nothing else may come to wake this task (a QoS 0 backlog has
            // no acknowledgements). A socket that took everything is still writable, so this
            // wait ends at once, through tokio's budget, which lets other tasks run.
            let must_write = !bufs.write.is_empty() || more_queued;
            if bufs.release_empty() {
                io = None;
            }
            if self.conn.is_closed() {
                break;
            }
            // Deliveries waited in the inbox for room that this transmit just made: nothing
            // else may come to wake this task for them, so it goes on at once, through tokio's
            // budget so that a long inbox does not keep other tasks from running.
            let again = self.conn.is_connected()
                && match self.retained {
                    None => self.deliveries_waiting,
                    Some(_) => self.retained_ready(),
                };
            match self.conn.poll_timeout() {
                Some(at) if !armed || sleep.deadline() != at.into() => {
                    sleep.as_mut().reset(at.into());
                    armed = true;
                }
                Some(_) => {}
                None => armed = false,
            }
            // Captured by value where it can be: this closure is part of the task's state.
            let timer_armed = armed;
            let inbox = &self.inbox;
            let mut timer = sleep.as_mut();
            let woken = std::future::poll_fn(move |cx| {
                let mut woken = Woken::default();
                if can_read {
                    match stream.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => woken.readable = true,
                        Poll::Ready(Err(_)) => woken.failed = true,
                        Poll::Pending => {}
                    }
                }
                if must_write {
                    match stream.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => woken.writable = true,
                        Poll::Ready(Err(_)) => woken.failed = true,
                        Poll::Pending => {}
                    }
                }
                woken.inbox = inbox.poll_ready(cx).is_ready();
                if again {
                    if let Poll::Ready(progress) = tokio::task::coop::poll_proceed(cx) {
                        progress.made_progress();
                        woken.again = true;
                    }
                }
                woken.timer = timer_armed && timer.as_mut().poll(cx).is_ready();
                let any =
                    woken.readable || woken.writable || woken.inbox || woken.timer || woken.again;
                if any || woken.failed {
                    Poll::Ready(woken)
                } else {
                    Poll::Pending
                }
            })
            .await;
            if woken.failed {
                self.conn.connection_lost();
                continue;
            }
            if woken.writable || woken.readable {
                let bufs = io.get_or_insert_with(Box::default);
                if woken.writable && self.write_some(stream, &mut bufs.write).is_err() {
                    bufs.write = BytesMut::new();
                    self.conn.connection_lost();
                    continue;
                }
                if woken.readable {
                    // At most a chunk, or the rest of a larger packet that has begun: one read
                    // never holds more than that, so the replies to what it holds are bounded
                    // too (a client sending tiny packets whose answers it does not read cannot
                    // queue up more than a chunk's worth before reading stops).
                    let want = match midge_codec::Packet::peek_len(&bufs.read) {
                        Some(len) if len > bufs.read.len() => {
                            (len - bufs.read.len()).max(READ_CHUNK)
                        }
                        _ => READ_CHUNK,
                    };
                    bufs.read.reserve(want);
                    match stream.try_read_buf(&mut (&mut bufs.read).limit(want)) {
                        Ok(0) => self.conn.connection_lost(),
                        Ok(n) => {
                            add(&self.shared.counters.bytes_received, n as u64);
                            self.conn.handle_bytes(Instant::now(), &mut bufs.read);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => self.conn.connection_lost(),
                    }
                }
            }
            if woken.inbox {
                self.on_signalled();
            }
            if woken.timer {
                armed = false;
                self.conn.handle_timeout(Instant::now());
            }
        }
        let mut bufs = io.unwrap_or_default();
        self.answer_events(&mut bufs.read).await;
        bufs.write
    }

    /// Flushes what the connection still has (a DISCONNECT or a refusing CONNACK), closes the
    /// write side, and discards input until the peer closes too, so that unread input does
    /// not make the kernel reset the connection before the peer has read our last packet.
    async fn close(&mut self, mut stream: TcpStream, mut wbuf: BytesMut) {
        loop {
            let now = Instant::now();
            while wbuf.len() < MAX_WRITE && self.conn.poll_transmit(now, &mut wbuf) {}
            if wbuf.is_empty() {
                break;
            }
            if stream.writable().await.is_err() || self.write_some(&stream, &mut wbuf).is_err() {
                break;
            }
        }
        let _ = stream.shutdown().await;
        let mut scratch = vec![0u8; 4096];
        while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {}
    }

    /// The client, once its CONNECT is accepted.
    fn client(&self) -> Option<&ClientInfo> {
        self.slot.as_ref().map(|_| &self.info)
    }

    /// The inbox signalled: the broker is stopping, another connection asks for the session,
    /// or deliveries arrived.
    fn on_signalled(&mut self) {
        self.take_signals();
        self.deliveries_waiting = true;
    }

    /// Acts on a takeover request or the broker's shutdown, if either came.
    fn take_signals(&mut self) {
        let signals = self.inbox.signals(self.slot.is_some());
        if signals.shutting_down {
            self.shut_down();
        }
        if let Some(reply) = signals.takeover {
            self.handover = Some(reply);
            self.conn.take_over();
        }
    }

    /// Tells the client the broker is stopping (DISCONNECT 0x8B under 5.0), once.
    fn shut_down(&mut self) {
        if !std::mem::replace(&mut self.shutting_down, true) {
            self.conn.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
        }
    }

    /// Writes as much of `buf` as the socket takes now.
    fn write_some(&self, stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
        while !buf.is_empty() {
            match stream.try_write(buf) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    add(&self.shared.counters.bytes_sent, n as u64);
                    buf.advance(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves deliveries from the inbox into the session's queue, at most [`INBOX_BATCH`] per
    /// wake-up so that input is not starved.
    fn take_deliveries(&mut self) {
        let mut taken = std::mem::take(&mut self.taken);
        self.inbox
            .take(INBOX_BATCH, &mut taken, &self.shared.inbox_limits);
        for delivery in taken.drain(..) {
            self.admit(delivery);
        }
        // Kept for the next batch unless a burst made it large: an idle connection should not
        // hold a burst's worth of room.
        if taken.capacity() <= crate::inbox::SHRINK_ABOVE {
            self.taken = taken;
        }
    }

    /// Whether the next retained message of new subscriptions can go into the session's queue
    /// now: it fits the queue's limits, counted as the session counts them. One that could
    /// never fit (larger than the whole byte limit) goes once the queue is empty, and is
    /// refused and counted there. Drops the backlog's finished batches on the way.
    fn retained_ready(&mut self) -> bool {
        let limits = &self.shared.server_config.queue_limits;
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
            self.shared.release(backlog.reserved);
            self.retained = None;
            return false;
        };
        let size = Delivery::size_of(&next.message);
        queued == 0 || (queued < limits.max_messages && bytes + size <= limits.max_bytes)
    }

    /// Moves retained messages of new subscriptions into the session's queue while they fit.
    /// Expired ones are skipped, and removed from the store [MQTT-3.3.2-5].
    fn send_retained(&mut self) {
        let shared = self.shared.clone();
        let now = Instant::now();
        let mut sent = 0u64;
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
            } else if self.conn.deliver(delivery) {
                sent += 1;
            } else {
                shared.counters.dropped_queue_full.fetch_add(1, Relaxed);
            }
        }
        shared.release(released);
        add(&shared.counters.messages_sent, sent);
        // Expired retained messages are gone for good [MQTT-3.3.2-5]: found here, they are
        // removed instead of being skipped on every later SUBSCRIBE.
        for r in expired {
            if let Ok(topic) = r.message.topic_name() {
                shared.remove_expired_retained(&topic, &r);
            }
        }
    }

    /// Moves a delivery from the inbox into the session's queue. The inbox admitted it against
    /// the session's limits, so the queue keeps it whatever it holds now: it may already be
    /// acknowledged to its publisher. Its reservation against the global budget moves with it,
    /// and is released as the queue drains ([`Self::sync_budget`]).
    fn admit(&mut self, delivery: Delivery) {
        self.counted += delivery.size();
        self.conn.deliver_admitted(delivery);
        self.shared.counters.messages_sent.fetch_add(1, Relaxed);
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
            add_bytes(&self.shared, queued.bytes - self.counted);
        } else {
            self.shared.release(self.counted - queued.bytes);
        }
        self.counted = queued.bytes;
        self.inbox.report_session_queue(queued);
    }

    /// Answers the connection's events, waiting where one must, until none is left.
    async fn answer_events(&mut self, rbuf: &mut BytesMut) {
        loop {
            // Not `while let`: its scrutinee would be kept across the `.await`, and with it
            // room for a `Wait` in every connection's task.
            let Some(wait) = self.handle_events(rbuf) else {
                return;
            };
            let waiting = self.wait(wait);
            waiting.await;
        }
    }

    /// Answers the connection's events until one must wait, and returns that one.
    fn handle_events(&mut self, rbuf: &mut BytesMut) -> Option<Wait> {
        loop {
            while let Some(event) = self.conn.poll_event() {
                if let Some(wait) = self.on_event(event) {
                    return Some(wait);
                }
            }
            // Packets that arrived right after CONNECT waited in the buffer for the decision,
            // and packets after too many unanswered SUBSCRIBE or UNSUBSCRIBE packets for the
            // answers just given: go on with them until nothing more decodes.
            let accepted = std::mem::take(&mut self.accepted);
            let before = rbuf.len();
            if before == 0 && !accepted {
                return None;
            }
            self.conn.handle_bytes(Instant::now(), rbuf);
            if rbuf.len() == before && !accepted {
                return None;
            }
        }
    }

    /// The waiting part of an event, boxed: inline, its state would be part of every
    /// connection's task for the connection's whole life. Only the box is held across the
    /// wait, so the task does not carry room for an event either.
    fn wait(&mut self, wait: Wait) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        match wait {
            Wait::Connect(connect, client_id) => Box::pin(self.on_connect(connect, client_id)),
            Wait::Publish(pending) => Box::pin(self.finish_publish(pending)),
        }
    }

    /// Answers one event, or returns what it must wait for: a CONNECT's decision, or room for
    /// a publish that found a full inbox.
    fn on_event(&mut self, event: ServerEvent) -> Option<Wait> {
        match event {
            ServerEvent::Connect {
                mut connect,
                client_id,
            } => {
                // Not used, and held across the decision: a CONNECT's user properties decode to
                // many times their wire size.
                connect.properties.user_properties = Vec::new();
                Some(Wait::Connect(connect, client_id))
            }
            ServerEvent::Publish { message, packet_id } => {
                self.on_publish(message, packet_id).map(Wait::Publish)
            }
            ServerEvent::Subscribe {
                packet_id,
                requests,
                subscription_id,
            } => {
                self.on_subscribe(packet_id, &requests, subscription_id);
                None
            }
            ServerEvent::Unsubscribe { packet_id, filters } => {
                let codes = self.conn.unsubscribe_ack(packet_id);
                self.unsubscribe(&filters, &codes);
                None
            }
            ServerEvent::Closed { reason, will } => {
                self.on_closed(reason, will);
                None
            }
            // Events added to midge-proto after this broker: nothing to answer.
            _ => None,
        }
    }

    async fn on_connect(
        &mut self,
        connect: Box<midge_codec::Connect>,
        client_id: midge_codec::ByteStr,
    ) {
        let shared = self.shared.clone();
        if self.over_limit {
            shared.counters.rejected_connections.fetch_add(1, Relaxed);
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
        let request = ConnectRequest {
            client_id: client_id.as_str(),
            username: connect.username.as_ref().map(|u| u.as_str()),
            password: connect.password.as_deref(),
            version: connect.protocol,
            peer: self.info.peer,
            clean_start: connect.clean_start,
        };
        if let Err(code) = shared.hooks.authenticate(&request) {
            shared.counters.rejected_connections.fetch_add(1, Relaxed);
            tracing::info!(peer = %self.info.peer, client_id = %client_id, code = code.0, "authentication refused");
            return self.conn.reject(code);
        }
        // The will is kept for the connection's life (and a delayed one after it): it counts
        // against the memory budget like a queued message, and a CONNECT whose will does not
        // fit is refused.
        let will_bytes = connect
            .will
            .as_ref()
            .map_or(0, midge_codec::Will::held_bytes);
        if will_bytes > 0 {
            if !shared.reserve(will_bytes) {
                shared.counters.rejected_connections.fetch_add(1, Relaxed);
                shared.counters.dropped_memory_budget.fetch_add(1, Relaxed);
                tracing::warn!(peer = %self.info.peer, client_id = %client_id, "memory budget exhausted, refusing CONNECT with a will");
                return self.conn.reject(ReasonCode::QUOTA_EXCEEDED);
            }
            self.inbox.charge_will(will_bytes);
        }
        let info = ClientInfo {
            client_id: client_id.clone(),
            // Kept for the connection's life (and a delayed will's): its own bytes.
            username: connect
                .username
                .as_ref()
                .map(midge_codec::ByteStr::unshared),
            version: connect.protocol,
            peer: self.info.peer,
        };
        // Claim the client's slot: route new messages to our inbox from now on, and take the
        // session from its previous owner (offline, or a connection we take over).
        let (slot, mut existing, request) = loop {
            let max_sessions = shared.config.limits.max_sessions;
            let Some(slot) =
                Registered::find_or_add(&mut shared.registry(), &client_id, max_sessions)
            else {
                shared.release(self.inbox.take_will_charge());
                shared.counters.rejected_connections.fetch_add(1, Relaxed);
                tracing::warn!(peer = %self.info.peer, client_id = %client_id, "session limit reached, refusing CONNECT");
                return self.conn.reject(ReasonCode::QUOTA_EXCEEDED);
            };
            let mut state = slot.lock();
            let online = SlotState::Online {
                conn: self.conn_id,
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
                    ..
                } => {
                    shared.cancel_deadlines(will.as_deref(), expiry);
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
                    // Ask the old connection for the session while holding the slot lock, so
                    // that a connection closing at the same time finds the request.
                    let (reply_tx, reply_rx) = oneshot::channel();
                    let asked = old.request_takeover(reply_tx).is_ok();
                    break (slot.clone(), None, asked.then_some(reply_rx));
                }
            }
        };
        if let Some(reply) = request {
            // The old connection answers between two packets: it may first have to wait up to
            // the backpressure timeout for a full inbox. Giving up before that would start a
            // new session and lose the old one's queued messages.
            let limits = &shared.config.limits;
            let wait = Duration::from_millis(
                limits
                    .close_timeout_ms
                    .saturating_add(limits.backpressure_timeout_ms),
            );
            match tokio::time::timeout(wait, reply).await {
                Ok(Ok(handover)) => existing = Some(handover),
                _ => {
                    tracing::warn!(client_id = %client_id, "previous connection did not hand over its session")
                }
            }
        }
        let mut session = None;
        if let Some(handover) = existing {
            // The will of the session's previous connection (taken over, or closed with its
            // delay running) is published unless its delay is running and the session goes
            // on [MQTT-3.1.3-9].
            if let (Some((will, delay)), Some(old)) = (handover.will, handover.info.as_ref()) {
                if delay == 0 || connect.clean_start {
                    shared.publish_will(will, old);
                }
            }
            session = handover.session;
        }
        if connect.clean_start {
            if let Some(old) = session.take() {
                shared.remove_subscriptions(&old);
                shared.hooks.on_session_expired(client_id.as_str());
            }
        }
        if session.is_none() {
            shared.store.remove_session(&client_id);
            shared.hooks.on_session_created(client_id.as_str());
        }
        let present = session.is_some();
        self.conn.accept(Instant::now(), session);
        // Deliveries routed to our inbox since the slot became ours waited for this: the
        // session's queue, which they count against together with the inbox.
        self.sync_budget();
        shared.counters.clients_connected.fetch_add(1, Relaxed);
        tracing::debug!(client_id = %client_id, peer = %self.info.peer, version = ?connect.protocol, session_present = present, "client connected");
        shared.hooks.on_connected(&info, present);
        self.info = info;
        self.slot = Some(slot);
        self.accepted = true;
        // A takeover request that arrived while this CONNECT was decided waited for it.
        self.inbox.signal();
    }

    /// Routes a publish, then acknowledges it: only once it is queued for every matching
    /// session, waiting (bounded) for room where a subscriber's inbox is full, so that no
    /// acknowledged QoS 1 or 2 message is silently lost. A 5.0 publisher learns of a
    /// subscriber that could not take it from 0x97 Quota exceeded.
    ///
    /// Routing is synchronous. Deliveries that found a full inbox come back as a
    /// [`PendingPublish`] for [`Driver::finish_publish`], which the caller awaits boxed, so
    /// that the rare waiting path does not grow every connection's task.
    fn on_publish(
        &mut self,
        message: midge_proto::Message,
        packet_id: Option<midge_codec::PacketId>,
    ) -> Option<PendingPublish> {
        let shared = self.shared.clone();
        shared.counters.messages_received.fetch_add(1, Relaxed);
        let info = self.client()?;
        let routed = match shared.authorize_publish(info, &message) {
            Err(code) => {
                self.acknowledge(packet_id, code);
                return None;
            }
            Ok(()) => shared.publish(message, Some(info), Instant::now(), true),
        };
        let pending = PendingPublish {
            packet_id,
            matched: routed.matched,
            refused: routed.refused,
            blocked: routed.blocked,
        };
        if pending.blocked.is_empty() {
            self.acknowledge(packet_id, pending.reason());
            return None;
        }
        Some(pending)
    }

    /// Waits for room for the deliveries of a publish that found full inboxes, then
    /// acknowledges it.
    ///
    /// One deadline covers all of them: waiting the timeout for each in turn kept the
    /// connection from answering a takeover for as many timeouts as there were stuck
    /// subscribers, longer than the taking-over connection waits for its session.
    async fn finish_publish(&mut self, mut pending: PendingPublish) {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.shared.config.limits.backpressure_timeout_ms);
        for blocked in std::mem::take(&mut pending.blocked) {
            // A QoS 0 delivery may be dropped without failing the publish.
            let at_most_once = blocked.delivery.qos == midge_codec::QoS::AtMostOnce;
            let sent = self.send_blocked(blocked, deadline).await;
            if sent {
                pending.matched += 1;
            } else if !at_most_once {
                pending.refused += 1;
            }
        }
        self.acknowledge(pending.packet_id, pending.reason());
    }

    /// Waits, until `deadline` at most, for room in the full inbox a delivery of this
    /// connection's publish is for, and returns whether it was queued.
    ///
    /// While it waits, this task keeps moving deliveries from its own inbox into its session's
    /// queue, which frees room in the inbox: the publisher of what fills that inbox may be the
    /// very client this publish waits for, itself waiting for room here. Two clients
    /// publishing to each other, or one publishing to itself, would otherwise both wait out
    /// the timeout and drop. Only a full session, which only the client's reading drains,
    /// still ends in the timeout; a publish to itself does not wait for that.
    async fn send_blocked(&mut self, mut blocked: Blocked, deadline: tokio::time::Instant) -> bool {
        // How often a waiting publish looks at its own inbox. Short against the timeout, long
        // against a wake-up: a wait that lasts is already the exception.
        const LOOK_AGAIN: Duration = Duration::from_millis(5);
        let deadline = if blocked.is_for(&self.inbox) {
            tokio::time::Instant::now()
        } else {
            deadline
        };
        loop {
            self.take_deliveries();
            // A connection taking over the session waits for it only so long: answer it
            // now rather than after this wait. The publish is not acknowledged then (the
            // connection closes), so its client sends it again.
            self.take_signals();
            if self.handover.is_some() || self.conn.is_closed() {
                return self.shared.abandon(blocked);
            }
            let until = deadline.min(tokio::time::Instant::now() + LOOK_AGAIN);
            match self.shared.offer_until(blocked, until).await {
                Ok(queued) => return queued,
                Err(back) if tokio::time::Instant::now() >= deadline => {
                    return self.shared.refuse(back);
                }
                Err(back) => blocked = back,
            }
        }
    }

    fn acknowledge(&mut self, packet_id: Option<midge_codec::PacketId>, reason: ReasonCode) {
        if let Some(id) = packet_id {
            self.conn.acknowledge(id, reason);
        }
    }

    fn on_subscribe(
        &mut self,
        packet_id: midge_codec::PacketId,
        requests: &[SubscriptionRequest],
        subscription_id: Option<midge_codec::SubscriptionId>,
    ) {
        let shared = self.shared.clone();
        let (Some(info), Some(slot)) = (self.client(), self.slot.as_ref()) else {
            return;
        };
        let limits = shared.config.topic_limits();
        // Ask the hooks and check the filters first, under no lock: a hook may take its time,
        // and publishers match against the index meanwhile.
        let mut codes = Vec::with_capacity(requests.len());
        let mut accepted = Vec::with_capacity(requests.len());
        for request in requests {
            let verdict = request
                .verdict
                .and_then(|()| {
                    shared.hooks.authorize_subscribe(
                        info,
                        request.filter.as_str(),
                        &request.options,
                    )
                })
                .and_then(|()| {
                    TopicFilter::with_limits(request.filter.as_str(), &limits)
                        .map_err(|_| ReasonCode::TOPIC_FILTER_INVALID)
                });
            match verdict {
                Err(code) => codes.push(code),
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
            let mut index = shared.index_write();
            for (request, filter) in accepted {
                let sub = Sub {
                    options: request.options,
                    id: subscription_id,
                    slot: slot.clone(),
                };
                let existed = index.insert(&filter, info.client_id.clone(), sub).is_some();
                if !existed {
                    shared.counters.subscriptions.fetch_add(1, Relaxed);
                }
                granted.push((request, filter, existed));
            }
        }
        self.conn.subscribe_ack(packet_id, codes);
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
                        shared.release(b.messages.len() * RETAINED_ENTRY);
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
            let room = shared
                .config
                .limits
                .max_retained_messages
                .saturating_sub(waiting);
            let mut refused = 0u64;
            shared.store.retained_matching(&filter, &mut |r| {
                if batch.messages.len() < room && shared.reserve(RETAINED_ENTRY) {
                    batch.messages.push_back(r.clone());
                } else {
                    refused += 1;
                }
            });
            if refused > 0 {
                add(&shared.counters.dropped_memory_budget, refused);
                tracing::warn!(client_id = %self.info.client_id, refused, "retained messages not sent to a new subscription: memory budget exhausted, or as many already waiting as the broker retains");
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
        let limits = self.shared.config.topic_limits();
        let mut index = self.shared.index_write();
        for (filter, code) in filters.iter().zip(codes) {
            if !code.is_success() {
                continue;
            }
            if let Ok(f) = TopicFilter::with_limits(filter.as_str(), &limits) {
                if index.remove(&f, &info.client_id).is_some() {
                    self.shared.counters.subscriptions.fetch_sub(1, Relaxed);
                }
            }
        }
    }

    fn on_closed(&mut self, reason: ServerCloseReason, will: Option<(midge_codec::Will, u32)>) {
        let shared = self.shared.clone();
        if matches!(reason, ServerCloseReason::ProtocolViolation(_)) {
            shared.counters.protocol_errors.fetch_add(1, Relaxed);
        }
        tracing::debug!(peer = %self.info.peer, ?reason, "connection closed");
        // The will leaves this connection: published, dropped, or kept with the offline
        // session, which counts it again.
        shared.release(self.inbox.take_will_charge());
        let (Some(info), Some(slot)) = (self.client().cloned(), self.slot.clone()) else {
            return;
        };
        shared.counters.clients_connected.fetch_sub(1, Relaxed);
        // Retained messages not sent yet end with the connection: they were never acknowledged
        // to anyone.
        if let Some(backlog) = self.retained.take() {
            shared.release(backlog.reserved);
        }
        // Deliveries still in the inbox belong to the session: QoS 1 and 2 ones were admitted
        // against its limits, and may be acknowledged already [MQTT-4.3.2-3]; QoS 0 ones are
        // kept as far as the session has room, and dropped and counted past it.
        for delivery in self.inbox.close() {
            if delivery.qos == midge_codec::QoS::AtMostOnce {
                let size = delivery.size();
                if self.conn.deliver(delivery) {
                    self.counted += size;
                    self.shared.counters.messages_sent.fetch_add(1, Relaxed);
                } else {
                    self.shared.release(size);
                    self.shared
                        .counters
                        .dropped_queue_full
                        .fetch_add(1, Relaxed);
                }
            } else {
                self.admit(delivery);
            }
        }
        let session = self.conn.take_session();
        // The queue's bytes leave this connection's account; `session_offline` (or the taking-
        // over connection, via `sync_budget`) counts them again.
        self.shared.release(std::mem::take(&mut self.counted));
        let hook_reason = match reason {
            ServerCloseReason::ClientDisconnect(code) => DisconnectReason::Client(code),
            ServerCloseReason::ProtocolViolation(code) | ServerCloseReason::Rejected(code) => {
                DisconnectReason::ProtocolViolation(code)
            }
            ServerCloseReason::KeepAliveTimeout | ServerCloseReason::ConnectTimeout => {
                DisconnectReason::KeepAliveTimeout
            }
            ServerCloseReason::TakenOver => DisconnectReason::TakenOver,
            ServerCloseReason::ServerDisconnect(code) => DisconnectReason::Server(code),
            ServerCloseReason::ConnectionLost => DisconnectReason::ConnectionLost,
            // A reason added to midge-proto after this broker: the server side ended it.
            _ => DisconnectReason::Server(ReasonCode::UNSPECIFIED_ERROR),
        };
        shared.hooks.on_disconnected(&info, hook_reason);
        if let Some(reply) = self.handover.take() {
            shared.hand_over(reply, session, will, info);
            return;
        }
        let Some(session) = session else {
            return;
        };
        shared.session_offline(&slot, self.conn_id, session, will, &info, &self.inbox);
    }
}

/// What an event waits for before the connection goes on.
enum Wait {
    /// The broker's decision on a CONNECT (authentication, taking over the session).
    Connect(Box<midge_codec::Connect>, midge_codec::ByteStr),
    /// Room in full inboxes for a publish's deliveries.
    Publish(PendingPublish),
}

/// A routed publish whose acknowledgement waits for room in full inboxes.
struct PendingPublish {
    packet_id: Option<midge_codec::PacketId>,
    /// Sessions the message was queued for.
    matched: usize,
    /// QoS 1 and 2 deliveries that were refused.
    refused: usize,
    blocked: Vec<Blocked>,
}

impl PendingPublish {
    /// The acknowledgement's reason code.
    fn reason(&self) -> ReasonCode {
        if self.refused > 0 {
            ReasonCode::QUOTA_EXCEEDED
        } else if self.matched == 0 {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        }
    }
}

/// Counts bytes that are already queued against the global budget, without refusing them.
fn add_bytes(shared: &Shared, size: usize) {
    shared.counters.queued_bytes.fetch_add(size, Relaxed);
}
