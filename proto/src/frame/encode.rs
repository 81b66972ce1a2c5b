//! Encoding frames and messages into caller-provided buffers.

use std::marker::PhantomData;

use super::decode::CloseFrame;
use super::header::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::mask_copy;
use super::opcode::OpCode;
use crate::close::CloseCode;
use crate::deflate::Deflater;
use crate::role::{Client, Role, Server};

/// How a role masks the frames it sends (RFC 6455 §5.3).
///
/// A server sends unmasked frames, so its key is `()` and one encoded frame
/// can be written to any number of connections. A client masks every frame
/// with a fresh key, which the caller supplies (this crate has no source of
/// randomness). Implemented for [`Server`] and [`Client`] only.
pub trait SendMask: Role {
    /// What the caller passes per frame: `()` for the server, the 4-byte
    /// masking key for the client.
    type Key: Copy;

    /// The masking key to put in the header, if this role masks.
    fn header_key(key: Self::Key) -> Option<[u8; 4]>;
}

impl SendMask for Server {
    type Key = ();

    fn header_key((): ()) -> Option<[u8; 4]> {
        None
    }
}

impl SendMask for Client {
    type Key = [u8; 4];

    fn header_key(key: [u8; 4]) -> Option<[u8; 4]> {
        Some(key)
    }
}

/// A request to encode something RFC 6455 forbids: a caller bug, not a
/// peer's fault, so it carries no close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A ping or pong payload longer than 125 bytes (RFC 6455 §5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlPayloadTooLong(usize),
    /// A close code that may not appear on the wire (1005, 1006, 1015, or
    /// outside 1000-4999); send `None` for a close without a code.
    #[error("close code {0} may not be sent")]
    CloseCodeNotAllowed(CloseCode),
}

/// Encodes the payload of a close frame into `out` and returns its length.
///
/// The payload is the 2-byte code followed by the reason, truncated on a
/// character boundary so the whole fits the 125 bytes a control frame may
/// carry: a long reason is cut, never refused.
///
/// # Errors
/// [`EncodeError::CloseCodeNotAllowed`] if the code may not be sent.
pub fn encode_close_payload(
    frame: CloseFrame<'_>,
    out: &mut [u8; MAX_CONTROL_PAYLOAD],
) -> Result<usize, EncodeError> {
    if !frame.code.is_allowed_on_wire() {
        return Err(EncodeError::CloseCodeNotAllowed(frame.code));
    }
    out[..2].copy_from_slice(&frame.code.0.to_be_bytes());
    let mut end = frame.reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !frame.reason.is_char_boundary(end) {
        end -= 1;
    }
    out[2..2 + end].copy_from_slice(&frame.reason.as_bytes()[..end]);
    Ok(2 + end)
}

/// Frames outgoing messages for one role, appending to buffers the caller owns.
///
/// Holds only configuration, so one encoder serves a whole shard. The
/// role decides masking at compile time: `Encoder<Server>` takes `()` where
/// `Encoder<Client>` takes a masking key (see [`SendMask`]). Encoding never
/// touches the caller's payload: a client's masked bytes are a copy.
#[derive(Debug)]
pub struct Encoder<R> {
    compression_threshold: usize,
    role: PhantomData<R>,
}

impl<R> Clone for Encoder<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Encoder<R> {}

impl<R: SendMask> Default for Encoder<R> {
    fn default() -> Self {
        Encoder::new()
    }
}

impl<R: SendMask> Encoder<R> {
    /// The smallest message, in bytes, that [`Encoder::text`] and
    /// [`Encoder::binary`] try to compress by default: 128.
    ///
    /// Below it DEFLATE's block overhead leaves little to save, and the CPU
    /// spent compressing costs more than the bytes saved.
    pub const DEFAULT_COMPRESSION_THRESHOLD: usize = 128;

    /// An encoder with the default compression threshold.
    #[must_use]
    pub const fn new() -> Self {
        Encoder {
            compression_threshold: Self::DEFAULT_COMPRESSION_THRESHOLD,
            role: PhantomData,
        }
    }

    /// An encoder that tries compression only for messages of at least
    /// `bytes` bytes. Lower values save bandwidth on small messages at the
    /// cost of CPU; messages that would not shrink are sent uncompressed
    /// whatever the threshold.
    #[must_use]
    pub const fn with_compression_threshold(bytes: usize) -> Self {
        Encoder {
            compression_threshold: bytes,
            role: PhantomData,
        }
    }

    /// The configured compression threshold, in bytes.
    #[must_use]
    pub const fn compression_threshold(&self) -> usize {
        self.compression_threshold
    }

    /// Appends one uncompressed frame (header, then payload) to `out`.
    ///
    /// The building block for fragmented messages: a Text or Binary frame
    /// with `fin` clear, Continuation frames, and a last one with `fin` set.
    /// It checks none of the RFC's rules on control frames; use
    /// [`Encoder::ping`], [`Encoder::pong`] and [`Encoder::close`] for those.
    pub fn frame(&self, out: &mut Vec<u8>, opcode: OpCode, fin: bool, payload: &[u8], key: R::Key) {
        write_frame(out, fin, false, opcode, payload, R::header_key(key));
    }

    /// Appends a whole text message as one frame, compressed through
    /// `deflater` when one is given (permessage-deflate was negotiated),
    /// the message is at least the compression threshold and compression
    /// makes it smaller. Returns whether it was compressed (RSV1 set).
    pub fn text(
        &self,
        out: &mut Vec<u8>,
        text: &str,
        deflater: Option<&mut Deflater>,
        key: R::Key,
    ) -> bool {
        self.message(out, OpCode::Text, text.as_bytes(), deflater, key)
    }

    /// Appends a whole binary message as one frame, compressed under the
    /// same conditions as [`Encoder::text`]. Returns whether it was
    /// compressed (RSV1 set).
    pub fn binary(
        &self,
        out: &mut Vec<u8>,
        payload: &[u8],
        deflater: Option<&mut Deflater>,
        key: R::Key,
    ) -> bool {
        self.message(out, OpCode::Binary, payload, deflater, key)
    }

    /// Appends a ping frame carrying `payload` (echoed back in the pong).
    ///
    /// # Errors
    /// [`EncodeError::ControlPayloadTooLong`] past 125 bytes; nothing is
    /// appended then.
    #[must_use = "an error means nothing was encoded"]
    pub fn ping(&self, out: &mut Vec<u8>, payload: &[u8], key: R::Key) -> Result<(), EncodeError> {
        self.control(out, OpCode::Ping, payload, key)
    }

    /// Appends a pong frame: the answer to a ping, with the ping's payload,
    /// or an unsolicited heartbeat.
    ///
    /// # Errors
    /// [`EncodeError::ControlPayloadTooLong`] past 125 bytes; nothing is
    /// appended then.
    #[must_use = "an error means nothing was encoded"]
    pub fn pong(&self, out: &mut Vec<u8>, payload: &[u8], key: R::Key) -> Result<(), EncodeError> {
        self.control(out, OpCode::Pong, payload, key)
    }

    /// Appends a close frame: with no payload for `None`, otherwise the code
    /// and the reason (cut on a character boundary to fit 125 bytes).
    ///
    /// # Errors
    /// [`EncodeError::CloseCodeNotAllowed`] for a code that may not be
    /// sent; nothing is appended then.
    #[must_use = "an error means nothing was encoded"]
    pub fn close(
        &self,
        out: &mut Vec<u8>,
        frame: Option<CloseFrame<'_>>,
        key: R::Key,
    ) -> Result<(), EncodeError> {
        let mut payload = [0; MAX_CONTROL_PAYLOAD];
        let len = match frame {
            Some(frame) => encode_close_payload(frame, &mut payload)?,
            None => 0,
        };
        write_frame(
            out,
            true,
            false,
            OpCode::Close,
            &payload[..len],
            R::header_key(key),
        );
        Ok(())
    }

    fn control(
        &self,
        out: &mut Vec<u8>,
        opcode: OpCode,
        payload: &[u8],
        key: R::Key,
    ) -> Result<(), EncodeError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(EncodeError::ControlPayloadTooLong(payload.len()));
        }
        write_frame(out, true, false, opcode, payload, R::header_key(key));
        Ok(())
    }

    /// Appends a whole message of `opcode` as one frame, compressed under
    /// the same conditions as [`Encoder::text`]; returns whether it was.
    ///
    /// For callers that hold a message's bytes without its type, such as a
    /// frame prepared once for many connections. Like [`Encoder::frame`],
    /// it trusts the caller: a Text payload must be UTF-8, and `opcode`
    /// should be Text or Binary.
    pub fn message(
        &self,
        out: &mut Vec<u8>,
        opcode: OpCode,
        payload: &[u8],
        deflater: Option<&mut Deflater>,
        key: R::Key,
    ) -> bool {
        let mask = R::header_key(key);
        if payload.len() >= self.compression_threshold {
            if let Some(compressed) = deflater.and_then(|deflater| deflater.compress(payload)) {
                write_frame(out, true, true, opcode, compressed, mask);
                return true;
            }
        }
        write_frame(out, true, false, opcode, payload, mask);
        false
    }
}

fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0; MAX_HEADER_LEN];
    let head_len = header.encode(&mut head);
    out.reserve(head_len + payload.len());
    out.extend_from_slice(&head[..head_len]);
    match mask {
        None => out.extend_from_slice(payload),
        Some(key) => {
            let start = out.len();
            out.resize(start + payload.len(), 0);
            mask_copy(&mut out[start..], payload, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_are_unmasked_and_shareable() {
        let mut out = Vec::new();
        Encoder::<Server>::new().frame(&mut out, OpCode::Binary, true, b"abc", ());
        assert_eq!(out, [0x82, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn client_frames_are_masked_copies_with_the_given_key() {
        let payload = b"Hello".to_vec();
        let mut out = Vec::new();
        Encoder::<Client>::new().frame(
            &mut out,
            OpCode::Text,
            true,
            &payload,
            [0x37, 0xfa, 0x21, 0x3d],
        );
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        assert_eq!(payload, b"Hello", "payload untouched");
    }

    #[test]
    fn encoding_appends_to_the_buffer() {
        let mut out = vec![0xEE];
        let encoder = Encoder::<Server>::new();
        encoder.frame(&mut out, OpCode::Text, false, b"a", ());
        encoder.frame(&mut out, OpCode::Continuation, true, b"b", ());
        assert_eq!(out, [0xEE, 0x01, 1, b'a', 0x80, 1, b'b']);
    }

    #[test]
    fn payload_lengths_take_the_shortest_encoding() {
        let encoder = Encoder::<Server>::new();
        for (len, header_len) in [(125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            encoder.frame(&mut out, OpCode::Binary, true, &vec![0; len], ());
            assert_eq!(out.len(), header_len + len, "len {len}");
        }
    }

    #[test]
    fn compressible_message_above_threshold_is_sent_compressed_with_rsv1() {
        let mut deflater = Deflater::new(Deflater::DEFAULT_LEVEL);
        let text = "shardcast ".repeat(50);
        let mut out = Vec::new();
        let compressed = Encoder::<Server>::new().text(&mut out, &text, Some(&mut deflater), ());
        assert!(compressed);
        assert_eq!(out[0], 0x80 | 0x40 | 0x01);
        assert!(out.len() < text.len());
    }

    #[test]
    fn message_below_threshold_is_sent_uncompressed() {
        let mut deflater = Deflater::new(Deflater::DEFAULT_LEVEL);
        let text = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut out = Vec::new();
        let encoder = Encoder::<Server>::new();
        assert!(!encoder.text(&mut out, text, Some(&mut deflater), ()));
        assert_eq!(out[0], 0x81);
        out.clear();
        let eager = Encoder::<Server>::with_compression_threshold(1);
        assert!(eager.text(&mut out, text, Some(&mut deflater), ()));
    }

    #[test]
    fn incompressible_message_is_sent_uncompressed() {
        let mut deflater = Deflater::new(Deflater::DEFAULT_LEVEL);
        // xorshift64: bytes DEFLATE cannot shrink.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let mut out = Vec::new();
        let encoder = Encoder::<Server>::with_compression_threshold(0);
        assert!(!encoder.binary(&mut out, &noise, Some(&mut deflater), ()));
        assert_eq!(out[0], 0x82);
        assert_eq!(&out[4..], &noise[..]);
    }

    #[test]
    fn message_without_deflater_is_sent_uncompressed() {
        let mut out = Vec::new();
        let payload = vec![b'x'; 1000];
        assert!(!Encoder::<Server>::new().binary(&mut out, &payload, None, ()));
        assert_eq!(out[0], 0x82);
    }

    #[test]
    fn control_payload_longer_than_125_is_refused_on_send() {
        let mut out = Vec::new();
        let encoder = Encoder::<Client>::new();
        assert_eq!(
            encoder.ping(&mut out, &[0; 126], [1, 2, 3, 4]),
            Err(EncodeError::ControlPayloadTooLong(126))
        );
        assert!(out.is_empty());
        assert_eq!(encoder.pong(&mut out, &[0; 125], [1, 2, 3, 4]), Ok(()));
        assert_eq!(out.len(), 2 + 4 + 125);
    }

    #[test]
    fn close_payload_is_code_then_reason() {
        let mut payload = [0; MAX_CONTROL_PAYLOAD];
        let frame = CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: "bye",
        };
        let len = encode_close_payload(frame, &mut payload).unwrap();
        assert_eq!(&payload[..len], &[0x03, 0xE9, b'b', b'y', b'e']);
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary_to_fit_125_bytes() {
        let mut payload = [0; MAX_CONTROL_PAYLOAD];
        // 61 two-byte characters = 122 bytes, then a 4-byte one that cannot fit.
        let reason = format!("{}😀tail", "é".repeat(61));
        let frame = CloseFrame {
            code: CloseCode::NORMAL,
            reason: &reason,
        };
        let len = encode_close_payload(frame, &mut payload).unwrap();
        assert_eq!(len, 2 + 122);
        assert_eq!(
            std::str::from_utf8(&payload[2..len]).unwrap(),
            "é".repeat(61)
        );
        let ascii = "x".repeat(200);
        let frame = CloseFrame {
            code: CloseCode::NORMAL,
            reason: &ascii,
        };
        assert_eq!(encode_close_payload(frame, &mut payload), Ok(125));
    }

    #[test]
    fn close_code_not_allowed_on_wire_is_refused_on_send() {
        let mut out = Vec::new();
        let frame = CloseFrame {
            code: CloseCode::NO_STATUS,
            reason: "",
        };
        assert_eq!(
            Encoder::<Server>::new().close(&mut out, Some(frame), ()),
            Err(EncodeError::CloseCodeNotAllowed(CloseCode::NO_STATUS))
        );
        assert!(out.is_empty());
        assert_eq!(Encoder::<Server>::new().close(&mut out, None, ()), Ok(()));
        assert_eq!(out, [0x88, 0]);
    }
}
