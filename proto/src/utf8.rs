//! Incremental UTF-8 validation of text messages across fragments.
//!
//! A text message may arrive in many frames, and each frame in many reads;
//! a code point may be split anywhere. [`Utf8Validator`] checks each chunk
//! as it arrives and fails as soon as the bytes seen so far cannot begin a
//! valid UTF-8 string, so a peer streaming garbage is dropped at once
//! instead of after the whole message (Autobahn cases 6.x test this).

use crate::error::ProtocolError;

/// Streaming UTF-8 validation state: at most the 3 bytes of a code point
/// that the last chunk left unfinished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    pending: [u8; 3],
    pending_len: u8,
}

/// How many bytes the UTF-8 sequence a lead byte starts takes. Only called
/// on a lead byte already accepted as the start of an incomplete sequence.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    #[must_use]
    pub const fn new() -> Self {
        Utf8Validator {
            pending: [0; 3],
            pending_len: 0,
        }
    }

    /// Validates the next `chunk` of the message.
    ///
    /// Fails with [`ProtocolError::InvalidUtf8`] as soon as the bytes fed so
    /// far cannot be the start of valid UTF-8: overlong encodings,
    /// surrogates, code points past U+10FFFF, stray continuation bytes. A
    /// code point cut off at the end of `chunk` is kept and completed by the
    /// next call.
    #[must_use = "an error means the text is invalid"]
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let mut rest = chunk;
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]) - have;
            let take = need.min(rest.len());
            let mut joined = [0; 4];
            joined[..have].copy_from_slice(&self.pending[..have]);
            joined[have..have + take].copy_from_slice(&rest[..take]);
            match simdutf8::compat::from_utf8(&joined[..have + take]) {
                Ok(_) => self.pending_len = 0,
                Err(error) if error.error_len().is_none() && take < need => {
                    self.pending[have..have + take].copy_from_slice(&rest[..take]);
                    self.pending_len += take as u8;
                    return Ok(());
                }
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
            rest = &rest[take..];
        }
        match simdutf8::compat::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_none() => {
                let tail = &rest[error.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Ends the message: fails if it stopped in the middle of a code point.
    /// Resets the validator for the next message either way.
    #[must_use = "an error means the text is invalid"]
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let complete = self.pending_len == 0;
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }

    /// Forgets any pending bytes, ready for a new message.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_in_pieces(bytes: &[u8], splits: &[usize]) -> Result<(), ProtocolError> {
        let mut validator = Utf8Validator::new();
        let mut start = 0;
        for &split in splits {
            validator.feed(&bytes[start..split])?;
            start = split;
        }
        validator.feed(&bytes[start..])?;
        validator.finish()
    }

    const VALID: &str = "a\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}é€😀ok";

    #[test]
    fn valid_text_passes_when_split_at_every_byte_position() {
        let bytes = VALID.as_bytes();
        for split in 0..=bytes.len() {
            assert_eq!(validate_in_pieces(bytes, &[split]), Ok(()), "split {split}");
        }
    }

    #[test]
    fn valid_text_passes_when_split_at_every_pair_of_positions() {
        let bytes = VALID.as_bytes();
        for first in 0..=bytes.len() {
            for second in first..=bytes.len() {
                assert_eq!(validate_in_pieces(bytes, &[first, second]), Ok(()));
            }
        }
    }

    #[test]
    fn valid_text_passes_when_fed_one_byte_at_a_time() {
        let bytes = VALID.as_bytes();
        let splits: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(validate_in_pieces(bytes, &splits), Ok(()));
    }

    #[test]
    fn invalid_sequences_fail_at_every_split() {
        let invalid: [&[u8]; 9] = [
            b"\xC0\xAF",         // overlong '/'
            b"\xE0\x80\xAF",     // overlong 3-byte
            b"\xF0\x80\x80\xAF", // overlong 4-byte
            b"\xED\xA0\x80",     // surrogate U+D800
            b"\xED\xBF\xBF",     // surrogate U+DFFF
            b"\xF4\x90\x80\x80", // U+110000
            b"\xF5\x80\x80\x80", // lead byte past U+10FFFF
            b"\x80",             // stray continuation
            b"ab\xE2\x82\x28cd", // bad continuation
        ];
        for bytes in invalid {
            for split in 0..=bytes.len() {
                assert_eq!(
                    validate_in_pieces(bytes, &[split]),
                    Err(ProtocolError::InvalidUtf8),
                    "{bytes:x?} split {split}"
                );
            }
        }
    }

    #[test]
    fn invalid_prefix_fails_fast_before_the_message_ends() {
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b"hello"), Ok(()));
        assert_eq!(validator.feed(b"\xED\xA0"), Err(ProtocolError::InvalidUtf8));
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b"\xF4"), Ok(()));
        assert_eq!(validator.feed(b"\x90"), Err(ProtocolError::InvalidUtf8));
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b"\xE0"), Ok(()));
        assert_eq!(validator.feed(b"\x80"), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn incomplete_trailing_sequence_fails_on_finish() {
        for bytes in [&b"\xE2\x82"[..], b"\xF0\x9F\x98", b"\xC3"] {
            let mut validator = Utf8Validator::new();
            assert_eq!(validator.feed(bytes), Ok(()));
            assert_eq!(validator.finish(), Err(ProtocolError::InvalidUtf8));
            assert_eq!(validator.finish(), Ok(()), "finish resets");
        }
    }

    #[test]
    fn empty_chunks_change_nothing() {
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b""), Ok(()));
        assert_eq!(validator.feed(b"\xE2"), Ok(()));
        assert_eq!(validator.feed(b""), Ok(()));
        assert_eq!(validator.feed(b"\x82\xAC"), Ok(()));
        assert_eq!(validator.finish(), Ok(()));
    }
}
