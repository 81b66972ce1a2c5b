//! The engine against real sockets, every behaviour on both I/O drivers
//! (`name::io_uring` and `name::epoll`): echo, compression, fragments,
//! control frames, protocol errors with their close codes, limits and
//! timeouts, shutdown, handler panics and rejections, subprotocols, stats.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::opcode::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
use common::{
    DEFLATE_OFFER, Driver, Frame, RawClient, binary_payload, close_payload, connect_tungstenite,
    on_both_drivers, read_head, start, text_payload, upgrade_request,
};
use shardcast::{CloseCode, Conn, Echo, Handler, Message, Rejection, UpgradeRequest};
use tungstenite::Message as WsMessage;

const SIZES: [usize; 8] = [0, 1, 125, 126, 65_535, 65_536, 200_000, 1 << 20];

on_both_drivers!(echoes_text_and_binary_of_every_size);
fn echoes_text_and_binary_of_every_size(driver: Driver) {
    let server = start(driver, |b| b, |_| Echo);
    let mut socket = connect_tungstenite(server.addr());
    for len in SIZES {
        let bytes = binary_payload(len);
        socket.send(WsMessage::binary(bytes.clone())).unwrap();
        assert_eq!(
            socket.read().unwrap(),
            WsMessage::binary(bytes),
            "binary {len}"
        );
        let text = text_payload(len);
        socket.send(WsMessage::text(text.clone())).unwrap();
        assert_eq!(socket.read().unwrap(), WsMessage::text(text), "text {len}");
    }
    socket.close(None).unwrap();
    let stats = server.stats();
    let messages_in: u64 = stats.iter().map(|s| s.messages_in).sum();
    let messages_out: u64 = stats.iter().map(|s| s.messages_out).sum();
    assert_eq!(messages_in, 2 * SIZES.len() as u64, "{stats:?}");
    assert_eq!(messages_out, 2 * SIZES.len() as u64, "{stats:?}");
    server.shutdown();
}

on_both_drivers!(echoes_compressed_messages_when_deflate_is_negotiated);
fn echoes_compressed_messages_when_deflate_is_negotiated(driver: Driver) {
    let server = start(driver, |b| b, |_| Echo);
    let (mut client, head) = RawClient::connect_with(server.addr(), DEFLATE_OFFER);
    assert!(head.contains("permessage-deflate"), "{head}");
    // A 1000-byte text, sent plain, that the server compresses on the way
    // back; then the same text sent compressed.
    let text = "abcdefgh".repeat(125);
    client.send(Frame::new(TEXT, text.as_bytes()));
    let compressed = common::compress(text.as_bytes()).unwrap();
    client.send(Frame::new(TEXT, &compressed).compressed());
    for sent in ["plain", "compressed"] {
        let frame = client.read();
        assert_eq!((frame.opcode, frame.rsv1), (TEXT, true), "{sent}");
        assert!(frame.payload.len() < text.len(), "{sent}: sent compressed");
        assert_eq!(frame.message(), text.as_bytes(), "{sent}");
    }
    drop(client);
    server.shutdown();
}

on_both_drivers!(reassembles_a_fragmented_message);
fn reassembles_a_fragmented_message(driver: Driver) {
    let server = start(driver, |b| b, |_| Echo);
    let mut client = RawClient::connect(server.addr());
    client.send(Frame::new(TEXT, b"frag").not_final());
    client.send(Frame::new(CONTINUATION, b"men").not_final());
    client.send(Frame::new(PING, b"in between"));
    client.send(Frame::new(CONTINUATION, b"ted"));
    let pong = client.read();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"in between"[..])
    );
    let echo = client.read();
    assert_eq!(echo.opcode, TEXT);
    assert!(echo.fin);
    assert_eq!(echo.payload, b"fragmented");
    drop(client);
    server.shutdown();
}

on_both_drivers!(answers_ping_with_pong);
fn answers_ping_with_pong(driver: Driver) {
    let server = start(driver, |b| b, |_| Echo);
    let mut client = RawClient::connect(server.addr());
    client.send(Frame::new(PING, b"are you there"));
    let pong = client.read();
    assert_eq!(pong.opcode, PONG);
    assert_eq!(pong.payload, b"are you there");
    drop(client);
    server.shutdown();
}

on_both_drivers!(echoes_the_client_close_code_then_closes_the_connection);
fn echoes_the_client_close_code_then_closes_the_connection(driver: Driver) {
    let server = start(driver, |b| b, |_| Echo);
    let mut client = RawClient::connect(server.addr());
    client.send(Frame::new(CLOSE, &close_payload(4321, b"bye")));
    assert_eq!(client.read_close_code(), 4321);
    assert!(client.closed_by_server());

    let mut client = RawClient::connect(server.addr());
    client.send(Frame::new(CLOSE, b""));
    assert_eq!(
        client.read_close_code(),
        1000,
        "1000 when the client gave none"
    );
    assert!(client.closed_by_server());
    server.shutdown();
}

/// Runs `send` on a fresh connection and returns the close code the
/// server answers with; checks the server then ends the connection.
fn close_code_for(server_addr: SocketAddr, send: impl FnOnce(&mut RawClient)) -> u16 {
    let mut client = RawClient::connect(server_addr);
    send(&mut client);
    let code = client.read_close_code();
    // Answer the close, as a client does; the server drops the connection.
    client.send(Frame::new(CLOSE, &code.to_be_bytes()));
    assert!(client.closed_by_server());
    code
}

on_both_drivers!(protocol_errors_close_with_their_codes);
fn protocol_errors_close_with_their_codes(driver: Driver) {
    let server = start(driver, |b| b.max_frame_size(1024), |_| Echo);
    let at = server.addr();
    let oversized = close_code_for(at, |c| c.send(Frame::new(BINARY, &[0; 2000])));
    assert_eq!(oversized, 1009);
    let bad_utf8 = close_code_for(at, |c| c.send(Frame::new(TEXT, &[0xce, 0xba, 0xff, 0xfe])));
    assert_eq!(bad_utf8, 1007);
    let unmasked = close_code_for(at, |c| c.send(Frame::new(BINARY, b"plain").unmasked()));
    assert_eq!(unmasked, 1002);
    server.shutdown();
}

on_both_drivers!(handshake_timeout_drops_a_slow_client);
fn handshake_timeout_drops_a_slow_client(driver: Driver) {
    let server = start(
        driver,
        |b| b.handshake_timeout(Duration::from_millis(300)),
        |_| Echo,
    );
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: web")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    assert!(read.is_ok(), "the server closed the connection: {read:?}");
    assert!(rest.is_empty());
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    server.shutdown();
}

on_both_drivers!(refuses_connections_past_the_limit_with_503);
fn refuses_connections_past_the_limit_with_503(driver: Driver) {
    let server = start(driver, |b| b.max_connections(1), |_| Echo);
    let mut first = connect_tungstenite(server.addr());
    let mut second = TcpStream::connect(server.addr()).unwrap();
    second.write_all(upgrade_request("").as_bytes()).unwrap();
    let head = read_head(&mut second);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    first.send(WsMessage::text("still here")).unwrap();
    assert_eq!(first.read().unwrap(), WsMessage::text("still here"));
    drop(first);
    server.shutdown();
}

on_both_drivers!(shutdown_sends_1001_to_every_client_and_counts_clean_closes);
fn shutdown_sends_1001_to_every_client_and_counts_clean_closes(driver: Driver) {
    let server = start(driver, |b| b, |_| Echo);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut socket = connect_tungstenite(server.addr());
            socket.send(WsMessage::text("hello")).unwrap();
            assert_eq!(socket.read().unwrap(), WsMessage::text("hello"));
            socket
        })
        .collect();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut socket| {
            thread::spawn(move || {
                let code = loop {
                    match socket.read() {
                        Ok(WsMessage::Close(frame)) => break frame.map(|f| u16::from(f.code)),
                        Ok(_) => {}
                        Err(error) => panic!("no close frame: {error}"),
                    }
                };
                // tungstenite queued the answering close; send it and
                // read until the server ends the connection.
                let _ = socket.flush();
                while socket.read().is_ok() {}
                code
            })
        })
        .collect();
    let report = server.shutdown();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), Some(1001));
    }
    assert_eq!(report.closed_cleanly, 4, "{report:?}");
    assert_eq!(report.dropped, 0, "{report:?}");
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "listener closed"
    );
}

/// Echoes as binary, except that the message "panic" panics; refuses
/// upgrades to `/forbidden` with 403.
struct Fragile;

impl Handler for Fragile {
    type State = u32;

    fn on_upgrade(
        &mut self,
        request: &UpgradeRequest<'_>,
        _: SocketAddr,
    ) -> Result<u32, Rejection> {
        if request.path() == "/forbidden" {
            return Err(Rejection::new(403, "Forbidden").with_body(&b"no"[..]));
        }
        Ok(0)
    }

    fn on_message(&mut self, conn: &mut Conn<u32>, message: Message<'_>) {
        assert_ne!(message, Message::Text("panic"), "the handler gave up");
        *conn.state_mut() += 1;
        conn.send_binary(message.as_bytes()).unwrap();
    }

    fn on_close(&mut self, conn: &mut Conn<u32>, code: CloseCode, _: &str) {
        assert!(conn.is_closing() || code == CloseCode::ABNORMAL || code.0 != 0);
    }
}

on_both_drivers!(a_handler_panic_closes_only_its_connection_with_1011);
fn a_handler_panic_closes_only_its_connection_with_1011(driver: Driver) {
    let server = start(driver, |b| b.shards(1), |_| Fragile);
    let mut healthy = connect_tungstenite(server.addr());
    let mut doomed = RawClient::connect(server.addr());
    doomed.send(Frame::new(TEXT, b"panic"));
    assert_eq!(doomed.read_close_code(), 1011);
    for round in 0..3 {
        let text = format!("round {round}");
        healthy.send(WsMessage::text(text.clone())).unwrap();
        assert_eq!(
            healthy.read().unwrap(),
            WsMessage::binary(text.into_bytes())
        );
    }
    drop(healthy);
    drop(doomed);
    server.shutdown();
}

on_both_drivers!(a_handler_rejection_is_sent_as_http);
fn a_handler_rejection_is_sent_as_http(driver: Driver) {
    let server = start(driver, |b| b, |_| Fragile);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .write_all(
            upgrade_request("")
                .replacen("GET /", "GET /forbidden", 1)
                .as_bytes(),
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\nno"), "{response}");
    server.shutdown();
}

on_both_drivers!(idle_connections_are_closed_with_1001);
fn idle_connections_are_closed_with_1001(driver: Driver) {
    let server = start(
        driver,
        |b| b.idle_timeout(Some(Duration::from_secs(1))),
        |_| Echo,
    );
    let mut client = RawClient::connect(server.addr());
    let started = Instant::now();
    let close = client.read();
    assert_eq!(close.close_code(), 1001);
    assert_eq!(&close.payload[2..], b"idle timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    client.send(Frame::new(CLOSE, &1001u16.to_be_bytes()));
    assert!(client.closed_by_server());
    server.shutdown();
}

on_both_drivers!(a_send_past_the_buffer_limit_closes_with_1008);
fn a_send_past_the_buffer_limit_closes_with_1008(driver: Driver) {
    let server = start(driver, |b| b.max_send_buffer(100), |_| Echo);
    let mut client = RawClient::connect(server.addr());
    client.send(Frame::new(BINARY, &[7; 50]));
    assert_eq!(client.read().payload, [7; 50]);
    client.send(Frame::new(BINARY, &[7; 200]));
    assert_eq!(client.read_close_code(), 1008);
    drop(client);
    server.shutdown();
}

/// A compile-time check: no server, so no driver.
#[test]
fn the_handle_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<shardcast::ServerHandle>();
}

/// Says which subprotocol was negotiated as soon as the connection opens.
struct Announce;

impl Handler for Announce {
    type State = ();

    fn on_upgrade(&mut self, _: &UpgradeRequest<'_>, _: SocketAddr) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_open(&mut self, conn: &mut Conn<()>) {
        let name = conn.subprotocol().unwrap_or("raw").to_owned();
        conn.send_text(&name).unwrap();
    }

    fn on_message(&mut self, _: &mut Conn<()>, _: Message<'_>) {}
}

on_both_drivers!(negotiates_the_first_offered_subprotocol_the_server_speaks);
fn negotiates_the_first_offered_subprotocol_the_server_speaks(driver: Driver) {
    let server = start(
        driver,
        |b| b.subprotocols(["shardcast.v1", "chat"]),
        |_| Announce,
    );
    for (offer, expected) in [("chat, shardcast.v1", "shardcast.v1"), ("other", "raw")] {
        let header = format!("Sec-WebSocket-Protocol: {offer}\r\n");
        let (mut client, head) = RawClient::connect_with(server.addr(), &header);
        assert_eq!(
            head.contains("Sec-WebSocket-Protocol: shardcast.v1\r\n"),
            expected != "raw",
            "{head}"
        );
        assert_eq!(client.read().payload, expected.as_bytes(), "offer {offer}");
    }
    server.shutdown();
}

on_both_drivers!(frames_sent_right_behind_the_request_are_handled);
fn frames_sent_right_behind_the_request_are_handled(driver: Driver) {
    let server = start(driver, |b| b, |_| Echo);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    let mut bytes = upgrade_request("").into_bytes();
    bytes.extend_from_slice(&Frame::new(TEXT, b"hi").encode());
    stream.write_all(&bytes).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut client = RawClient::from_upgraded(stream);
    assert_eq!(client.read().payload, b"hi");
    drop(client);
    server.shutdown();
}

on_both_drivers!(an_invalid_upgrade_request_gets_an_http_error);
fn an_invalid_upgrade_request_gets_an_http_error(driver: Driver) {
    let server = start(driver, |b| b, |_| Echo);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 4"), "{response}");
    server.shutdown();
}

on_both_drivers!(stats_count_connections_messages_and_bytes_per_shard);
fn stats_count_connections_messages_and_bytes_per_shard(driver: Driver) {
    let server = start(driver, |b| b.shards(1), |_| Echo);
    let mut socket = connect_tungstenite(server.addr());
    socket.send(WsMessage::text("count me")).unwrap();
    assert_eq!(socket.read().unwrap(), WsMessage::text("count me"));
    let open = server.stats()[0];
    assert_eq!(open.driver, driver.io_driver());
    assert_eq!(open.connections_open, 1);
    assert_eq!(open.connections_accepted, 1);
    assert_eq!((open.messages_in, open.messages_out), (1, 1));
    assert!(open.bytes_in > 8 && open.bytes_out > 8, "{open:?}");
    socket.close(None).unwrap();
    while socket.read().is_ok() {}
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats()[0].connections_open != 0 {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        thread::sleep(Duration::from_millis(5));
    }
    server.shutdown();
}
