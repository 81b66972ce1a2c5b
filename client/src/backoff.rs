//! When to try connecting again: exponential backoff with full jitter.

use std::time::Duration;

/// How long the client waits before each reconnection attempt, and when it
/// gives up.
///
/// The wait before retry `n` (counting from 1) is drawn uniformly from
/// `0..=min(max_delay, initial_delay × 2^(n-1))`: exponential backoff with
/// *full jitter*. Spreading the whole window, rather than adding a little
/// noise to a fixed delay, keeps thousands of clients that lost the same
/// server from coming back in step. The count restarts from 1 once a
/// connection is established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The upper bound of the first retry's wait. Default: 100 ms.
    pub initial_delay: Duration,
    /// The largest upper bound any wait may have. Default: 30 s.
    pub max_delay: Duration,
    /// How many attempts in a row may fail before the client gives up and
    /// ends its event stream; `None` for no limit. The first connection
    /// counts as an attempt. Default: `None`.
    pub max_attempts: Option<u32>,
}

impl Backoff {
    /// The defaults: 100 ms initial, 30 s maximum, unlimited attempts.
    pub const DEFAULT: Backoff = Backoff {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(30),
        max_attempts: None,
    };

    /// The upper bound of the wait before retry `retry` (1 for the first
    /// retry): `min(max_delay, initial_delay × 2^(retry-1))`; zero for
    /// retry 0.
    #[must_use]
    pub fn ceiling(&self, retry: u32) -> Duration {
        let Some(doublings) = retry.checked_sub(1) else {
            return Duration::ZERO;
        };
        let factor = 1_u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_delay)
    }

    /// The wait before retry `retry`, drawn uniformly from
    /// `0..=ceiling(retry)` with `rng`.
    #[must_use]
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(0..=nanos))
    }

    /// Whether attempt `attempt` (1 for the first) may be made.
    #[must_use]
    pub fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt <= max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff {
            initial_delay: 100 * MS,
            max_delay: 1000 * MS,
            max_attempts: Some(4),
        }
    }

    #[test]
    fn ceiling_doubles_up_to_the_maximum() {
        let backoff = backoff();
        let ceilings: Vec<_> = (0..7).map(|retry| backoff.ceiling(retry)).collect();
        assert_eq!(
            ceilings,
            [0, 100, 200, 400, 800, 1000, 1000].map(|ms| ms * MS)
        );
        assert_eq!(backoff.ceiling(u32::MAX), 1000 * MS, "no overflow");
        let huge = Backoff {
            initial_delay: Duration::MAX / 2,
            max_delay: Duration::MAX,
            ..backoff
        };
        assert_eq!(huge.ceiling(3), Duration::MAX, "saturates");
    }

    #[test]
    fn full_jitter_covers_the_whole_window() {
        let backoff = backoff();
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 1..8 {
            let ceiling = backoff.ceiling(retry);
            let delays: Vec<_> = (0..2000).map(|_| backoff.delay(retry, &mut rng)).collect();
            assert!(delays.iter().all(|delay| *delay <= ceiling));
            // Full jitter: some waits land in the bottom tenth of the
            // window and some in the top tenth.
            assert!(delays.iter().any(|delay| *delay < ceiling / 10), "{retry}");
            assert!(
                delays.iter().any(|delay| *delay > ceiling * 9 / 10),
                "{retry}"
            );
        }
        assert_eq!(backoff.delay(0, &mut rng), Duration::ZERO);
    }

    #[test]
    fn attempts_are_bounded_or_not() {
        let backoff = backoff();
        assert!((1..=4).all(|attempt| backoff.allows(attempt)));
        assert!(!backoff.allows(5));
        let unlimited = Backoff {
            max_attempts: None,
            ..backoff
        };
        assert!(unlimited.allows(u32::MAX));
    }
}
