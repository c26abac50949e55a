//! Timers: a min-heap of (deadline, token, generation) with lazy
//! invalidation.
//!
//! The daemon needs a wheel; a client tool does not. Each connection keeps
//! the deadline of the one entry it counts on (`timer_at`); entries that no
//! longer match it, or whose slot was reused (the generation moved on), are
//! dropped when they surface. A connection whose deadline moved *later*
//! (a byte arrived, so its idle timeout starts again) does not push at all:
//! its old entry fires early and it re-arms then. So a trickled byte costs
//! no heap operation, and the heap holds about one entry per connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A due entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    /// Milliseconds since the run began.
    pub at: u64,
    pub token: u32,
    pub gen: u32,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
}

impl Timers {
    pub fn push(&mut self, at: u64, token: u32, gen: u32) {
        self.heap.push(Reverse(Due { at, token, gen }));
    }

    /// The earliest deadline, stale or not (waking for a stale one early is
    /// harmless).
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Take the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let mut t = Timers::default();
        t.push(30, 1, 0);
        t.push(10, 2, 0);
        t.push(20, 3, 7);
        assert_eq!(t.next_at(), Some(10));
        assert_eq!(t.pop_due(9), None);
        assert_eq!(t.pop_due(25).map(|d| d.token), Some(2));
        assert_eq!(
            t.pop_due(25),
            Some(Due {
                at: 20,
                token: 3,
                gen: 7
            })
        );
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(u64::MAX).map(|d| d.at), Some(30));
        assert_eq!(t.next_at(), None);
    }
}
