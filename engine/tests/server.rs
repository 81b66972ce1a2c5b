//! The engine against real sockets: echo on both I/O drivers, protocol
//! errors with their close codes, limits, shutdown and handler panics.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{DRIVERS, RawClient, addr, client, read_head, start};
use shardcast::{CloseCode, Conn, Echo, Handler, IoDriver, Message, Rejection, UpgradeRequest};
use tungstenite::Message as WsMessage;

const SIZES: [usize; 8] = [0, 1, 125, 126, 65_535, 65_536, 200_000, 1 << 20];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn echoes_text_and_binary_of_every_size_on_both_drivers() {
    for force_epoll in DRIVERS {
        let server = start(force_epoll, |b| b, |_| Echo);
        let mut socket = client(addr(&server));
        for len in SIZES {
            let bytes = payload(len);
            socket.send(WsMessage::binary(bytes.clone())).unwrap();
            assert_eq!(
                socket.read().unwrap(),
                WsMessage::binary(bytes),
                "binary {len}"
            );
            let text: String = "shardcast ".repeat(len / 10 + 1)[..len].to_owned();
            socket.send(WsMessage::text(text.clone())).unwrap();
            assert_eq!(socket.read().unwrap(), WsMessage::text(text), "text {len}");
        }
        socket.close(None).unwrap();
        let stats = server.stats();
        let expected = if force_epoll {
            Some(IoDriver::Epoll)
        } else {
            None
        };
        if let Some(driver) = expected {
            assert!(stats.iter().all(|s| s.driver == driver), "{stats:?}");
        }
        let messages_in: u64 = stats.iter().map(|s| s.messages_in).sum();
        let messages_out: u64 = stats.iter().map(|s| s.messages_out).sum();
        assert_eq!(messages_in, 2 * SIZES.len() as u64);
        assert_eq!(messages_out, 2 * SIZES.len() as u64);
        server.shutdown(Instant::now() + Duration::from_secs(5));
    }
}

#[test]
fn echoes_compressed_messages_when_deflate_is_negotiated() {
    for force_epoll in DRIVERS {
        let server = start(force_epoll, |b| b, |_| Echo);
        let mut raw = TcpStream::connect(addr(&server)).unwrap();
        raw.write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n\r\n",
        )
        .unwrap();
        let head = read_head(&mut raw);
        assert!(head.contains("permessage-deflate"), "{head}");
        let mut client = RawClient { stream: raw };
        // A 1000-byte text the server compresses on the way back.
        let text = "abcdefgh".repeat(125);
        client.send(true, 1, text.as_bytes(), true);
        let frame = client.read();
        assert_eq!(frame.opcode, 1);
        assert!(frame.payload.len() < text.len(), "sent compressed");
        drop(client);
        server.shutdown(Instant::now() + Duration::from_secs(5));
    }
}

#[test]
fn reassembles_a_fragmented_message() {
    for force_epoll in DRIVERS {
        let server = start(force_epoll, |b| b, |_| Echo);
        let mut client = RawClient::connect(addr(&server));
        client.send(false, 1, b"frag", true);
        client.send(false, 0, b"men", true);
        client.send(true, 9, b"in between", true);
        client.send(true, 0, b"ted", true);
        let pong = client.read();
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (10, &b"in between"[..])
        );
        let echo = client.read();
        assert_eq!(echo.opcode, 1);
        assert!(echo.fin);
        assert_eq!(echo.payload, b"fragmented");
        drop(client);
        server.shutdown(Instant::now() + Duration::from_secs(5));
    }
}

#[test]
fn answers_ping_with_pong() {
    let server = start(false, |b| b, |_| Echo);
    let mut client = RawClient::connect(addr(&server));
    client.send(true, 9, b"are you there", true);
    let pong = client.read();
    assert_eq!(pong.opcode, 10);
    assert_eq!(pong.payload, b"are you there");
    drop(client);
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn echoes_the_client_close_code_then_closes_the_connection() {
    let server = start(false, |b| b, |_| Echo);
    let mut client = RawClient::connect(addr(&server));
    let mut close = 4321u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    client.send(true, 8, &close, true);
    assert_eq!(client.read().close_code(), 4321);
    assert!(client.closed_by_server());

    let mut client = RawClient::connect(addr(&server));
    client.send(true, 8, b"", true);
    assert_eq!(
        client.read().close_code(),
        1000,
        "1000 when the client gave none"
    );
    assert!(client.closed_by_server());
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

/// Sends `frame` on a fresh connection and returns the close code the
/// server answers with; checks the server then ends the connection.
fn close_code_for(server_addr: SocketAddr, send: impl FnOnce(&mut RawClient)) -> u16 {
    let mut client = RawClient::connect(server_addr);
    send(&mut client);
    let code = client.read().close_code();
    // Answer the close, as a client does; the server drops the connection.
    client.send(true, 8, &code.to_be_bytes(), true);
    assert!(client.closed_by_server());
    code
}

#[test]
fn protocol_errors_close_with_their_codes() {
    for force_epoll in DRIVERS {
        let server = start(force_epoll, |b| b.max_frame_size(1024), |_| Echo);
        let at = addr(&server);
        let oversized = close_code_for(at, |c| c.send(true, 2, &[0; 2000], true));
        assert_eq!(oversized, 1009);
        let bad_utf8 = close_code_for(at, |c| c.send(true, 1, &[0xce, 0xba, 0xff, 0xfe], true));
        assert_eq!(bad_utf8, 1007);
        let unmasked = close_code_for(at, |c| c.send(true, 2, b"plain", false));
        assert_eq!(unmasked, 1002);
        server.shutdown(Instant::now() + Duration::from_secs(5));
    }
}

#[test]
fn handshake_timeout_drops_a_slow_client() {
    let server = start(
        false,
        |b| b.handshake_timeout(Duration::from_millis(300)),
        |_| Echo,
    );
    let mut stream = TcpStream::connect(addr(&server)).unwrap();
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
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn refuses_connections_past_the_limit_with_503() {
    let server = start(false, |b| b.max_connections(1), |_| Echo);
    let mut first = client(addr(&server));
    let mut second = TcpStream::connect(addr(&server)).unwrap();
    second
        .write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let head = read_head(&mut second);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    first.send(WsMessage::text("still here")).unwrap();
    assert_eq!(first.read().unwrap(), WsMessage::text("still here"));
    drop(first);
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn shutdown_sends_1001_to_every_client_and_counts_clean_closes() {
    for force_epoll in DRIVERS {
        let server = start(force_epoll, |b| b, |_| Echo);
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let mut socket = client(addr(&server));
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
        let report = server.shutdown(Instant::now() + Duration::from_secs(5));
        for reader in readers {
            assert_eq!(reader.join().unwrap(), Some(1001));
        }
        assert_eq!(report.closed_cleanly, 4, "{report:?}");
        assert_eq!(report.dropped, 0);
        assert!(
            TcpStream::connect(addr(&server)).is_err(),
            "listener closed"
        );
    }
}

/// Echoes, except that the message "panic" panics.
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

#[test]
fn a_handler_panic_closes_only_its_connection_with_1011() {
    let server = start(false, |b| b.shards(1), |_| Fragile);
    let mut healthy = client(addr(&server));
    let mut doomed = RawClient::connect(addr(&server));
    doomed.send(true, 1, b"panic", true);
    assert_eq!(doomed.read().close_code(), 1011);
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
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn a_handler_rejection_is_sent_as_http() {
    let server = start(false, |b| b, |_| Fragile);
    let mut stream = TcpStream::connect(addr(&server)).unwrap();
    stream
        .write_all(
            b"GET /forbidden HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\nno"), "{response}");
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn idle_connections_are_closed_with_1001() {
    let server = start(
        false,
        |b| b.idle_timeout(Some(Duration::from_secs(1))),
        |_| Echo,
    );
    let mut client = RawClient::connect(addr(&server));
    let started = Instant::now();
    let close = client.read();
    assert_eq!(close.close_code(), 1001);
    assert_eq!(&close.payload[2..], b"idle timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    client.send(true, 8, &1001u16.to_be_bytes(), true);
    assert!(client.closed_by_server());
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn a_send_past_the_buffer_limit_closes_with_1008() {
    let server = start(false, |b| b.max_send_buffer(100), |_| Echo);
    let mut client = RawClient::connect(addr(&server));
    client.send(true, 2, &[7; 50], true);
    assert_eq!(client.read().payload, [7; 50]);
    client.send(true, 2, &[7; 200], true);
    assert_eq!(client.read().close_code(), 1008);
    drop(client);
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

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

#[test]
fn negotiates_the_first_offered_subprotocol_the_server_speaks() {
    let server = start(
        false,
        |b| b.subprotocols(["shardcast.v1", "chat"]),
        |_| Announce,
    );
    for (offer, expected) in [("chat, shardcast.v1", "shardcast.v1"), ("other", "raw")] {
        let mut stream = TcpStream::connect(addr(&server)).unwrap();
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {offer}\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut stream);
        assert_eq!(
            head.contains("Sec-WebSocket-Protocol: shardcast.v1\r\n"),
            expected != "raw",
            "{head}"
        );
        let mut client = RawClient { stream };
        assert_eq!(client.read().payload, expected.as_bytes());
    }
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn frames_sent_right_behind_the_request_are_handled() {
    let server = start(false, |b| b, |_| Echo);
    let mut stream = TcpStream::connect(addr(&server)).unwrap();
    let mut bytes = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    // A masked "hi" with an all-zero key, in the same write as the request.
    bytes.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    stream.write_all(&bytes).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut client = RawClient { stream };
    assert_eq!(client.read().payload, b"hi");
    drop(client);
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn an_invalid_upgrade_request_gets_an_http_error() {
    let server = start(false, |b| b, |_| Echo);
    let mut stream = TcpStream::connect(addr(&server)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 4"), "{response}");
    server.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn stats_count_connections_messages_and_bytes_per_shard() {
    let server = start(false, |b| b.shards(1), |_| Echo);
    let mut socket = client(addr(&server));
    socket.send(WsMessage::text("count me")).unwrap();
    assert_eq!(socket.read().unwrap(), WsMessage::text("count me"));
    let open = server.stats()[0];
    assert_eq!(open.connections_open, 1);
    assert_eq!(open.connections_accepted, 1);
    assert_eq!((open.messages_in, open.messages_out), (1, 1));
    assert!(open.bytes_in > 8 && open.bytes_out > 8, "{open:?}");
    assert_ne!(open.driver, IoDriver::Starting);
    socket.close(None).unwrap();
    while socket.read().is_ok() {}
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats()[0].connections_open != 0 {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        thread::sleep(Duration::from_millis(5));
    }
    server.shutdown(Instant::now() + Duration::from_secs(5));
}
