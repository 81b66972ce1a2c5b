//! Interoperability of our handshake with tungstenite's, both ways, over an
//! in-memory stream, with bytes delivered in arbitrary pieces.
//!
//! 1. tungstenite's client request is parsed by our server side, and our
//!    101 response completes tungstenite's client handshake.
//! 2. Our client request is accepted by tungstenite's server handshake, and
//!    our client validates tungstenite's 101 response.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;

use proptest::prelude::*;
use shardcast_proto::deflate::DeflateConfig;
use shardcast_proto::handshake::{
    ClientHandshake, HeadLimits, Negotiated, Progress, generate_key, parse_request,
};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tungstenite::http::HeaderValue;

/// One end of an in-memory connection: reads what the test has delivered
/// so far (then `WouldBlock`), and records everything written.
#[derive(Clone, Default)]
struct Pipe {
    inner: Rc<RefCell<PipeState>>,
}

#[derive(Default)]
struct PipeState {
    incoming: VecDeque<u8>,
    written: Vec<u8>,
}

impl Pipe {
    fn deliver(&self, bytes: &[u8]) {
        self.inner.borrow_mut().incoming.extend(bytes);
    }

    fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.inner.borrow_mut().written)
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.inner.borrow_mut();
        if state.incoming.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        state.incoming.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.borrow_mut().written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Cuts `bytes` into pieces at the given points (taken modulo the length).
fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

/// Feeds `request` to our server side piece by piece: every incomplete
/// prefix must need more bytes; returns the 101 response we write.
fn our_server_answer(request: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<&'static str>) {
    let mut received = Vec::new();
    for piece in pieces(request, cuts) {
        received.extend_from_slice(&piece);
        match parse_request(&received, &HeadLimits::default()).expect("request accepted") {
            Progress::NeedMore => assert!(received.len() < request.len()),
            Progress::Done { value, head_len } => {
                assert_eq!(head_len, request.len());
                assert_eq!(value.path(), "/chat");
                assert_eq!(value.query(), Some("room=7"));
                assert_eq!(value.host(), "localhost:9001");
                let accept = value.accept(&["shardcast.v1"], &DeflateConfig::default());
                let negotiated = accept.negotiated();
                let mut out = Vec::new();
                accept
                    .write_response(&[("X-Server", "shardcast")], &mut out)
                    .unwrap();
                return (out, negotiated.subprotocol);
            }
        }
    }
    panic!("request never completed");
}

fn tungstenite_client_against_our_server(request_cuts: &[usize], response_cuts: &[usize]) {
    let pipe = Pipe::default();
    let mut request = "ws://localhost:9001/chat?room=7"
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("chat, shardcast.v1"),
    );
    let mut mid = match tungstenite::client::client(request, pipe.clone()) {
        Err(HandshakeError::Interrupted(mid)) => mid,
        Err(HandshakeError::Failure(error)) => panic!("client failed: {error}"),
        Ok(_) => panic!("completed without a response"),
    };
    let (response, subprotocol) = our_server_answer(&pipe.take_written(), request_cuts);
    assert_eq!(subprotocol, Some("shardcast.v1"));

    let mut pieces = pieces(&response, response_cuts).into_iter();
    loop {
        let piece = pieces.next().expect("client waits beyond the response");
        pipe.deliver(&piece);
        match mid.handshake() {
            Ok((_socket, response)) => {
                assert_eq!(response.status(), 101);
                assert_eq!(
                    response.headers().get("Sec-WebSocket-Protocol").unwrap(),
                    "shardcast.v1"
                );
                assert_eq!(response.headers().get("X-Server").unwrap(), "shardcast");
                assert!(
                    pieces.next().is_none(),
                    "completed before the whole response"
                );
                return;
            }
            Err(HandshakeError::Interrupted(again)) => mid = again,
            Err(HandshakeError::Failure(error)) => panic!("client rejected our 101: {error}"),
        }
    }
}

/// tungstenite's server callback: checks the request and answers with the
/// given subprotocol, if any.
struct AnswerWith(Option<&'static str>);

impl Callback for AnswerWith {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        assert_eq!(request.uri().path(), "/chat");
        assert_eq!(request.headers().get("Origin").unwrap(), "http://localhost");
        if let Some(protocol) = self.0 {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        }
        Ok(response)
    }
}

/// Runs our client against tungstenite's server. `choose` is the
/// subprotocol tungstenite's callback answers with.
fn our_client_against_tungstenite_server(
    request_cuts: &[usize],
    response_cuts: &[usize],
    choose: Option<&'static str>,
) -> Negotiated<'static> {
    let key = generate_key(*b"0123456789abcdef");
    let mut handshake = ClientHandshake::new("localhost:9001", "/chat?room=7", key);
    handshake.subprotocols = &["shardcast.v1", "chat"];
    handshake.extra_headers = &[("Origin", "http://localhost")];
    let mut request = Vec::new();
    handshake.write_request(&mut request).unwrap();

    let pipe = Pipe::default();
    let callback = AnswerWith(choose);
    let mut request_pieces = pieces(&request, request_cuts).into_iter();
    pipe.deliver(&request_pieces.next().unwrap_or_default());
    let mut mid = match tungstenite::accept_hdr(pipe.clone(), callback) {
        Ok(_) => None,
        Err(HandshakeError::Interrupted(mid)) => Some(mid),
        Err(HandshakeError::Failure(error)) => panic!("server refused our request: {error}"),
    };
    while let Some(waiting) = mid.take() {
        let piece = request_pieces
            .next()
            .expect("server waits beyond the request");
        pipe.deliver(&piece);
        match waiting.handshake() {
            Ok(_) => {}
            Err(HandshakeError::Interrupted(again)) => mid = Some(again),
            Err(HandshakeError::Failure(error)) => panic!("server refused our request: {error}"),
        }
    }

    let mut response = pipe.take_written();
    let head_len = response.len();
    // A frame right behind the 101 must be left for the frame decoder.
    response.extend_from_slice(b"\x81\x02hi");
    let mut received = Vec::new();
    for piece in pieces(&response, response_cuts) {
        received.extend_from_slice(&piece);
        match handshake
            .parse_response(&received)
            .expect("response accepted")
        {
            Progress::NeedMore => assert!(received.len() < head_len),
            Progress::Done {
                value,
                head_len: used,
            } => {
                assert_eq!(used, head_len);
                return value;
            }
        }
    }
    panic!("response never completed");
}

#[test]
fn tungstenite_client_completes_handshake_with_our_server() {
    tungstenite_client_against_our_server(&[], &[]);
}

#[test]
fn our_client_completes_handshake_with_tungstenite_server() {
    let negotiated = our_client_against_tungstenite_server(&[], &[], Some("chat"));
    assert_eq!(negotiated.subprotocol, Some("chat"));
    // tungstenite without its deflate feature answers no extension.
    assert_eq!(negotiated.deflate, None);
    let negotiated = our_client_against_tungstenite_server(&[], &[], None);
    assert_eq!(negotiated.subprotocol, None);
}

proptest! {
    #[test]
    fn tungstenite_client_and_our_server_agree_in_any_pieces(
        request_cuts in proptest::collection::vec(any::<usize>(), 0..8),
        response_cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        tungstenite_client_against_our_server(&request_cuts, &response_cuts);
    }

    #[test]
    fn our_client_and_tungstenite_server_agree_in_any_pieces(
        request_cuts in proptest::collection::vec(any::<usize>(), 0..8),
        response_cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let negotiated = our_client_against_tungstenite_server(
            &request_cuts,
            &response_cuts,
            Some("shardcast.v1"),
        );
        prop_assert_eq!(negotiated.subprotocol, Some("shardcast.v1"));
    }
}
