//! Compressing one message for permessage-deflate.

use libdeflater::{CompressionLvl, Compressor};

/// Compresses outgoing messages, one whole message at a time, without
/// context takeover.
///
/// One `Deflater` is meant to serve a whole shard: it holds the compressor
/// state and one output buffer that grows to the largest message compressed
/// and is reused, so steady state does not allocate.
pub struct Deflater {
    compressor: Compressor,
    out: Vec<u8>,
}

impl Deflater {
    /// The libdeflate level used when none is configured: a good trade of
    /// speed against size for chat-sized and JSON-like messages.
    pub const DEFAULT_LEVEL: u8 = 6;

    /// Creates a compressor at `level`: 1 (fastest) to 12 (smallest);
    /// values above 12 are taken as 12 and 0 as 1.
    pub fn new(level: u8) -> Self {
        let level = CompressionLvl::new(i32::from(level.clamp(1, 12)))
            .unwrap_or_else(|_| CompressionLvl::default());
        Deflater {
            compressor: Compressor::new(level),
            out: Vec::new(),
        }
    }

    /// Compresses `payload` as one permessage-deflate message.
    ///
    /// Returns the bytes to send as the payload of a message with RSV1 set,
    /// or `None` when compression would not make the message smaller, in
    /// which case the caller sends `payload` uncompressed. The returned
    /// slice borrows the deflater's buffer until the next call.
    ///
    /// libdeflate ends its output with a final block (BFINAL = 1), so, as
    /// RFC 7692 §7.2.3.3 allows, the message is that output followed by an
    /// empty stored block with its four-byte tail removed: one `0x00` byte.
    #[must_use]
    pub fn compress(&mut self, payload: &[u8]) -> Option<&[u8]> {
        if payload.is_empty() {
            return None;
        }
        let bound = self.compressor.deflate_compress_bound(payload.len());
        // The output may not reach `payload.len()`: the stored-block byte
        // makes it one longer, and then it would save nothing.
        let useful = bound.min(payload.len() - 1);
        if self.out.len() < useful.max(1) {
            self.out.resize(useful.max(1), 0);
        }
        let written = self
            .compressor
            .deflate_compress(payload, &mut self.out[..useful])
            .ok()?;
        if written + 1 >= payload.len() {
            return None;
        }
        self.out[written] = 0x00;
        Some(&self.out[..=written])
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater::new(Deflater::DEFAULT_LEVEL)
    }
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("buffer_capacity", &self.out.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Inflater;

    #[test]
    fn compressible_message_is_compressed_and_inflates_back() {
        let payload = b"hello hello hello hello hello hello hello hello".repeat(20);
        let mut deflater = Deflater::default();
        let compressed = deflater.compress(&payload).expect("compresses").to_vec();
        assert!(compressed.len() < payload.len());
        let mut inflater = Inflater::new();
        let mut input = compressed;
        assert_eq!(inflater.inflate(&mut input, 1 << 20).unwrap(), &payload[..]);
    }

    #[test]
    fn message_that_compression_would_not_shrink_is_left_uncompressed() {
        let mut deflater = Deflater::default();
        assert!(deflater.compress(b"").is_none());
        assert!(deflater.compress(b"a").is_none());
        assert!(deflater.compress(b"abc").is_none());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        assert!(deflater.compress(&noise).is_none());
    }

    #[test]
    fn compressed_message_ends_with_an_empty_stored_block_minus_its_tail() {
        let mut deflater = Deflater::default();
        let compressed = deflater.compress(&[b'x'; 1000]).unwrap();
        assert_eq!(compressed.last(), Some(&0x00));
    }

    #[test]
    fn every_level_produces_inflatable_messages() {
        let payload = br#"{"room":"lobby","text":"the same words again and again"}"#.repeat(8);
        let mut inflater = Inflater::new();
        for level in 0..=13 {
            let mut deflater = Deflater::new(level);
            let mut input = deflater.compress(&payload).unwrap().to_vec();
            assert_eq!(inflater.inflate(&mut input, 1 << 20).unwrap(), &payload[..]);
        }
    }
}
