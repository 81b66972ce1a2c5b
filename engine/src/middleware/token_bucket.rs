//! [`TokenBucket`]: one connection's (or one address's) allowance under a
//! [`RateLimit`], sans-I/O: the time is an argument.

use std::time::Duration;

use super::{Millis, RateLimit};

/// A token bucket: holds up to [`RateLimit::burst`] tokens, refills at the
/// limit's rate, and each allowed event takes one token.
///
/// 16 bytes, so one per connection costs little next to the connection.
/// To stay that small it does not store its [`RateLimit`]: pass the same
/// limit on every call (a bucket under a changed limit may hold a wrong
/// level; start a [`full`](Self::full) one instead). The time is an
/// argument ([`Millis`] since the shard's epoch), so the bucket reads no
/// clock and tests step time to exact boundaries.
///
/// Time that goes backwards refills nothing and is otherwise harmless: the
/// bucket keeps the latest time it saw, so a clock stepping back and forth
/// never grants tokens twice. A bucket idle for any length of time
/// refills to full, never past it, and never overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// The level in units of 1/window of a token (`RateLimit::unit_cost`
    /// units make a token), at most `RateLimit::capacity`.
    level: u64,
    /// The latest time the bucket was refilled to.
    last: Millis,
}

impl TokenBucket {
    /// A bucket holding a whole burst at `now`: a new connection may use
    /// its burst at once.
    #[must_use]
    pub fn full(limit: &RateLimit, now: Millis) -> TokenBucket {
        TokenBucket {
            level: limit.capacity(),
            last: now,
        }
    }

    /// Takes a token at `now` if there is one: `true` if the event is
    /// allowed, `false` if it is over the limit (nothing is taken then).
    #[must_use]
    pub fn try_take(&mut self, limit: &RateLimit, now: Millis) -> bool {
        let level = self.level_at(limit, now);
        self.last = self.last.max(now);
        let allowed = level >= limit.unit_cost();
        self.level = if allowed {
            level - limit.unit_cost()
        } else {
            level
        };
        allowed
    }

    /// How long after `now` [`try_take`](Self::try_take) will next allow
    /// an event: zero if it would now. Whole milliseconds, rounded up; for
    /// a `Retry-After`.
    #[must_use]
    pub fn retry_after(&self, limit: &RateLimit, now: Millis) -> Duration {
        let missing = limit.unit_cost().saturating_sub(self.level_at(limit, now));
        Duration::from_millis(missing.div_ceil(limit.units_per_milli()))
    }

    /// Whether the bucket is full at `now`: such a bucket is the same as a
    /// new one, so a table of buckets may drop it.
    #[must_use]
    pub fn is_full(&self, limit: &RateLimit, now: Millis) -> bool {
        self.level_at(limit, now) >= limit.capacity()
    }

    /// The level at `now`, refilled since the last call; no refill if time
    /// went backwards.
    fn level_at(&self, limit: &RateLimit, now: Millis) -> u64 {
        let elapsed = now.checked_since(self.last).unwrap_or(0);
        let refill = elapsed.saturating_mul(limit.units_per_milli());
        self.level.saturating_add(refill).min(limit.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> Millis {
        Millis::new(millis)
    }

    /// Takes tokens at `now` until refused; how many were taken.
    fn drain(bucket: &mut TokenBucket, limit: &RateLimit, now: Millis) -> u32 {
        let mut taken = 0;
        while bucket.try_take(limit, now) {
            taken += 1;
        }
        taken
    }

    #[test]
    fn the_size_is_pinned_at_16_bytes() {
        assert_eq!(size_of::<TokenBucket>(), 16);
        assert_eq!(size_of::<RateLimit>(), 12);
    }

    #[test]
    fn a_full_bucket_allows_exactly_its_burst_at_once() {
        let limit = RateLimit::new(1, 5).unwrap();
        let mut bucket = TokenBucket::full(&limit, at(0));
        assert_eq!(drain(&mut bucket, &limit, at(0)), 5);
        assert!(!bucket.try_take(&limit, at(0)));
    }

    #[test]
    fn refill_gives_a_token_exactly_when_its_interval_has_passed() {
        // 4 a second: one token every 250 ms.
        let limit = RateLimit::new(4, 1).unwrap();
        let mut bucket = TokenBucket::full(&limit, at(1_000));
        assert!(bucket.try_take(&limit, at(1_000)));
        assert!(!bucket.try_take(&limit, at(1_249)));
        assert_eq!(
            bucket.retry_after(&limit, at(1_249)),
            Duration::from_millis(1)
        );
        assert!(bucket.try_take(&limit, at(1_250)));
        assert!(!bucket.try_take(&limit, at(1_250)));
    }

    #[test]
    fn fractional_intervals_accumulate_without_drift() {
        // 3 a second: a token every 333.3 ms; 3 tokens a second, exactly.
        let limit = RateLimit::new(3, 3).unwrap();
        let mut bucket = TokenBucket::full(&limit, at(0));
        assert_eq!(drain(&mut bucket, &limit, at(0)), 3);
        let mut taken = 0;
        for ms in 1..=10_000 {
            taken += u32::from(bucket.try_take(&limit, at(ms)));
        }
        assert_eq!(taken, 30);
        assert!(!bucket.try_take(&limit, at(10_000)));
    }

    #[test]
    fn slow_windows_refill_at_their_own_rate() {
        // 2 a minute: a token every 30 s.
        let limit = RateLimit::per_window(2, Duration::from_secs(60), 2).unwrap();
        let mut bucket = TokenBucket::full(&limit, at(0));
        assert_eq!(drain(&mut bucket, &limit, at(0)), 2);
        assert_eq!(bucket.retry_after(&limit, at(0)), Duration::from_secs(30));
        assert!(!bucket.try_take(&limit, at(29_999)));
        assert!(bucket.try_take(&limit, at(30_000)));
    }

    #[test]
    fn the_burst_caps_what_a_quiet_spell_saves() {
        let limit = RateLimit::new(10, 3).unwrap();
        let mut bucket = TokenBucket::full(&limit, at(0));
        assert_eq!(drain(&mut bucket, &limit, at(0)), 3);
        assert!(!bucket.is_full(&limit, at(299)));
        assert!(bucket.is_full(&limit, at(300)));
        assert_eq!(drain(&mut bucket, &limit, at(60_000)), 3);
    }

    #[test]
    fn a_long_idle_spell_does_not_overflow() {
        let limit = RateLimit::new(u32::MAX, u32::MAX).unwrap();
        let mut bucket = TokenBucket::full(&limit, at(0));
        assert!(bucket.try_take(&limit, at(0)));
        assert!(bucket.is_full(&limit, at(u64::MAX)));
        assert!(bucket.try_take(&limit, at(u64::MAX)));
        assert_eq!(bucket.retry_after(&limit, at(u64::MAX)), Duration::ZERO);
    }

    #[test]
    fn time_going_backwards_refills_nothing_and_is_not_counted_twice() {
        let limit = RateLimit::new(1, 1).unwrap();
        let mut bucket = TokenBucket::full(&limit, at(10_000));
        assert!(bucket.try_take(&limit, at(10_000)));
        // Backwards: nothing refilled, nothing panics.
        assert!(!bucket.try_take(&limit, at(5_000)));
        assert_eq!(
            bucket.retry_after(&limit, at(5_000)),
            Duration::from_secs(1)
        );
        // Forwards again: the refill counts from 10 000, not from 5 000.
        assert!(!bucket.try_take(&limit, at(10_999)));
        assert!(bucket.try_take(&limit, at(11_000)));
    }

    #[test]
    fn a_refused_take_takes_nothing() {
        let limit = RateLimit::new(2, 1).unwrap();
        let mut bucket = TokenBucket::full(&limit, at(0));
        assert!(bucket.try_take(&limit, at(0)));
        for ms in 0..500 {
            assert!(!bucket.try_take(&limit, at(ms)));
        }
        assert!(bucket.try_take(&limit, at(500)));
    }
}
