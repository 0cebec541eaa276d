//! Which of a node's messages were seen already: a message that matches two of this node's
//! NATS subscriptions (`a/+` and `a/b`) arrives twice, and must be routed once.

/// How many numbers below the highest one seen are remembered.
const SPAN: u64 = 128;

/// The numbers of one node's messages seen lately: the highest, and a bit for each of the
/// [`SPAN`] numbers up to it.
#[derive(Debug, Default)]
pub(crate) struct Window {
    top: u64,
    /// Bit `i`: number `top - i` was seen.
    seen: u128,
}

impl Window {
    /// Whether `number` is seen for the first time (and remembers it). A number more than
    /// [`SPAN`] below the highest one is let through: copies of one message arrive together,
    /// so it is late, not a copy.
    pub(crate) fn first_time(&mut self, number: u64) -> bool {
        if number > self.top {
            let shift = number - self.top;
            self.seen = if shift >= SPAN { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = number;
            return true;
        }
        let distance = self.top - number;
        if distance >= SPAN {
            return true;
        }
        let bit = 1u128 << distance;
        let first = self.seen & bit == 0;
        self.seen |= bit;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_caught_in_any_order() {
        let mut w = Window::default();
        assert!(w.first_time(1));
        assert!(!w.first_time(1));
        assert!(w.first_time(3));
        assert!(w.first_time(2));
        assert!(!w.first_time(2));
        assert!(!w.first_time(3));
        assert!(w.first_time(200));
        assert!(!w.first_time(200));
        // Far below the window: let through.
        assert!(w.first_time(3));
        assert!(w.first_time(100));
        assert!(!w.first_time(100));
    }
}
