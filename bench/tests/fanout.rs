//! `shardcast-bench fanout`, and `echo --protocol socket.io`, end to end
//! against the real servers: the Node peers
//! (`bench/peers/uwebsockets-js/fanout.js`, `bench/peers/socket.io/server.js`)
//! and the workspace's `shardcast serve` (shardcast.v1 rooms, two shards);
//! and against small lossy servers this test starts, a uws-topics one and
//! a scripted shardcast.v1 one (deliveries batched), which the run must
//! catch.
//!
//! The Node peers need `node` and their `node_modules`: run
//! `bench/peers/install` once (CI does, in `ci/run`). Without them these
//! tests fail and say so: a benchmark whose peers are missing is not a
//! passing one.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::shardcast_binary;
use serde_json::Value;
use shardcast_proto::envelope::{self, Body, EnvelopeWriter, ErrorCode, VerifyLimits};
use tungstenite::Message;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// A Node peer server, killed when dropped.
struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `node bench/peers/PACKAGE/SCRIPT PORT` on a free port and waits
/// for its "listening" line.
fn start_peer(package: &str, script: &str) -> Peer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(package);
    assert!(
        dir.join("node_modules").is_dir(),
        "bench/peers/{package}/node_modules is missing: run bench/peers/install first"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("starting node ({error}): install Node.js, then run bench/peers/install")
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening"),
        "{package}/{script}: {line:?}"
    );
    Peer { child, port }
}

/// Starts the workspace's `shardcast serve` (shardcast.v1 rooms) with two
/// unpinned shards on a free port, and waits until it accepts connections.
fn start_shardcast() -> Peer {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(shardcast_binary())
        .args(["serve", "--shards", "2", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("SHARDCAST_SERVER_PIN_CORES", "false")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Peer { child, port };
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("shardcast serve exited with {status}");
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!("shardcast serve did not listen on {port} within 5 s");
}

/// Runs the generator for about a second with `args` and returns its exit
/// success and JSON result.
fn run_bench(args: &[&str]) -> (bool, Value) {
    let mut args = args.to_vec();
    args.extend(["--warmup", "0.3", "--duration", "0.7", "--json"]);
    common::run_bench(&args)
}

/// The next binary message of a scripted server's client: `Ok(None)` when
/// none came within the read timeout (or another kind came), `Err` once
/// the client is gone (the generator drops its connections at the end of
/// the run).
fn next_binary(
    socket: &mut tungstenite::WebSocket<TcpStream>,
) -> Result<Option<tungstenite::Bytes>, ()> {
    match socket.read() {
        Ok(Message::Binary(bytes)) => Ok(Some(bytes)),
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Io(error))
            if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
        {
            Ok(None)
        }
        Err(_) => Err(()),
    }
}

/// Runs `fanout` against the server on `port` and checks the outcome is
/// valid: deliveries, no loss, every key of the output contract.
fn fanout_is_clean(port: u16, pid: u32, protocol: &str, extra: &[&str]) -> Value {
    let url = format!("ws://127.0.0.1:{port}");
    let pid = pid.to_string();
    let mut args = vec!["fanout", "--url", &url, "--protocol", protocol];
    args.extend(["--server-pid", &pid]);
    args.extend(extra);
    let (success, result) = run_bench(&args);
    assert!(success, "{result}");
    assert_eq!(result["scenario"], "fanout");
    assert_eq!(result["params"]["protocol"], protocol, "{result}");
    let metrics = &result["metrics"];
    for key in [
        "deliveries_per_second",
        "publishes_per_second",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "server_micros_per_delivery",
        "server_core_share",
        "generator_core_share",
    ] {
        assert!(metrics[key].as_f64().is_some(), "{key}: {result}");
    }
    assert!(metrics["deliveries"].as_u64().unwrap() > 0, "{result}");
    for key in ["lost", "duplicates", "out_of_order", "corrupt"] {
        assert_eq!(metrics[key], 0, "{key}: {result}");
    }
    result
}

#[test]
fn uws_topics_one_room_closed_loop() {
    let peer = start_peer("uwebsockets-js", "fanout.js");
    let result = fanout_is_clean(
        peer.port,
        peer.child.id(),
        "uws-topics",
        &["--subscribers", "20", "--publishers", "2"],
    );
    // Every round delivers each publisher's message to every subscriber.
    let metrics = &result["metrics"];
    let ratio = metrics["deliveries_per_second"].as_f64().unwrap()
        / metrics["publishes_per_second"].as_f64().unwrap();
    assert!((ratio - 20.0).abs() < 1.0, "{result}");
}

#[test]
fn uws_topics_many_rooms_open_loop() {
    let peer = start_peer("uwebsockets-js", "fanout.js");
    let result = fanout_is_clean(
        peer.port,
        peer.child.id(),
        "uws-topics",
        &["--subscribers", "20", "--rooms", "5", "--rate", "2000"],
    );
    let rate = result["metrics"]["publishes_per_second"].as_f64().unwrap();
    assert!((1600.0..2400.0).contains(&rate), "{result}");
    assert_eq!(result["params"]["mode"], "open-loop");
}

#[test]
fn socket_io_rooms_closed_and_open_loop() {
    let peer = start_peer("socket.io", "server.js");
    let extra = ["--subscribers", "20", "--rooms", "2", "--publishers", "2"];
    fanout_is_clean(peer.port, peer.child.id(), "socket.io", &extra);
    let result = fanout_is_clean(
        peer.port,
        peer.child.id(),
        "socket.io",
        &["--subscribers", "10", "--rate", "500"],
    );
    assert_eq!(result["params"]["rate_per_second"], 500.0, "{result}");
}

#[test]
fn socket_io_echo() {
    let peer = start_peer("socket.io", "server.js");
    let url = format!("ws://127.0.0.1:{}", peer.port);
    let (success, result) = run_bench(&[
        "echo",
        "--url",
        &url,
        "--protocol",
        "socket.io",
        "--connections",
        "8",
        "--in-flight",
        "2",
    ]);
    assert!(success, "{result}");
    assert_eq!(result["params"]["protocol"], "socket.io", "{result}");
    let metrics = &result["metrics"];
    assert!(metrics["echoes"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(metrics["mismatches"], 0, "{result}");
}

/// The subscribers of a one-room uws-topics server, each a queue its
/// connection's thread writes from.
type Subscribers = Arc<Mutex<Vec<Sender<Vec<u8>>>>>;

/// Starts a uws-topics server (see `bench/peers/uwebsockets-js/fanout.js`)
/// that skips every `drop_every`-th publish for its subscribers; returns
/// its port.
fn start_lossy_topics_server(drop_every: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let subscribers = Subscribers::default();
    let publishes = Arc::new(Mutex::new(0u64));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (subscribers, publishes) = (Arc::clone(&subscribers), Arc::clone(&publishes));
            thread::spawn(move || topics_connection(stream, &subscribers, &publishes, drop_every));
        }
    });
    port
}

/// One connection of the lossy server: joins, publishes (every
/// `drop_every`-th one dropped), and the deliveries queued for it.
fn topics_connection(
    stream: TcpStream,
    subscribers: &Subscribers,
    publishes: &Mutex<u64>,
    drop_every: u64,
) {
    stream.set_nodelay(true).unwrap();
    let Ok(mut socket) = tungstenite::accept(stream) else {
        return;
    };
    socket
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut deliveries: Option<Receiver<Vec<u8>>> = None;
    loop {
        if let Some(deliveries) = &deliveries {
            for payload in deliveries.try_iter() {
                if socket.send(Message::binary(payload)).is_err() {
                    return;
                }
            }
        }
        let message = match next_binary(&mut socket) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(()) => return,
        };
        match message.first() {
            Some(b'J') => {
                let (sender, receiver) = mpsc::channel();
                subscribers.lock().unwrap().push(sender);
                deliveries = Some(receiver);
                if socket.send(Message::binary(message)).is_err() {
                    return;
                }
            }
            Some(b'P') => {
                let mut count = publishes.lock().unwrap();
                *count += 1;
                if *count % drop_every != 0 {
                    let payload = message[2 + usize::from(message[1])..].to_vec();
                    for subscriber in subscribers.lock().unwrap().iter() {
                        let _ = subscriber.send(payload.clone());
                    }
                }
            }
            _ => return,
        }
    }
}

#[test]
fn a_server_that_drops_publishes_fails_the_run() {
    let port = start_lossy_topics_server(50);
    let url = format!("ws://127.0.0.1:{port}");
    let (success, result) = run_bench(&[
        "fanout",
        "--url",
        &url,
        "--protocol",
        "uws-topics",
        "--subscribers",
        "4",
        "--rate",
        "1000",
    ]);
    assert!(!success, "{result}");
    assert!(result["metrics"]["lost"].as_u64().unwrap() > 0, "{result}");
    assert!(
        result["metrics"]["deliveries"].as_u64().unwrap() > 0,
        "{result}"
    );
}

#[test]
fn sizes_below_the_header_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .args([
            "fanout",
            "--url",
            "ws://127.0.0.1:9/",
            "--protocol",
            "uws-topics",
        ])
        .args(["--size", "8"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("at least 24"),
        "{output:?}"
    );
}

/// A message queued for one member of a scripted shardcast.v1 room:
/// room, offset, payload.
type Queued = (String, u64, Vec<u8>);

/// A room of the scripted shardcast.v1 server.
#[derive(Default)]
struct V1Room {
    /// The offset of the room's last message.
    offset: u64,
    /// Each member's connection number and queue.
    members: Vec<(usize, Sender<Queued>)>,
}

/// The rooms of the scripted shardcast.v1 server, by name.
type V1Rooms = Arc<Mutex<HashMap<String, V1Room>>>;

/// The epoch of every room of the scripted server.
const EPOCH: u64 = 7;

/// Starts a lossy scripted shardcast.v1 room server, which the run must
/// catch: it upgrades only clients that offer the subprotocol, sends a
/// `Welcome` first, acknowledges joins with the room's position, refuses
/// publishes to rooms not joined (`NotJoined`), honours `exclude_self`,
/// and writes whatever is queued for a connection as one `Batch` when
/// there is more than one message; but every `skip_offset_every` messages
/// of a room skip an offset (a message the server lost). Returns its port.
fn start_lossy_v1_server(skip_offset_every: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rooms = V1Rooms::default();
    thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let rooms = Arc::clone(&rooms);
            thread::spawn(move || v1_connection(id, stream, &rooms, skip_offset_every));
        }
    });
    port
}

/// Accepts an upgrade that offers shardcast.v1, and answers with it.
#[expect(
    clippy::result_large_err,
    reason = "the signature of tungstenite's handshake callback"
)]
fn offers_v1(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|p| p.trim() == "shardcast.v1"));
    if !offered {
        let mut refusal = ErrorResponse::new(Some("offer shardcast.v1".to_owned()));
        *refusal.status_mut() = tungstenite::http::StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "shardcast.v1".parse().unwrap());
    Ok(response)
}

/// One connection of the scripted shardcast.v1 server, number `id`.
fn v1_connection(id: usize, stream: TcpStream, rooms: &V1Rooms, skip_offset_every: u64) {
    stream.set_nodelay(true).unwrap();
    let Ok(mut socket) = tungstenite::accept_hdr(stream, offers_v1) else {
        return;
    };
    socket
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut writer = EnvelopeWriter::new();
    let welcome = writer.welcome("session", b"token", 25_000, false, &[]);
    if socket.send(Message::binary(welcome.to_vec())).is_err() {
        return;
    }
    let (sender, deliveries) = mpsc::channel::<Queued>();
    let mut joined: Vec<String> = Vec::new();
    loop {
        let queued: Vec<Queued> = deliveries.try_iter().collect();
        let reply = match queued.as_slice() {
            [] => None,
            [(room, offset, payload)] => Some(
                writer
                    .message(room, *offset, EPOCH, payload, Some("m"))
                    .to_vec(),
            ),
            _ => {
                let mut batch = writer.batch();
                for (room, offset, payload) in &queued {
                    batch.message(room, *offset, EPOCH, payload, None);
                }
                Some(batch.finish().to_vec())
            }
        };
        if let Some(reply) = reply {
            if socket.send(Message::binary(reply)).is_err() {
                return;
            }
        }
        let bytes = match next_binary(&mut socket) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(()) => return,
        };
        let envelope = envelope::read(&bytes, &VerifyLimits::DEFAULT).unwrap();
        let answer = match envelope.body_type() {
            Body::Join => {
                let join = envelope.body_as_join().unwrap();
                let mut rooms = rooms.lock().unwrap();
                let room = rooms.entry(join.room().to_owned()).or_default();
                room.members.push((id, sender.clone()));
                joined.push(join.room().to_owned());
                join.ack()
                    .map(|ack| writer.ack_position(ack, room.offset, EPOCH).to_vec())
            }
            Body::Publish => {
                let publish = envelope.body_as_publish().unwrap();
                if joined.iter().any(|room| room == publish.room()) {
                    let mut rooms = rooms.lock().unwrap();
                    let room = rooms.get_mut(publish.room()).unwrap();
                    room.offset += 1;
                    if room.offset % skip_offset_every == 0 {
                        room.offset += 1;
                    }
                    let payload = envelope::bytes(publish.payload());
                    for (member, queue) in &room.members {
                        if *member != id || !publish.exclude_self() {
                            let queued = (publish.room().to_owned(), room.offset, payload.to_vec());
                            let _ = queue.send(queued);
                        }
                    }
                    None
                } else {
                    let error = writer.error(
                        ErrorCode::NotJoined,
                        "join first",
                        None,
                        Some(publish.room()),
                    );
                    Some(error.to_vec())
                }
            }
            other => panic!("the scripted server got {other:?}"),
        };
        if let Some(answer) = answer {
            if socket.send(Message::binary(answer)).is_err() {
                return;
            }
        }
    }
}

#[test]
fn shardcast_v1_rooms_closed_loop() {
    let server = start_shardcast();
    let result = fanout_is_clean(
        server.port,
        server.child.id(),
        "shardcast-v1",
        &["--subscribers", "20", "--rooms", "4", "--publishers", "2"],
    );
    // Publishers 0 and 1 share out rooms 0 to 3: each message reaches the
    // 5 subscribers of its room, and no publisher gets its own back.
    let metrics = &result["metrics"];
    let ratio = metrics["deliveries_per_second"].as_f64().unwrap()
        / metrics["publishes_per_second"].as_f64().unwrap();
    assert!((ratio - 5.0).abs() < 0.5, "{result}");
}

#[test]
fn shardcast_v1_more_publishers_than_rooms_open_loop() {
    // Each publisher joins its one room and receives the other publishers'
    // messages there, which must not count as deliveries.
    let server = start_shardcast();
    let result = fanout_is_clean(
        server.port,
        server.child.id(),
        "shardcast-v1",
        &[
            "--subscribers",
            "6",
            "--rooms",
            "2",
            "--publishers",
            "4",
            "--rate",
            "1000",
        ],
    );
    let metrics = &result["metrics"];
    let ratio = metrics["deliveries_per_second"].as_f64().unwrap()
        / metrics["publishes_per_second"].as_f64().unwrap();
    assert!((ratio - 3.0).abs() < 0.5, "{result}");
}

#[test]
fn shardcast_v1_offset_gaps_fail_the_run() {
    let port = start_lossy_v1_server(50);
    let url = format!("ws://127.0.0.1:{port}");
    let (success, result) = run_bench(&[
        "fanout",
        "--url",
        &url,
        "--protocol",
        "shardcast-v1",
        "--subscribers",
        "4",
        "--rate",
        "1000",
    ]);
    assert!(!success, "{result}");
    assert!(
        result["metrics"]["failed_connections"].as_u64().unwrap() > 0,
        "{result}"
    );
    let error = result["diagnostics"]["first_error"].as_str().unwrap();
    assert!(error.contains("missing or repeated"), "{result}");
}

#[test]
fn shardcast_v1_needs_a_server_that_accepts_the_subprotocol() {
    // The lossy topics server speaks no subprotocol.
    let port = start_lossy_topics_server(1_000_000);
    let url = format!("ws://127.0.0.1:{port}");
    let (success, result) = run_bench(&[
        "fanout",
        "--url",
        &url,
        "--protocol",
        "shardcast-v1",
        "--subscribers",
        "2",
        "--connect-timeout",
        "2",
    ]);
    assert!(!success, "{result}");
    let error = result["diagnostics"]["first_error"].as_str().unwrap();
    assert!(
        error.contains("did not accept the subprotocol shardcast.v1"),
        "{result}"
    );
}
