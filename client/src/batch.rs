//! Batching outgoing envelopes: several in one WebSocket message, sent
//! when enough have gathered or the first has waited long enough.

use std::time::Duration;

use tokio::time::Instant;

/// When gathered envelopes leave as one `Batch` message.
///
/// Batching trades a little latency (at most `max_delay`) for fewer
/// WebSocket messages and fewer writes when the application sends in
/// bursts. Ping, pong and close frames, and the `Resume` that opens a
/// connection, are never batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Send as soon as this many envelopes are gathered. Default: 64.
    pub max_items: usize,
    /// Send at the latest this long after the first envelope of a batch was
    /// gathered. Default: 5 ms.
    pub max_delay: Duration,
}

impl Batching {
    /// The defaults: 64 envelopes or 5 ms.
    pub const DEFAULT: Batching = Batching {
        max_items: 64,
        max_delay: Duration::from_millis(5),
    };
}

impl Default for Batching {
    fn default() -> Self {
        Batching::DEFAULT
    }
}

/// The envelopes (of type `T`) gathered for the next batch.
#[derive(Debug)]
pub(crate) struct Batcher<T> {
    config: Batching,
    items: Vec<T>,
    deadline: Option<Instant>,
}

impl<T> Batcher<T> {
    /// An empty batch under `config`.
    pub(crate) fn new(config: Batching) -> Batcher<T> {
        Batcher {
            config,
            items: Vec::new(),
            deadline: None,
        }
    }

    /// Adds `item` at time `now`; returns whether the batch is now full
    /// and must be sent.
    pub(crate) fn push(&mut self, item: T, now: Instant) -> bool {
        if self.items.is_empty() {
            self.deadline = Some(now + self.config.max_delay);
        }
        self.items.push(item);
        self.items.len() >= self.config.max_items
    }

    /// When the gathered envelopes must leave, if any are gathered.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether nothing is gathered.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The gathered envelopes, in order, leaving the batch empty.
    pub(crate) fn take(&mut self) -> Vec<T> {
        self.deadline = None;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u8) -> u8 {
        n
    }

    #[test]
    fn full_at_max_items_in_order() {
        let mut batcher = Batcher::new(Batching {
            max_items: 3,
            max_delay: Duration::from_millis(5),
        });
        let now = Instant::now();
        assert!(!batcher.push(event(1), now));
        assert!(!batcher.push(event(2), now));
        assert!(batcher.push(event(3), now));
        assert_eq!(batcher.take(), [event(1), event(2), event(3)]);
        assert!(batcher.is_empty());
        assert_eq!(batcher.deadline(), None);
    }

    #[test]
    fn deadline_runs_from_the_first_item() {
        let delay = Duration::from_millis(5);
        let mut batcher = Batcher::new(Batching {
            max_items: 10,
            max_delay: delay,
        });
        assert_eq!(batcher.deadline(), None);
        let first = Instant::now();
        batcher.push(event(1), first);
        batcher.push(event(2), first + Duration::from_millis(4));
        assert_eq!(batcher.deadline(), Some(first + delay));
        batcher.take();
        let later = first + Duration::from_millis(20);
        batcher.push(event(3), later);
        assert_eq!(batcher.deadline(), Some(later + delay));
    }

    #[test]
    fn max_items_of_one_sends_each_alone() {
        let mut batcher = Batcher::new(Batching {
            max_items: 1,
            max_delay: Duration::from_secs(1),
        });
        assert!(batcher.push(event(1), Instant::now()));
    }
}
