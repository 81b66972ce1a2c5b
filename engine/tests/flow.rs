//! Flow control and liveness against real sockets: the backpressure
//! policies with a slow consumer beside a fast one, `on_drain` producers,
//! prepared messages, heartbeats and the per-address connection limit.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DEFLATE_OFFER, Driver, Frame, RawClient, TestServer, close_payload, connect_tungstenite,
    on_both_drivers, opcode, read_head, start, upgrade_request,
};
use shardcast::{
    Backpressure, CloseCode, Conn, Handler, Message, PreparedMessage, Rejection, SendError,
    UpgradeRequest,
};
use tungstenite::Message as WsMessage;

/// Ticks the slow client sends; each asks for a 64 KiB message back.
const TICKS: usize = 1000;
const CHUNK: usize = 64 * 1024;
/// The send buffer limit in these tests: far below TICKS * CHUNK (64 MiB)
/// plus what loopback's socket buffers can hold.
const SEND_LIMIT: usize = 1 << 20;

/// Answers "tick" with a 64 KiB message (a prepared, droppable one when
/// `droppable`), echoes everything else.
struct Ticker {
    chunk: PreparedMessage,
    droppable: bool,
}

impl Ticker {
    fn new(droppable: bool) -> Ticker {
        let chunk = PreparedMessage::binary(&vec![7; CHUNK]);
        Ticker {
            chunk: if droppable { chunk.droppable() } else { chunk },
            droppable,
        }
    }
}

impl Handler for Ticker {
    type State = ();

    fn on_upgrade(&mut self, _: &UpgradeRequest<'_>, _: SocketAddr) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_message(&mut self, conn: &mut Conn<()>, message: Message<'_>) {
        let sent = match message {
            Message::Text("tick") if self.droppable => conn.send_prepared(&self.chunk),
            Message::Text("tick") => conn.send_binary(self.chunk.payload()),
            Message::Text(text) => conn.send_text(text),
            Message::Binary(bytes) => conn.send_binary(bytes),
        };
        match sent {
            Ok(()) | Err(SendError::Dropped { .. } | SendError::BufferLimit { .. }) => {}
            Err(error) => panic!("unexpected send error: {error}"),
        }
    }
}

/// A client that sends `TICKS` ticks without reading anything.
fn slow_consumer(server: SocketAddr) -> RawClient {
    let mut slow = RawClient::connect(server);
    for _ in 0..TICKS {
        slow.send(Frame::new(opcode::TEXT, b"tick"));
    }
    slow
}

/// Echoes `count` messages on a fresh connection; the time it took.
fn fast_echoes(server: SocketAddr, count: usize) -> Duration {
    let mut fast = connect_tungstenite(server);
    let started = Instant::now();
    for i in 0..count {
        let text = format!("message {i}");
        fast.send(WsMessage::text(text.clone())).unwrap();
        assert_eq!(fast.read().unwrap(), WsMessage::text(text));
    }
    started.elapsed()
}

/// Waits until `check` holds for the server's shard stats, up to 10 s.
fn wait_for(server: &TestServer, what: &str, check: impl Fn(u64, u64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = server.stats();
        let dropped = stats.iter().map(|s| s.messages_dropped).sum();
        let open = stats.iter().map(|s| s.connections_open).sum();
        if check(dropped, open) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

on_both_drivers!(a_slow_consumer_is_closed_by_the_close_policy_while_a_fast_one_is_served);
fn a_slow_consumer_is_closed_by_the_close_policy_while_a_fast_one_is_served(driver: Driver) {
    let server = start(
        driver,
        |b| {
            b.shards(1)
                .max_send_buffer(SEND_LIMIT)
                .backpressure(Backpressure::Close(CloseCode::TRY_AGAIN_LATER))
        },
        |_| Ticker::new(false),
    );
    let mut slow = slow_consumer(server.addr());
    // Same shard (there is one): the fast client's echoes are not held
    // up by the slow one's full queue.
    let took = fast_echoes(server.addr(), 1000);
    assert!(took < Duration::from_secs(10), "{driver}: {took:?}");
    // Now the slow client reads: the chunks that fit, then 1013.
    let mut chunks = 0;
    let code = loop {
        let frame = slow.read();
        match frame.opcode {
            opcode::BINARY => chunks += 1,
            opcode::CLOSE => break frame.close_code(),
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(code, 1013, "{driver}");
    assert!(chunks < TICKS, "{driver}: {chunks} chunks");
    // The close handshake completes on the emptied connection.
    slow.send(Frame::new(opcode::CLOSE, &close_payload(1013, b"")));
    assert!(slow.closed_by_server(), "{driver}");
    server.shutdown();
}

on_both_drivers!(droppable_messages_are_dropped_for_a_slow_consumer_that_stays_open);
fn droppable_messages_are_dropped_for_a_slow_consumer_that_stays_open(driver: Driver) {
    let server = start(
        driver,
        |b| b.shards(1).max_send_buffer(SEND_LIMIT),
        |_| Ticker::new(true),
    );
    let mut slow = slow_consumer(server.addr());
    wait_for(&server, "dropped messages", |dropped, _| dropped > 0);
    let took = fast_echoes(server.addr(), 1000);
    assert!(took < Duration::from_secs(10), "{driver}: {took:?}");
    // The slow client catches up: every tick was either delivered or
    // dropped, and the connection still echoes.
    slow.send(Frame::new(opcode::TEXT, b"still here"));
    let mut chunks = 0;
    loop {
        let frame = slow.read();
        match (frame.opcode, frame.payload.as_slice()) {
            (opcode::BINARY, payload) => {
                assert_eq!(payload.len(), CHUNK);
                chunks += 1;
            }
            (opcode::TEXT, b"still here") => break,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    let dropped: u64 = server.stats().iter().map(|s| s.messages_dropped).sum();
    assert_eq!(chunks + dropped as usize, TICKS, "{driver}");
    assert!(dropped > 0 && chunks > 0, "{driver}: {chunks} {dropped}");
    drop(slow);
    server.shutdown();
}

/// Streams numbered 64 KiB chunks on request, pausing while the
/// connection is backpressured and resuming in `on_drain`.
struct Producer;

impl Producer {
    fn produce(conn: &mut Conn<(u32, u32)>) {
        while conn.state().0 < conn.state().1 && !conn.is_backpressured() {
            let mut chunk = vec![0; CHUNK];
            chunk[..4].copy_from_slice(&conn.state().0.to_be_bytes());
            conn.send_binary(&chunk).unwrap();
            conn.state_mut().0 += 1;
        }
    }
}

impl Handler for Producer {
    type State = (u32, u32);

    fn on_upgrade(
        &mut self,
        _: &UpgradeRequest<'_>,
        _: SocketAddr,
    ) -> Result<(u32, u32), Rejection> {
        Ok((0, 0))
    }

    fn on_message(&mut self, conn: &mut Conn<(u32, u32)>, message: Message<'_>) {
        let count: u32 = std::str::from_utf8(message.as_bytes())
            .unwrap()
            .parse()
            .unwrap();
        *conn.state_mut() = (0, count);
        Producer::produce(conn);
    }

    fn on_drain(&mut self, conn: &mut Conn<(u32, u32)>) {
        Producer::produce(conn);
    }
}

on_both_drivers!(on_drain_lets_a_producer_resume_without_passing_the_limit);
fn on_drain_lets_a_producer_resume_without_passing_the_limit(driver: Driver) {
    let server = start(driver, |b| b.max_send_buffer(512 * 1024), |_| Producer);
    let mut socket = connect_tungstenite(server.addr());
    // 64 MiB through a 512 KiB send buffer: only on_drain gets it there.
    let count = 1024u32;
    socket.send(WsMessage::text(count.to_string())).unwrap();
    for expected in 0..count {
        if expected == 8 {
            // Stop reading a while, so the socket pushes back.
            thread::sleep(Duration::from_millis(200));
        }
        let WsMessage::Binary(chunk) = socket.read().unwrap() else {
            panic!("expected a binary chunk");
        };
        let number = u32::from_be_bytes(chunk[..4].try_into().unwrap());
        assert_eq!(number, expected, "{driver}");
    }
    socket.close(None).unwrap();
    server.shutdown();
}

/// Sends its prepared message to every connection as it opens.
struct Greeter(PreparedMessage);

impl Handler for Greeter {
    type State = ();

    fn on_upgrade(&mut self, _: &UpgradeRequest<'_>, _: SocketAddr) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_open(&mut self, conn: &mut Conn<()>) {
        conn.send_prepared(&self.0).unwrap();
    }

    fn on_message(&mut self, _: &mut Conn<()>, _: Message<'_>) {}
}

on_both_drivers!(a_prepared_message_reaches_plain_and_compressed_connections);
fn a_prepared_message_reaches_plain_and_compressed_connections(driver: Driver) {
    let text = "shardcast ".repeat(100);
    let greeting = PreparedMessage::text(&text);
    let server = start(driver, |b| b, move |_| Greeter(greeting.clone()));
    for _ in 0..3 {
        let mut plain = connect_tungstenite(server.addr());
        assert_eq!(plain.read().unwrap(), WsMessage::text(text.clone()));
    }
    let (mut raw, head) = RawClient::connect_with(server.addr(), DEFLATE_OFFER);
    assert!(head.contains("permessage-deflate"), "{head}");
    let frame = raw.read();
    assert_eq!(frame.opcode, opcode::TEXT);
    assert!(frame.rsv1, "{driver}: sent compressed");
    let mut inflated = Vec::with_capacity(2 * text.len());
    let mut payload = frame.payload;
    payload.extend_from_slice(&[0, 0, 0xff, 0xff]);
    flate2::Decompress::new(false)
        .decompress_vec(&payload, &mut inflated, flate2::FlushDecompress::Sync)
        .unwrap();
    assert!(payload.len() < text.len(), "sent compressed");
    inflated.truncate(text.len());
    assert_eq!(inflated, text.as_bytes(), "{driver}");
    server.shutdown();
}

on_both_drivers!(heartbeats_keep_an_answering_peer_and_close_a_silent_one_with_1001);
fn heartbeats_keep_an_answering_peer_and_close_a_silent_one_with_1001(driver: Driver) {
    let second = Duration::from_secs(1);
    let server = start(
        driver,
        |b| b.idle_timeout(None).heartbeat(Some((second, second))),
        |_| Ticker::new(false),
    );
    // The raw client never answers pings.
    let mut silent = RawClient::connect(server.addr());
    let started = Instant::now();
    let ping = silent.read();
    assert_eq!(ping.opcode, opcode::PING, "{driver}: a heartbeat ping");
    let close = silent.read();
    assert_eq!(close.close_code(), 1001, "{driver}");
    assert_eq!(&close.payload[2..], b"heartbeat timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    // tungstenite answers pings as it reads: the connection lives on.
    let mut answering = connect_tungstenite(server.addr());
    answering
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    let mut pings = 0;
    while Instant::now() < until {
        match answering.read() {
            Ok(WsMessage::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(error))
                if error.kind() == std::io::ErrorKind::WouldBlock =>
            {
                let _ = answering.flush();
            }
            Err(error) => panic!("{driver}: {error}"),
        }
    }
    assert!(pings >= 2, "{driver}: {pings} pings");
    answering.send(WsMessage::text("alive")).unwrap();
    answering
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loop {
        match answering.read().unwrap() {
            WsMessage::Ping(_) => {}
            other => {
                assert_eq!(other, WsMessage::text("alive"));
                break;
            }
        }
    }
    drop((silent, answering));
    server.shutdown();
}

#[test]
fn connections_past_the_per_address_limit_get_503() {
    let server = shardcast::Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .listen("[::1]:0".parse().unwrap())
        .pin_cores(false)
        .max_connections_per_ip(Some(2))
        .build(|_| Ticker::new(false))
        .start()
        .unwrap();
    let (v4, v6) = (server.local_addrs()[0], server.local_addrs()[1]);
    let first = connect_tungstenite(v4);
    let second = connect_tungstenite(v4);
    let mut third = TcpStream::connect(v4).unwrap();
    third.write_all(upgrade_request("").as_bytes()).unwrap();
    assert!(read_head(&mut third).starts_with("HTTP/1.1 503 "));
    // Another address has its own count.
    let other = connect_tungstenite(v6);
    drop((first, other));
    // A closed connection gives its place back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        let stream = TcpStream::connect(v4).unwrap();
        match tungstenite::client(format!("ws://{v4}/"), stream) {
            Ok((socket, _)) => break socket,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("the place was not given back: {error}"),
        }
    };
    drop((second, again));
    server.shutdown(Instant::now() + Duration::from_secs(5));
}
