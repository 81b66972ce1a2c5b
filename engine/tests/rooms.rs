//! Rooms over four shards, with real clients: every member receives every
//! message of its rooms exactly once and in the room's one order; a
//! publisher can leave itself out; broadcast reaches every connection;
//! joins, leaves and closes racing publications neither lose nor leak; a
//! slow member pays alone.
//!
//! The server's handler speaks a small text protocol, so the clients are
//! plain tungstenite sockets: `join R`, `leave R`, `pub R PAYLOAD`, `pubx R
//! PAYLOAD` (not to itself), `receipt R TAG PAYLOAD`, `bcast PAYLOAD`. It
//! answers `joined R OFFSET SHARD` when a join takes effect, `left R` after
//! a leave, `published R TAG OFFSET` for a receipt; room messages and
//! broadcasts arrive as published.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{Driver, TestServer, on_both_drivers, start};
use shardcast::{
    Conn, Handler, Message, Position, PreparedMessage, PublishOptions, Rejection, UpgradeRequest,
};
use tungstenite::{Message as WsMessage, WebSocket};

/// The shards every test runs: more than the cores of a small machine.
const SHARDS: usize = 4;

/// The test protocol's server side.
struct TextRooms;

impl Handler for TextRooms {
    type State = ();

    fn on_upgrade(&mut self, _: &UpgradeRequest<'_>, _: SocketAddr) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_message(&mut self, conn: &mut Conn<()>, message: Message<'_>) {
        let Message::Text(text) = message else {
            return;
        };
        let mut words = text.splitn(3, ' ');
        let command = words.next().unwrap_or_default();
        let room = words.next().unwrap_or_default();
        let rest = words.next().unwrap_or_default();
        match command {
            "join" => {
                conn.join(room).unwrap();
            }
            "leave" => {
                assert!(conn.leave(room));
                conn.send_text(&format!("left {room}")).unwrap();
            }
            "pub" => conn.publish(room, &PreparedMessage::text(rest)).unwrap(),
            "pubx" => conn
                .publish_with(
                    room,
                    &PreparedMessage::text(rest),
                    &PublishOptions::new().except_self(),
                )
                .unwrap(),
            "receipt" => {
                let (tag, payload) = rest.split_once(' ').unwrap();
                let options = PublishOptions::new().receipt(tag.parse().unwrap());
                conn.publish_with(room, &PreparedMessage::text(payload), &options)
                    .unwrap();
            }
            "bcast" => conn.hub().broadcast(&PreparedMessage::text(room)),
            other => panic!("unknown command {other}"),
        }
    }

    fn on_joined(&mut self, conn: &mut Conn<()>, room: &str, position: Position) {
        let shard = conn.id().shard();
        conn.send_text(&format!("joined {room} {} {shard}", position.offset))
            .unwrap();
    }

    fn on_published(&mut self, conn: &mut Conn<()>, room: &str, tag: u64, position: Position) {
        conn.send_text(&format!("published {room} {tag} {}", position.offset))
            .unwrap();
    }
}

fn server(driver: Driver) -> TestServer {
    server_with(driver, |builder| builder)
}

fn server_with(
    driver: Driver,
    configure: impl FnOnce(shardcast::ServerBuilder) -> shardcast::ServerBuilder,
) -> TestServer {
    start(
        driver,
        |builder| configure(builder.shards(SHARDS)),
        |_| TextRooms,
    )
}

/// One test client.
struct Client {
    socket: WebSocket<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        Client {
            socket: common::connect_tungstenite(addr),
        }
    }

    /// A client whose socket receive buffer is 4 KiB, so that when it
    /// stops reading the server's send buffer fills soon.
    fn connect_small(addr: SocketAddr) -> Client {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
        let (socket, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
        Client { socket }
    }

    fn send(&mut self, text: &str) {
        self.socket.send(WsMessage::text(text)).unwrap();
    }

    fn read(&mut self) -> String {
        loop {
            match self.socket.read().unwrap() {
                WsMessage::Text(text) => return text.to_string(),
                WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Closes the connection and reads until the server's close: a socket
    /// dropped with unread bytes is reset, and the server would lose what
    /// it had not read yet.
    fn close(mut self) {
        self.socket.close(None).unwrap();
        while self.socket.read().is_ok() {}
    }

    /// Joins `room`; the offset its join took effect at, and its shard.
    fn join(&mut self, room: &str) -> (u64, usize) {
        self.send(&format!("join {room}"));
        let answer = self.read();
        let words: Vec<&str> = answer.split(' ').collect();
        assert_eq!(words[..2], ["joined", room], "{answer}");
        (words[2].parse().unwrap(), words[3].parse().unwrap())
    }
}

/// Waits until `check` holds, failing after 10 seconds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Members on every shard, several publishers per room: each member
/// receives each room's messages once, in the same order as every other
/// member, and each publisher's in the order it sent them.
fn every_member_gets_every_message_once_in_one_order(driver: Driver) {
    let server = server(driver);
    let addr = server.addr();
    const MEMBERS: usize = 24;
    const PUBLISHERS: usize = 6;
    const EACH: usize = 40;
    let rooms = ["alpha", "beta"];
    let mut members: Vec<Client> = (0..MEMBERS).map(|_| Client::connect(addr)).collect();
    let mut shards = HashSet::new();
    for member in &mut members {
        for room in rooms {
            shards.insert(member.join(room).1);
        }
    }
    assert_eq!(shards.len(), SHARDS, "members on every shard");
    eventually("every join to reach the owners", || {
        rooms
            .iter()
            .all(|room| server.handle.room_size(room).unwrap() == MEMBERS)
    });
    // The first members publish, interleaved over both rooms.
    let start = Arc::new(Barrier::new(PUBLISHERS));
    let mut publishers = Vec::new();
    for index in 0..PUBLISHERS {
        let start = Arc::clone(&start);
        publishers.push(thread::spawn(move || {
            let mut client = Client::connect(addr);
            start.wait();
            for seq in 0..EACH {
                let room = rooms[seq % 2];
                client.send(&format!("pub {room} {room}/{index}/{seq}"));
            }
        }));
    }
    for publisher in publishers {
        publisher.join().unwrap();
    }
    let expected = PUBLISHERS * EACH;
    let mut orders: Vec<Vec<String>> = Vec::new();
    for member in &mut members {
        let mut received: Vec<String> = (0..expected).map(|_| member.read()).collect();
        let unique: HashSet<&String> = received.iter().collect();
        assert_eq!(unique.len(), expected, "no duplicates");
        for room in rooms {
            for index in 0..PUBLISHERS {
                let seqs: Vec<usize> = received
                    .iter()
                    .filter_map(|m| m.strip_prefix(&format!("{room}/{index}/")))
                    .map(|seq| seq.parse().unwrap())
                    .collect();
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "publisher order");
                assert_eq!(seqs.len(), EACH / 2);
            }
        }
        // The rooms' streams are independent: compare each room's order.
        received.sort_by_key(|m| !m.starts_with("alpha"));
        orders.push(received);
    }
    for order in &orders[1..] {
        for room in rooms {
            let of = |list: &Vec<String>| -> Vec<String> {
                list.iter()
                    .filter(|m| m.starts_with(room))
                    .cloned()
                    .collect()
            };
            assert_eq!(of(order), of(&orders[0]), "one order per room");
        }
    }
    members.into_iter().for_each(Client::close);
    server.shutdown();
}
on_both_drivers!(every_member_gets_every_message_once_in_one_order);

/// `pubx` reaches every member but its publisher; a receipt comes back
/// with the message's offset; broadcast reaches members and others alike.
fn publish_except_receipts_and_broadcast(driver: Driver) {
    let server = server(driver);
    let addr = server.addr();
    let mut members: Vec<Client> = (0..8).map(|_| Client::connect(addr)).collect();
    let mut outsider = Client::connect(addr);
    for member in &mut members {
        member.join("room");
    }
    eventually("joins", || server.handle.room_size("room").unwrap() == 8);
    members[0].send("pubx room not-for-me");
    members[0].send("receipt room 77 for-all");
    assert_eq!(members[0].read(), "for-all");
    assert_eq!(members[0].read(), "published room 77 2");
    for member in &mut members[1..] {
        assert_eq!(member.read(), "not-for-me");
        assert_eq!(member.read(), "for-all");
    }
    members[3].send("bcast everyone");
    for member in &mut members {
        assert_eq!(member.read(), "everyone");
    }
    assert_eq!(outsider.read(), "everyone");
    members.into_iter().for_each(Client::close);
    outsider.close();
    server.shutdown();
}
on_both_drivers!(publish_except_receipts_and_broadcast);

/// Members join and leave over and over while one publisher publishes to
/// the room: from its join's offset to its leave, a member receives every
/// message, consecutively; after `left`, nothing. When everyone has gone,
/// every shard's room index is empty.
fn joins_and_leaves_racing_publications(driver: Driver) {
    let server = server_with(driver, |builder| builder.room_history(0, None));
    let addr = server.addr();
    const CHURNERS: usize = 12;
    const ROUNDS: usize = 15;
    // A member for the whole test keeps the room's stream going (one
    // epoch), so its offsets are the publisher's sequence numbers.
    let mut observer = Client::connect(addr);
    assert_eq!(observer.join("churn").0, 0);
    let observer = thread::spawn(move || {
        let mut last = 0;
        loop {
            let message = observer.read();
            if message == "marker" {
                continue;
            }
            if message == "end" {
                return last;
            }
            let seq: u64 = message.parse().unwrap();
            assert_eq!(seq, last + 1, "the observer misses nothing");
            last = seq;
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut client = Client::connect(addr);
            let mut seq = 1u64;
            while !stop.load(Ordering::Relaxed) {
                // One publisher: the room's offsets are its sequence.
                client.send(&format!("pub churn {seq}"));
                seq += 1;
                if seq % 32 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            client.send("pub churn end");
            client.close();
            seq - 1
        })
    };
    let done = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..CHURNERS)
        .map(|_| {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut received = 0;
                for _ in 0..ROUNDS {
                    let (mut last, _) = client.join("churn");
                    let mut reads = 0;
                    while reads < 20 {
                        if let Some(seq) = room_message(&mut client) {
                            assert_eq!(seq, last + 1, "consecutive while a member");
                            last = seq;
                            reads += 1;
                        }
                    }
                    client.send("leave churn");
                    loop {
                        let message = client.read();
                        if message == "left churn" {
                            break;
                        }
                        if message != "marker" {
                            let seq: u64 = message.parse().unwrap();
                            assert_eq!(seq, last + 1, "consecutive until the leave");
                            last = seq;
                        }
                    }
                    received += reads;
                }
                // Nothing of the room after the leave: once every churner
                // has left, each broadcasts a marker, and each receives
                // every marker and no room message.
                done.fetch_add(1, Ordering::SeqCst);
                eventually("every churner to leave", || {
                    done.load(Ordering::SeqCst) == CHURNERS
                });
                client.send("bcast marker");
                for _ in 0..CHURNERS {
                    assert_eq!(client.read(), "marker", "only markers after leaving");
                }
                received
            })
        })
        .collect();
    for churner in churners {
        assert!(churner.join().unwrap() >= ROUNDS * 20);
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    assert_eq!(observer.join().unwrap(), published);
    eventually("every room index to empty", || {
        server
            .stats()
            .iter()
            .all(|shard| shard.rooms == 0 && shard.room_members == 0 && shard.owned_rooms == 0)
    });
    assert_eq!(server.handle.room_size("churn").unwrap(), 0);
    server.shutdown();
}
on_both_drivers!(joins_and_leaves_racing_publications);

/// The next room message of the churn test, skipping other churners'
/// broadcast markers.
fn room_message(client: &mut Client) -> Option<u64> {
    let message = client.read();
    (message != "marker").then(|| message.parse().unwrap())
}

/// Members that close without leaving are removed from their rooms.
fn closing_members_leave_their_rooms(driver: Driver) {
    let server = server_with(driver, |builder| builder.room_history(0, None));
    let addr = server.addr();
    let mut members: Vec<Client> = (0..16).map(|_| Client::connect(addr)).collect();
    for (index, member) in members.iter_mut().enumerate() {
        member.join("a");
        member.join(&format!("own-{index}"));
    }
    eventually("joins", || server.handle.room_size("a").unwrap() == 16);
    for member in &mut members {
        member.socket.close(None).unwrap();
    }
    eventually("every room index to empty", || {
        server
            .stats()
            .iter()
            .all(|shard| shard.rooms == 0 && shard.room_members == 0 && shard.owned_rooms == 0)
    });
    server.shutdown();
}
on_both_drivers!(closing_members_leave_their_rooms);

/// A member that stops reading hits the backpressure policy (closed with
/// 1008 past its send buffer limit); the others, reading, receive every
/// message, the publisher's pace set by them alone.
fn a_slow_member_pays_alone(driver: Driver) {
    let server = server_with(driver, |builder| builder.max_send_buffer(256 << 10));
    let addr = server.addr();
    let mut slow = Client::connect_small(addr);
    slow.join("big");
    let mut members: Vec<Client> = (0..6).map(|_| Client::connect(addr)).collect();
    for member in &mut members {
        member.join("big");
    }
    eventually("joins", || server.handle.room_size("big").unwrap() == 7);
    const MESSAGES: usize = 8000;
    // The publisher stays at most this many messages ahead of the slowest
    // reading member: 64 KiB, well within their send buffers, however
    // loaded the machine; the member that does not read falls behind
    // without bound.
    const WINDOW: usize = 64;
    let payload = "x".repeat(1024);
    let progress: Vec<Arc<AtomicUsize>> = (0..members.len())
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let readers: Vec<_> = members
        .into_iter()
        .zip(&progress)
        .map(|(mut member, progress)| {
            let progress = Arc::clone(progress);
            thread::spawn(move || {
                for read in 1..=MESSAGES {
                    assert_eq!(member.read().len(), 1024);
                    progress.store(read, Ordering::Release);
                }
                member
            })
        })
        .collect();
    let mut publisher = Client::connect(addr);
    for index in 0..MESSAGES {
        if index >= WINDOW {
            eventually("the reading members to keep up", || {
                progress
                    .iter()
                    .all(|read| read.load(Ordering::Acquire) >= index - WINDOW)
            });
        }
        publisher.send(&format!("pub big {payload}"));
    }
    let members: Vec<Client> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    // The slow member reads what was queued before the limit, then the
    // close frame.
    let code = loop {
        match slow.socket.read() {
            Ok(WsMessage::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(error) => panic!("no close frame: {error}"),
        }
    };
    assert_eq!(code, Some(1008));
    // Sends tungstenite's answer to the close.
    let _ = slow.socket.flush();
    for member in members {
        member.close();
    }
    publisher.close();
    server.shutdown();
}
on_both_drivers!(a_slow_member_pays_alone);
