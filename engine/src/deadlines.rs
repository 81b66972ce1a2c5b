//! [`Deadlines`]: a shard's queue of connection deadlines that all share
//! one timeout (the handshake's, or the close handshake's), so that the
//! queue stays in order by itself: push at the back, expire at the front.
//! No timer per connection, and no entry removed early: an entry whose
//! connection moved on is found stale when it expires.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::driver::Token;

/// A queue that shrank to nothing keeps at most this many entries of
/// capacity, so a burst of connections does not leave its queue's memory
/// behind.
const RETAINED: usize = 1024;

/// Deadlines in the order they were pushed, each with its connection.
#[derive(Debug)]
pub(crate) struct Deadlines {
    /// Milliseconds since `epoch`: 16 bytes an entry rather than 24.
    entries: VecDeque<(u64, Token)>,
    epoch: Instant,
}

impl Deadlines {
    /// An empty queue counting from `epoch`.
    pub(crate) fn new(epoch: Instant) -> Deadlines {
        Deadlines {
            entries: VecDeque::new(),
            epoch,
        }
    }

    /// Adds `token`'s deadline, `timeout` after `now`: it must not be
    /// earlier than the last one pushed (one timeout for all keeps that
    /// true).
    pub(crate) fn push(&mut self, now: Instant, timeout: Duration, token: Token) {
        let at = self.millis(now).saturating_add(millis(timeout));
        debug_assert!(self.entries.back().is_none_or(|&(last, _)| last <= at));
        self.entries.push_back((at, token));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries
            .front()
            .map(|&(at, _)| self.epoch + Duration::from_millis(at))
    }

    /// Takes the earliest deadline if it has passed at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Token> {
        let &(at, token) = self.entries.front()?;
        if at > self.millis(now) {
            return None;
        }
        self.entries.pop_front();
        if self.entries.is_empty() && self.entries.capacity() > RETAINED {
            self.entries.shrink_to(RETAINED);
        }
        Some(token)
    }

    /// Entries queued, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops the entries whose connection `keep` no longer wants timed,
    /// and the memory they held: a queue whose connections mostly moved
    /// on (upgraded long before their handshake timeout) shrinks to those
    /// still waiting.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Token) -> bool) {
        self.entries.retain(|&(_, token)| keep(token));
        self.entries.shrink_to(self.entries.len().max(RETAINED));
    }

    /// Whole milliseconds from the epoch to `now`, rounded up so that a
    /// deadline never fires early.
    fn millis(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.epoch))
    }
}

/// A duration in whole milliseconds, rounded up.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(key: usize) -> Token {
        Token::new(key, key as u64)
    }

    #[test]
    fn deadlines_expire_in_order_and_not_before_their_time() {
        let epoch = Instant::now();
        let mut deadlines = Deadlines::new(epoch);
        let timeout = Duration::from_millis(100);
        deadlines.push(epoch, timeout, token(1));
        deadlines.push(epoch + Duration::from_millis(30), timeout, token(2));
        assert_eq!(deadlines.next(), Some(epoch + timeout));
        assert_eq!(deadlines.pop_due(epoch + Duration::from_millis(99)), None);
        assert_eq!(deadlines.pop_due(epoch + timeout), Some(token(1)));
        assert_eq!(deadlines.pop_due(epoch + timeout), None);
        assert_eq!(
            deadlines.pop_due(epoch + Duration::from_millis(130)),
            Some(token(2))
        );
        assert_eq!(deadlines.next(), None);
    }

    #[test]
    fn retain_keeps_the_order_of_what_it_keeps() {
        let epoch = Instant::now();
        let mut deadlines = Deadlines::new(epoch);
        for key in 0..5000 {
            deadlines.push(epoch, Duration::ZERO, token(key));
        }
        deadlines.retain(|token| token.key % 1000 == 0);
        assert_eq!(deadlines.len(), 5);
        assert!(deadlines.entries.capacity() <= RETAINED);
        let expired: Vec<u32> =
            std::iter::from_fn(|| deadlines.pop_due(epoch).map(|t| t.key)).collect();
        assert_eq!(expired, [0, 1000, 2000, 3000, 4000]);
    }

    #[test]
    fn a_drained_queue_gives_back_its_burst() {
        let epoch = Instant::now();
        let mut deadlines = Deadlines::new(epoch);
        for key in 0..10_000 {
            deadlines.push(epoch, Duration::ZERO, token(key));
        }
        while deadlines.pop_due(epoch).is_some() {}
        assert!(deadlines.entries.capacity() <= RETAINED);
    }
}
