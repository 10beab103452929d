//! Connection deadlines of one event loop: a min-heap of
//! `(deadline, slot, generation)` with lazy deletion. An entry is pushed only
//! when a connection's deadline moves earlier than the one already queued;
//! deadlines that move later (activity on a keep-alive connection, the
//! common case) cost nothing until the stale entry pops, when the connection
//! is asked again and re-queued.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A due entry: which connection slot, of which generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) deadline: Instant,
    pub(crate) slot: usize,
    pub(crate) generation: u64,
}

/// Min-heap of connection deadlines.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    /// Queues a deadline for a connection.
    pub(crate) fn push(&mut self, deadline: Instant, slot: usize, generation: u64) {
        self.heap.push(Reverse((deadline, slot, generation)));
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse((deadline, _, _))) if *deadline <= now => {
                let Reverse((deadline, slot, generation)) = self.heap.pop()?;
                Some(Due {
                    deadline,
                    slot,
                    generation,
                })
            }
            _ => None,
        }
    }

    /// Time from `now` until the earliest entry (zero if overdue).
    pub(crate) fn next_in(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((deadline, _, _))| deadline.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.push(now + Duration::from_secs(3), 3, 0);
        t.push(now + Duration::from_secs(1), 1, 0);
        t.push(now + Duration::from_secs(2), 2, 7);
        assert_eq!(t.next_in(now), Some(Duration::from_secs(1)));
        assert_eq!(t.pop_due(now), None);
        let later = now + Duration::from_secs(2);
        assert_eq!(t.pop_due(later).map(|d| d.slot), Some(1));
        assert_eq!(
            t.pop_due(later).map(|d| (d.slot, d.generation)),
            Some((2, 7))
        );
        assert_eq!(t.pop_due(later), None);
        assert_eq!(
            t.next_in(later + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
    }
}
