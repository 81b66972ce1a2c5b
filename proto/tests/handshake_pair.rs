//! Our client against our server, and both parsers against arbitrary
//! bytes: whatever arrives, they answer without panicking.

use proptest::prelude::*;
use shardcast_proto::deflate::{DeflateConfig, DeflateParams};
use shardcast_proto::handshake::{
    ClientHandshake, HeadLimits, Progress, generate_key, parse_extensions, parse_request,
};

/// Runs a full handshake between our two sides and returns what each
/// agreed on.
fn handshake(
    offer_deflate: bool,
    server_deflate: bool,
) -> (Option<DeflateParams>, Option<DeflateParams>) {
    let mut client = ClientHandshake::new("example.com", "/", generate_key([42; 16]));
    client.subprotocols = &["shardcast.v1"];
    client.offer_deflate = offer_deflate;
    let mut request = Vec::new();
    client.write_request(&mut request).unwrap();

    let Ok(Progress::Done { value, .. }) = parse_request(&request, &HeadLimits::default()) else {
        panic!("our server refused our client's request");
    };
    let mut config = DeflateConfig::default();
    config.enabled = server_deflate;
    let accept = value.accept(&["shardcast.v1"], &config);
    let mut response = Vec::new();
    accept.write_response(&[], &mut response).unwrap();

    let Ok(Progress::Done {
        value: negotiated, ..
    }) = client.parse_response(&response)
    else {
        panic!("our client refused our server's response");
    };
    assert_eq!(negotiated.subprotocol, Some("shardcast.v1"));
    assert_eq!(accept.negotiated().subprotocol, Some("shardcast.v1"));
    (accept.negotiated().deflate, negotiated.deflate)
}

#[test]
fn our_client_and_server_agree_on_deflate_without_context_takeover() {
    let expected = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    assert_eq!(handshake(true, true), (Some(expected), Some(expected)));
}

#[test]
fn our_client_and_server_run_uncompressed_unless_both_want_deflate() {
    assert_eq!(handshake(false, true), (None, None));
    assert_eq!(handshake(true, false), (None, None));
}

proptest! {
    #[test]
    fn request_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let limits = HeadLimits::default();
        if let Ok(Progress::Done { value, head_len }) = parse_request(&bytes, &limits) {
            prop_assert!(head_len <= bytes.len());
            let _ = value.accept(&["shardcast.v1"], &DeflateConfig::default());
        }
    }

    #[test]
    fn request_parser_never_panics_on_mutated_valid_heads(
        extensions in "[ -~]{0,80}",
        protocols in "[ -~]{0,40}",
        cut in any::<usize>(),
    ) {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: {extensions}\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n"
        );
        let bytes = request.as_bytes();
        let prefix = &bytes[..cut % (bytes.len() + 1)];
        if let Ok(Progress::Done { value, .. }) = parse_request(prefix, &HeadLimits::default()) {
            let _ = value.accept(&["shardcast.v1"], &DeflateConfig::default());
            let _ = value.extensions().count();
        }
    }

    #[test]
    fn response_parser_never_panics(
        status in 100u16..600,
        extensions in "[ -~]{0,80}",
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let key = generate_key([1; 16]);
        let client = ClientHandshake::new("h", "/", key);
        let mut response = format!(
            "HTTP/1.1 {status} X\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: {extensions}\r\n",
            key.expected_accept().as_str()
        )
        .into_bytes();
        response.extend_from_slice(&tail);
        let _ = client.parse_response(&response);
    }

    #[test]
    fn extension_parser_never_panics(value in proptest::collection::vec(any::<u8>(), 0..128)) {
        for extension in parse_extensions(std::iter::once(value.as_slice())).flatten() {
            let _ = extension.params().count();
        }
    }
}
