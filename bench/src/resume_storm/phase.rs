//! Phases of a run, which the publishers stamp on each payload.

/// Connecting and joining.
pub(super) const SETUP: u8 = 0;
/// Publishing, not measured.
pub(super) const WARMUP: u8 = 1;
/// The probes' baseline window.
pub(super) const BASELINE: u8 = 2;
/// From the cut until every client is back.
pub(super) const STORM: u8 = 3;
/// Every client back; publishing goes on.
pub(super) const SETTLE: u8 = 4;
/// Publishing stops; the streams drain.
pub(super) const STOP: u8 = 5;
