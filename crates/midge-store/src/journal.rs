//! Group commit: writers append encoded changes to a pending batch; one thread applies each
//! batch in one redb write transaction and wakes everyone the commit made durable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use midge_broker::JournalError;
use redb::{Database, Durability};

use crate::db::{self, Op};

/// When the commit thread commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// As soon as there is something to commit; tickets wait for it.
    Always,
    /// Every interval; tickets are durable at once, as far as the broker is told.
    Interval(Duration),
}

/// What writers and the commit thread share under one lock.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Changes not handed to a commit yet.
    pub(crate) ops: Vec<Op>,
    /// Tickets issued: the number of changes written.
    pub(crate) seq: u64,
    /// `seq` when the commit thread last took the batch.
    taken: u64,
    /// Someone waits in [`Shared::flush`]: commit now, whatever the mode.
    flush: bool,
    /// The store is being dropped: commit what is left and stop.
    shutdown: bool,
    /// Bytes of the rows in `ops`, roughly: in `Interval` mode, acknowledgements wait once
    /// this passes [`PENDING_LIMIT`], so that a disk slower than the publishers makes them
    /// wait instead of growing the batch without bound.
    bytes: usize,
}

/// Most bytes of changes waiting for an `Interval` commit before acknowledgements wait for
/// it, as in `Always` mode.
pub(crate) const PENDING_LIMIT: usize = 64 << 20;

/// State shared by the store and its commit thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    pub(crate) mode: Mode,
    pub(crate) pending: Mutex<Pending>,
    /// Wakes the commit thread.
    work: Condvar,
    /// Wakes threads waiting in [`Shared::flush`].
    done: Condvar,
    /// Held shared by [`Journal::atomically`](midge_broker::Journal::atomically), exclusively
    /// by the commit thread while it takes the batch: no cut falls inside an atomic group.
    pub(crate) cut: RwLock<()>,
    /// The highest ticket made durable.
    committed: AtomicU64,
    /// Set once a commit failed; `committed` stays at the last good one.
    failed: AtomicBool,
    failure: Mutex<Option<Arc<str>>>,
    /// Tasks waiting for a ticket, with the ticket.
    waiters: Mutex<Vec<(u64, Waker)>>,
    /// Write transactions committed.
    pub(crate) commits: AtomicU64,
    /// The file's size after the last commit.
    pub(crate) disk_bytes: AtomicU64,
    /// `max_disk_bytes`, if any.
    max_disk_bytes: Option<u64>,
    /// What the data takes in the file, as [`Shared::measure_use`] last saw it.
    pub(crate) used_bytes: AtomicU64,
    /// When the space in use was last measured.
    measured: Mutex<Option<Instant>>,
    /// A ticket above which `Interval` acknowledgements wait for the commit: the batch
    /// passed [`PENDING_LIMIT`] when this ticket was written. 0: none.
    crowded: AtomicU64,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        db: Database,
        path: PathBuf,
        mode: Mode,
        disk_bytes: u64,
        max_disk_bytes: Option<u64>,
    ) -> Self {
        Self {
            db,
            path,
            mode,
            pending: Mutex::default(),
            work: Condvar::new(),
            done: Condvar::new(),
            cut: RwLock::new(()),
            committed: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            waiters: Mutex::new(Vec::new()),
            commits: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(disk_bytes),
            max_disk_bytes,
            used_bytes: AtomicU64::new(disk_bytes),
            measured: Mutex::new(None),
            crowded: AtomicU64::new(0),
        }
    }

    /// Appends `op` (or, for `None`, only takes a ticket: a change that had nothing to write).
    pub(crate) fn push(&self, op: Option<Op>) {
        let mut pending = lock(&self.pending);
        pending.seq += 1;
        if self.failed.load(SeqCst) {
            // The journal takes no more: the ticket fails with the others after the last
            // good commit.
            return;
        }
        if let Some(op) = op {
            pending.bytes += op.bytes();
            pending.ops.push(op);
            if pending.bytes > PENDING_LIMIT && matches!(self.mode, Mode::Interval(_)) {
                self.crowded.fetch_max(pending.seq, SeqCst);
                // Commit now rather than at the interval.
                self.work.notify_one();
            }
        }
        // The commit thread of `Always` sleeps until there is something; one of `Interval`
        // wakes on its own.
        if self.mode == Mode::Always && pending.seq == pending.taken + 1 {
            self.work.notify_one();
        }
    }

    pub(crate) fn submitted(&self) -> u64 {
        lock(&self.pending).seq
    }

    fn error(&self) -> JournalError {
        let message = lock(&self.failure)
            .clone()
            .unwrap_or_else(|| Arc::from("the store failed"));
        JournalError::Failed(message)
    }

    /// Whether `ticket` is durable; `Err` if it never will be.
    fn check(&self, ticket: u64) -> Option<Result<(), JournalError>> {
        if ticket <= self.committed.load(SeqCst) {
            Some(Ok(()))
        } else if self.failed.load(SeqCst) {
            Some(Err(self.error()))
        } else if matches!(self.mode, Mode::Interval(_)) && ticket > self.crowded.load(SeqCst) {
            Some(Ok(()))
        } else {
            None
        }
    }

    pub(crate) fn is_durable(&self, ticket: u64) -> bool {
        matches!(self.check(ticket), Some(Ok(())))
    }

    pub(crate) fn poll_durable(
        &self,
        ticket: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), JournalError>> {
        if let Some(result) = self.check(ticket) {
            return Poll::Ready(result);
        }
        let mut waiters = lock(&self.waiters);
        // Checked again under the lock the commit thread takes after publishing: either this
        // sees the commit, or the commit sees this waker.
        if let Some(result) = self.check(ticket) {
            return Poll::Ready(result);
        }
        match waiters
            .iter_mut()
            .find(|(t, w)| *t == ticket && w.will_wake(cx.waker()))
        {
            Some(_) => {}
            None => waiters.push((ticket, cx.waker().clone())),
        }
        Poll::Pending
    }

    /// Commits what was written before the call, now (in either mode), and waits for it.
    pub(crate) fn flush(&self) -> Result<(), JournalError> {
        let mut pending = lock(&self.pending);
        let target = pending.seq;
        loop {
            if let Some(result) = self.check_committed(target) {
                return result;
            }
            pending.flush = true;
            self.work.notify_one();
            pending = self
                .done
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// As [`Self::check`], but on what is on disk, whatever the mode.
    fn check_committed(&self, ticket: u64) -> Option<Result<(), JournalError>> {
        if ticket <= self.committed.load(SeqCst) {
            Some(Ok(()))
        } else if self.failed.load(SeqCst) {
            Some(Err(self.error()))
        } else {
            None
        }
    }

    pub(crate) fn shutdown(&self) {
        lock(&self.pending).shutdown = true;
        self.work.notify_one();
    }

    /// The commit thread's loop: until shutdown, waits for work (or for the interval), takes
    /// the batch and commits it.
    pub(crate) fn run(&self) {
        let mut batch = Vec::new();
        let mut deadline = match self.mode {
            Mode::Interval(every) => Instant::now() + every,
            Mode::Always => Instant::now(),
        };
        loop {
            let mut pending = lock(&self.pending);
            loop {
                if pending.shutdown || pending.flush {
                    break;
                }
                match self.mode {
                    Mode::Always => {
                        if pending.seq > pending.taken {
                            break;
                        }
                        pending = self
                            .work
                            .wait(pending)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    Mode::Interval(_) => {
                        let now = Instant::now();
                        if now >= deadline || pending.bytes > PENDING_LIMIT {
                            break;
                        }
                        pending = self
                            .work
                            .wait_timeout(pending, deadline - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            }
            let shutdown = pending.shutdown;
            drop(pending);
            let last = {
                // The cut comes before the batch, as in `atomically`: no commit between the
                // changes of one atomic group.
                let _cut = self.cut.write().unwrap_or_else(PoisonError::into_inner);
                let mut pending = lock(&self.pending);
                pending.flush = false;
                pending.taken = pending.seq;
                pending.bytes = 0;
                std::mem::swap(&mut pending.ops, &mut batch);
                pending.seq
            };
            if let Mode::Interval(every) = self.mode {
                deadline = Instant::now() + every;
            }
            self.commit(&batch, last);
            batch.clear();
            if shutdown {
                return;
            }
        }
    }

    /// Makes `ops` durable in one write transaction, then every ticket up to `last`.
    fn commit(&self, ops: &[Op], last: u64) {
        if self.failed.load(SeqCst) {
            return;
        }
        let cancelled = db::cancelled(ops);
        if db::writes_anything(ops, &cancelled) {
            // redb may panic on a file damaged behind its back: that fails the store like an
            // error does, rather than ending this thread and leaving every waiter waiting.
            let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.transaction(ops, &cancelled)
            }));
            match committed {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return self.fail(&err),
                Err(_) => return self.fail(&"the storage engine panicked (a damaged file?)"),
            }
            self.commits.fetch_add(1, SeqCst);
            match std::fs::metadata(&self.path) {
                Ok(meta) => self.disk_bytes.store(meta.len(), SeqCst),
                Err(err) => tracing::warn!(
                    path = %self.path.display(),
                    %err,
                    "cannot read the store's size"
                ),
            }
            self.measure_use();
        }
        self.publish(last);
    }

    /// Where the file has reached `max_disk_bytes`, measures the space its data really
    /// takes: the file does not shrink while a few live pages sit near its end, and its
    /// length alone would keep the store full for good. Measured at most once a second
    /// (it walks every table).
    pub(crate) fn measure_use(&self) {
        let Some(max) = self.max_disk_bytes else {
            self.used_bytes.store(self.disk_bytes.load(SeqCst), SeqCst);
            return;
        };
        let file = self.disk_bytes.load(SeqCst);
        if file < max {
            self.used_bytes.store(file, SeqCst);
            return;
        }
        let mut last = lock(&self.measured);
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        let used = self.db.begin_write().map(|txn| {
            let stats = txn.stats();
            let _ = txn.abort();
            stats
        });
        match used {
            Ok(Ok(stats)) => {
                let bytes = stats.allocated_pages() * stats.page_size() as u64;
                self.used_bytes.store(bytes, SeqCst);
            }
            _ => self.used_bytes.store(file, SeqCst),
        }
    }

    fn transaction(&self, ops: &[Op], cancelled: &db::Messages<'_>) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        // Each commit is durable, in either mode: `Interval` only commits less often.
        txn.set_durability(Durability::Immediate)?;
        if let Err(err) = db::apply(&txn, ops, cancelled) {
            let _ = txn.abort();
            return Err(err);
        }
        txn.commit()?;
        Ok(())
    }

    /// Every ticket up to `last` is durable: wake whoever waits for one.
    fn publish(&self, last: u64) {
        self.committed.fetch_max(last, SeqCst);
        let ready: Vec<Waker> = {
            let mut waiters = lock(&self.waiters);
            let mut ready = Vec::new();
            waiters.retain(|(ticket, waker)| {
                let waiting = *ticket > last;
                if !waiting {
                    ready.push(waker.clone());
                }
                waiting
            });
            ready
        };
        for waker in ready {
            waker.wake();
        }
        // Under the lock `flush` waits with, so that its wake-up is not lost.
        let _pending = lock(&self.pending);
        self.done.notify_all();
    }

    /// A commit failed: the journal stops, and every ticket after the last good commit fails.
    fn fail(&self, err: &dyn std::fmt::Display) {
        let message: Arc<str> = Arc::from(format!("{}: {err}", self.path.display()));
        tracing::error!(
            path = %self.path.display(),
            %err,
            "the store failed to commit: changes since the last commit are lost, and the store takes no more"
        );
        *lock(&self.failure) = Some(message);
        self.failed.store(true, SeqCst);
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for (_, waker) in waiters {
            waker.wake();
        }
        let _pending = lock(&self.pending);
        self.done.notify_all();
    }
}
