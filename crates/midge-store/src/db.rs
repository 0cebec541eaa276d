//! The redb tables, and how a batch of changes is applied to them.

use std::collections::HashSet;

use midge_codec::{ByteStr, PacketId};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::record;

/// `"format"`: the layout of the other tables and of their records.
pub(crate) const META: TableDefinition<'_, &str, u32> = TableDefinition::new("meta");
/// Client identifier → session record.
pub(crate) const SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sessions");
/// (client identifier, topic filter) → subscription.
pub(crate) const SUBSCRIPTIONS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("subscriptions");
/// (client identifier, delivery tag) → message state.
pub(crate) const MESSAGES: TableDefinition<'_, (&str, u64), &[u8]> =
    TableDefinition::new("messages");
/// (client identifier, packet identifier) of QoS 2 messages received and not released.
pub(crate) const INCOMING: TableDefinition<'_, (&str, u16), ()> = TableDefinition::new("incoming");
/// Topic → retained message.
pub(crate) const RETAINED: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("retained");

/// The key of `meta` that holds the format.
pub(crate) const FORMAT_KEY: &str = "format";

/// A change, encoded on the writer's thread and applied by the commit thread.
#[derive(Debug)]
pub(crate) enum Op {
    Session {
        client: ByteStr,
        row: Vec<u8>,
    },
    Subscribe {
        client: ByteStr,
        filter: ByteStr,
        row: Vec<u8>,
    },
    Unsubscribe {
        client: ByteStr,
        filter: ByteStr,
    },
    Enqueue {
        client: ByteStr,
        tag: u64,
        row: Vec<u8>,
    },
    Sent {
        client: ByteStr,
        tag: u64,
        packet_id: PacketId,
    },
    Released {
        client: ByteStr,
        tag: u64,
        packet_id: PacketId,
    },
    Finished {
        client: ByteStr,
        tag: u64,
    },
    IncomingQos2 {
        client: ByteStr,
        packet_id: PacketId,
    },
    IncomingReleased {
        client: ByteStr,
        packet_id: PacketId,
    },
    WillDone {
        client: ByteStr,
    },
    RemoveSession {
        client: ByteStr,
    },
    Retained {
        topic: ByteStr,
        row: Option<Vec<u8>>,
    },
}

impl Op {
    /// Roughly what the change holds in memory.
    pub(crate) fn bytes(&self) -> usize {
        size_of::<Self>()
            + match self {
                Self::Session { row, .. } | Self::Enqueue { row, .. } => row.len(),
                Self::Subscribe { row, filter, .. } => row.len() + filter.len(),
                _ => 0,
            }
    }
}

impl Op {
    /// The message this change is about, if any: its client and delivery tag.
    fn message(&self) -> Option<(&ByteStr, u64)> {
        match self {
            Self::Enqueue { client, tag, .. }
            | Self::Sent { client, tag, .. }
            | Self::Released { client, tag, .. }
            | Self::Finished { client, tag } => Some((client, *tag)),
            _ => None,
        }
    }
}

/// Messages named by client and delivery tag.
pub(crate) type Messages<'a> = HashSet<(&'a ByteStr, u64)>;

/// The messages queued and finished within `ops`: none of their changes needs to reach the
/// disk. A QoS 1 message acknowledged by an online subscriber before the commit is the usual
/// case.
pub(crate) fn cancelled(ops: &[Op]) -> Messages<'_> {
    let mut queued = HashSet::new();
    let mut cancelled = HashSet::new();
    for op in ops {
        match op {
            Op::Enqueue { client, tag, .. } => {
                queued.insert((client, *tag));
            }
            Op::Finished { client, tag } if queued.contains(&(client, *tag)) => {
                cancelled.insert((client, *tag));
            }
            _ => {}
        }
    }
    cancelled
}

fn is_cancelled(op: &Op, cancelled: &Messages<'_>) -> bool {
    !cancelled.is_empty() && op.message().is_some_and(|m| cancelled.contains(&m))
}

/// Whether any of `ops` writes something once the `cancelled` ones are left out.
pub(crate) fn writes_anything(ops: &[Op], cancelled: &Messages<'_>) -> bool {
    ops.iter().any(|op| !is_cancelled(op, cancelled))
}

/// `s` followed by NUL, the smallest string greater than `s`: the keys whose first part is `s`
/// are exactly those from `(s, "")` up to, not including, `(successor(s), "")`.
pub(crate) fn successor(s: &str) -> String {
    let mut next = String::with_capacity(s.len() + 1);
    next.push_str(s);
    next.push('\0');
    next
}

/// Applies `ops` in order, leaving out the `cancelled` ones. Changes to a session that is not
/// kept are ignored, as the in-memory journal ignores them.
pub(crate) fn apply(
    txn: &WriteTransaction,
    ops: &[Op],
    cancelled: &Messages<'_>,
) -> Result<(), redb::Error> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut subscriptions = txn.open_table(SUBSCRIPTIONS)?;
    let mut messages = txn.open_table(MESSAGES)?;
    let mut incoming = txn.open_table(INCOMING)?;
    let mut retained = txn.open_table(RETAINED)?;
    for op in ops {
        if is_cancelled(op, cancelled) {
            continue;
        }
        let kept = |client: &ByteStr| -> Result<bool, redb::Error> {
            Ok(sessions.get(client.as_str())?.is_some())
        };
        match op {
            Op::Session { client, row } => {
                sessions.insert(client.as_str(), row.as_slice())?;
            }
            Op::Subscribe {
                client,
                filter,
                row,
            } => {
                if kept(client)? {
                    subscriptions.insert((client.as_str(), filter.as_str()), row.as_slice())?;
                }
            }
            Op::Unsubscribe { client, filter } => {
                subscriptions.remove((client.as_str(), filter.as_str()))?;
            }
            Op::Enqueue { client, tag, row } => {
                if kept(client)? {
                    messages.insert((client.as_str(), *tag), row.as_slice())?;
                }
            }
            Op::Sent {
                client,
                tag,
                packet_id,
            } => {
                let key = (client.as_str(), *tag);
                let sent = messages
                    .get(key)?
                    .and_then(|row| record::queued_to_sent(row.value(), *packet_id));
                if let Some(sent) = sent {
                    messages.insert(key, sent.as_slice())?;
                }
            }
            Op::Released {
                client,
                tag,
                packet_id,
            } => {
                let key = (client.as_str(), *tag);
                if messages.get(key)?.is_some() {
                    messages.insert(key, record::encode_released(*packet_id).as_slice())?;
                }
            }
            Op::Finished { client, tag } => {
                messages.remove((client.as_str(), *tag))?;
            }
            Op::IncomingQos2 { client, packet_id } => {
                if kept(client)? {
                    incoming.insert((client.as_str(), packet_id.get()), ())?;
                }
            }
            Op::IncomingReleased { client, packet_id } => {
                incoming.remove((client.as_str(), packet_id.get()))?;
            }
            Op::WillDone { client } => {
                let row = sessions
                    .get(client.as_str())?
                    .map(|row| bytes::Bytes::copy_from_slice(row.value()));
                let Some(row) = row else { continue };
                match record::decode_session(row) {
                    Some(session) if session.will.is_some() => {
                        sessions
                            .insert(client.as_str(), session.encode_without_will().as_slice())?;
                    }
                    Some(_) => {}
                    None => tracing::warn!(
                        client = ?client.as_str(),
                        "the session record does not decode: its will cannot be cleared"
                    ),
                }
            }
            Op::RemoveSession { client } => {
                let c = client.as_str();
                sessions.remove(c)?;
                let next = successor(c);
                subscriptions.retain_in((c, "")..(next.as_str(), ""), |_, _| false)?;
                messages.retain_in((c, 0)..=(c, u64::MAX), |_, _| false)?;
                incoming.retain_in((c, 0)..=(c, u16::MAX), |_, _| false)?;
            }
            Op::Retained { topic, row } => match row {
                Some(row) => {
                    retained.insert(topic.as_str(), row.as_slice())?;
                }
                None => {
                    retained.remove(topic.as_str())?;
                }
            },
        }
    }
    Ok(())
}
