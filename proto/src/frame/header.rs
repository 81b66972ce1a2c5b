//! The frame header (RFC 6455 §5.2): parsing from a partial buffer and
//! encoding into a fixed array.

use super::opcode::OpCode;
use crate::error::ProtocolError;

/// The longest a frame header can be: 2 fixed bytes, an 8-byte extended
/// length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// The most payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2_RSV3: u8 = 0x30;
const MASKED: u8 = 0x80;

/// The fields of one frame header, decoded.
///
/// RSV2 and RSV3 have no field: no extension shardcast negotiates defines
/// them, so a header that sets them never parses. RSV1 is the
/// permessage-deflate "compressed" bit (RFC 7692 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the last frame of its message.
    pub fin: bool,
    /// RSV1: set on the first frame of a compressed message.
    pub rsv1: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame and no other.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes, as the header declares it.
    pub payload_len: u64,
}

impl FrameHeader {
    /// How many bytes [`FrameHeader::encode`] writes for this header: the
    /// shortest length encoding, plus 4 if a mask is present.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        let length = match self.payload_len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        if self.mask.is_some() {
            length + 4
        } else {
            length
        }
    }

    /// Writes this header into `out` and returns how many leading bytes of
    /// `out` it used.
    ///
    /// The header goes into its own small array, not in front of the
    /// payload, so the engine can send header and payload as two iovecs of
    /// one vectored write without copying the payload. The payload length
    /// takes the shortest encoding. A length with its top bit set cannot be
    /// sent (no slice is that long); it is written as is and the peer will
    /// refuse it.
    #[must_use = "only the returned number of bytes of `out` belong to the header"]
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        let mut first = self.opcode.as_u8();
        if self.fin {
            first |= FIN;
        }
        if self.rsv1 {
            first |= RSV1;
        }
        out[0] = first;
        let mask_bit = if self.mask.is_some() { MASKED } else { 0 };
        let mut len = match self.payload_len {
            // The match arm bounds the value, so the casts are exact.
            short @ 0..=125 => {
                out[1] = mask_bit | short as u8;
                2
            }
            medium @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(medium as u16).to_be_bytes());
                4
            }
            long => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&long.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }

    /// Parses a header from the start of `buf`, which may hold only part of it.
    ///
    /// Returns `Ok(Some((header, header_len)))` once the whole header is in
    /// `buf`, and `Ok(None)` while more bytes are needed. Errors surface as
    /// soon as the bytes that show them are present: reserved bits and
    /// opcodes with the first byte, a 64-bit length with its top bit set
    /// with the third. Non-minimal length encodings are accepted (liberal in
    /// what we accept). Role rules (masking) and control-frame rules are the
    /// decoder's: this only reads the format.
    #[must_use = "a parsed header tells how many bytes it used"]
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first & RSV2_RSV3 != 0 {
            return Err(ProtocolError::ReservedBitsSet((first & RSV2_RSV3) >> 4));
        }
        let opcode = OpCode::try_from(first & 0x0F)?;
        let Some(&second) = buf.get(1) else {
            return Ok(None);
        };
        let masked = second & MASKED != 0;
        let length_bytes = match second & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if length_bytes == 8 && buf.get(2).is_some_and(|&byte| byte & 0x80 != 0) {
            return Err(ProtocolError::InvalidPayloadLength);
        }
        let header_len = 2 + length_bytes + if masked { 4 } else { 0 };
        let Some(header) = buf.get(..header_len) else {
            return Ok(None);
        };
        let (payload_len, rest) = match length_bytes {
            2 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            8 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            _ => (u64::from(second & 0x7F), 2),
        };
        let mask = if masked {
            let mut key = [0; 4];
            key.copy_from_slice(&header[rest..rest + 4]);
            Some(key)
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin: first & FIN != 0,
                rsv1: first & RSV1 != 0,
                opcode,
                mask,
                payload_len,
            },
            header_len,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: false,
            opcode: OpCode::Binary,
            mask,
            payload_len,
        }
    }

    #[test]
    fn header_round_trips_across_every_length_encoding() {
        let lengths = [
            0,
            1,
            125,
            126,
            127,
            0xFFFF,
            0x1_0000,
            u64::from(u32::MAX) + 1,
        ];
        for payload_len in lengths {
            for mask in [None, Some([1, 2, 3, 4])] {
                let original = header(payload_len, mask);
                let mut out = [0; MAX_HEADER_LEN];
                let len = original.encode(&mut out);
                assert_eq!(len, original.encoded_len());
                assert_eq!(FrameHeader::parse(&out[..len]), Ok(Some((original, len))));
            }
        }
    }

    #[test]
    fn header_uses_the_shortest_length_encoding() {
        assert_eq!(header(125, None).encoded_len(), 2);
        assert_eq!(header(126, None).encoded_len(), 4);
        assert_eq!(header(0xFFFF, None).encoded_len(), 4);
        assert_eq!(header(0x1_0000, None).encoded_len(), 10);
        assert_eq!(header(0x1_0000, Some([0; 4])).encoded_len(), MAX_HEADER_LEN);
    }

    #[test]
    fn partial_header_asks_for_more_bytes_at_every_split() {
        let original = header(0x1_0000, Some([9, 8, 7, 6]));
        let mut out = [0; MAX_HEADER_LEN];
        let len = original.encode(&mut out);
        for split in 0..len {
            assert_eq!(FrameHeader::parse(&out[..split]), Ok(None), "split {split}");
        }
    }

    #[test]
    fn rsv2_and_rsv3_are_refused_from_the_first_byte() {
        assert_eq!(
            FrameHeader::parse(&[0x82 | 0x20]),
            Err(ProtocolError::ReservedBitsSet(0b010))
        );
        assert_eq!(
            FrameHeader::parse(&[0x82 | 0x10]),
            Err(ProtocolError::ReservedBitsSet(0b001))
        );
    }

    #[test]
    fn reserved_opcode_is_refused_from_the_first_byte() {
        assert_eq!(
            FrameHeader::parse(&[0x83]),
            Err(ProtocolError::ReservedOpcode(3))
        );
    }

    #[test]
    fn sixty_four_bit_length_with_top_bit_set_is_invalid_payload_length() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0x80]),
            Err(ProtocolError::InvalidPayloadLength)
        );
    }

    #[test]
    fn non_minimal_length_encodings_are_accepted() {
        let two_byte = [0x82, 126, 0, 5];
        let parsed = FrameHeader::parse(&two_byte).unwrap().unwrap();
        assert_eq!((parsed.0.payload_len, parsed.1), (5, 4));
        let eight_byte = [0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5];
        let parsed = FrameHeader::parse(&eight_byte).unwrap().unwrap();
        assert_eq!((parsed.0.payload_len, parsed.1), (5, 10));
    }

    #[test]
    fn rsv1_and_fin_bits_are_read() {
        let (parsed, _) = FrameHeader::parse(&[0x41, 0]).unwrap().unwrap();
        assert!(parsed.rsv1);
        assert!(!parsed.fin);
        assert_eq!(parsed.opcode, OpCode::Text);
    }
}
