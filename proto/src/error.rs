//! Why a WebSocket connection failed, and which close code tells the peer.

use crate::close::CloseCode;

/// A violation of RFC 6455 or RFC 7692 by the peer, or a configured limit it
/// exceeded.
///
/// Every variant maps to the close code that must be sent before the
/// connection is dropped ([`ProtocolError::close_code`]); that mapping lives
/// in one place, here. The `Display` text is for logs and is not stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A reserved bit (RSV1-3) was set that no negotiated extension defines.
    #[error("reserved bits {0:#05b} set without a negotiated extension")]
    ReservedBitsSet(u8),
    /// The opcode is one of the reserved ones (0x3-0x7, 0xB-0xF).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A client sent an unmasked frame (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server sent a masked frame (RFC 6455 §5.1).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A control frame had FIN clear (RFC 6455 §5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame's payload was longer than 125 bytes (RFC 6455 §5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(u64),
    /// A control frame had RSV1 (compression) set (RFC 7692 §6.1).
    #[error("compressed control frame")]
    CompressedControlFrame,
    /// A continuation frame arrived with no fragmented message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was
    /// still waiting for its continuation frames.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A continuation frame had RSV1 set; only a message's first frame may
    /// (RFC 7692 §6.1).
    #[error("compression bit set on a continuation frame")]
    CompressedContinuation,
    /// The 64-bit payload length had its most significant bit set (RFC 6455
    /// §5.2). Non-minimal length encodings are accepted, not refused.
    #[error("invalid payload length encoding")]
    InvalidPayloadLength,
    /// A close frame's payload was a single byte.
    #[error("close frame payload of one byte")]
    InvalidClosePayload,
    /// A close frame carried a code that may not be sent (RFC 6455 §7.4).
    #[error("close code {0} is not allowed on the wire")]
    InvalidCloseCode(u16),
    /// A frame arrived after the peer's close frame.
    #[error("frame received after the close frame")]
    FrameAfterClose,
    /// A text message or a close reason was not valid UTF-8.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// Compressed data could not be inflated (RFC 7692 §7.2.2).
    #[error("corrupt compressed message")]
    InvalidCompressedData,
    /// A frame declared a payload longer than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The length the frame header declared.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message's fragments added up to more than the configured limit.
    #[error("message of at least {size} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The size reached when the limit was crossed.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A compressed message inflated to more than the configured limit.
    #[error("message inflates to more than the limit of {max} bytes")]
    DecompressedTooLarge {
        /// The configured limit.
        max: usize,
    },
}

impl ProtocolError {
    /// The close code to send to the peer for this error.
    ///
    /// 1007 for payload data that does not match its type, 1009 for size
    /// limits, 1002 for everything else.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::MessageTooLarge { .. }
            | ProtocolError::DecompressedTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl From<ProtocolError> for CloseCode {
    fn from(error: ProtocolError) -> Self {
        error.close_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits_close_with_1009() {
        let errors = [
            ProtocolError::FrameTooLarge { size: 10, max: 5 },
            ProtocolError::MessageTooLarge { size: 10, max: 5 },
            ProtocolError::DecompressedTooLarge { max: 5 },
        ];
        for error in errors {
            assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG, "{error}");
        }
    }

    #[test]
    fn invalid_payload_data_closes_with_1007() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode(1007));
        assert_eq!(
            ProtocolError::InvalidCompressedData.close_code(),
            CloseCode(1007)
        );
    }

    #[test]
    fn framing_violations_close_with_1002() {
        let errors = [
            ProtocolError::ReservedBitsSet(0b100),
            ProtocolError::ReservedOpcode(3),
            ProtocolError::UnmaskedFrame,
            ProtocolError::MaskedFrame,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::ControlFrameTooLong(126),
            ProtocolError::CompressedControlFrame,
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::CompressedContinuation,
            ProtocolError::InvalidPayloadLength,
            ProtocolError::InvalidClosePayload,
            ProtocolError::InvalidCloseCode(1005),
            ProtocolError::FrameAfterClose,
        ];
        for error in errors {
            assert_eq!(error.close_code(), CloseCode::PROTOCOL_ERROR, "{error}");
        }
    }
}
