//! permessage-deflate (RFC 7692): negotiation, compression and decompression.
//!
//! Both directions run without context takeover: every message is
//! compressed and inflated on its own, with libdeflate, which works on whole
//! buffers and is several times faster than zlib's streaming code. The price
//! is that a peer may not keep a sliding window across messages, which the
//! negotiation asks for (`server_no_context_takeover` and
//! `client_no_context_takeover`). The gain is that no connection keeps a
//! compression window between messages: one [`Deflater`] and one
//! [`Inflater`] serve a whole shard.

mod deflater;
mod inflater;
mod negotiate;

pub use deflater::Deflater;
pub use inflater::Inflater;
pub(crate) use negotiate::{CLIENT_OFFER, DeflateAcceptance, accept_offers, validate_response};
pub use negotiate::{DeflateConfig, DeflateParams, DeflateResponseError};

/// The four bytes (an empty stored block's LEN and NLEN) that RFC 7692
/// §7.2.1 strips from the end of every compressed message and §7.2.2 adds
/// back before inflating.
pub const MESSAGE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
