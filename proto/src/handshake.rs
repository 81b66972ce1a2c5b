//! The HTTP/1.1 upgrade handshake, server and client side.
