//! Why an envelope was refused, and what the peer is told about it.

use flatbuffers::InvalidFlatbuffer;

use super::ErrorCode;
use crate::close::CloseCode;

/// Why [`read`](super::read) refused a buffer.
///
/// A client that sends an envelope the server cannot read broke the
/// `shardcast.v1` protocol: the server closes the connection with
/// [`EnvelopeError::close_code`] (1007 for invalid data, 1009 for limits).
/// Where a softer answer fits (the engine may choose to keep the
/// connection), [`EnvelopeError::error_code`] gives the `ErrorCode` of an
/// `Error` envelope. The `Display` text is for logs and is not stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The message was empty.
    #[error("empty envelope")]
    Empty,
    /// The message was longer than [`VerifyLimits::max_bytes`](super::VerifyLimits::max_bytes).
    #[error("envelope of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length of the message.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The buffer does not carry the `SCV1` file identifier: it is not a
    /// `shardcast.v1` envelope (another schema, or garbage).
    #[error("not a shardcast.v1 envelope (file identifier is not SCV1)")]
    WrongIdentifier,
    /// Tables were nested deeper than [`VerifyLimits::max_depth`](super::VerifyLimits::max_depth).
    #[error("envelope nests tables deeper than the limit")]
    TooDeep,
    /// The envelope holds more tables than [`VerifyLimits::max_tables`](super::VerifyLimits::max_tables)
    /// (a batch with too many items, a welcome with too many rooms).
    #[error("envelope holds more tables than the limit")]
    TooManyTables,
    /// The envelope, read as a tree, is larger than
    /// [`VerifyLimits::max_apparent_size`](super::VerifyLimits::max_apparent_size)
    /// (shared sub-objects counted once per reference).
    #[error("envelope's apparent size exceeds the limit")]
    ApparentSizeTooLarge,
    /// The FlatBuffers verifier refused the buffer: an offset out of
    /// bounds, a missing required field, invalid UTF-8 in a string, an
    /// inconsistent union, ...
    #[error("malformed envelope")]
    Malformed(#[source] InvalidFlatbuffer),
    /// The envelope, or an item of a batch, has no body.
    #[error("envelope without a body")]
    MissingBody,
    /// A batch contains a batch. Batches are one level deep by definition
    /// of the protocol, so the reader needs no recursion and the work per
    /// message stays bounded.
    #[error("batch inside a batch")]
    NestedBatch,
}

impl EnvelopeError {
    /// The WebSocket close code for a peer that sent this: 1009 when the
    /// envelope exceeds a size limit, 1007 (invalid payload data) for
    /// everything else.
    pub fn close_code(&self) -> CloseCode {
        if self.is_size_limit() {
            CloseCode::MESSAGE_TOO_BIG
        } else {
            CloseCode::INVALID_PAYLOAD
        }
    }

    /// The `ErrorCode` for an `Error` envelope that reports this to the
    /// peer: `TooLarge` for size limits, `BadRequest` for everything else.
    pub fn error_code(&self) -> ErrorCode {
        if self.is_size_limit() {
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadRequest
        }
    }

    fn is_size_limit(&self) -> bool {
        matches!(
            self,
            EnvelopeError::TooLarge { .. }
                | EnvelopeError::TooManyTables
                | EnvelopeError::ApparentSizeTooLarge
        )
    }
}

impl From<InvalidFlatbuffer> for EnvelopeError {
    fn from(error: InvalidFlatbuffer) -> Self {
        match error {
            InvalidFlatbuffer::DepthLimitReached => EnvelopeError::TooDeep,
            InvalidFlatbuffer::TooManyTables => EnvelopeError::TooManyTables,
            InvalidFlatbuffer::ApparentSizeTooLarge => EnvelopeError::ApparentSizeTooLarge,
            other => EnvelopeError::Malformed(other),
        }
    }
}

impl From<EnvelopeError> for CloseCode {
    fn from(error: EnvelopeError) -> Self {
        error.close_code()
    }
}
