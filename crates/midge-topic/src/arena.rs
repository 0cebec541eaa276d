//! Storage shared by both indexes: a slab of nodes addressed by `u32` ids, one hash table of
//! exact-level edges for the whole tree, and a walk stack that lives on the call stack.
//!
//! One edge table instead of a map per node keeps an inner node small (no empty map header), and
//! the table stores only node ids: the key (parent id, level) is read back from the node.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hash::BuildHasher;
use core::num::NonZeroU32;

use hashbrown::{DefaultHashBuilder, HashTable};

/// The root's id. It is never a child, so child links can be `Option<NonZeroU32>`.
pub(crate) const ROOT: u32 = 0;

/// What the edge table needs to know about a node.
pub(crate) trait TreeNode {
    fn parent(&self) -> u32;
    fn level(&self) -> &Level;
}

/// Levels up to this many bytes live inside the node.
const INLINE_LEVEL: usize = 22;

/// A node's level text. Most levels are short, so they are stored inline: that saves a heap
/// block per node and a cache miss on every edge lookup, which compares the level.
pub(crate) enum Level {
    Inline { len: u8, bytes: [u8; INLINE_LEVEL] },
    Heap(Box<str>),
}

impl Level {
    pub(crate) fn new(level: &str) -> Self {
        let mut bytes = [0; INLINE_LEVEL];
        match (bytes.get_mut(..level.len()), u8::try_from(level.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(level.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(level.into()),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Self::Heap(text) => text.as_bytes(),
        }
    }

    /// The level as text; always valid, as it was copied from a `&str`.
    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// A slab of nodes. Freed slots are reused; trailing free slots are released.
pub(crate) struct Arena<N> {
    slots: Vec<Option<N>>,
    free: Vec<u32>,
    live: usize,
}

impl<N> Arena<N> {
    pub(crate) fn new(root: N) -> Self {
        Self {
            slots: alloc::vec![Some(root)],
            free: Vec::new(),
            live: 1,
        }
    }

    /// Live nodes, the root included.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Every live node with its id, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &N)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let node = slot.as_ref()?;
            // An id is its slot's index (`slot_index`).
            Some((u32::try_from(index).ok()?, node))
        })
    }

    pub(crate) fn get(&self, id: u32) -> Option<&N> {
        self.slots.get(slot_index(id))?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut N> {
        self.slots.get_mut(slot_index(id))?.as_mut()
    }

    /// # Panics
    /// If the tree would hold more than `u32::MAX` nodes (hundreds of gigabytes).
    pub(crate) fn alloc(&mut self, node: N) -> NonZeroU32 {
        self.live += 1;
        // The free list may hold ids of slots that were trimmed or reused since: skip them.
        while let Some(id) = self.free.pop() {
            if let Some(slot @ None) = self.slots.get_mut(slot_index(id)) {
                *slot = Some(node);
                return child_id(id);
            }
        }
        let id = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        assert!(id < u32::MAX, "topic tree is limited to u32::MAX nodes");
        self.slots.push(Some(node));
        child_id(id)
    }

    pub(crate) fn free(&mut self, id: u32) -> Option<N> {
        let node = self.slots.get_mut(slot_index(id))?.take()?;
        self.live -= 1;
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        if slot_index(id) < self.slots.len() {
            self.free.push(id);
        }
        // Stale ids pile up when trailing slots are trimmed; drop them before they outnumber
        // the slots.
        if self.free.len() > self.slots.len() {
            let slots = &self.slots;
            self.free
                .retain(|&id| matches!(slots.get(slot_index(id)), Some(None)));
            self.free.sort_unstable();
            self.free.dedup();
        }
        shrink_vec(&mut self.slots);
        shrink_vec(&mut self.free);
        Some(node)
    }
}

fn slot_index(id: u32) -> usize {
    id as usize
}

fn child_id(id: u32) -> NonZeroU32 {
    // Slot 0 holds the root, which is never freed, so `alloc` never hands out 0.
    NonZeroU32::new(id).unwrap_or(NonZeroU32::MAX)
}

/// Gives memory back once a vector is at most a quarter full.
pub(crate) fn shrink_vec<T>(vec: &mut Vec<T>) {
    if vec.len() <= vec.capacity() / 4 {
        vec.shrink_to(vec.len() * 2);
    }
}

/// Exact-level edges of the whole tree: (parent id, level) -> child id.
pub(crate) struct Edges {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Edges {
    pub(crate) fn new() -> Self {
        Self {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn hash(hasher: &DefaultHashBuilder, parent: u32, level: &[u8]) -> u64 {
        hasher.hash_one((parent, level))
    }

    pub(crate) fn find<N: TreeNode>(
        &self,
        nodes: &Arena<N>,
        parent: u32,
        level: &str,
    ) -> Option<u32> {
        let level = level.as_bytes();
        let hash = Self::hash(&self.hasher, parent, level);
        self.table
            .find(hash, |&id| {
                nodes
                    .get(id)
                    .is_some_and(|node| node.parent() == parent && node.level().as_bytes() == level)
            })
            .copied()
    }

    /// Adds the edge to `id`, which must already be in `nodes`.
    pub(crate) fn insert<N: TreeNode>(&mut self, nodes: &Arena<N>, id: u32) {
        let Some(node) = nodes.get(id) else { return };
        let Self { table, hasher } = self;
        let hash = Self::hash(hasher, node.parent(), node.level().as_bytes());
        table.insert_unique(hash, id, |&id| rehash(hasher, nodes, id));
    }

    /// Removes the edge to `id`, which must still be in `nodes`.
    pub(crate) fn remove<N: TreeNode>(&mut self, nodes: &Arena<N>, id: u32) {
        let Some(node) = nodes.get(id) else { return };
        let Self { table, hasher } = self;
        let hash = Self::hash(hasher, node.parent(), node.level().as_bytes());
        if let Ok(entry) = table.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        if table.len() <= table.capacity() / 4 {
            table.shrink_to(table.len() * 2, |&id| rehash(hasher, nodes, id));
        }
    }
}

fn rehash<N: TreeNode>(hasher: &DefaultHashBuilder, nodes: &Arena<N>, id: u32) -> u64 {
    nodes.get(id).map_or(0, |node| {
        Edges::hash(hasher, node.parent(), node.level().as_bytes())
    })
}

/// Frames kept inline before the stack spills to the heap. A match walk pushes at most one
/// pending frame per topic level, so realistic topics never spill.
const INLINE_FRAMES: usize = 32;

/// A LIFO stack that lives on the call stack and only allocates past [`INLINE_FRAMES`].
pub(crate) struct WalkStack<T> {
    inline: [T; INLINE_FRAMES],
    inline_len: usize,
    spill: Vec<T>,
}

impl<T: Copy + Default> WalkStack<T> {
    pub(crate) fn new() -> Self {
        Self {
            inline: [T::default(); INLINE_FRAMES],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, frame: T) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = frame;
                self.inline_len += 1;
            }
            None => self.spill.push(frame),
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        // The spill only fills while the inline part is full, so it holds the newest frames.
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        self.inline_len = self.inline_len.checked_sub(1)?;
        self.inline.get(self.inline_len).copied()
    }
}
