//! permessage-deflate (RFC 7692): negotiation, compression and decompression.

mod negotiate;

pub(crate) use negotiate::{CLIENT_OFFER, DeflateAcceptance, accept_offers, validate_response};
pub use negotiate::{DeflateConfig, DeflateParams, DeflateResponseError};
