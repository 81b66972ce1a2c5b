//! Frame opcodes (RFC 6455 §5.2, §11.8).

use crate::error::ProtocolError;

/// What a frame carries: a piece of a data message, or a control message.
///
/// Only the six opcodes RFC 6455 defines exist here; the reserved ones
/// (0x3-0x7, 0xB-0xF) are refused when parsed
/// ([`ProtocolError::ReservedOpcode`]), since no extension shardcast
/// negotiates defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: a later fragment of the message the last Text or Binary frame began.
    Continuation = 0x0,
    /// 0x1: the first (or only) frame of a UTF-8 text message.
    Text = 0x1,
    /// 0x2: the first (or only) frame of a binary message.
    Binary = 0x2,
    /// 0x8: the close handshake; the payload holds an optional code and reason.
    Close = 0x8,
    /// 0x9: a ping, which the receiver answers with a pong carrying the same payload.
    Ping = 0x9,
    /// 0xA: a pong, the answer to a ping or an unsolicited heartbeat.
    Pong = 0xA,
}

impl OpCode {
    /// Whether this is a control opcode (Close, Ping, Pong).
    ///
    /// Control frames may appear between the fragments of a data message,
    /// must not be fragmented themselves and carry at most 125 bytes
    /// (RFC 6455 §5.5).
    #[must_use]
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// The 4-bit value of this opcode on the wire.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for OpCode {
    type Error = ProtocolError;

    /// Reads the low 4 bits of a frame's first byte; the high bits must be clear.
    fn try_from(value: u8) -> Result<Self, ProtocolError> {
        match value {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            other => Err(ProtocolError::ReservedOpcode(other)),
        }
    }
}

impl From<OpCode> for u8 {
    fn from(opcode: OpCode) -> u8 {
        opcode.as_u8()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defined_opcodes_round_trip_through_their_wire_value() {
        for opcode in [
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Close,
            OpCode::Ping,
            OpCode::Pong,
        ] {
            assert_eq!(OpCode::try_from(opcode.as_u8()), Ok(opcode));
        }
    }

    #[test]
    fn reserved_opcodes_are_protocol_errors() {
        for value in (0x3..=0x7).chain(0xB..=0xF) {
            let error = OpCode::try_from(value).unwrap_err();
            assert_eq!(error, ProtocolError::ReservedOpcode(value));
            assert_eq!(error.close_code(), crate::CloseCode::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn only_close_ping_and_pong_are_control_opcodes() {
        assert!(OpCode::Close.is_control());
        assert!(OpCode::Ping.is_control());
        assert!(OpCode::Pong.is_control());
        assert!(!OpCode::Continuation.is_control());
        assert!(!OpCode::Text.is_control());
        assert!(!OpCode::Binary.is_control());
    }
}
