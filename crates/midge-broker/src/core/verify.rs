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
    check: Verification,
    ticket: Arc<Ticket>,
}

impl std::fmt::Debug for VerificationJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationJob").finish_non_exhaustive()
    }
}

impl VerificationJob {
    /// Runs the check and wakes its connection with the answer. A connection that gave up
    /// waiting (it closed, or timed out) is not checked for.
    pub fn run(self) {
        if self.ticket.abandoned.load(Ordering::Acquire) {
            return;
        }
        let answer = (self.check)();
        *self
            .ticket
            .answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(answer);
        self.ticket.inbox.signal();
    }
}

/// The connection's side of a check: its answer, once there is one.
pub(crate) struct Ticket {
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
        self.answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The connection no longer waits: the check need not run.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

/// Checks waiting for a thread, oldest first. At most one per connection waiting for its
/// CONNECT's answer, so bounded by the connection limit.
#[derive(Default)]
pub(crate) struct Verifications {
    queue: Mutex<VecDeque<VerificationJob>>,
    waker: AtomicWaker,
}

impl std::fmt::Debug for Verifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifications").finish_non_exhaustive()
    }
}

impl Verifications {
    /// Queues `check` for the connection of `inbox`; the returned ticket gets the answer.
    pub(crate) fn push(&self, check: Verification, inbox: Arc<Inbox>) -> Arc<Ticket> {
        let ticket = Arc::new(Ticket {
            answer: Mutex::new(None),
            abandoned: AtomicBool::new(false),
            inbox,
        });
        self.lock().push_back(VerificationJob {
            check,
            ticket: ticket.clone(),
        });
        self.waker.wake();
        ticket
    }

    pub(crate) fn pop(&self) -> Option<VerificationJob> {
        let mut queue = self.lock();
        // Checks for connections that are gone are dropped here, not run.
        while let Some(job) = queue.pop_front() {
            if !job.ticket.abandoned.load(Ordering::Acquire) {
                return Some(job);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<VerificationJob>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
