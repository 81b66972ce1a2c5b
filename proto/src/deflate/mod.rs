//! permessage-deflate (RFC 7692): negotiation, compression and decompression.
