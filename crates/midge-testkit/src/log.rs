//! The event log of a simulation run: what each client saw, what the simulation did to the
//! network and the broker, and when. The [`checker`](crate::check) judges a run from this log
//! alone, so a log can be written by hand to test the checker.
//!
//! Client events are the client application's view (`midge_proto::client::Event`s, and the
//! calls it made); broker-side events are limited to what the simulation observes from the
//! outside: when a broker connection ended, and whether it had read the client's DISCONNECT.

use std::fmt;
use std::time::Duration;

use midge_codec::{ProtocolVersion, QoS};

/// A client's position in the [`Log::clients`] roster.
pub type ClientIdx = usize;

/// The connections of one client, numbered from 1 in the order it opened them.
pub type ConnNo = u32;

/// One application message: its publisher and the publisher's sequence number. It is the
/// message's payload (see [`Payload`]), so a receiver can tell which message it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId {
    /// The publishing client.
    pub publisher: ClientIdx,
    /// The publisher's sequence number, from 0.
    pub seq: u32,
}

/// What a received payload says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Payload {
    /// A published message.
    Message(MsgId),
    /// The will of a client. A client's will is the same in every CONNECT it sends, so the
    /// payload names the client, not the connection.
    Will {
        /// The client.
        client: ClientIdx,
    },
    /// An empty payload: a retained message being cleared.
    Empty,
    /// Something the simulation never sent.
    Unknown,
}

impl Payload {
    /// The payload bytes of `self`.
    pub fn encode(self) -> Vec<u8> {
        match self {
            Self::Message(m) => format!("m/{}/{}", m.publisher, m.seq).into_bytes(),
            Self::Will { client } => format!("w/{client}/0").into_bytes(),
            Self::Empty => Vec::new(),
            Self::Unknown => b"?".to_vec(),
        }
    }

    /// What `bytes` say they are.
    pub fn decode(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            return Self::Empty;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Self::Unknown;
        };
        let mut parts = text.split('/');
        let (Some(kind), Some(a), Some(b), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Self::Unknown;
        };
        let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<u32>()) else {
            return Self::Unknown;
        };
        match kind {
            "m" => Self::Message(MsgId {
                publisher: a,
                seq: b,
            }),
            "w" if b == 0 => Self::Will { client: a },
            _ => Self::Unknown,
        }
    }
}

/// What part a client plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Publishes, subscribes and reconnects for the whole run.
    Regular,
    /// Connects now and then with another client's identifier, Clean Start 1 and no session
    /// to keep, publishes a little and disconnects: a takeover by a second client.
    Intruder,
    /// Connects at the end with a new session to read every retained message.
    Probe,
}

/// A client's will, as set in every CONNECT it sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WillSpec {
    /// Will Topic.
    pub topic: String,
    /// Will QoS.
    pub qos: QoS,
    /// Will Delay Interval in seconds (5.0; 0 under 3.x).
    pub delay: u32,
}

/// A client of the run: fixed for the whole run.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    /// The Client Identifier it connects with. Intruders share one with a regular client.
    pub client_id: String,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Its part.
    pub role: Role,
    /// Clean Start (5.0) or Clean Session (3.x) in every CONNECT.
    pub clean_start: bool,
    /// How long its session outlives a connection, in seconds: the 5.0 Session Expiry
    /// Interval, `u32::MAX` for a 3.x persistent session, 0 for a 3.x clean one.
    pub session_expiry: u32,
    /// Its will, if any.
    pub will: Option<WillSpec>,
}

impl ClientSpec {
    /// Whether the broker may keep its session after a connection ends.
    pub fn persistent(&self) -> bool {
        self.session_expiry > 0
    }
}

/// How a client connection ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// The client sent DISCONNECT.
    Disconnected,
    /// The server sent DISCONNECT with this reason code.
    ServerDisconnect(u8),
    /// The transport closed.
    ConnectionLost,
    /// No CONNACK or PINGRESP in time.
    Timeout,
    /// The client found the server breaking the protocol.
    ProtocolViolation(u8),
    /// The server refused the CONNECT with this code.
    Rejected(u8),
}

/// One thing that happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A client queued CONNECT on a new transport.
    Connect {
        /// The client.
        client: ClientIdx,
        /// Its connection.
        conn: ConnNo,
    },
    /// CONNACK accepted the connection.
    Connected {
        /// The client.
        client: ClientIdx,
        /// Its connection.
        conn: ConnNo,
        /// Session Present.
        session_present: bool,
    },
    /// The client's connection ended.
    Closed {
        /// The client.
        client: ClientIdx,
        /// Its connection.
        conn: ConnNo,
        /// Why.
        reason: CloseKind,
    },
    /// The client application queued DISCONNECT with this reason code (0x00, or 0x04 to have
    /// the will published).
    Disconnect {
        /// The client.
        client: ClientIdx,
        /// Its connection.
        conn: ConnNo,
        /// The reason code.
        code: u8,
    },
    /// The simulation broke the client's transport (a cut, a black hole, a crash): from here
    /// on the broker may find the connection gone.
    TransportDown {
        /// The client.
        client: ClientIdx,
        /// Its connection.
        conn: ConnNo,
    },
    /// The broker's side of the connection ended: the broker has handled its close (the
    /// session went offline, ended or was handed over) at this moment.
    BrokerClosed {
        /// The client.
        client: ClientIdx,
        /// Its connection.
        conn: ConnNo,
        /// Whether the broker had read the DISCONNECT the client sent (its reason code).
        disconnect: Option<u8>,
    },
    /// The client published a message (the call succeeded; it is queued for sending).
    Publish {
        /// The message.
        msg: MsgId,
        /// Topic.
        topic: String,
        /// QoS.
        qos: QoS,
        /// RETAIN.
        retain: bool,
        /// Whether the payload is empty (a retained message being cleared). Such a message
        /// cannot be told apart when received.
        empty: bool,
        /// Message Expiry Interval, seconds.
        expiry: Option<u32>,
    },
    /// A QoS 1 or 2 publish completed (PUBACK, PUBCOMP or a failing PUBREC).
    Published {
        /// The message.
        msg: MsgId,
        /// The reason code (always 0 under 3.x).
        code: u8,
    },
    /// The client queued SUBSCRIBE.
    Subscribe {
        /// The client.
        client: ClientIdx,
        /// Its packet identifier.
        packet: u16,
        /// The filters and their requested QoS.
        filters: Vec<(String, QoS)>,
    },
    /// SUBACK arrived.
    Subscribed {
        /// The client.
        client: ClientIdx,
        /// The SUBSCRIBE's packet identifier.
        packet: u16,
        /// One code per filter: the granted QoS, or a failure (0x80 and above).
        codes: Vec<u8>,
    },
    /// The client queued UNSUBSCRIBE.
    Unsubscribe {
        /// The client.
        client: ClientIdx,
        /// Its packet identifier.
        packet: u16,
        /// The filters.
        filters: Vec<String>,
    },
    /// UNSUBACK arrived: the broker has handled the UNSUBSCRIBE.
    Unsubscribed {
        /// The client.
        client: ClientIdx,
        /// The UNSUBSCRIBE's packet identifier.
        packet: u16,
    },
    /// A message arrived at a client.
    Received {
        /// The client.
        client: ClientIdx,
        /// Topic.
        topic: String,
        /// What the payload says it is.
        payload: Payload,
        /// The QoS it was delivered with.
        qos: QoS,
        /// RETAIN as delivered.
        retain: bool,
        /// Message Expiry Interval as delivered.
        expiry: Option<u32>,
    },
    /// The broker crashed: its state is dropped without a word to anyone. Only what it had
    /// given the store survives.
    Crash,
    /// The broker began a graceful stop: connections are told, sessions saved.
    Stop,
    /// A new broker started on the store of the last one.
    Start,
    /// The clock jumped ahead.
    ClockJump {
        /// By how much.
        by: Duration,
    },
    /// Faults and new work stop here; clients reconnect and every flow is finished.
    Drain,
    /// The broker's counters, logged when a broker ends (crash, stop, end of the run).
    Counters(Counters),
    /// The run ended: every flow that could finish has finished.
    End,
}

/// The counters of one broker that the checker needs: its drops, and protocol errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `BrokerStats::dropped_inbox_full`.
    pub dropped_inbox_full: u64,
    /// `BrokerStats::dropped_queue_full`.
    pub dropped_queue_full: u64,
    /// `BrokerStats::dropped_memory_budget`.
    pub dropped_memory_budget: u64,
    /// `BrokerStats::dropped_retained`.
    pub dropped_retained: u64,
    /// `BrokerStats::protocol_errors`.
    pub protocol_errors: u64,
}

impl Counters {
    /// Deliveries dropped for any limit (retained drops are not deliveries).
    pub fn dropped_deliveries(&self) -> u64 {
        self.dropped_inbox_full + self.dropped_queue_full + self.dropped_memory_budget
    }
}

impl Event {
    /// The client the event is about, if any. A [`Event::Publish`] or [`Event::Published`]
    /// is about its publisher.
    pub fn client(&self) -> Option<ClientIdx> {
        match self {
            Self::Connect { client, .. }
            | Self::Connected { client, .. }
            | Self::Closed { client, .. }
            | Self::Disconnect { client, .. }
            | Self::TransportDown { client, .. }
            | Self::BrokerClosed { client, .. }
            | Self::Subscribe { client, .. }
            | Self::Subscribed { client, .. }
            | Self::Unsubscribe { client, .. }
            | Self::Unsubscribed { client, .. }
            | Self::Received { client, .. } => Some(*client),
            Self::Publish { msg, .. } | Self::Published { msg, .. } => Some(msg.publisher),
            Self::Crash
            | Self::Stop
            | Self::Start
            | Self::ClockJump { .. }
            | Self::Drain
            | Self::Counters(_)
            | Self::End => None,
        }
    }
}

/// One entry: an event and the virtual time it happened, from the start of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// What happened.
    pub event: Event,
}

/// The run's clients and everything that happened, in order.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// The clients, by [`ClientIdx`].
    pub clients: Vec<ClientSpec>,
    /// The events, in the order they happened (which for events at the same instant is the
    /// order the simulation handled them).
    pub entries: Vec<Entry>,
}

impl Log {
    /// Appends an event at `at`.
    pub fn push(&mut self, at: Duration, event: Event) {
        self.entries.push(Entry { at, event });
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>9.3}s {:?}", self.at.as_secs_f64(), self.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for p in [
            Payload::Message(MsgId {
                publisher: 3,
                seq: 17,
            }),
            Payload::Will { client: 1 },
            Payload::Empty,
        ] {
            assert_eq!(Payload::decode(&p.encode()), p);
        }
        assert_eq!(Payload::decode(b"m/1"), Payload::Unknown);
        assert_eq!(Payload::decode(b"x/1/2"), Payload::Unknown);
        assert_eq!(Payload::decode(b"m/1/2/3"), Payload::Unknown);
    }
}
