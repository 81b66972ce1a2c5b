//! [`Millis`]: the time argument of the rate limiters, whole milliseconds
//! since an epoch the caller keeps (one per shard).

use std::time::{Duration, Instant};

/// A moment as whole milliseconds since an epoch the caller chose, such as
/// the moment its shard started.
///
/// Rate limiters take the time as an argument rather than reading a clock,
/// so that tests can step it to exact boundaries; and eight bytes of
/// milliseconds keep a [`TokenBucket`](super::TokenBucket) at 16 bytes,
/// where an [`Instant`] alone takes 16. A `u64` of milliseconds does not
/// wrap for 584 million years, so a bucket idle for months still refills
/// correctly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(u64);

impl Millis {
    /// The moment `millis` milliseconds after the epoch.
    #[must_use]
    pub const fn new(millis: u64) -> Millis {
        Millis(millis)
    }

    /// The time from `epoch` to `now` in whole milliseconds, rounded down
    /// (0 if `now` is before `epoch`). Rounding every reading down from the
    /// same epoch loses nothing over time: the fractions never add up.
    #[must_use]
    pub fn since(epoch: Instant, now: Instant) -> Millis {
        let elapsed = now.saturating_duration_since(epoch);
        Millis(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// The milliseconds since the epoch.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, or `None` if `earlier` is later
    /// (the clock went backwards).
    pub(crate) fn checked_since(self, earlier: Millis) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }

    /// The moment `duration` after `self`, whole milliseconds rounded down,
    /// saturating at the end of time.
    pub(crate) fn saturating_add(self, duration: Duration) -> Millis {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_rounds_down_and_saturates_before_the_epoch() {
        let epoch = Instant::now();
        let later = epoch + Duration::from_micros(2_999);
        assert_eq!(Millis::since(epoch, later), Millis::new(2));
        assert_eq!(Millis::since(later, epoch), Millis::new(0));
    }

    #[test]
    fn checked_since_is_none_when_time_went_backwards() {
        assert_eq!(Millis::new(10).checked_since(Millis::new(4)), Some(6));
        assert_eq!(Millis::new(4).checked_since(Millis::new(10)), None);
    }

    #[test]
    fn saturating_add_stops_at_the_end_of_time() {
        assert_eq!(
            Millis::new(5).saturating_add(Duration::from_millis(7)),
            Millis::new(12)
        );
        assert_eq!(
            Millis::new(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            Millis::new(u64::MAX)
        );
    }
}
