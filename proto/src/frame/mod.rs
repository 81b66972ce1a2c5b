//! RFC 6455 frames: header parsing and encoding, masking, and the message decoder.
//!
//! - [`FrameHeader`] reads and writes one header; [`apply_mask`] masks and
//!   unmasks payloads a word at a time.
//! - [`Encoder`] appends frames and whole messages (compressed when that
//!   pays) to a buffer the caller owns; a server's frames are unmasked, so
//!   one encoding serves every recipient.
//! - [`Decoder`] turns the bytes a connection reads into whole
//!   [`Message`]s, enforcing the protocol's rules and the configured limits.
//!
//! The role (server or client) is a type parameter of both, so masking
//! rules cost no branch at run time.

mod decode;
mod encode;
mod header;
mod mask;
mod opcode;

pub use decode::{CloseFrame, Decoder, DecoderConfig, Message};
pub use encode::{EncodeError, Encoder, SendMask, encode_close_payload};
pub use header::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
pub use mask::apply_mask;
pub use opcode::OpCode;
