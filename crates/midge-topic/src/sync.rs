//! A subscription index that many threads read while one updates it.

use core::fmt;
use core::hash::Hash;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use crate::{Match, SubscriptionIndex, TopicFilter, TopicName};

/// A [`SubscriptionIndex`] behind a [`std::sync::RwLock`].
///
/// Matches take the read lock and run in parallel; an insert or remove takes the write lock for
/// one walk down the trie (a few hundred nanoseconds), so readers wait at most that long.
/// See the crate docs for why this beats an immutable snapshot here.
pub struct ConcurrentSubscriptionIndex<K, V> {
    index: RwLock<SubscriptionIndex<K, V>>,
}

/// Shows the inner index if its read lock is free at once; it never waits for the lock.
impl<K, V> fmt::Debug for ConcurrentSubscriptionIndex<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ConcurrentSubscriptionIndex");
        match self.index.try_read() {
            Ok(index) => d.field("index", &*index),
            Err(TryLockError::Poisoned(poisoned)) => d.field("index", &*poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => d.field("index", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

impl<K: Eq + Hash, V> Default for ConcurrentSubscriptionIndex<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash, V> ConcurrentSubscriptionIndex<K, V> {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self {
            index: RwLock::new(SubscriptionIndex::new()),
        }
    }

    /// See [`SubscriptionIndex::insert`].
    ///
    /// # Panics
    /// As [`SubscriptionIndex::insert`].
    pub fn insert(&self, filter: &TopicFilter<'_>, key: K, value: V) -> Option<V> {
        self.write().insert(filter, key, value)
    }

    /// See [`SubscriptionIndex::remove`].
    pub fn remove(&self, filter: &TopicFilter<'_>, key: &K) -> Option<V> {
        self.write().remove(filter, key)
    }

    /// See [`SubscriptionIndex::for_each_match`]. Holds the read lock while `visit` runs, so
    /// `visit` should not block.
    pub fn for_each_match(&self, topic: &TopicName<'_>, visit: impl FnMut(Match<'_, K, V>)) {
        self.read().for_each_match(topic, visit);
    }

    /// Locks for reading, to run several lookups under one lock.
    pub fn read(&self) -> RwLockReadGuard<'_, SubscriptionIndex<K, V>> {
        // Only a panic inside `insert` or `remove` (out of memory) poisons the lock, and
        // neither leaves a half-linked node behind, so the index stays usable.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks for writing, to apply several updates under one lock.
    pub fn write(&self) -> RwLockWriteGuard<'_, SubscriptionIndex<K, V>> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}
