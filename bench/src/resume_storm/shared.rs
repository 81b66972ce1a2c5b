//! What the generator's three threads share: the run's clock and phase,
//! who is ready, whether one failed, and the rooms' last positions once
//! the publishers stopped.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shardcast_proto::envelope::Position;

/// How often the controlling tasks look at what the others did.
pub(super) const POLL: Duration = Duration::from_millis(2);

/// What the generator's threads share.
pub(super) struct Shared {
    /// The run's clock: publish times are nanoseconds since.
    pub(super) start: Instant,
    /// The current phase (see [`phase`](super::phase)).
    pub(super) phase: AtomicU8,
    /// Publishers and probes connected and joined.
    pub(super) ready: AtomicUsize,
    /// A thread failed: the others stop waiting.
    pub(super) failed: AtomicBool,
    /// Each room's last position once the publishers stopped, the
    /// clients' rooms first, then the probes'.
    pub(super) finals: Mutex<Option<Vec<Position>>>,
}

impl Shared {
    /// Nanoseconds since the run's start.
    pub(super) fn nanos(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current phase.
    pub(super) fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// Moves to `phase`.
    pub(super) fn set(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
    }

    /// Whether a thread failed.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The rooms' last positions, once known.
    pub(super) fn finals(&self) -> Option<Vec<Position>> {
        self.finals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Waits until `done` holds, polling; false if `timeout` passed first or
/// a thread failed.
pub(super) async fn wait_for(
    shared: &Shared,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if shared.failed() || Instant::now() >= deadline {
            return false;
        }
        monoio::time::sleep(POLL).await;
    }
}
