//! Keepalive timers (§3.1.2.10 of both 3.1.1 and 5.0).
//!
//! The client must send some control packet at least once per Keep Alive interval, a PINGREQ if
//! it has nothing else to send [MQTT-3.1.2-23]. The server closes the connection when it hears
//! nothing for one and a half intervals ([MQTT-3.1.2-24]; 5.0: [MQTT-3.1.2-22]). An interval of
//! zero turns the mechanism off.

use std::time::{Duration, Instant};

/// What the client's keepalive asks for when its timeout fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeepAliveAction {
    /// Nothing to do yet.
    None,
    /// Send a PINGREQ now.
    SendPing,
    /// A PINGREQ went unanswered for the response timeout: close the connection.
    PeerDead,
}

/// The client side: when to send PINGREQ, and when to give up on the server.
#[derive(Clone, Debug)]
pub(crate) struct ClientKeepAlive {
    interval: Duration,
    response_timeout: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl ClientKeepAlive {
    /// `interval` is the Keep Alive in effect: the client's, or the 5.0 Server Keep Alive when
    /// the CONNACK carries one [MQTT-3.2.2-21]. Zero turns keepalive off.
    pub(crate) fn new(interval: Duration, response_timeout: Duration, now: Instant) -> Self {
        Self {
            interval,
            response_timeout,
            last_sent: now,
            ping_sent: None,
        }
    }

    /// Records that a packet went out: any control packet restarts the interval.
    pub(crate) fn on_packet_sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// Records that a PINGREQ went out.
    pub(crate) fn on_ping_sent(&mut self, now: Instant) {
        self.last_sent = now;
        self.ping_sent = Some(now);
    }

    /// Records that a packet came in. Any packet proves the server is alive, not only PINGRESP.
    pub(crate) fn on_packet_received(&mut self) {
        self.ping_sent = None;
    }

    /// When [`Self::handle_timeout`] next has something to do, or `None` if keepalive is off.
    ///
    /// Changed by every `on_*` call.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.interval.is_zero() {
            return None;
        }
        Some(match self.ping_sent {
            Some(sent) => sent + self.response_timeout,
            None => self.last_sent + self.interval,
        })
    }

    /// Decides what is due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> KeepAliveAction {
        match self.poll_timeout() {
            Some(at) if now >= at => {
                if self.ping_sent.is_some() {
                    KeepAliveAction::PeerDead
                } else {
                    KeepAliveAction::SendPing
                }
            }
            _ => KeepAliveAction::None,
        }
    }
}

/// The server side: the deadline by which the client must have sent something.
#[derive(Clone, Debug)]
pub(crate) struct ServerKeepAlive {
    grace: Option<Duration>,
    deadline: Option<Instant>,
}

impl ServerKeepAlive {
    /// `interval` is the Keep Alive the client asked for, or the server's own if it imposed one
    /// in CONNACK. Zero turns the check off.
    pub(crate) fn new(interval: Duration, now: Instant) -> Self {
        // One and a half intervals [MQTT-3.1.2-24].
        let grace = (!interval.is_zero()).then(|| interval + interval / 2);
        Self {
            grace,
            deadline: grace.map(|g| now + g),
        }
    }

    /// Records that a packet came in from the client.
    pub(crate) fn on_packet_received(&mut self, now: Instant) {
        self.deadline = self.grace.map(|g| now + g);
    }

    /// The instant at which the client is declared dead, unless a packet arrives first.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once the client has been silent past its deadline.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn client_pings_after_a_silent_interval_and_not_before() {
        // [MQTT-3.1.2-23]
        let t0 = Instant::now();
        let mut ka = ClientKeepAlive::new(10 * SEC, 5 * SEC, t0);
        assert_eq!(ka.handle_timeout(t0 + 9 * SEC), KeepAliveAction::None);
        ka.on_packet_sent(t0 + 9 * SEC);
        assert_eq!(ka.poll_timeout(), Some(t0 + 19 * SEC));
        assert_eq!(ka.handle_timeout(t0 + 18 * SEC), KeepAliveAction::None);
        assert_eq!(ka.handle_timeout(t0 + 19 * SEC), KeepAliveAction::SendPing);
    }

    #[test]
    fn client_declares_server_dead_when_pingresp_is_late() {
        let t0 = Instant::now();
        let mut ka = ClientKeepAlive::new(10 * SEC, 5 * SEC, t0);
        ka.on_ping_sent(t0 + 10 * SEC);
        assert_eq!(ka.handle_timeout(t0 + 14 * SEC), KeepAliveAction::None);
        assert_eq!(ka.handle_timeout(t0 + 15 * SEC), KeepAliveAction::PeerDead);
    }

    #[test]
    fn client_answer_clears_the_outstanding_ping() {
        let t0 = Instant::now();
        let mut ka = ClientKeepAlive::new(10 * SEC, 5 * SEC, t0);
        ka.on_ping_sent(t0 + 10 * SEC);
        ka.on_packet_received();
        assert_eq!(ka.poll_timeout(), Some(t0 + 20 * SEC));
    }

    #[test]
    fn zero_interval_turns_keepalive_off() {
        let t0 = Instant::now();
        let ka = ClientKeepAlive::new(Duration::ZERO, 5 * SEC, t0);
        assert_eq!(ka.poll_timeout(), None);
        let server = ServerKeepAlive::new(Duration::ZERO, t0);
        assert_eq!(server.poll_timeout(), None);
        assert!(!server.is_expired(t0 + 1_000_000 * SEC));
    }

    #[test]
    fn server_allows_one_and_a_half_intervals() {
        // [MQTT-3.1.2-24]: 10 s keepalive -> closed after 15 s of silence.
        let t0 = Instant::now();
        let mut ka = ServerKeepAlive::new(10 * SEC, t0);
        assert!(!ka.is_expired(t0 + 14 * SEC));
        assert!(ka.is_expired(t0 + 15 * SEC));
        ka.on_packet_received(t0 + 14 * SEC);
        assert!(!ka.is_expired(t0 + 28 * SEC));
        assert!(ka.is_expired(t0 + 29 * SEC));
    }
}
