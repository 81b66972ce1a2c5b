//! Pacing a thread that must act at given times (the publishers of
//! `fanout`'s open loop and of `resume-storm`): block until each time,
//! sleeping while it is far and spinning the last stretch, as a sleep can
//! overshoot by about that much.

use std::thread;
use std::time::Duration;

/// How long before a due time the thread stops sleeping and spins,
/// nanoseconds.
const SPIN_NANOS: u64 = 100_000;

/// Blocks the thread until `due`, on the clock `now` reads (nanoseconds):
/// sleeps to within [`SPIN_NANOS`] of it, then spins.
pub(crate) fn wait_until(due: u64, now: impl Fn() -> u64) {
    loop {
        let left = due.saturating_sub(now());
        if left == 0 {
            return;
        }
        if left > SPIN_NANOS {
            thread::sleep(Duration::from_nanos(left - SPIN_NANOS));
        } else {
            std::hint::spin_loop();
        }
    }
}
