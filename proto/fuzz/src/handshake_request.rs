//! Fuzzes both handshake parsers: the server's request parser and the
//! client's response validator.

use shardcast_proto::deflate::DeflateConfig;
use shardcast_proto::handshake::{
    ClientHandshake, HeadLimits, Progress, accept_key, generate_key, parse_request,
};

/// The client key whose accept value the seeds' responses carry.
pub const CLIENT_RANDOM: [u8; 16] = [7; 16];

/// Parses arbitrary bytes as a handshake.
///
/// The first byte picks the parser: even, the server reading a request;
/// odd, the client reading a response to a request made with
/// [`CLIENT_RANDOM`]. Properties: no panic; a head that parses also parses
/// from exactly its own bytes and every shorter prefix asks for more; an
/// accepted request gets a 101 response that carries its accept key.
pub fn handshake_request(data: &[u8]) {
    let Some((&mode, head)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        server_reads(head);
    } else {
        client_reads(head);
    }
}

fn server_reads(data: &[u8]) {
    let limits = HeadLimits::default();
    let Ok(Progress::Done {
        value: request,
        head_len,
    }) = parse_request(data, &limits)
    else {
        return;
    };
    assert!(head_len <= data.len());
    for prefix in 0..head_len {
        assert!(
            matches!(
                parse_request(&data[..prefix], &limits),
                Ok(Progress::NeedMore)
            ),
            "a {prefix}-byte prefix of a {head_len}-byte head did not ask for more"
        );
    }
    let again = parse_request(&data[..head_len], &limits);
    assert!(matches!(again, Ok(Progress::Done { head_len: h, .. }) if h == head_len));

    let accept = request.accept(&["shardcast.v1", "chat"], &DeflateConfig::default());
    let mut response = Vec::new();
    accept
        .write_response(&[], &mut response)
        .expect("a response to a parsed request can be written");
    let expected = accept_key(request.key());
    let needle = format!("Sec-WebSocket-Accept: {}\r\n", expected.as_str());
    assert!(response.starts_with(b"HTTP/1.1 101 "));
    assert!(
        response
            .windows(needle.len())
            .any(|window| window == needle.as_bytes()),
        "the 101 response does not carry the accept key"
    );
}

fn client_reads(data: &[u8]) {
    let mut handshake = ClientHandshake::new("example.com", "/chat", generate_key(CLIENT_RANDOM));
    handshake.subprotocols = &["shardcast.v1"];
    handshake.offer_deflate = true;
    let Ok(Progress::Done { head_len, .. }) = handshake.parse_response(data) else {
        return;
    };
    assert!(head_len <= data.len());
    for prefix in 0..head_len {
        assert!(
            matches!(
                handshake.parse_response(&data[..prefix]),
                Ok(Progress::NeedMore)
            ),
            "a {prefix}-byte prefix of a {head_len}-byte response did not ask for more"
        );
    }
}
