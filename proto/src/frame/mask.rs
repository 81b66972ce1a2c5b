//! Payload masking (RFC 6455 §5.3), a word at a time.

/// XORs `buf` with the masking `key`, in place; applying it twice restores
/// the input, so this both masks and unmasks.
///
/// `offset` is the position of `buf[0]` within the frame's payload, so a
/// payload that arrives in several reads can be unmasked chunk by chunk:
/// pass the number of payload bytes already unmasked. Only `offset % 4`
/// matters.
///
/// The bulk runs on 8-byte words (which the compiler turns into SIMD
/// loads); only the last `buf.len() % 8` bytes take a byte loop.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that its first byte lines up with `buf[0]`; bytes
    // are read and written little-endian, so the rotation is the same on
    // every target.
    let shift = 8 * (offset % 4) as u32;
    let key = u32::from_le_bytes(key).rotate_right(shift);
    let word = u64::from(key) | (u64::from(key) << 32);
    let mut words = buf.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_le_bytes(bytes) ^ word).to_le_bytes());
    }
    // Every word covers whole key periods, so the tail starts at key phase 0.
    let key = key.to_le_bytes();
    for (index, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[index % 4];
    }
}

/// Writes `src` masked with `key` into `dst` (of the same length) in one
/// pass, for a client that must send a masked copy and keep its payload
/// intact: copying and then masking in place would read and write the
/// bytes twice.
pub(crate) fn mask_copy(dst: &mut [u8], src: &[u8], key: [u8; 4]) {
    debug_assert_eq!(dst.len(), src.len());
    let key32 = u32::from_le_bytes(key);
    let word = u64::from(key32) | (u64::from(key32) << 32);
    let mut dst_words = dst.chunks_exact_mut(8);
    let mut src_words = src.chunks_exact(8);
    for (out, chunk) in (&mut dst_words).zip(&mut src_words) {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        out.copy_from_slice(&(u64::from_le_bytes(bytes) ^ word).to_le_bytes());
    }
    let tail = dst_words.into_remainder().iter_mut();
    for (index, (out, byte)) in tail.zip(src_words.remainder()).enumerate() {
        *out = byte ^ key[index % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (index, byte) in buf.iter_mut().enumerate() {
            *byte ^= key[(offset + index) % 4];
        }
    }

    #[test]
    fn masked_copy_matches_byte_loop_for_every_length() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let input: Vec<u8> = (0..=300u32).map(|i| (i * 13 + 1) as u8).collect();
        for len in 0..=300 {
            let mut copy = vec![0; len];
            mask_copy(&mut copy, &input[..len], key);
            let mut plain = input[..len].to_vec();
            reference_mask(&mut plain, key, 0);
            assert_eq!(copy, plain, "len {len}");
        }
    }

    #[test]
    fn word_mask_matches_byte_loop_for_every_length_and_offset() {
        let key = [0x6d, 0xb6, 0xb2, 0x80];
        let input: Vec<u8> = (0..=300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=300 {
            for offset in 0..4 {
                let mut fast = input[..len].to_vec();
                let mut plain = fast.clone();
                apply_mask(&mut fast, key, offset);
                reference_mask(&mut plain, key, offset);
                assert_eq!(fast, plain, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn mask_applies_across_chunks_with_running_offset() {
        let key = [1, 2, 3, 4];
        let original: Vec<u8> = (0..100).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..=original.len() {
            let mut pieces = original.clone();
            let (head, tail) = pieces.split_at_mut(split);
            apply_mask(head, key, 0);
            apply_mask(tail, key, split);
            assert_eq!(pieces, whole, "split {split}");
        }
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        let original: Vec<u8> = (0..37).collect();
        let mut data = original.clone();
        apply_mask(&mut data, [0xAA, 0x55, 0x0F, 0xF0], 3);
        assert_ne!(data, original);
        apply_mask(&mut data, [0xAA, 0x55, 0x0F, 0xF0], 3);
        assert_eq!(data, original);
    }
}
