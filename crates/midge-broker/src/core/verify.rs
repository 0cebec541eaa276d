//! Password checks off the connections' threads: a CONNECT whose credentials need a costly
//! check ([`Hooks::verify`](crate::Hooks::verify)) leaves it in the core's queue and waits;
//! the driver runs the queue on a bounded pool of threads, and the answer wakes the
//! connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use midge_codec::ReasonCode;

use super::inbox::Inbox;
use crate::hooks::Verification;

/// A check waiting to run, from [`Core::poll_verification`](super::Core::poll_verification):
/// call [`VerificationJob::run`] on a thread that may block.
pub struct VerificationJob {
    ticket: Arc<Ticket>,
}

impl std::fmt::Debug for VerificationJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationJob").finish_non_exhaustive()
    }
}

impl VerificationJob {
    /// Runs the check and wakes its connection with the answer. A connection that gave up
    /// waiting (it closed, or timed out) has dropped its check already: nothing runs.
    pub fn run(self) {
        let Some(check) = self.ticket.take_check() else {
            return;
        };
        let answer = check();
        *lock(&self.ticket.answer) = Some(answer);
        self.ticket.inbox.signal();
    }
}

/// A check and its answer, shared by the queue and the connection that waits for it.
pub(crate) struct Ticket {
    /// The check, until a thread takes it to run or the connection gives up: dropped then,
    /// with the password it holds and what it counts against its address's limit.
    check: Mutex<Option<Verification>>,
    answer: Mutex<Option<Result<(), ReasonCode>>>,
    abandoned: AtomicBool,
    inbox: Arc<Inbox>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl Ticket {
    /// The answer, if the check ran.
    pub(crate) fn answer(&self) -> Option<Result<(), ReasonCode>> {
        lock(&self.answer).take()
    }

    /// The connection no longer waits: the check is dropped unless it already runs.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        drop(self.take_check());
    }

    fn take_check(&self) -> Option<Verification> {
        lock(&self.check).take()
    }

    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks waiting for a thread, oldest first. Entries of connections that gave up are
/// dropped when a thread reaches them, or all at once when the queue reaches `limit`
/// entries: it never holds more than `limit` live ones (one per connection waiting for its
/// CONNECT's answer, so the connection limit) plus as many given up.
#[derive(Default)]
pub(crate) struct Verifications {
    queue: Mutex<VecDeque<Arc<Ticket>>>,
    waker: AtomicWaker,
}

impl std::fmt::Debug for Verifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifications").finish_non_exhaustive()
    }
}

impl Verifications {
    /// Queues `check` for the connection of `inbox`; the returned ticket gets the answer.
    /// `limit` is the most connections that can wait at once.
    pub(crate) fn push(&self, check: Verification, inbox: Arc<Inbox>, limit: usize) -> Arc<Ticket> {
        let ticket = Arc::new(Ticket {
            check: Mutex::new(Some(check)),
            answer: Mutex::new(None),
            abandoned: AtomicBool::new(false),
            inbox,
        });
        let mut queue = lock(&self.queue);
        if queue.len() >= limit {
            queue.retain(|t| !t.is_abandoned());
        }
        queue.push_back(ticket.clone());
        drop(queue);
        self.waker.wake();
        ticket
    }

    pub(crate) fn pop(&self) -> Option<VerificationJob> {
        let mut queue = lock(&self.queue);
        // Checks for connections that are gone are dropped here, not run.
        while let Some(ticket) = queue.pop_front() {
            if !ticket.is_abandoned() {
                return Some(VerificationJob { ticket });
            }
        }
        None
    }

    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<VerificationJob> {
        if let Some(job) = self.pop() {
            return Poll::Ready(job);
        }
        self.waker.register(cx.waker());
        match self.pop() {
            Some(job) => Poll::Ready(job),
            None => Poll::Pending,
        }
    }
}
