//! RFC 6455 frames: header parsing and encoding, masking, and the message decoder.
