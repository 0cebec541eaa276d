//! The retained-message index: topic name -> value, looked up by topic filter.

use core::fmt;
use core::num::NonZeroU32;

use crate::arena::{Arena, Edges, Level, TreeNode, WalkStack, ROOT};
use crate::{TopicFilter, TopicName};

struct Node<V> {
    level: Level,
    value: Option<V>,
    parent: u32,
    // Children form a doubly linked list so that `+` and `#` can enumerate them and removal
    // can unlink one in constant time; exact lookups go through the edge table.
    first_child: Option<NonZeroU32>,
    next_sibling: Option<NonZeroU32>,
    prev_sibling: Option<NonZeroU32>,
}

impl<V> TreeNode for Node<V> {
    fn parent(&self) -> u32 {
        self.parent
    }

    fn level(&self) -> &Level {
        &self.level
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// `node` matched the filter up to byte `at`; past the end means the whole filter matched.
    Visit { node: u32, at: usize },
    /// A `+` level: visit `node` and then its later siblings, each with the filter from `at`.
    Siblings { node: u32, at: usize },
}

impl Default for Step {
    fn default() -> Self {
        Self::Visit { node: ROOT, at: 0 }
    }
}

const FILTER_END: usize = usize::MAX;

/// Retained messages by topic name, found by topic filter: the lookup a broker runs for each
/// SUBSCRIBE.
///
/// A trie of topic levels. An exact filter level is one hash lookup, `+` visits each child and
/// `#` walks the subtree; all walks are loops with a stack bounded by the filter depth, and a
/// `#` walk needs no stack at all. Filters that start with a wildcard skip first levels that
/// start with `$` [MQTT-4.7.2-1].
pub struct RetainedIndex<V> {
    nodes: Arena<Node<V>>,
    edges: Edges,
    len: usize,
}

/// Shows the number of retained topics, not the trie or the values.
impl<V> fmt::Debug for RetainedIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> RetainedIndex<V> {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self {
            nodes: Arena::new(new_node("", ROOT, None)),
            edges: Edges::new(),
            len: 0,
        }
    }

    /// Number of retained topics.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic is retained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Trie nodes in use, the root included: 1 for an empty index.
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.live()
    }

    /// Stores `value` for `topic`, returning the value it replaces.
    ///
    /// # Panics
    /// If the trie would need more than `u32::MAX` nodes.
    pub fn insert(&mut self, topic: &TopicName<'_>, value: V) -> Option<V> {
        let mut current = ROOT;
        for level in topic.as_str().split('/') {
            current = match self.edges.find(&self.nodes, current, level) {
                Some(child) => child,
                None => self.add_child(current, level),
            };
        }
        let old = self.nodes.get_mut(current)?.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value retained for exactly `topic`.
    #[must_use]
    pub fn get(&self, topic: &TopicName<'_>) -> Option<&V> {
        let id = self.find(topic)?;
        self.nodes.get(id)?.value.as_ref()
    }

    /// Removes the value of `topic`, freeing the nodes only it used.
    pub fn remove(&mut self, topic: &TopicName<'_>) -> Option<V> {
        let id = self.find(topic)?;
        let old = self.nodes.get_mut(id)?.value.take()?;
        self.len -= 1;
        self.prune(id);
        Some(old)
    }

    /// Calls `visit` with the value of every retained topic that `filter` matches. A shared
    /// filter is matched by its pattern; whether to send retained messages to a shared
    /// subscription is the caller's decision.
    ///
    /// The order is unspecified.
    pub fn for_each_match<'s>(&'s self, filter: &TopicFilter<'_>, mut visit: impl FnMut(&'s V)) {
        let filter = filter.pattern();
        let mut stack = WalkStack::new();
        stack.push(Step::Visit { node: ROOT, at: 0 });
        while let Some(step) = stack.pop() {
            match step {
                Step::Visit { node: id, at } => {
                    let Some(node) = self.nodes.get(id) else {
                        continue;
                    };
                    let Some(rest) = filter.get(at..) else {
                        if let Some(value) = &node.value {
                            visit(value);
                        }
                        continue;
                    };
                    let (level, next_at) = match rest.find('/') {
                        Some(slash) => (rest.get(..slash).unwrap_or_default(), at + slash + 1),
                        None => (rest, FILTER_END),
                    };
                    match level {
                        "#" => self.visit_subtree(id, &mut visit),
                        "+" => {
                            let first = self.first_matchable(node.first_child, id);
                            if let Some(first) = first {
                                stack.push(Step::Siblings {
                                    node: first,
                                    at: next_at,
                                });
                            }
                        }
                        _ => {
                            if let Some(child) = self.edges.find(&self.nodes, id, level) {
                                stack.push(Step::Visit {
                                    node: child,
                                    at: next_at,
                                });
                            }
                        }
                    }
                }
                Step::Siblings { node: id, at } => {
                    let Some(node) = self.nodes.get(id) else {
                        continue;
                    };
                    if let Some(next) = self.first_matchable(node.next_sibling, node.parent) {
                        stack.push(Step::Siblings { node: next, at });
                    }
                    stack.push(Step::Visit { node: id, at });
                }
            }
        }
    }

    /// Visits `top` and everything below it, in preorder, following child and sibling links:
    /// no stack at all.
    fn visit_subtree<'s>(&'s self, top: u32, visit: &mut impl FnMut(&'s V)) {
        let Some(top_node) = self.nodes.get(top) else {
            return;
        };
        if let Some(value) = &top_node.value {
            visit(value);
        }
        let mut next = self.first_matchable(top_node.first_child, top);
        while let Some(id) = next {
            let Some(node) = self.nodes.get(id) else {
                return;
            };
            if let Some(value) = &node.value {
                visit(value);
            }
            next = match node.first_child {
                Some(child) => Some(child.get()),
                None => self.next_in_subtree(id, top),
            };
        }
    }

    /// The next node after the subtree of `id` in a preorder walk of `top`'s subtree.
    fn next_in_subtree(&self, mut id: u32, top: u32) -> Option<u32> {
        while id != top {
            let node = self.nodes.get(id)?;
            if let Some(sibling) = self.first_matchable(node.next_sibling, node.parent) {
                return Some(sibling);
            }
            id = node.parent;
        }
        None
    }

    /// The first node from `start` along its sibling list that a wildcard may match: below the
    /// root, any; at the root, one whose level does not start with `$` [MQTT-4.7.2-1].
    fn first_matchable(&self, start: Option<NonZeroU32>, parent: u32) -> Option<u32> {
        let mut current = start;
        while let Some(id) = current {
            let node = self.nodes.get(id.get())?;
            if parent != ROOT || node.level.as_bytes().first() != Some(&b'$') {
                return Some(id.get());
            }
            current = node.next_sibling;
        }
        None
    }

    fn find(&self, topic: &TopicName<'_>) -> Option<u32> {
        topic.as_str().split('/').try_fold(ROOT, |current, level| {
            self.edges.find(&self.nodes, current, level)
        })
    }

    fn add_child(&mut self, parent: u32, level: &str) -> u32 {
        let first = self.nodes.get(parent).and_then(|node| node.first_child);
        let child = self.nodes.alloc(new_node(level, parent, first));
        if let Some(first) = first.and_then(|first| self.nodes.get_mut(first.get())) {
            first.prev_sibling = Some(child);
        }
        if let Some(node) = self.nodes.get_mut(parent) {
            node.first_child = Some(child);
        }
        self.edges.insert(&self.nodes, child.get());
        child.get()
    }

    /// Frees `id` and its ancestors while they hold no value and no children.
    fn prune(&mut self, mut id: u32) {
        while id != ROOT {
            let Some(node) = self.nodes.get(id) else {
                return;
            };
            if node.value.is_some() || node.first_child.is_some() {
                return;
            }
            let (parent, prev, next) = (node.parent, node.prev_sibling, node.next_sibling);
            self.edges.remove(&self.nodes, id);
            match prev.and_then(|prev| self.nodes.get_mut(prev.get())) {
                Some(prev) => prev.next_sibling = next,
                None => {
                    if let Some(parent) = self.nodes.get_mut(parent) {
                        parent.first_child = next;
                    }
                }
            }
            if let Some(next) = next.and_then(|next| self.nodes.get_mut(next.get())) {
                next.prev_sibling = prev;
            }
            self.nodes.free(id);
            id = parent;
        }
    }
}

fn new_node<V>(level: &str, parent: u32, next_sibling: Option<NonZeroU32>) -> Node<V> {
    Node {
        level: Level::new(level),
        value: None,
        parent,
        first_child: None,
        next_sibling,
        prev_sibling: None,
    }
}
