//! [`RateLimit`]: a validated rate and burst for a
//! [`TokenBucket`](super::TokenBucket).

use std::time::Duration;

/// A rate and a burst: on average `tokens` per `window`, and at most
/// `burst` at once after a quiet spell.
///
/// Validated when made, so a bucket never divides by zero or starts empty
/// forever. Kept apart from the bucket (12 bytes, `Copy`), so one limit
/// serves every bucket of a shard and each bucket stays at 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Tokens added per `window_ms`.
    tokens: u32,
    /// The window, in milliseconds, at least 1.
    window_ms: u32,
    /// The bucket's capacity in tokens, at least 1.
    burst: u32,
}

/// Why a [`RateLimit`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// A rate of zero tokens: the bucket would never refill.
    #[error("a rate limit must add at least one token per window")]
    ZeroRate,
    /// A burst of zero: the bucket could never hold a token.
    #[error("a rate limit's burst must be at least 1")]
    ZeroBurst,
    /// A window shorter than a millisecond or longer than `u32::MAX`
    /// milliseconds (about 49.7 days).
    #[error("a rate limit's window must be 1 ms to about 49.7 days, not {0:?}")]
    InvalidWindow(Duration),
}

impl RateLimit {
    /// `per_second` tokens a second, with room for `burst` at once.
    ///
    /// # Errors
    /// [`RateLimitError::ZeroRate`] if `per_second` is 0,
    /// [`RateLimitError::ZeroBurst`] if `burst` is 0.
    pub fn new(per_second: u32, burst: u32) -> Result<RateLimit, RateLimitError> {
        RateLimit::per_window(per_second, Duration::from_secs(1), burst)
    }

    /// `tokens` per `window` (whole milliseconds, rounded down), with room
    /// for `burst` at once: for rates slower than one a second, such as 10
    /// connections a minute.
    ///
    /// # Errors
    /// [`RateLimitError::ZeroRate`] if `tokens` is 0,
    /// [`RateLimitError::ZeroBurst`] if `burst` is 0,
    /// [`RateLimitError::InvalidWindow`] if `window` is under 1 ms or over
    /// `u32::MAX` ms.
    pub fn per_window(
        tokens: u32,
        window: Duration,
        burst: u32,
    ) -> Result<RateLimit, RateLimitError> {
        if tokens == 0 {
            return Err(RateLimitError::ZeroRate);
        }
        if burst == 0 {
            return Err(RateLimitError::ZeroBurst);
        }
        let window_ms = u32::try_from(window.as_millis())
            .ok()
            .filter(|&ms| ms > 0)
            .ok_or(RateLimitError::InvalidWindow(window))?;
        Ok(RateLimit {
            tokens,
            window_ms,
            burst,
        })
    }

    /// Tokens added per [`window`](Self::window).
    #[must_use]
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// The window the [`tokens`](Self::tokens) are added over.
    #[must_use]
    pub fn window(&self) -> Duration {
        Duration::from_millis(u64::from(self.window_ms))
    }

    /// The most tokens a bucket holds: how many may be taken at once.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    // A bucket counts in units of 1/window_ms of a token: each millisecond
    // adds `tokens` units and a token costs `window_ms` units, so the rate
    // is exact in integers, whatever the window.

    /// Units one token costs.
    pub(crate) fn unit_cost(&self) -> u64 {
        u64::from(self.window_ms)
    }

    /// Units added per millisecond.
    pub(crate) fn units_per_milli(&self) -> u64 {
        u64::from(self.tokens)
    }

    /// Units a full bucket holds; at most (2^32 - 1)^2, so it fits a `u64`.
    pub(crate) fn capacity(&self) -> u64 {
        u64::from(self.burst) * self.unit_cost()
    }

    /// How long an empty bucket takes to fill: after that long untouched,
    /// every bucket is full. Whole milliseconds, rounded up.
    pub(crate) fn fill_time(&self) -> Duration {
        Duration::from_millis(self.capacity().div_ceil(self.units_per_milli()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rate_zero_burst_and_bad_windows_are_refused() {
        assert_eq!(RateLimit::new(0, 1), Err(RateLimitError::ZeroRate));
        assert_eq!(RateLimit::new(1, 0), Err(RateLimitError::ZeroBurst));
        let short = Duration::from_micros(999);
        assert_eq!(
            RateLimit::per_window(1, short, 1),
            Err(RateLimitError::InvalidWindow(short))
        );
        let long = Duration::from_millis(u64::from(u32::MAX) + 1);
        assert_eq!(
            RateLimit::per_window(1, long, 1),
            Err(RateLimitError::InvalidWindow(long))
        );
    }

    #[test]
    fn per_second_is_a_one_second_window() {
        let limit = RateLimit::new(5, 20).unwrap();
        assert_eq!(limit.tokens(), 5);
        assert_eq!(limit.window(), Duration::from_secs(1));
        assert_eq!(limit.burst(), 20);
        assert_eq!(
            limit,
            RateLimit::per_window(5, Duration::from_millis(1000), 20).unwrap()
        );
    }

    #[test]
    fn fill_time_is_burst_over_rate_rounded_up() {
        assert_eq!(
            RateLimit::new(5, 20).unwrap().fill_time(),
            Duration::from_secs(4)
        );
        assert_eq!(
            RateLimit::new(3, 1).unwrap().fill_time(),
            Duration::from_millis(334)
        );
        let largest =
            RateLimit::per_window(1, Duration::from_millis(u64::from(u32::MAX)), u32::MAX).unwrap();
        assert_eq!(
            largest.capacity(),
            u64::from(u32::MAX) * u64::from(u32::MAX)
        );
    }
}
