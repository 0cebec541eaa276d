//! What a store holds: [`info`], and the checks every open makes.

use std::fmt;
use std::path::Path;

use bytes::Bytes;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::db::{FORMAT_KEY, INCOMING, MESSAGES, META, RETAINED, SESSIONS, SUBSCRIPTIONS};
use crate::error::StoreError;
use crate::record;
use crate::{CACHE_BYTES, FORMAT};

/// What a store holds, as [`info`] reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreInfo {
    /// The store's format.
    pub format: u32,
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// Persistent sessions (Session Expiry Interval above 0).
    pub sessions: u64,
    /// Sessions that end with their connection, kept only for their will: the will is
    /// published after a restart if the broker stopped while the client was connected.
    pub will_only_sessions: u64,
    /// Subscriptions of all sessions.
    pub subscriptions: u64,
    /// Messages kept for sessions in total: queued, and in flight.
    pub messages: u64,
    /// Of `messages`, QoS 2 messages sent and not yet acknowledged, or whose PUBREL is due.
    pub in_flight: u64,
    /// QoS 2 packet identifiers received from clients and not yet released.
    pub incoming_qos2: u64,
    /// Retained messages.
    pub retained: u64,
    /// Records that did not decode. Each is skipped when the store is restored, and logged.
    pub undecodable: u64,
}

impl fmt::Display for StoreInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, String); 10] = [
            ("format", self.format.to_string()),
            ("file size", format!("{} bytes", self.file_bytes)),
            ("sessions", self.sessions.to_string()),
            (
                "sessions kept for a will",
                self.will_only_sessions.to_string(),
            ),
            ("subscriptions", self.subscriptions.to_string()),
            ("messages", self.messages.to_string()),
            ("  in flight", self.in_flight.to_string()),
            ("incoming QoS 2 ids", self.incoming_qos2.to_string()),
            ("retained messages", self.retained.to_string()),
            ("undecodable records", self.undecodable.to_string()),
        ];
        for (name, value) in rows {
            writeln!(f, "{name:<26}{value:>14}")?;
        }
        Ok(())
    }
}

/// Reports what the store at `path` holds, checking that every record decodes.
///
/// The file is opened read-only and left as it is, so this works on a copy, or on the store
/// of a broker that is stopped. A store left by a crash needs a repair before it can be read;
/// then `info` opens it for writing and lets redb repair it (as the broker's next start would),
/// which writes to the file. A store that a running broker has open is refused
/// ([`StoreError::InUse`]).
///
/// # Errors
///
/// As [`DiskStore::open`](crate::DiskStore::open): [`StoreError::Io`] for a file that cannot
/// be read (or is not there), [`StoreError::Corrupt`], [`StoreError::UnsupportedVersion`],
/// [`StoreError::InUse`].
pub fn info(path: &Path) -> Result<StoreInfo, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("not a file")));
    }
    let mut info = crate::error::guarded(path, || {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(CACHE_BYTES);
        match builder.open_read_only(path) {
            Ok(database) => report(&database, path),
            Err(redb::DatabaseError::RepairAborted) => {
                builder.set_check_integrity_on_open(true);
                let database = builder
                    .open(path)
                    .map_err(|e| StoreError::from_redb(path, e))?;
                report(&database, path)
            }
            Err(err) => Err(StoreError::from_redb(path, err)),
        }
    })?;
    info.file_bytes = std::fs::metadata(path).map_err(io)?.len();
    Ok(info)
}

fn report(database: &impl ReadableDatabase, path: &Path) -> Result<StoreInfo, StoreError> {
    let txn = database
        .begin_read()
        .map_err(|e| StoreError::from_redb(path, e))?;
    let format = read_format(&txn, path)?;
    let (mut info, _) = scan(&txn, true).map_err(|e| StoreError::from_redb(path, e))?;
    info.format = format;
    Ok(info)
}

/// The store's format, if this version reads it.
fn read_format(txn: &ReadTransaction, path: &Path) -> Result<u32, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(corrupt("a redb file, but without a midge store's tables"))
        }
        Err(err) => return Err(StoreError::from_redb(path, err)),
    };
    let found = meta
        .get(FORMAT_KEY)
        .map_err(|e| StoreError::from_redb(path, e))?
        .map(|v| v.value())
        .ok_or_else(|| corrupt("the store's format is not recorded"))?;
    if found != FORMAT {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: FORMAT,
        });
    }
    Ok(found)
}

/// Refuses, before the file is opened for writing, a store of another format: opening it for
/// writing would let redb rewrite its own bookkeeping in a file this build must leave as it
/// is. A file that is missing, empty, not a redb file, or left by a crash (which redb must
/// repair with a writable open) is left for that open to judge.
pub(crate) fn check_format_read_only(path: &Path) -> Result<(), StoreError> {
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(());
    }
    let Ok(database) = redb::Builder::new().open_read_only(path) else {
        return Ok(());
    };
    let Ok(txn) = database.begin_read() else {
        return Ok(());
    };
    match read_format(&txn, path) {
        Err(err @ StoreError::UnsupportedVersion { .. }) => Err(err),
        _ => Ok(()),
    }
}

/// Checks the format of a store just opened for writing; a new, empty file becomes a store.
pub(crate) fn prepare(database: &Database, path: &Path) -> Result<(), StoreError> {
    let redb = |e: redb::Error| StoreError::from_redb(path, e);
    let txn = database.begin_read().map_err(|e| redb(e.into()))?;
    match txn.open_table(META) {
        Ok(_) => return read_format(&txn, path).map(drop),
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(err) => return Err(redb(err.into())),
    }
    if txn
        .list_tables()
        .map_err(|e| redb(e.into()))?
        .next()
        .is_some()
    {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "a redb file, but without a midge store's tables".into(),
        });
    }
    drop(txn);
    let create = || -> Result<(), redb::Error> {
        let txn = database.begin_write()?;
        txn.open_table(META)?.insert(FORMAT_KEY, FORMAT)?;
        txn.open_table(SESSIONS)?;
        txn.open_table(SUBSCRIPTIONS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(INCOMING)?;
        txn.open_table(RETAINED)?;
        txn.commit()?;
        Ok(())
    };
    create().map_err(redb)
}

/// Counts what the store holds, and finds its highest delivery tag. With `full`, every record
/// is decoded (undecodable ones are counted and logged); without, sessions are decoded and
/// the rest is counted by its rows.
pub(crate) fn scan(txn: &ReadTransaction, full: bool) -> Result<(StoreInfo, u64), redb::Error> {
    let mut info = StoreInfo::default();
    for entry in txn.open_table(SESSIONS)?.iter()? {
        let (key, row) = entry?;
        let client = key.value();
        match record::decode_session(Bytes::copy_from_slice(row.value())) {
            Some(session) if session.client_id == client => {
                if session.expiry_interval > 0 {
                    info.sessions += 1;
                } else {
                    info.will_only_sessions += 1;
                }
            }
            _ => {
                tracing::warn!(client, "the session record does not decode");
                info.undecodable += 1;
            }
        }
    }
    let subscriptions = txn.open_table(SUBSCRIPTIONS)?;
    if full {
        for entry in subscriptions.iter()? {
            let (key, row) = entry?;
            if record::decode_subscription(Bytes::copy_from_slice(row.value())).is_some() {
                info.subscriptions += 1;
            } else {
                let (client, filter) = key.value();
                tracing::warn!(client, filter, "a subscription does not decode");
                info.undecodable += 1;
            }
        }
    } else {
        info.subscriptions = subscriptions.len()?;
    }
    let mut max_tag = 0;
    for entry in txn.open_table(MESSAGES)?.iter()? {
        let (key, row) = entry?;
        let (client, tag) = key.value();
        max_tag = max_tag.max(tag);
        let kind = if full {
            match record::decode_message(Bytes::copy_from_slice(row.value())) {
                Some(record::StoredMessage::Queued(_)) => Some(record::QUEUED),
                Some(_) => Some(record::SENT),
                None => None,
            }
        } else {
            record::message_kind(row.value())
        };
        match kind {
            Some(record::QUEUED) => info.messages += 1,
            Some(record::SENT | record::RELEASED) => {
                info.messages += 1;
                info.in_flight += 1;
            }
            _ => {
                tracing::warn!(client, tag, "a queued message does not decode");
                info.undecodable += 1;
            }
        }
    }
    info.incoming_qos2 = txn.open_table(INCOMING)?.len()?;
    let retained = txn.open_table(RETAINED)?;
    if full {
        for entry in retained.iter()? {
            let (key, row) = entry?;
            if record::decode_retained(Bytes::copy_from_slice(row.value())).is_some() {
                info.retained += 1;
            } else {
                tracing::warn!(topic = key.value(), "a retained message does not decode");
                info.undecodable += 1;
            }
        }
    } else {
        info.retained = retained.len()?;
    }
    Ok((info, max_tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_line_per_count() {
        let text = StoreInfo {
            format: 1,
            messages: 3,
            ..StoreInfo::default()
        }
        .to_string();
        assert_eq!(text.lines().count(), 10);
        assert!(text.contains("messages"));
    }
}
