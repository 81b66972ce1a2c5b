//! Inflating one received permessage-deflate message.

use libdeflater::{DecompressionError, Decompressor};

use super::MESSAGE_TAIL;
use crate::error::ProtocolError;

/// After the restored tail, a final, empty block with fixed Huffman codes
/// (BFINAL = 1, BTYPE = 01, end-of-block): libdeflate inflates only whole
/// DEFLATE streams, and a message ends without a final block.
const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

/// The first output size tried, as a multiple of the compressed size; text
/// and JSON commonly compress 3-5x.
const FIRST_GUESS_RATIO: usize = 4;

/// The smallest first output size tried.
const FIRST_GUESS_MIN: usize = 4096;

/// Inflates received messages, one whole message at a time, without
/// context takeover.
///
/// One `Inflater` is meant to serve a whole shard: it holds the
/// decompressor and one output buffer that grows to the largest message
/// inflated and is reused. The size limit is enforced while inflating: a
/// small message that would inflate past it (a "zip bomb") fails without
/// the memory ever being reserved beyond the limit.
pub struct Inflater {
    decompressor: Decompressor,
    out: Vec<u8>,
}

impl Inflater {
    /// Creates an inflater with an empty output buffer.
    pub fn new() -> Self {
        Inflater {
            decompressor: Decompressor::new(),
            out: Vec::new(),
        }
    }

    /// Inflates one permessage-deflate message.
    ///
    /// `compressed` holds the message payload as received, with the RFC 7692
    /// tail stripped by the sender; this appends the tail (and a final empty
    /// block) to it in place, then inflates into the inflater's own buffer.
    /// The returned slice borrows that buffer until the next call.
    ///
    /// # Errors
    /// [`ProtocolError::DecompressedTooLarge`] when the message inflates to
    /// more than `max_size` bytes (close code 1009), and
    /// [`ProtocolError::InvalidCompressedData`] when it is not valid DEFLATE
    /// data (close code 1007).
    pub fn inflate(
        &mut self,
        compressed: &mut Vec<u8>,
        max_size: usize,
    ) -> Result<&[u8], ProtocolError> {
        compressed.extend_from_slice(&MESSAGE_TAIL);
        compressed.extend_from_slice(&FINAL_EMPTY_BLOCK);
        let mut capacity = compressed
            .len()
            .saturating_mul(FIRST_GUESS_RATIO)
            .max(FIRST_GUESS_MIN)
            .min(max_size);
        loop {
            if self.out.len() < capacity {
                self.out.resize(capacity, 0);
            }
            match self
                .decompressor
                .deflate_decompress(compressed, &mut self.out[..capacity])
            {
                Ok(written) => return Ok(&self.out[..written]),
                Err(DecompressionError::BadData) => {
                    return Err(ProtocolError::InvalidCompressedData);
                }
                Err(DecompressionError::InsufficientSpace) if capacity >= max_size => {
                    return Err(ProtocolError::DecompressedTooLarge { max: max_size });
                }
                Err(DecompressionError::InsufficientSpace) => {
                    capacity = capacity.saturating_mul(2).min(max_size);
                }
            }
        }
    }

    /// Frees the output buffer, for a shard that has gone quiet after
    /// inflating a large message.
    pub fn release_memory(&mut self) {
        self.out = Vec::new();
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("buffer_capacity", &self.out.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Hello" as RFC 7692 §7.2.3.1 shows it, compressed with the tail
    /// stripped.
    const RFC_HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn rfc_7692_hello_example_inflates() {
        let mut inflater = Inflater::new();
        let mut input = RFC_HELLO.to_vec();
        assert_eq!(inflater.inflate(&mut input, 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7692_stored_block_example_inflates() {
        // §7.2.3.2: "Hello" in a block with no compression.
        let mut input = vec![
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&mut input, 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7692_bfinal_example_inflates() {
        // §7.2.3.3: a final block followed by an empty stored block's byte.
        let mut input = vec![0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&mut input, 100).unwrap(), b"Hello");
    }

    #[test]
    fn empty_compressed_message_inflates_to_empty() {
        // An empty message compresses to one empty fixed block, tail stripped.
        let mut input = vec![0x02, 0x00];
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&mut input, 100).unwrap(), b"");
    }

    #[test]
    fn message_inflating_past_the_limit_is_too_large() {
        let payload = vec![b'a'; 1 << 20];
        let mut deflater = crate::deflate::Deflater::default();
        let mut input = deflater.compress(&payload).unwrap().to_vec();
        let mut inflater = Inflater::new();
        assert_eq!(
            inflater.inflate(&mut input.clone(), (1 << 20) - 1),
            Err(ProtocolError::DecompressedTooLarge { max: (1 << 20) - 1 })
        );
        assert_eq!(
            inflater.inflate(&mut input, 1 << 20).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn corrupt_compressed_data_is_invalid() {
        let mut inflater = Inflater::new();
        // BTYPE = 11 is reserved.
        let mut input = vec![0xff, 0xff, 0xff];
        assert_eq!(
            inflater.inflate(&mut input, 100),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    #[test]
    fn inflater_is_reused_across_messages_of_different_sizes() {
        let mut deflater = crate::deflate::Deflater::default();
        let mut inflater = Inflater::new();
        for size in [10_000, 100, 50_000, 7] {
            let payload = vec![b'z'; size];
            let mut input = match deflater.compress(&payload) {
                Some(bytes) => bytes.to_vec(),
                None => continue,
            };
            assert_eq!(inflater.inflate(&mut input, 1 << 20).unwrap(), &payload[..]);
        }
    }
}
