//! Rule lists, indexed by their first level once they are long.

use std::ops::Deref;

use hashbrown::HashMap;

use super::{Filter, Grant, Level};

/// Lists with at least this many rules whose first level is text are indexed by that text;
/// shorter ones are scanned, which costs less than hashing the topic's first level.
const INDEX_FROM: usize = 16;

/// A rule that has a topic filter.
pub(super) trait HasFilter {
    fn filter(&self) -> &Filter;
}

impl HasFilter for Filter {
    fn filter(&self) -> &Filter {
        self
    }
}

impl HasFilter for Grant {
    fn filter(&self) -> &Filter {
        &self.filter
    }
}

/// Rules in file order, with an index by first level for long lists.
#[derive(Clone, Debug)]
pub(super) struct RuleList<T> {
    rules: Vec<T>,
    index: Option<HeadIndex>,
}

impl<T> Default for RuleList<T> {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            index: None,
        }
    }
}

#[derive(Clone, Debug)]
struct HeadIndex {
    /// Positions of the rules whose first level is text, by that text.
    by_head: HashMap<Box<[u8]>, Box<[usize]>>,
    /// Positions of the other rules: first level `+`, `#`, or with `%c` / `%u`.
    others: Box<[usize]>,
}

impl<T> Deref for RuleList<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.rules
    }
}

impl<T: HasFilter> RuleList<T> {
    pub(super) fn push(&mut self, rule: T) {
        self.rules.push(rule);
        self.index = None;
    }

    /// Builds the index, if the list is long enough to gain from one.
    pub(super) fn finish(&mut self) {
        let mut by_head: HashMap<Box<[u8]>, Vec<usize>> = HashMap::new();
        let mut others = Vec::new();
        for (position, rule) in self.rules.iter().enumerate() {
            match rule.filter().levels.first() {
                Some(Level::Text(head)) => by_head
                    .entry(head.as_bytes().into())
                    .or_default()
                    .push(position),
                _ => others.push(position),
            }
        }
        let indexed = self.rules.len() - others.len();
        self.index = (indexed >= INDEX_FROM).then(|| HeadIndex {
            by_head: by_head
                .into_iter()
                .map(|(head, positions)| (head, positions.into_boxed_slice()))
                .collect(),
            others: others.into_boxed_slice(),
        });
    }

    /// Whether the list has an index.
    #[cfg(test)]
    pub(super) const fn is_indexed(&self) -> bool {
        self.index.is_some()
    }

    /// The first rule that satisfies `pred`, among those that can match a topic whose first
    /// level is `head`.
    #[inline]
    pub(super) fn find(&self, head: &[u8], mut pred: impl FnMut(&T) -> bool) -> Option<&T> {
        let Some(index) = &self.index else {
            return self
                .rules
                .iter()
                .find(|rule| rule.filter().may_match(head) && pred(rule));
        };
        let same_head = index
            .by_head
            .get(head)
            .map_or(&[][..], |positions| positions);
        same_head
            .iter()
            .chain(index.others.iter())
            .filter_map(|&position| self.rules.get(position))
            .find(|rule| pred(rule))
    }
}
