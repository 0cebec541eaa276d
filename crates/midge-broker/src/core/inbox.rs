//! A connection's inbox: deliveries routed to a connected client, waiting for its driver.
//!
//! Not a `tokio::sync::mpsc` channel, for two reasons measured on idle connections and on
//! fan-out: a bounded mpsc channel allocates its first block of 32 slots (about 2 KB for a
//! `Delivery`) when it is made, which alone is more than this broker's whole budget per idle
//! connection, and it pays atomic operations per message on both sides. Here the queue is a
//! `VecDeque` behind a mutex, empty and unallocated until the first delivery; the driver
//! takes many deliveries per lock, and is woken only when the queue goes from empty to
//! non-empty.
//!
//! The driver's wake-up is a flag and an `AtomicWaker` outside the lock rather than a
//! `tokio::sync::Notify`, whose waiter list takes a lock each time the driver starts or stops
//! waiting: with 10,000 subscribers that each get a message now and then, that was a few
//! percent of the broker's time per delivery.
//!
//! The inbox is also the only way into the driver from outside: a takeover request and the
//! broker's shutdown arrive through it too, so the driver waits on one waker registered here
//! and its socket, and an idle connection's task holds no waiter for each of them.
//!
//! Overflow policy: the inbox holds at most `capacity` deliveries, and what it holds counts
//! against its session's queue limits together with the session's own queue (as the driver
//! last reported it): a delivery the inbox accepts is one the session has room for, so the
//! publisher is told of a full session when it publishes, and a delivery acknowledged to its
//! publisher is never refused later, when the connection closes and the inbox is emptied into
//! the session. [`Inbox::try_send`] refuses a delivery past either bound and hands it back; the
//! caller decides whether to wait for room or drop it and count the drop. Waiting is the
//! caller's: the inbox counts the times it made room ([`Inbox::room_epoch`]) and wakes the
//! tasks that registered for room ([`Inbox::poll_room`]), and nothing here sleeps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use midge_codec::ReasonCode;
use midge_proto::session::{Delivery, QueueLimits};

use super::handover::TakeOver;

/// Why a delivery was refused.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The inbox is at capacity.
    Full(Delivery),
    /// The connection is closing; its session takes no more deliveries through this inbox,
    /// and the delivery should go to the session's next holder.
    Closed(Delivery),
}

#[derive(Debug, Default)]
struct Queue {
    deliveries: VecDeque<Delivery>,
    /// Bytes of `deliveries`, as [`Delivery::size`] counts them.
    bytes: usize,
    /// Bytes of the connection's will counted against the global memory budget (a will fits
    /// a packet, so a `u32`: it takes room the flags leave free).
    will_charge: u32,
    closed: bool,
    /// A Clean Start took the session over: it ends with this connection.
    session_ends: bool,
    takeover: Takeover,
    /// The broker closes the connection, with this reason: it is stopping (0x8B), or an
    /// operator asked (0x98).
    disconnect: Option<ReasonCode>,
}

/// What bounds an inbox: its own capacity, and its session's queue limits, which the inbox
/// and the session's queue share. One for the whole broker, passed in rather than kept by
/// every inbox.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InboxLimits {
    /// Most deliveries the inbox holds.
    pub(crate) capacity: usize,
    pub(crate) session: QueueLimits,
}

/// A session's queue as an inbox keeps it, in one word: messages in the high half, bytes in
/// the low half, each saturated at `u32::MAX`. A saturated figure reads as `usize::MAX`, which
/// no limit admits: a session's queue is full at 4 GiB, whatever `max_queued_bytes` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SessionQueue(u64);

impl SessionQueue {
    /// Before the driver has its session: full, so that deliveries wait for the first report.
    const UNKNOWN: Self = Self(u64::MAX);

    fn new(messages: usize, bytes: usize) -> Self {
        let half = |n: usize| u64::from(u32::try_from(n).unwrap_or(u32::MAX));
        Self(half(messages) << 32 | half(bytes))
    }

    /// Messages and bytes.
    fn get(self) -> (usize, usize) {
        let widen = |n: u64| match u32::try_from(n) {
            Ok(u32::MAX) | Err(_) => usize::MAX,
            Ok(n) => n as usize,
        };
        (widen(self.0 >> 32), widen(self.0 & u64::from(u32::MAX)))
    }
}

/// Messages and bytes in a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueUse {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
}

/// Whether another connection may ask for this connection's session.
#[derive(Debug, Default)]
enum Takeover {
    #[default]
    Open,
    /// Asked, and not yet answered.
    Requested(TakeOver),
    /// Taken by the driver, or the connection is closing: later requests are refused.
    Ended,
}

/// What the driver was signalled, besides deliveries.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// The broker closes the connection, with this reason.
    pub(crate) disconnect: Option<ReasonCode>,
    /// Another connection asks for the session.
    pub(crate) takeover: Option<TakeOver>,
}

/// A bounded queue from routing to one connection's driver.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    /// Something is waiting for the driver: deliveries, a takeover request or shutdown. Kept
    /// until the driver next polls, so that a wake-up that finds the driver busy is not lost.
    signalled: AtomicBool,
    /// The driver's waker.
    driver: AtomicWaker,
    /// The session's own queue, as the driver last reported it ([`SessionQueue`]). Written by
    /// the driver only, read under the queue's lock.
    session: AtomicU64,
    /// How many times room was made, in all bits but the lowest: a sender that saw a value
    /// and was refused has room to try again once the value moved on. The lowest bit says
    /// whether `room_wakers` holds any waker, so that making room takes the lock only if
    /// someone waits, and the driver's hot path takes no lock for nobody. (One word for both
    /// keeps an inbox in a smaller allocation.)
    room: AtomicU64,
    /// Tasks waiting for room, woken (and forgotten) each time room is made; boxed, and made
    /// only when a task waits, as few inboxes ever have one. (A `Vec` in place is three words
    /// in every inbox; this is one.)
    #[allow(clippy::box_collection)]
    room_wakers: Mutex<Option<Box<Vec<Waker>>>>,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        Self {
            queue: Mutex::default(),
            signalled: AtomicBool::new(false),
            driver: AtomicWaker::new(),
            session: AtomicU64::new(SessionQueue::UNKNOWN.0),
            room: AtomicU64::new(0),
            room_wakers: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a delivery if there is room.
    ///
    /// Two kinds of delivery need room in the inbox only, not in the session's limits:
    /// - QoS 0 ones, which promise nothing to their publisher: a burst of them may fill the
    ///   inbox, and what the session cannot hold when the connection closes is dropped and
    ///   counted then;
    /// - `own` ones: the connection's own client published it, to one of its own
    ///   subscriptions. The publish cannot wait for its own session to drain, since only its
    ///   own connection drains it. A session can so hold at most `capacity` more than its
    ///   limits, and only of messages its client sent itself.
    pub(crate) fn try_send(
        &self,
        delivery: Delivery,
        own: bool,
        limits: &InboxLimits,
    ) -> Result<(), SendError> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(SendError::Closed(delivery));
        }
        let room = if own || delivery.qos == midge_codec::QoS::AtMostOnce {
            queue.deliveries.len() < limits.capacity
        } else {
            self.has_room(&queue, delivery.size(), limits)
        };
        if !room {
            return Err(SendError::Full(delivery));
        }
        queue.bytes += delivery.size();
        queue.deliveries.push_back(delivery);
        let first = queue.deliveries.len() == 1;
        drop(queue);
        if first {
            self.signal();
        }
        Ok(())
    }

    /// Records the bytes of the connection's will, counted against the global budget.
    pub(crate) fn charge_will(&self, bytes: usize) {
        self.lock().will_charge = u32::try_from(bytes).unwrap_or(u32::MAX);
    }

    /// The bytes recorded by [`Inbox::charge_will`], once: the caller gives them back.
    pub(crate) fn take_will_charge(&self) -> usize {
        std::mem::take(&mut self.lock().will_charge) as usize
    }

    /// Whether a delivery of `size` bytes fits: within the inbox's capacity, and within the
    /// session's limits together with the session's own queue.
    fn has_room(&self, queue: &Queue, size: usize, limits: &InboxLimits) -> bool {
        let messages = queue.deliveries.len();
        // Sequentially consistent with `report_session_queue`: a sender either sees the room
        // a report made, or the report sees the sender waiting.
        let session = SessionQueue(self.session.load(Ordering::SeqCst));
        let (session_messages, session_bytes) = session.get();
        messages < limits.capacity
            && messages.saturating_add(session_messages) < limits.session.max_messages
            && queue
                .bytes
                .saturating_add(session_bytes)
                .saturating_add(size)
                <= limits.session.max_bytes
    }

    /// Records what the session's own queue holds now. Called by the driver once it has its
    /// session and after each transmit; it costs two loads when nothing changed. Room made
    /// here wakes senders waiting for it.
    pub(crate) fn report_session_queue(&self, session: QueueUse) {
        let now = SessionQueue::new(session.messages, session.bytes);
        if self.session.load(Ordering::Relaxed) == now.0 {
            return;
        }
        let before = SessionQueue(self.session.swap(now.0, Ordering::SeqCst));
        let (messages, bytes) = now.get();
        let (messages_before, bytes_before) = before.get();
        if messages < messages_before || bytes < bytes_before {
            self.made_room();
        }
    }

    /// The number of times room was made so far. Read it before [`Inbox::try_send`]: a
    /// sender refused for want of room may try again once [`Inbox::room_epoch`] moved on.
    pub(crate) fn room_epoch(&self) -> u64 {
        self.room.load(Ordering::SeqCst) >> 1
    }

    /// Ready when room was made since `epoch` (an earlier [`Inbox::room_epoch`]); otherwise
    /// registers the task to be woken when room is made next.
    pub(crate) fn poll_room(&self, epoch: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.room_epoch() != epoch {
            return Poll::Ready(());
        }
        {
            let mut wakers = self
                .room_wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let wakers = wakers.get_or_insert_with(Box::default);
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            self.room.fetch_or(WAITED, Ordering::SeqCst);
        }
        // Room made between the first look and the registration found no waker: look again.
        if self.room_epoch() != epoch {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Counts room made, and wakes whoever waits for it. The connection also calls it once its
    /// session is handed on after it closed: deliveries refused by the closed inbox wait for
    /// that, to go to the session's next holder.
    pub(crate) fn made_room(&self) {
        // Sequentially consistent with `poll_room`: a waiter either sees the new epoch, or
        // this sees the waiter registered.
        if self.room.fetch_add(2, Ordering::SeqCst) & WAITED == 0 {
            return;
        }
        let wakers = {
            let mut wakers = self
                .room_wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.room.fetch_and(!WAITED, Ordering::SeqCst);
            wakers.take()
        };
        for waker in wakers.into_iter().flat_map(|w| *w) {
            waker.wake();
        }
    }

    /// Ready when the driver was signalled since its last ready poll: a delivery arrived in an
    /// empty inbox (or remains after [`Inbox::take`]), a takeover was requested, or the broker
    /// is stopping. Otherwise registers the task to be woken.
    /// For one task at a time (the connection's driver).
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.signalled.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.driver.register(cx.waker());
        // A signal between the first look and the registration found no waker: look again.
        if self.signalled.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Takes the signal [`Inbox::poll_ready`] would report, without registering a waker: for
    /// a driver that looks at every connection in turn instead of waiting on it.
    pub(crate) fn take_signal(&self) -> bool {
        self.signalled.swap(false, Ordering::AcqRel)
    }

    /// Marks the driver signalled and wakes it. Called without the queue's lock held; the
    /// driver also calls it to look again at what arrived while it could not act on it (a
    /// takeover request while its own CONNECT was being decided).
    pub(crate) fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        self.driver.wake();
    }

    /// Asks the connection for its session. Refused, and the reply handed back, when the
    /// connection already answered one request or is closing.
    pub(crate) fn request_takeover(&self, reply: TakeOver) -> Result<(), TakeOver> {
        let mut queue = self.lock();
        if !matches!(queue.takeover, Takeover::Open) {
            return Err(reply);
        }
        queue.takeover = Takeover::Requested(reply);
        drop(queue);
        self.signal();
        Ok(())
    }

    /// A connection with Clean Start 1 takes the session over: it ends with this connection,
    /// and what waits to be delivered through this inbox has no session to go to.
    pub(crate) fn end_session(&self) {
        self.lock().session_ends = true;
    }

    /// Whether the session ends with this connection ([`Inbox::end_session`]).
    pub(crate) fn session_ends(&self) -> bool {
        self.lock().session_ends
    }

    /// Ends takeovers: returns a request that is waiting, and refuses any later one.
    pub(crate) fn end_takeovers(&self) -> Option<TakeOver> {
        match std::mem::replace(&mut self.lock().takeover, Takeover::Ended) {
            Takeover::Requested(reply) => Some(reply),
            Takeover::Open | Takeover::Ended => None,
        }
    }

    /// Messages waiting: in the inbox, and in its session's queue as the driver last reported
    /// it.
    pub(crate) fn queued_messages(&self) -> usize {
        let queue = self.lock();
        // Closed: the session has gone on (offline, or to another connection), and counts
        // there.
        if queue.closed {
            return 0;
        }
        let (session, _) = SessionQueue(self.session.load(Ordering::Relaxed)).get();
        let session = if session == usize::MAX { 0 } else { session };
        queue.deliveries.len().saturating_add(session)
    }

    /// Tells the driver the broker is stopping.
    pub(crate) fn shut_down(&self) {
        self.lock().disconnect = Some(ReasonCode::SERVER_SHUTTING_DOWN);
        self.signal();
    }

    /// Tells the driver an operator wants the connection closed (unless the broker is
    /// stopping, which says so instead).
    pub(crate) fn kick(&self) {
        self.lock()
            .disconnect
            .get_or_insert(ReasonCode::ADMINISTRATIVE_ACTION);
        self.signal();
    }

    /// What the driver was signalled besides deliveries. A takeover request is taken only
    /// when `may_take_over` (the connection owns its session); otherwise it keeps waiting.
    pub(crate) fn signals(&self, may_take_over: bool) -> Signals {
        let mut queue = self.lock();
        let takeover = match &queue.takeover {
            Takeover::Requested(_) if may_take_over => {
                match std::mem::replace(&mut queue.takeover, Takeover::Ended) {
                    Takeover::Requested(reply) => Some(reply),
                    _ => None,
                }
            }
            _ => None,
        };
        Signals {
            disconnect: queue.disconnect,
            takeover,
        }
    }

    /// Moves up to `max` deliveries, oldest first, into `out`. If deliveries remain, the
    /// driver stays signalled, so its next [`Inbox::poll_ready`] is ready at once.
    ///
    /// What is taken goes into the session's queue, so it counts there from now on, until the
    /// driver next reports the session's queue.
    pub(crate) fn take(&self, max: usize, out: &mut Vec<Delivery>, limits: &InboxLimits) {
        let mut queue = self.lock();
        let n = max.min(queue.deliveries.len());
        let was_full = queue.deliveries.len() >= limits.capacity;
        let from = out.len();
        out.extend(queue.deliveries.drain(..n));
        let bytes: usize = out
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(Delivery::size)
            .sum();
        queue.bytes -= bytes;
        // Under the lock, so that a sender never sees them in neither place.
        let session = SessionQueue(self.session.load(Ordering::Relaxed));
        if session != SessionQueue::UNKNOWN {
            let (messages, queued) = session.get();
            let now = SessionQueue::new(messages.saturating_add(n), queued.saturating_add(bytes));
            self.session.store(now.0, Ordering::Relaxed);
        }
        if !queue.deliveries.is_empty() {
            // The driver is running: it polls again without being woken.
            self.signalled.store(true, Ordering::Release);
        } else if queue.deliveries.capacity() > SHRINK_ABOVE {
            // A burst is over: give its memory back.
            queue.deliveries = VecDeque::new();
        }
        drop(queue);
        if was_full && n > 0 {
            self.made_room();
        }
    }

    /// Refuses further deliveries and returns those still queued.
    pub(crate) fn close(&self) -> VecDeque<Delivery> {
        let mut queue = self.lock();
        queue.closed = true;
        queue.bytes = 0;
        let rest = std::mem::take(&mut queue.deliveries);
        drop(queue);
        self.made_room();
        rest
    }
}

/// The lowest bit of [`Inbox::room`]: tasks wait for room.
const WAITED: u64 = 1;

/// Queue capacity kept after the inbox empties, and by the driver for its batches; larger
/// ones are freed, so that an idle connection does not keep a burst's worth of room.
pub(crate) const SHRINK_ABOVE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use midge_codec::{ByteStr, QoS};
    use midge_proto::Message;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Instant;

    use crate::core::handover;

    fn delivery(n: u8) -> Delivery {
        let message = Message::new(
            ByteStr::from_static("t"),
            Bytes::from(vec![n]),
            QoS::AtLeastOnce,
        );
        Delivery::new(Arc::new(message), Instant::now())
    }

    /// A waker that records whether it was woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Flag {
        fn woken(&self) -> bool {
            self.0.swap(false, Ordering::SeqCst)
        }
    }

    fn ready(inbox: &Inbox, flag: &Arc<Flag>) -> bool {
        let waker = Waker::from(flag.clone());
        inbox
            .poll_ready(&mut Context::from_waker(&waker))
            .is_ready()
    }

    fn payloads(v: &[Delivery]) -> Vec<u8> {
        v.iter().map(|d| d.message.payload[0]).collect()
    }

    /// An inbox with the limits it is used under.
    struct TestInbox {
        inbox: Inbox,
        limits: InboxLimits,
    }

    impl TestInbox {
        fn new(capacity: usize, session: QueueLimits) -> Self {
            Self {
                inbox: Inbox::new(),
                limits: InboxLimits { capacity, session },
            }
        }

        fn try_send(&self, delivery: Delivery) -> Result<(), SendError> {
            self.inbox.try_send(delivery, false, &self.limits)
        }

        fn take(&self, max: usize, out: &mut Vec<Delivery>) {
            self.inbox.take(max, out, &self.limits);
        }
    }

    impl std::ops::Deref for TestInbox {
        type Target = Inbox;
        fn deref(&self) -> &Inbox {
            &self.inbox
        }
    }

    /// An inbox whose session's queue is empty and unlimited.
    fn inbox(capacity: usize) -> TestInbox {
        let inbox = TestInbox::new(capacity, unlimited());
        inbox.report_session_queue(QueueUse::default());
        inbox
    }

    fn unlimited() -> QueueLimits {
        let mut limits = QueueLimits::default();
        limits.max_messages = usize::MAX;
        limits.max_bytes = usize::MAX;
        limits
    }

    #[test]
    fn refuses_past_capacity_and_keeps_order() {
        let inbox = inbox(2);
        assert!(inbox.try_send(delivery(1)).is_ok());
        assert!(inbox.try_send(delivery(2)).is_ok());
        assert!(
            matches!(inbox.try_send(delivery(3)), Err(SendError::Full(d)) if d.message.payload[0] == 3)
        );
        let mut out = Vec::new();
        inbox.take(1, &mut out);
        assert_eq!(payloads(&out), [1]);
        assert!(inbox.try_send(delivery(3)).is_ok());
        out.clear();
        inbox.take(10, &mut out);
        assert_eq!(payloads(&out), [2, 3]);
    }

    /// The inbox and the session's queue share the session's limits, so what the inbox
    /// accepts is never refused by the session later.
    #[test]
    fn the_inbox_and_the_session_queue_share_the_session_limits() {
        let mut limits = unlimited();
        limits.max_messages = 3;
        let inbox = TestInbox::new(100, limits);
        assert!(
            matches!(inbox.try_send(delivery(0)), Err(SendError::Full(_))),
            "nothing is accepted before the session's queue is known"
        );
        inbox.report_session_queue(QueueUse {
            messages: 2,
            bytes: 2,
        });
        assert!(inbox.try_send(delivery(1)).is_ok());
        assert!(matches!(
            inbox.try_send(delivery(2)),
            Err(SendError::Full(_))
        ));
        // Taken into the session's queue, it still counts.
        let mut out = Vec::new();
        inbox.take(10, &mut out);
        assert!(matches!(
            inbox.try_send(delivery(2)),
            Err(SendError::Full(_))
        ));
        // Sent: room again.
        inbox.report_session_queue(QueueUse {
            messages: 1,
            bytes: 1,
        });
        assert!(inbox.try_send(delivery(2)).is_ok());
    }

    #[test]
    fn qos0_deliveries_need_room_in_the_inbox_only() {
        let mut limits = unlimited();
        limits.max_messages = 1;
        let inbox = TestInbox::new(2, limits);
        inbox.report_session_queue(QueueUse {
            messages: 1,
            bytes: 0,
        });
        let mut d = delivery(1);
        d.qos = QoS::AtMostOnce;
        assert!(inbox.try_send(d.clone()).is_ok());
        assert!(inbox.try_send(d.clone()).is_ok());
        assert!(matches!(inbox.try_send(d), Err(SendError::Full(_))));
    }

    #[test]
    fn the_session_byte_limit_counts_the_inbox_too() {
        let each = delivery(0).size();
        let mut limits = unlimited();
        limits.max_bytes = 2 * each;
        let inbox = TestInbox::new(100, limits);
        inbox.report_session_queue(QueueUse {
            messages: 1,
            bytes: each,
        });
        assert!(inbox.try_send(delivery(1)).is_ok());
        assert!(matches!(
            inbox.try_send(delivery(2)),
            Err(SendError::Full(_))
        ));
    }

    #[test]
    fn closed_inbox_gives_back_the_rest_and_refuses_more() {
        let inbox = inbox(4);
        inbox.try_send(delivery(1)).unwrap();
        let rest = inbox.close();
        assert_eq!(rest.len(), 1);
        assert!(matches!(
            inbox.try_send(delivery(2)),
            Err(SendError::Closed(_))
        ));
    }

    #[test]
    fn a_refused_sender_is_woken_when_the_driver_makes_room() {
        let inbox = inbox(1);
        inbox.try_send(delivery(1)).unwrap();
        let epoch = inbox.room_epoch();
        assert!(matches!(
            inbox.try_send(delivery(2)),
            Err(SendError::Full(_))
        ));
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(inbox.poll_room(epoch, &mut cx).is_pending());
        let mut out = Vec::new();
        inbox.take(8, &mut out);
        assert!(
            flag.woken(),
            "taking from a full inbox wakes the waiting sender"
        );
        assert!(inbox.poll_room(epoch, &mut cx).is_ready());
        assert!(inbox.try_send(delivery(2)).is_ok());
    }

    #[test]
    fn a_report_that_makes_room_in_the_session_wakes_a_waiting_sender() {
        let mut limits = unlimited();
        limits.max_messages = 1;
        let inbox = TestInbox::new(8, limits);
        inbox.report_session_queue(QueueUse {
            messages: 1,
            bytes: 1,
        });
        let epoch = inbox.room_epoch();
        assert!(matches!(
            inbox.try_send(delivery(1)),
            Err(SendError::Full(_))
        ));
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        assert!(inbox
            .poll_room(epoch, &mut Context::from_waker(&waker))
            .is_pending());
        // Unchanged: no room made, nobody woken.
        inbox.report_session_queue(QueueUse {
            messages: 1,
            bytes: 1,
        });
        assert!(!flag.woken());
        inbox.report_session_queue(QueueUse::default());
        assert!(flag.woken());
        assert!(inbox.try_send(delivery(1)).is_ok());
    }

    #[test]
    fn the_driver_is_woken_again_while_deliveries_remain() {
        let inbox = inbox(8);
        for n in 0..3 {
            inbox.try_send(delivery(n)).unwrap();
        }
        let flag = Arc::new(Flag::default());
        let mut out = Vec::new();
        assert!(ready(&inbox, &flag));
        inbox.take(2, &mut out);
        // One remains: ready at once, without a new delivery.
        assert!(ready(&inbox, &flag));
        inbox.take(2, &mut out);
        assert_eq!(payloads(&out), [0, 1, 2]);
        assert!(!ready(&inbox, &flag));
        inbox.try_send(delivery(3)).unwrap();
        assert!(
            flag.woken(),
            "a delivery into an empty inbox wakes the driver"
        );
    }

    #[test]
    fn a_takeover_request_waits_until_the_driver_may_take_it() {
        let inbox = inbox(4);
        let (reply, _answer) = handover::request(Arc::new(Inbox::new()));
        inbox
            .request_takeover(reply)
            .expect("the first request is taken");
        assert!(ready(&inbox, &Arc::new(Flag::default())));
        // Still deciding its own CONNECT: the request keeps waiting.
        assert!(inbox.signals(false).takeover.is_none());
        assert!(inbox.signals(true).takeover.is_some());
        // Answered once: a second request is refused.
        let (again, _) = handover::request(Arc::new(Inbox::new()));
        assert!(inbox.request_takeover(again).is_err());
    }

    #[test]
    fn a_closing_connection_finds_the_request_and_refuses_later_ones() {
        let inbox = inbox(4);
        let (reply, _answer) = handover::request(Arc::new(Inbox::new()));
        inbox.request_takeover(reply).unwrap();
        assert!(inbox.end_takeovers().is_some());
        let (again, _) = handover::request(Arc::new(Inbox::new()));
        assert!(inbox.request_takeover(again).is_err());
        assert!(inbox.end_takeovers().is_none());
    }

    #[test]
    fn shutdown_wakes_a_waiting_driver() {
        let inbox = inbox(4);
        let flag = Arc::new(Flag::default());
        assert!(!ready(&inbox, &flag));
        inbox.shut_down();
        assert!(flag.woken());
        assert!(ready(&inbox, &flag));
        assert!(
            inbox.signals(true).disconnect == Some(ReasonCode::SERVER_SHUTTING_DOWN),
            "the driver sees the shutdown"
        );
    }

    #[test]
    fn an_inbox_fits_a_small_allocation() {
        // With its `Arc`'s two counters, in jemalloc's 160-byte class: the next is 192, and an
        // inbox is part of every connection's cost.
        assert!(
            size_of::<Inbox>() + 16 <= 160,
            "{} bytes",
            size_of::<Inbox>()
        );
    }
}
