#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod db;
mod error;
mod info;
mod journal;
mod record;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use midge_broker::{
    Change, Journal, JournalError, MemoryStore, PersistenceConfig, RestoredMessage,
    RestoredSession, Retained, Store, SyncMode,
};
use midge_codec::{ByteStr, PacketId};
use midge_proto::session::SessionChange;
use midge_topic::{TopicFilter, TopicName};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use crate::db::Op;
use crate::journal::{lock, Mode, Shared};
use crate::record::{Clock, StoredMessage};

pub use crate::error::StoreError;
pub use crate::info::{info, StoreInfo};

/// The layout of the tables and records this version writes and reads.
pub const FORMAT: u32 = 1;

/// redb's page cache. Sessions and queued messages are read once, at a restart, and written
/// after that; the cache only needs to hold the pages a commit touches, so it is kept small:
/// a large queue costs disk, not memory.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// How a [`DiskStore`] makes changes durable, and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskOptions {
    /// [`SyncMode::Always`] (the default): a ticket is durable once the commit that holds it is
    /// on disk. [`SyncMode::Interval`]: every ticket is durable at once, as far as the broker
    /// is told, and the store commits every `sync_interval`.
    pub sync: SyncMode,
    /// With [`SyncMode::Interval`]: time between commits (default 1 s).
    pub sync_interval: Duration,
    /// The file size at which [`Journal::has_room`] turns false (unset: no limit).
    pub max_disk_bytes: Option<u64>,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            sync: SyncMode::Always,
            sync_interval: Duration::from_secs(1),
            max_disk_bytes: None,
        }
    }
}

impl DiskOptions {
    /// The options of a broker's `[persistence]` section: `sync`, `sync_interval_ms` (default
    /// 1000) and `max_disk_bytes`.
    pub fn from_config(config: &PersistenceConfig) -> Self {
        Self {
            sync: config.sync,
            sync_interval: Duration::from_millis(config.sync_interval_ms.unwrap_or(1000)),
            max_disk_bytes: config.max_disk_bytes,
        }
    }

    fn mode(&self) -> Mode {
        match self.sync {
            // A zero interval would make the commit thread spin.
            SyncMode::Interval => Mode::Interval(self.sync_interval.max(Duration::from_millis(1))),
            _ => Mode::Always,
        }
    }
}

/// What [`Journal::restore`] found, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreStats {
    /// Sessions restored.
    pub sessions: usize,
    /// Messages restored, queued or in flight.
    pub messages: usize,
    /// Queued messages whose Message Expiry Interval had passed: not restored, and deleted.
    pub expired: usize,
    /// Records that did not decode, skipped (each is logged with its client).
    pub undecodable: usize,
}

/// A crash-safe store on disk: persistent sessions, their subscriptions, queued and in-flight
/// messages, and retained messages, in one redb file. See the crate documentation.
pub struct DiskStore {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    retained: MemoryStore,
    clock: Clock,
    tags: AtomicU64,
    max_disk_bytes: Option<u64>,
    options: DiskOptions,
    opened: StoreInfo,
    restored: Mutex<RestoreStats>,
}

impl fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.shared.path)
            .field("options", &self.options)
            .field("retained", &self.retained_count())
            .field("submitted", &self.shared.submitted())
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

impl DiskStore {
    /// Opens the store at `path`, creating it if there is no file there, and starts its commit
    /// thread. Retained messages are loaded into memory (those whose Message Expiry Interval
    /// has passed are deleted); sessions stay on disk until [`Journal::restore`].
    ///
    /// The whole file is read and checked against its checksums as it opens, so a damaged
    /// file is refused rather than trusted. A file left by a crash (or a power cut) is
    /// repaired by redb as it opens: it comes back as of its last commit.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the file cannot be created, read or written;
    /// [`StoreError::Corrupt`] if it is not a midge store or is damaged;
    /// [`StoreError::UnsupportedVersion`] if a midge of another format wrote it;
    /// [`StoreError::InUse`] if another process has it open.
    pub fn open(path: &Path, options: DiskOptions) -> Result<Self, StoreError> {
        let clock = Clock::now();
        let (database, retained, mut opened, max_tag) =
            error::guarded(path, || Self::load(path, clock))?;
        let disk_bytes = file_size(path)?;
        opened.file_bytes = disk_bytes;
        let shared = Arc::new(Shared::new(
            database,
            path.to_path_buf(),
            options.mode(),
            disk_bytes,
            options.max_disk_bytes,
        ));
        // A file at its limit from an earlier run may hold mostly free pages.
        shared.measure_use();
        let runner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("midge-store".into())
            .spawn(move || runner.run())
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
            retained,
            clock,
            tags: AtomicU64::new(max_tag.saturating_add(1).max(1)),
            max_disk_bytes: options.max_disk_bytes,
            options,
            opened,
            restored: Mutex::new(RestoreStats::default()),
        })
    }

    /// Opens the file, checks its format and reads what is loaded at open: retained messages
    /// (deleting those that expired), the counts, and the highest delivery tag.
    fn load(path: &Path, clock: Clock) -> Result<Loaded, StoreError> {
        let redb_error = |e: redb::Error| StoreError::from_redb(path, e);
        info::check_format_read_only(path)?;
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true);
        let database = builder
            .create(path)
            .map_err(|e| StoreError::from_redb(path, e))?;
        info::prepare(&database, path)?;
        let now = Instant::now();
        let (retained, expired, bad_retained) =
            load_retained(&database, clock, now).map_err(redb_error)?;
        if !expired.is_empty() {
            delete_retained(&database, &expired).map_err(redb_error)?;
        }
        let (mut opened, max_tag) = {
            let txn = database.begin_read().map_err(|e| redb_error(e.into()))?;
            info::scan(&txn, false).map_err(redb_error)?
        };
        opened.format = FORMAT;
        opened.undecodable += bad_retained;
        Ok((database, retained, opened, max_tag))
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &DiskOptions {
        &self.options
    }

    /// What the file held when it was opened. Messages are counted by kind there, not decoded:
    /// `undecodable` counts the sessions and retained messages that did not decode (see
    /// [`info`] for a full check).
    pub fn opened(&self) -> &StoreInfo {
        &self.opened
    }

    /// What the last [`Journal::restore`] found.
    pub fn restore_stats(&self) -> RestoreStats {
        *lock(&self.restored)
    }

    /// The file's size after the last commit, in bytes.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.disk_bytes.load(Relaxed)
    }

    /// Write transactions committed since the store was opened. Group commit makes this far
    /// smaller than the number of changes written when many are written at once.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Relaxed)
    }

    /// Commits everything written so far now, in either sync mode, and waits until it is on
    /// disk. Must not be called inside [`Journal::atomically`].
    ///
    /// # Errors
    ///
    /// The journal's error if a commit failed.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.shared.flush()
    }

    /// A full report of what is on disk (as of the last commit): the same as [`info`] on a
    /// store that is not open.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] or [`StoreError::Io`] if the file cannot be read.
    pub fn info(&self) -> Result<StoreInfo, StoreError> {
        let path = self.path();
        let txn = self
            .shared
            .db
            .begin_read()
            .map_err(|e| StoreError::from_redb(path, e))?;
        let (mut info, _) = info::scan(&txn, true).map_err(|e| StoreError::from_redb(path, e))?;
        info.format = FORMAT;
        info.file_bytes = file_size(path)?;
        Ok(info)
    }

    /// Encodes a change into what the commit thread writes; `None` if it writes nothing.
    fn encode(&self, change: Change<'_>) -> Option<Op> {
        let unencodable = |what: &str, client: &ByteStr, err: record::Unencodable| {
            tracing::error!(client = ?client.as_str(), %err, "{what} cannot be stored: it is left out");
        };
        Some(match change {
            Change::Session(record) => match record::encode_session(record, self.clock) {
                Ok(row) => Op::Session {
                    client: record.client_id.clone(),
                    row,
                },
                Err(err) => {
                    unencodable("the session record", &record.client_id, err);
                    return None;
                }
            },
            Change::Subscribe {
                client_id,
                filter,
                subscription,
            } => Op::Subscribe {
                client: client_id.clone(),
                filter: filter.clone(),
                row: record::encode_subscription(&subscription),
            },
            Change::Unsubscribe { client_id, filter } => Op::Unsubscribe {
                client: client_id.clone(),
                filter: filter.clone(),
            },
            Change::Enqueue {
                client_id,
                delivery,
            } => match record::encode_queued(delivery, self.clock) {
                Ok(row) => Op::Enqueue {
                    client: client_id.clone(),
                    tag: delivery.tag,
                    row,
                },
                Err(err) => {
                    unencodable("a queued message", client_id, err);
                    return None;
                }
            },
            Change::Delivery { client_id, change } => {
                let client = client_id.clone();
                match change {
                    SessionChange::Sent { tag, packet_id } => Op::Sent {
                        client,
                        tag,
                        packet_id,
                    },
                    SessionChange::Released { tag, packet_id } => Op::Released {
                        client,
                        tag,
                        packet_id,
                    },
                    SessionChange::Finished { tag } => Op::Finished { client, tag },
                    SessionChange::IncomingQos2 { packet_id } => {
                        Op::IncomingQos2 { client, packet_id }
                    }
                    SessionChange::IncomingReleased { packet_id } => {
                        Op::IncomingReleased { client, packet_id }
                    }
                    _ => return None,
                }
            }
            Change::WillDone { client_id } => Op::WillDone {
                client: client_id.clone(),
            },
            Change::RemoveSession { client_id } => Op::RemoveSession {
                client: client_id.clone(),
            },
            Change::Retained { topic, retained } => {
                let row = match retained.map(|r| record::encode_retained(r, self.clock)) {
                    None => None,
                    Some(Ok(row)) => Some(row),
                    Some(Err(err)) => {
                        unencodable("a retained message", topic, err);
                        return None;
                    }
                };
                Op::Retained {
                    topic: topic.clone(),
                    row,
                }
            }
            _ => return None,
        })
    }

    /// Reads every session with what belongs to it; also the queued messages that expired.
    fn read_sessions(&self, txn: &ReadTransaction, now: Instant) -> Result<Restored, redb::Error> {
        let wall_now = self.clock.to_wall(now);
        let sessions = txn.open_table(db::SESSIONS)?;
        let subscriptions = txn.open_table(db::SUBSCRIPTIONS)?;
        let messages = txn.open_table(db::MESSAGES)?;
        let incoming = txn.open_table(db::INCOMING)?;
        let mut restored = Vec::new();
        let mut stats = RestoreStats::default();
        let mut expired = Vec::new();
        for entry in sessions.iter()? {
            let (key, row) = entry?;
            let client = key.value();
            let stored = record::decode_session(Bytes::copy_from_slice(row.value()))
                .filter(|s| s.client_id == client);
            let Some(stored) = stored else {
                tracing::warn!(client, "the session record does not decode: skipped");
                stats.undecodable += 1;
                continue;
            };
            let mut session = RestoredSession::new(stored.into_record(self.clock, now));
            let next = db::successor(client);
            for entry in subscriptions.range((client, "")..(next.as_str(), ""))? {
                let (key, row) = entry?;
                let filter = key.value().1;
                match record::decode_subscription(Bytes::copy_from_slice(row.value())) {
                    Some(subscription) => session
                        .subscriptions
                        .push((ByteStr::from(filter.to_owned()), subscription)),
                    None => {
                        tracing::warn!(client, filter, "a subscription does not decode: skipped");
                        stats.undecodable += 1;
                    }
                }
            }
            for entry in messages.range((client, 0)..=(client, u64::MAX))? {
                let (key, row) = entry?;
                let tag = key.value().1;
                let message = match record::decode_message(Bytes::copy_from_slice(row.value())) {
                    Some(StoredMessage::Queued(delivery)) if delivery.is_expired(wall_now) => {
                        expired.push((session.record.client_id.clone(), tag));
                        stats.expired += 1;
                        continue;
                    }
                    // Counted, not kept: a queue stays on disk until its client returns
                    // (`Journal::queued`).
                    Some(StoredMessage::Queued(delivery)) => {
                        let delivery = delivery.into_delivery(tag, self.clock, now);
                        session.queued += 1;
                        session.queued_bytes += delivery.size();
                        continue;
                    }
                    // Delivery began: the message is sent again whatever its expiry, as
                    // [MQTT-4.4.0-1] asks.
                    Some(StoredMessage::Sent(id, delivery)) => {
                        RestoredMessage::Sent(id, delivery.into_delivery(tag, self.clock, now))
                    }
                    Some(StoredMessage::Released(id)) => RestoredMessage::Released(id, tag),
                    None => {
                        tracing::warn!(client, tag, "a queued message does not decode: skipped");
                        stats.undecodable += 1;
                        continue;
                    }
                };
                session.messages.push(message);
            }
            for entry in incoming.range((client, 0)..=(client, u16::MAX))? {
                let (key, _) = entry?;
                match PacketId::new(key.value().1) {
                    Some(id) => session.incoming_qos2.push(id),
                    None => stats.undecodable += 1,
                }
            }
            stats.sessions += 1;
            stats.messages += session.messages.len() + session.queued;
            restored.push(session);
        }
        restored.sort_by(|a, b| a.record.client_id.cmp(&b.record.client_id));
        Ok((restored, stats, expired))
    }
}

/// Restored sessions, what was found, and the queued messages that expired (client, tag).
type Restored = (Vec<RestoredSession>, RestoreStats, Vec<(ByteStr, u64)>);

fn file_size(path: &Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// What [`DiskStore::load`] reads: the database, the retained messages, the counts and the
/// highest delivery tag.
type Loaded = (redb::Database, MemoryStore, StoreInfo, u64);

/// The retained messages, the topics of those that expired, and how many did not decode.
fn load_retained(
    database: &redb::Database,
    clock: Clock,
    now: Instant,
) -> Result<(MemoryStore, Vec<String>, u64), redb::Error> {
    let wall_now = clock.to_wall(now);
    let txn = database.begin_read()?;
    let table = txn.open_table(db::RETAINED)?;
    let index = MemoryStore::new();
    let mut expired = Vec::new();
    let mut undecodable = 0;
    for entry in table.iter()? {
        let (key, row) = entry?;
        let topic = key.value();
        let Some((message, received)) =
            record::decode_retained(Bytes::copy_from_slice(row.value()))
        else {
            tracing::warn!(topic, "a retained message does not decode: skipped");
            undecodable += 1;
            continue;
        };
        if record::retained_expired(&message, received, wall_now) {
            expired.push(topic.to_owned());
            continue;
        }
        match TopicName::new(topic) {
            Ok(name) => {
                let retained = Retained::new(Arc::new(message), clock.to_instant(received, now));
                index.set_retained(&name, Some(retained));
            }
            Err(err) => {
                tracing::warn!(topic, %err, "a retained message's topic is not valid: skipped");
                undecodable += 1;
            }
        }
    }
    Ok((index, expired, undecodable))
}

fn delete_retained(database: &redb::Database, topics: &[String]) -> Result<(), redb::Error> {
    let txn = database.begin_write()?;
    {
        let mut table = txn.open_table(db::RETAINED)?;
        for topic in topics {
            table.remove(topic.as_str())?;
        }
    }
    txn.commit()?;
    Ok(())
}

impl Drop for DiskStore {
    /// Commits what is pending and stops the commit thread.
    fn drop(&mut self) {
        self.shared.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// Retained messages are served from memory, as `MemoryStore` serves them; the disk side is
// written through the journal (`Change::Retained`).
impl Store for DiskStore {
    fn set_retained(&self, topic: &TopicName<'_>, message: Option<Retained>) -> Option<Retained> {
        self.retained.set_retained(topic, message)
    }

    fn retained_matching(&self, filter: &TopicFilter<'_>, visit: &mut dyn FnMut(&Retained)) {
        self.retained.retained_matching(filter, visit);
    }

    fn retained_count(&self) -> usize {
        self.retained.retained_count()
    }

    fn remove_expired_retained(&self, topic: &TopicName<'_>, expired: &Retained) -> bool {
        self.retained.remove_expired_retained(topic, expired)
    }

    fn journal(&self) -> Option<&dyn Journal> {
        Some(self)
    }
}

/// The journal on disk.
///
/// [`Journal::write`] encodes the change on the caller's thread and appends it to a pending
/// batch; the store's commit thread applies each batch in one redb write transaction and
/// commits it durably (group commit). A message queued and finished within one batch (a QoS 1
/// message acknowledged by an online subscriber before the commit) is not written at all.
///
/// With [`SyncMode::Always`], a ticket is durable once the commit that holds it returned.
/// With [`SyncMode::Interval`], every ticket is durable at once and the store commits every
/// `sync_interval`: a crash (or a power cut) loses what was written since the last interval
/// commit, acknowledged messages included; a process that ends with the store dropped loses
/// nothing. Either way, what a commit holds is all there after a crash, or none of it.
///
/// [`Journal::atomically`] holds a shared lock that the commit thread takes exclusively
/// while it takes the batch: `f` must not call `atomically` again, nor [`DiskStore::flush`].
///
/// If a commit fails, the journal fails for good: every ticket after the last good commit
/// fails, it is logged once, and further changes are dropped.
impl Journal for DiskStore {
    fn next_tag(&self) -> u64 {
        self.tags.fetch_add(1, SeqCst)
    }

    fn write(&self, change: Change<'_>) {
        let op = self.encode(change);
        self.shared.push(op);
    }

    fn atomically(&self, f: &mut dyn FnMut()) {
        let _cut = self
            .shared
            .cut
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f();
    }

    fn submitted(&self) -> u64 {
        self.shared.submitted()
    }

    fn poll_durable(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<Result<(), JournalError>> {
        self.shared.poll_durable(ticket, cx)
    }

    fn is_durable(&self, ticket: u64) -> bool {
        self.shared.is_durable(ticket)
    }

    /// Commits what was written before, then reads the client's queued messages. Those whose
    /// Message Expiry Interval has passed are left out, and deleted by the next commit.
    fn queued(&self, client_id: &ByteStr, now: Instant) -> Vec<midge_proto::session::Delivery> {
        if let Err(err) = self.flush() {
            tracing::error!(%err, client_id = ?client_id.as_str(), "cannot read a queue: the store failed");
            return Vec::new();
        }
        let wall_now = self.clock.to_wall(now);
        let client = client_id.as_str();
        let mut queued = Vec::new();
        let mut expired = Vec::new();
        let read = (|| -> Result<(), redb::Error> {
            let txn = self.shared.db.begin_read()?;
            let messages = txn.open_table(db::MESSAGES)?;
            for entry in messages.range((client, 0)..=(client, u64::MAX))? {
                let (key, row) = entry?;
                let tag = key.value().1;
                match record::decode_message(Bytes::copy_from_slice(row.value())) {
                    Some(StoredMessage::Queued(delivery)) if delivery.is_expired(wall_now) => {
                        expired.push(tag);
                    }
                    Some(StoredMessage::Queued(delivery)) => {
                        queued.push(delivery.into_delivery(tag, self.clock, now));
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!(client, tag, "a queued message does not decode: skipped");
                    }
                }
            }
            Ok(())
        })();
        if let Err(err) = read {
            tracing::error!(path = %self.path().display(), %err, client_id = ?client_id.as_str(), "cannot read a queue from the store");
        }
        for tag in expired {
            self.shared.push(Some(Op::Finished {
                client: client_id.clone(),
                tag,
            }));
        }
        queued
    }

    /// Measured by what the data takes in the file, not the file's length: a file does not
    /// shrink while a few live pages sit near its end.
    fn has_room(&self) -> bool {
        self.max_disk_bytes
            .is_none_or(|max| self.shared.used_bytes.load(SeqCst) < max)
    }

    /// Commits what was written before, then reads every session. Queued messages whose
    /// Message Expiry Interval has passed are not restored, and are deleted by the next
    /// commit. A record that does not decode is skipped and logged. If the file cannot be
    /// read, the error is logged and nothing is restored.
    fn restore(&self, now: Instant) -> Vec<RestoredSession> {
        if let Err(err) = self.flush() {
            tracing::error!(%err, "cannot restore sessions: the store failed");
            return Vec::new();
        }
        let read = self
            .shared
            .db
            .begin_read()
            .map_err(redb::Error::from)
            .and_then(|txn| self.read_sessions(&txn, now));
        match read {
            Ok((sessions, stats, expired)) => {
                for (client, tag) in expired {
                    self.shared.push(Some(Op::Finished { client, tag }));
                }
                tracing::info!(
                    path = %self.path().display(),
                    sessions = stats.sessions,
                    messages = stats.messages,
                    expired = stats.expired,
                    undecodable = stats.undecodable,
                    "restored sessions from the store"
                );
                *lock(&self.restored) = stats;
                sessions
            }
            Err(err) => {
                tracing::error!(
                    path = %self.path().display(),
                    %err,
                    "cannot read sessions from the store: none restored"
                );
                Vec::new()
            }
        }
    }
}
