//! The subscription index: topic filter -> subscribers, matched by topic name.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::hash::Hash;
use core::mem;
use core::num::NonZeroU32;

use hashbrown::HashMap;

use crate::arena::{shrink_vec, Arena, Edges, Level, TreeNode, WalkStack, ROOT};
use crate::{TopicFilter, TopicName};

/// Identifies the topic filter (without any `$share/{ShareName}/` prefix) a match came from.
///
/// Stays the same while the filter has subscriptions; may be reused for another filter after
/// its last subscription is removed. [`SubscriptionIndex::filter_text`] spells it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterId(u32);

/// One answer of [`SubscriptionIndex::for_each_match`].
#[derive(Debug)]
pub enum Match<'a, K, V> {
    /// An ordinary subscription: deliver to `key`.
    ///
    /// A client whose filters overlap gets one `Subscription` per matching filter, so the
    /// caller can apply the overlap rules of its protocol version.
    Subscription {
        /// The matching filter.
        filter: FilterId,
        /// The subscriber.
        key: &'a K,
        /// What was stored with the subscription.
        value: &'a V,
    },
    /// A shared subscription group: the caller picks one member to deliver to.
    SharedGroup {
        /// The matching filter (the part after the share name).
        filter: FilterId,
        /// The ShareName.
        share_name: &'a str,
        /// Every member, never empty.
        members: &'a [(K, V)],
    },
}

/// Subscriptions per node stay a plain vector up to this many; past it, a hash map keeps a
/// re-subscribe from scanning thousands of entries.
const FEW_MAX: usize = 16;
/// A map shrinks back into a vector at this size (below `FEW_MAX`, so one client cannot make
/// the node flip at every call).
const MANY_MIN: usize = 8;

enum Entries<K, V> {
    /// Most filters have one subscriber: keep it inline, with no heap block.
    One(K, V),
    Few(Vec<(K, V)>),
    Many(Box<HashMap<K, V>>),
}

impl<K: Eq + Hash, V> Entries<K, V> {
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Self::One(k, old) if *k == key => Some(mem::replace(old, value)),
            Self::One(..) => {
                let mut entries = Vec::with_capacity(2);
                if let Self::One(k, v) = mem::replace(self, Self::Few(Vec::new())) {
                    entries.push((k, v));
                }
                entries.push((key, value));
                *self = Self::Few(entries);
                None
            }
            Self::Few(entries) => {
                if let Some((_, old)) = entries.iter_mut().find(|(k, _)| *k == key) {
                    return Some(mem::replace(old, value));
                }
                if entries.is_empty() {
                    *self = Self::One(key, value);
                } else if entries.len() < FEW_MAX {
                    push_compact(entries, (key, value));
                } else {
                    let mut map: HashMap<K, V> = mem::take(entries).into_iter().collect();
                    map.insert(key, value);
                    *self = Self::Many(Box::new(map));
                }
                None
            }
            Self::Many(map) => map.insert(key, value),
        }
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Self::One(k, _) if k == key => match mem::replace(self, Self::Few(Vec::new())) {
                Self::One(_, value) => Some(value),
                _ => None,
            },
            Self::One(..) => None,
            Self::Few(entries) => {
                let index = entries.iter().position(|(k, _)| k == key)?;
                let (_, value) = entries.swap_remove(index);
                shrink_vec(entries);
                Some(value)
            }
            Self::Many(map) => {
                let value = map.remove(key)?;
                if map.len() <= MANY_MIN {
                    let mut entries = Vec::with_capacity(map.len());
                    entries.extend(map.drain());
                    *self = Self::Few(entries);
                } else if map.len() <= map.capacity() / 4 {
                    map.shrink_to(map.len() * 2);
                }
                Some(value)
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::One(..) => false,
            Self::Few(entries) => entries.is_empty(),
            Self::Many(map) => map.is_empty(),
        }
    }

    fn for_each<'a>(&'a self, mut visit: impl FnMut(&'a K, &'a V)) {
        match self {
            Self::One(k, v) => visit(k, v),
            Self::Few(entries) => entries.iter().for_each(|(k, v)| visit(k, v)),
            Self::Many(map) => map.iter().for_each(|(k, v)| visit(k, v)),
        }
    }
}

/// Pushes without the usual jump to four slots: most nodes hold one subscription.
fn push_compact<T>(vec: &mut Vec<T>, item: T) {
    if vec.len() == vec.capacity() {
        vec.reserve_exact(vec.len().max(1));
    }
    vec.push(item);
}

struct Group<K, V> {
    name: Box<str>,
    members: Vec<(K, V)>,
}

struct Node<K, V> {
    /// This node's level; `+` and `#` for wildcard nodes, empty for the root.
    level: Level,
    entries: Entries<K, V>,
    /// Shared subscription groups. A boxed slice costs 16 bytes when empty, and groups come and
    /// go far more rarely than their members.
    groups: Box<[Group<K, V>]>,
    parent: u32,
    plus: Option<NonZeroU32>,
    hash: Option<NonZeroU32>,
    /// Exact-level children, which live in the edge table.
    exact_children: u32,
}

impl<K, V> Node<K, V> {
    fn new(level: &str, parent: u32) -> Self {
        Self {
            level: Level::new(level),
            entries: Entries::Few(Vec::new()),
            groups: Box::default(),
            parent,
            plus: None,
            hash: None,
            exact_children: 0,
        }
    }
}

impl<K: Eq + Hash, V> Node<K, V> {
    fn is_unused(&self) -> bool {
        self.entries.is_empty()
            && self.groups.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.exact_children == 0
    }
}

impl<K, V> TreeNode for Node<K, V> {
    fn parent(&self) -> u32 {
        self.parent
    }

    fn level(&self) -> &Level {
        &self.level
    }
}

/// A walk frame: a node whose filter prefix matched the topic up to byte `at`. `at` past the
/// end of the topic means every level matched.
#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    node: u32,
    at: usize,
}

/// `at` of a frame whose node matched the whole topic.
const TOPIC_END: usize = usize::MAX;

/// Topic filter -> subscriber entries, keyed by a client type `K` and storing a value `V`
/// (say, the subscription options).
///
/// A trie of filter levels. A match walks only the branches that can match: one hash lookup
/// for the exact level, the `+` child and the `#` child, never a scan of the children. The walk
/// is a loop over an explicit stack, so no input depth can overflow the call stack, and it does
/// not allocate unless a topic has more than 32 levels where both an exact and a `+` branch
/// match.
pub struct SubscriptionIndex<K, V> {
    nodes: Arena<Node<K, V>>,
    edges: Edges,
    len: usize,
}

/// Shows the number of subscriptions, not the trie, the keys or the values.
impl<K, V> fmt::Debug for SubscriptionIndex<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash, V> Default for SubscriptionIndex<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash, V> SubscriptionIndex<K, V> {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self {
            nodes: Arena::new(Node::new("", ROOT)),
            edges: Edges::new(),
            len: 0,
        }
    }

    /// Number of subscriptions (shared group members included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no subscription.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Trie nodes in use, the root included: 1 for an empty index.
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.live()
    }

    /// Subscribes `key` to `filter`, or, when `key` already has this exact filter, replaces its
    /// value and returns the old one: a re-subscribe replaces the subscription [MQTT-3.8.4-3].
    ///
    /// A shared filter adds `key` to the group of its ShareName.
    ///
    /// # Panics
    /// If the trie would need more than `u32::MAX` nodes.
    pub fn insert(&mut self, filter: &TopicFilter<'_>, key: K, value: V) -> Option<V> {
        let id = self.create_path(filter.pattern());
        let node = self.nodes.get_mut(id)?;
        let old = match filter.share_name() {
            None => node.entries.insert(key, value),
            Some(share_name) => insert_member(&mut node.groups, share_name, key, value),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the subscription of `key` to `filter`, returning its value. Nodes left without
    /// subscriptions are freed.
    pub fn remove(&mut self, filter: &TopicFilter<'_>, key: &K) -> Option<V> {
        let id = self.find_path(filter.pattern())?;
        let node = self.nodes.get_mut(id)?;
        let old = match filter.share_name() {
            None => node.entries.remove(key),
            Some(share_name) => remove_member(&mut node.groups, share_name, key),
        }?;
        self.len -= 1;
        self.prune(id);
        Some(old)
    }

    /// Calls `visit` once for every subscription whose filter matches `topic`, and once for
    /// every shared group with a matching filter. Filters that start with a wildcard do not
    /// match topics that start with `$` [MQTT-4.7.2-1].
    ///
    /// The order is unspecified.
    pub fn for_each_match<'s>(
        &'s self,
        topic: &TopicName<'_>,
        mut visit: impl FnMut(Match<'s, K, V>),
    ) {
        let topic = topic.as_str();
        let system_topic = topic.starts_with('$');
        let mut stack = WalkStack::new();
        stack.push(Frame { node: ROOT, at: 0 });
        while let Some(Frame { node: id, at }) = stack.pop() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            let wildcards_match = !(system_topic && id == ROOT);
            if wildcards_match {
                if let Some(hash) = node.hash {
                    self.visit_node(hash.get(), &mut visit);
                }
            }
            let Some(rest) = topic.get(at..) else {
                self.visit_node(id, &mut visit);
                continue;
            };
            let (level, next_at) = match rest.find('/') {
                Some(slash) => (rest.get(..slash).unwrap_or_default(), at + slash + 1),
                None => (rest, TOPIC_END),
            };
            if wildcards_match {
                if let Some(plus) = node.plus {
                    stack.push(Frame {
                        node: plus.get(),
                        at: next_at,
                    });
                }
            }
            if node.exact_children > 0 {
                if let Some(child) = self.edges.find(&self.nodes, id, level) {
                    stack.push(Frame {
                        node: child,
                        at: next_at,
                    });
                }
            }
        }
    }

    /// Calls `visit` once for every subscription and once for every shared group, in no
    /// particular order: for listing what the index holds (an admin view), not for routing.
    /// [`SubscriptionIndex::filter_text`] gives each one's filter.
    pub fn for_each<'s>(&'s self, mut visit: impl FnMut(Match<'s, K, V>)) {
        for (id, _) in self.nodes.iter() {
            self.visit_node(id, &mut visit);
        }
    }

    /// Calls `visit` for the subscriptions whose filter is exactly `filter` (its pattern,
    /// whatever its share name), and for the shared groups on that filter.
    pub fn for_each_with_filter<'s>(
        &'s self,
        filter: &TopicFilter<'_>,
        mut visit: impl FnMut(Match<'s, K, V>),
    ) {
        if let Some(id) = self.find_path(filter.pattern()) {
            self.visit_node(id, &mut visit);
        }
    }

    /// The filter `id` stands for, or `None` if it is no longer in the index.
    #[must_use]
    pub fn filter_text(&self, id: FilterId) -> Option<String> {
        let mut levels = Vec::new();
        let mut current = id.0;
        while current != ROOT {
            let node = self.nodes.get(current)?;
            levels.push(node.level.as_str());
            current = node.parent;
        }
        let mut text = String::new();
        for (index, level) in levels.iter().rev().enumerate() {
            if index > 0 {
                text.push('/');
            }
            text.push_str(level);
        }
        Some(text)
    }

    fn visit_node<'s>(&'s self, id: u32, visit: &mut impl FnMut(Match<'s, K, V>)) {
        let Some(node) = self.nodes.get(id) else {
            return;
        };
        let filter = FilterId(id);
        node.entries
            .for_each(|key, value| visit(Match::Subscription { filter, key, value }));
        for group in &node.groups {
            visit(Match::SharedGroup {
                filter,
                share_name: &group.name,
                members: &group.members,
            });
        }
    }

    /// Walks `pattern` down from the root, creating missing nodes; returns the last node.
    fn create_path(&mut self, pattern: &str) -> u32 {
        let mut current = ROOT;
        for level in pattern.split('/') {
            current = match self.child(current, level) {
                Some(child) => child,
                None => self.add_child(current, level),
            };
        }
        current
    }

    fn find_path(&self, pattern: &str) -> Option<u32> {
        pattern
            .split('/')
            .try_fold(ROOT, |current, level| self.child(current, level))
    }

    fn child(&self, parent: u32, level: &str) -> Option<u32> {
        let node = self.nodes.get(parent)?;
        match level {
            "+" => node.plus.map(NonZeroU32::get),
            "#" => node.hash.map(NonZeroU32::get),
            _ => self.edges.find(&self.nodes, parent, level),
        }
    }

    fn add_child(&mut self, parent: u32, level: &str) -> u32 {
        let child = self.nodes.alloc(Node::new(level, parent));
        if level != "+" && level != "#" {
            self.edges.insert(&self.nodes, child.get());
        }
        if let Some(node) = self.nodes.get_mut(parent) {
            match level {
                "+" => node.plus = Some(child),
                "#" => node.hash = Some(child),
                _ => node.exact_children += 1,
            }
        }
        child.get()
    }

    /// Frees `id` and its ancestors while they hold nothing.
    fn prune(&mut self, mut id: u32) {
        while id != ROOT {
            let Some(node) = self.nodes.get(id) else {
                return;
            };
            if !node.is_unused() {
                return;
            }
            let parent_id = node.parent;
            let Some(parent) = self.nodes.get(parent_id) else {
                return;
            };
            let is_plus = parent.plus.is_some_and(|plus| plus.get() == id);
            let is_hash = parent.hash.is_some_and(|hash| hash.get() == id);
            if !is_plus && !is_hash {
                self.edges.remove(&self.nodes, id);
            }
            if let Some(parent) = self.nodes.get_mut(parent_id) {
                if is_plus {
                    parent.plus = None;
                } else if is_hash {
                    parent.hash = None;
                } else {
                    parent.exact_children -= 1;
                }
            }
            self.nodes.free(id);
            id = parent_id;
        }
    }
}

fn insert_member<K: Eq, V>(
    groups: &mut Box<[Group<K, V>]>,
    share_name: &str,
    key: K,
    value: V,
) -> Option<V> {
    if let Some(group) = groups.iter_mut().find(|group| &*group.name == share_name) {
        if let Some((_, old)) = group.members.iter_mut().find(|(k, _)| *k == key) {
            return Some(mem::replace(old, value));
        }
        push_compact(&mut group.members, (key, value));
        return None;
    }
    let mut grown = Vec::from(mem::take(groups));
    grown.push(Group {
        name: share_name.into(),
        members: alloc::vec![(key, value)],
    });
    *groups = grown.into_boxed_slice();
    None
}

fn remove_member<K: Eq, V>(
    groups: &mut Box<[Group<K, V>]>,
    share_name: &str,
    key: &K,
) -> Option<V> {
    let group_index = groups.iter().position(|group| &*group.name == share_name)?;
    let group = groups.get_mut(group_index)?;
    let member_index = group.members.iter().position(|(k, _)| k == key)?;
    let (_, value) = group.members.swap_remove(member_index);
    shrink_vec(&mut group.members);
    if group.members.is_empty() {
        let mut rest = Vec::from(mem::take(groups));
        rest.swap_remove(group_index);
        *groups = rest.into_boxed_slice();
    }
    Some(value)
}
