//! The stamp at the start of every payload: the phase it was published
//! in and its intended publish time, from which a probe measures its
//! latency.

/// The shortest payload: the phase it was published in (one digit), then
/// its intended publish time in 16 hex digits.
pub(super) const MIN_SIZE: usize = 17;

/// Writes `phase` and `due` (nanoseconds since the run's start) over the
/// start of `payload`, which is at least [`MIN_SIZE`] bytes.
pub(super) fn write_stamp(payload: &mut [u8], phase: u8, due: u64) {
    payload[0] = b'0' + phase;
    for (index, digit) in payload[1..MIN_SIZE].iter_mut().enumerate() {
        let nibble = (due >> (60 - 4 * index)) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
}

/// The phase and publish time a payload carries.
pub(super) fn read_stamp(payload: &[u8]) -> Option<(u8, u64)> {
    let phase = payload.first()?.checked_sub(b'0')?;
    let digits = std::str::from_utf8(payload.get(1..MIN_SIZE)?).ok()?;
    Some((phase, u64::from_str_radix(digits, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume_storm::phase;

    #[test]
    fn stamps_carry_phase_and_time_through_payloads() {
        let mut payload = vec![b'.'; 24];
        write_stamp(&mut payload, phase::STORM, 0x0123_4567_89ab_cdef);
        assert_eq!(&payload[..MIN_SIZE], b"30123456789abcdef");
        assert_eq!(read_stamp(&payload), Some((3, 0x0123_4567_89ab_cdef)));
        assert_eq!(read_stamp(b"2000000000000000f"), Some((2, 15)));
        assert_eq!(read_stamp(b"3short"), None);
        assert_eq!(read_stamp(b"30123456789abcdeX"), None);
        assert_eq!(read_stamp(b""), None);
    }
}
