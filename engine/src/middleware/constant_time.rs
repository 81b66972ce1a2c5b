//! Comparison of secrets in time that does not depend on where they differ.

use std::hint::black_box;

/// Whether `a` and `b` are equal, looking at every byte whatever the first
/// difference, so the time taken does not tell a guesser how much of a key
/// it got right. The length is not secret: slices of different lengths are
/// unequal at once.
pub(super) fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimizer from turning the fold into an early exit.
    black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_for_the_same_bytes() {
        assert!(eq(b"", b""));
        assert!(eq(b"s3cret", b"s3cret"));
        assert!(!eq(b"s3cret", b"s3creT"));
        assert!(!eq(b"s3cret", b"S3cret"));
        assert!(!eq(b"s3cret", b"s3cre"));
        assert!(!eq(b"s3cret", b"s3cret!"));
    }

    #[test]
    fn every_single_bit_difference_is_seen() {
        let key = [0x5a_u8; 32];
        for at in 0..key.len() {
            for bit in 0..8 {
                let mut other = key;
                other[at] ^= 1 << bit;
                assert!(!eq(&key, &other), "byte {at} bit {bit}");
            }
        }
    }
}
