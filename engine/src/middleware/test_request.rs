//! Real upgrade requests for the layers' tests, parsed by the proto crate
//! from literal bytes.

use std::net::SocketAddr;

use shardcast_proto::handshake::{HeadLimits, Progress, UpgradeRequest, parse_request};

/// A client address for tests that do not care which.
pub(super) const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(192, 0, 2, 1),
    40_000,
));

/// The bytes of a valid `GET /chat` upgrade request with `extra` header
/// lines (such as `"Origin: https://example.com"`) after the required ones.
pub(super) fn request(extra: &[&str]) -> Vec<u8> {
    request_to("/chat", extra)
}

/// [`request`] for the request target `target` (path and query).
pub(super) fn request_to(target: &str, extra: &[&str]) -> Vec<u8> {
    let mut head = format!(
        "GET {target} HTTP/1.1\r\n\
         Host: example.com\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Parses a whole, valid request; panics on anything else.
pub(super) fn parse(buf: &[u8]) -> UpgradeRequest<'_> {
    match parse_request(buf, &HeadLimits::default()) {
        Ok(Progress::Done { value, head_len }) if head_len == buf.len() => value,
        other => panic!("expected one whole valid request, got {other:?}"),
    }
}
