//! Taking a session over from the connection that holds it: a connecting client with the same
//! client identifier asks through the old connection's inbox, and the old connection answers
//! with its session when it has closed. Neither side waits here: the answer wakes the asking
//! connection through its own inbox, and the asking connection decides how long it waits.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use midge_codec::Will;
use midge_proto::session::Session;

use super::inbox::Inbox;
use crate::hooks::ClientInfo;

/// What an old connection hands to the one taking over its session.
#[derive(Debug)]
pub(crate) struct Handover {
    pub(crate) session: Option<Session>,
    pub(crate) will: Option<(Will, u32)>,
    pub(crate) info: Option<ClientInfo>,
}

/// The old connection's side of a takeover: answer it with [`TakeOver::send`]. Dropped
/// unanswered, it tells the asking connection that no session is coming.
#[derive(Debug)]
pub(crate) struct TakeOver(Arc<Exchange>);

/// The asking connection's side of a takeover.
#[derive(Debug)]
pub(crate) struct Awaited(Arc<Exchange>);

#[derive(Debug)]
struct Exchange {
    state: Mutex<State>,
    /// Signalled when the answer comes.
    asker: Arc<Inbox>,
}

#[derive(Debug)]
enum State {
    Waiting,
    Answered(Box<Handover>),
    /// The old connection ended without an answer, or the asking one stopped waiting.
    Closed,
}

/// A takeover request of the connection whose inbox is `asker`.
pub(crate) fn request(asker: Arc<Inbox>) -> (TakeOver, Awaited) {
    let exchange = Arc::new(Exchange {
        state: Mutex::new(State::Waiting),
        asker,
    });
    (TakeOver(exchange.clone()), Awaited(exchange))
}

impl Exchange {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TakeOver {
    /// Answers with the session; handed back if the asking connection stopped waiting.
    pub(crate) fn send(self, handover: Box<Handover>) -> Result<(), Box<Handover>> {
        let mut state = self.0.lock();
        if !matches!(*state, State::Waiting) {
            return Err(handover);
        }
        *state = State::Answered(handover);
        drop(state);
        self.0.asker.signal();
        Ok(())
    }
}

impl Drop for TakeOver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        if matches!(*state, State::Waiting) {
            *state = State::Closed;
            drop(state);
            self.0.asker.signal();
        }
    }
}

/// How a takeover stands, seen by the asking connection.
#[derive(Debug)]
pub(crate) enum Answer {
    Waiting,
    Answered(Box<Handover>),
    /// The old connection ended without handing anything over.
    Refused,
}

impl Awaited {
    /// Takes the answer, if it came.
    pub(crate) fn poll(&self) -> Answer {
        let mut state = self.0.lock();
        match std::mem::replace(&mut *state, State::Closed) {
            State::Waiting => {
                *state = State::Waiting;
                Answer::Waiting
            }
            State::Answered(handover) => Answer::Answered(handover),
            State::Closed => Answer::Refused,
        }
    }

    /// Stops waiting: a later answer is handed back to the old connection. Returns an answer
    /// that came in the meantime, which the caller takes as if it had come in time.
    pub(crate) fn give_up(self) -> Option<Box<Handover>> {
        match std::mem::replace(&mut *self.0.lock(), State::Closed) {
            State::Answered(handover) => Some(handover),
            State::Waiting | State::Closed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Box<Handover> {
        Box::new(Handover {
            session: None,
            will: None,
            info: None,
        })
    }

    #[test]
    fn an_answer_reaches_the_asker_once() {
        let (reply, awaited) = request(Arc::new(Inbox::new()));
        assert!(matches!(awaited.poll(), Answer::Waiting));
        reply.send(empty()).expect("the asker waits");
        assert!(matches!(awaited.poll(), Answer::Answered(_)));
    }

    #[test]
    fn a_request_dropped_unanswered_is_refused() {
        let (reply, awaited) = request(Arc::new(Inbox::new()));
        drop(reply);
        assert!(matches!(awaited.poll(), Answer::Refused));
    }

    #[test]
    fn an_answer_after_giving_up_goes_back_to_the_old_connection() {
        let (reply, awaited) = request(Arc::new(Inbox::new()));
        assert!(awaited.give_up().is_none());
        assert!(reply.send(empty()).is_err());
    }

    #[test]
    fn an_answer_that_came_before_giving_up_is_kept() {
        let (reply, awaited) = request(Arc::new(Inbox::new()));
        reply.send(empty()).expect("the asker waits");
        assert!(awaited.give_up().is_some());
    }
}
