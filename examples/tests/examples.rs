//! Each example, run as its own process on a free port and driven by a real
//! client: what its documentation says it does, it does.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::Duration;

use shardcast_proto::envelope::{self, Body, EnvelopeWriter, ErrorCode, SUBPROTOCOL, VerifyLimits};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// An example running on a free loopback port, killed when dropped.
struct Example {
    child: Child,
    addr: String,
    _stdout: BufReader<ChildStdout>,
}

impl Example {
    /// Starts the example binary `path` and waits for its `listening on`.
    fn start(path: &str) -> Example {
        let mut child = Command::new(path)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Example {
            child,
            addr,
            _stdout: stdout,
        }
    }

    fn connect(&self, headers: &[(&'static str, &str)], v1: bool) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = format!("ws://{}/", self.addr)
            .into_client_request()
            .unwrap();
        if v1 {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
        }
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        let mut socket = tungstenite::client(request, stream)
            .map_err(|error| format!("{error}"))
            .unwrap()
            .0;
        if v1 {
            let welcome = socket.read().unwrap().into_data();
            let welcome = envelope::read(&welcome, &VerifyLimits::default()).unwrap();
            assert_eq!(welcome.body_type(), Body::Welcome, "a Welcome first");
        }
        socket
    }

    /// Whether an upgrade with `headers` is refused with `status`.
    fn refuses(&self, headers: &[(&'static str, &str)], status: u16) -> bool {
        let stream = TcpStream::connect(&self.addr).unwrap();
        let mut request = format!("ws://{}/", self.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        matches!(
            tungstenite::client(request, stream),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)))
                if response.status() == status
        )
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(socket: &mut WebSocket<TcpStream>) -> String {
    loop {
        match socket.read().unwrap() {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// One envelope, reduced to what the tests compare.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Ack(u64, Vec<u8>, Option<ErrorCode>),
    Message(String, Vec<u8>, Option<String>),
    Event(String, Vec<u8>),
}

fn send(socket: &mut WebSocket<TcpStream>, bytes: &[u8]) {
    socket.send(Message::binary(bytes.to_vec())).unwrap();
}

fn read(socket: &mut WebSocket<TcpStream>) -> Got {
    let bytes = loop {
        match socket.read().unwrap() {
            Message::Binary(bytes) => break bytes,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    let envelope = envelope::read(&bytes, &VerifyLimits::default()).unwrap();
    match envelope.body_type() {
        Body::Ack => {
            let ack = envelope.body_as_ack().unwrap();
            Got::Ack(
                ack.id(),
                envelope::bytes(ack.payload()).to_vec(),
                ack.error(),
            )
        }
        Body::Message => {
            let message = envelope.body_as_message().unwrap();
            Got::Message(
                message.room().to_owned(),
                envelope::bytes(message.payload()).to_vec(),
                message.publisher().map(str::to_owned),
            )
        }
        Body::Event => {
            let event = envelope.body_as_event().unwrap();
            Got::Event(
                event.name().to_owned(),
                envelope::bytes(event.payload()).to_vec(),
            )
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn rooms_joins_says_and_shouts() {
    let example = Example::start(env!("CARGO_BIN_EXE_rooms"));
    let mut ada = example.connect(&[], false);
    let mut bob = example.connect(&[], false);
    for socket in [&mut ada, &mut bob] {
        socket.send(Message::text("/join lobby")).unwrap();
        assert!(text(socket).starts_with("joined lobby at "));
    }
    ada.send(Message::text("/say lobby hello")).unwrap();
    for socket in [&mut ada, &mut bob] {
        let line = text(socket);
        assert!(
            line.starts_with("lobby <") && line.ends_with("> hello"),
            "{line}"
        );
    }
    bob.send(Message::text("/leave lobby")).unwrap();
    assert_eq!(text(&mut bob), "left lobby");
    ada.send(Message::text("/say lobby again")).unwrap();
    assert!(text(&mut ada).ends_with("> again"));
    ada.send(Message::text("/shout everyone")).unwrap();
    for socket in [&mut ada, &mut bob] {
        assert!(text(socket).ends_with("> everyone"), "to every connection");
    }
    ada.send(Message::text("/join ")).unwrap();
    assert_eq!(text(&mut ada), "error: the room name is empty");
}

#[test]
fn routing_routes_answers_and_refuses() {
    let example = Example::start(env!("CARGO_BIN_EXE_routing"));
    let mut client = example.connect(&[], true);
    let mut writer = EnvelopeWriter::new();
    send(&mut client, writer.event("add", b"1, 2,39", Some(1)));
    assert_eq!(read(&mut client), Got::Ack(1, b"42".to_vec(), None));
    send(&mut client, writer.event("add", b"1,x", Some(2)));
    assert_eq!(
        read(&mut client),
        Got::Ack(2, Vec::new(), Some(ErrorCode::BadRequest))
    );
    for (id, count) in [(3, b"1"), (4, b"2")] {
        send(&mut client, writer.event("count", b"", Some(id)));
        assert_eq!(read(&mut client), Got::Ack(id, count.to_vec(), None));
    }
    send(&mut client, writer.event("announce", b"news", Some(5)));
    assert_eq!(
        read(&mut client),
        Got::Ack(5, Vec::new(), Some(ErrorCode::NotJoined))
    );
    send(&mut client, writer.join("announcements", Some(6), false));
    assert!(matches!(read(&mut client), Got::Ack(6, _, None)));
    send(&mut client, writer.event("announce", b"news", Some(7)));
    assert_eq!(read(&mut client), Got::Ack(7, Vec::new(), None));
    assert_eq!(
        read(&mut client),
        Got::Message("announcements".into(), b"news".to_vec(), None)
    );
    send(&mut client, writer.event("ping", b"x", Some(8)));
    assert_eq!(read(&mut client), Got::Event("pong".into(), b"x".to_vec()));
    assert_eq!(read(&mut client), Got::Ack(8, Vec::new(), None));
    send(&mut client, writer.event("nope", b"", Some(9)));
    assert_eq!(
        read(&mut client),
        Got::Ack(9, Vec::new(), Some(ErrorCode::UnknownEvent))
    );
}

#[test]
fn middleware_checks_upgrades_and_requests_in_order() {
    let example = Example::start(env!("CARGO_BIN_EXE_middleware"));
    assert!(example.refuses(&[], 401), "no key");
    assert!(
        example.refuses(
            &[
                ("x-api-key", "key-alice"),
                ("Origin", "https://evil.example")
            ],
            403
        ),
        "another site's page"
    );
    let mut alice = example.connect(
        &[
            ("x-api-key", "key-alice"),
            ("Origin", "https://example.com"),
        ],
        true,
    );
    let mut muted = example.connect(&[("Authorization", "Bearer key-muted")], true);
    let mut writer = EnvelopeWriter::new();
    send(&mut alice, writer.join("admin/ops", Some(1), false));
    assert_eq!(
        read(&mut alice),
        Got::Ack(1, Vec::new(), Some(ErrorCode::Forbidden))
    );
    send(&mut alice, writer.join("chat", Some(2), false));
    assert!(matches!(read(&mut alice), Got::Ack(2, _, None)));
    send(
        &mut alice,
        writer.publish("chat", b"  padded  ", false, None),
    );
    assert_eq!(
        read(&mut alice),
        Got::Message("chat".into(), b"padded".to_vec(), Some("alice".into()))
    );
    send(
        &mut alice,
        writer.publish("chat", &[b'x'; 2000], false, Some(3)),
    );
    assert_eq!(
        read(&mut alice),
        Got::Ack(3, Vec::new(), Some(ErrorCode::TooLarge))
    );
    // The muted user's join is dropped without an answer: its next
    // request's answer is the next thing it reads... which never comes
    // either, so alice checks that nothing of it reached the room.
    send(&mut muted, writer.join("chat", Some(4), false));
    send(&mut muted, writer.publish("chat", b"spam", false, None));
    send(&mut alice, writer.publish("chat", b"after", false, None));
    assert_eq!(
        read(&mut alice),
        Got::Message("chat".into(), b"after".to_vec(), Some("alice".into()))
    );
    // Past 100 requests at once, alice is rate limited.
    let mut limited = false;
    for id in 100..260 {
        send(&mut alice, writer.event("none", b"", Some(id)));
    }
    for id in 100..260 {
        match read(&mut alice) {
            Got::Ack(got, _, Some(ErrorCode::RateLimited)) if got == id => limited = true,
            Got::Ack(got, _, Some(ErrorCode::UnknownEvent)) if got == id => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited, "the token bucket refused some");
}

#[test]
fn plugin_greets_counts_and_answers() {
    let example = Example::start(env!("CARGO_BIN_EXE_plugin"));
    let mut client = example.connect(&[], true);
    let Got::Event(name, shard) = read(&mut client) else {
        panic!("no greeting");
    };
    assert_eq!(name, "hello");
    assert!(
        std::str::from_utf8(&shard)
            .unwrap()
            .parse::<usize>()
            .is_ok()
    );
    let mut writer = EnvelopeWriter::new();
    send(&mut client, writer.event("audit", b"", Some(1)));
    let Got::Ack(1, answer, None) = read(&mut client) else {
        panic!("no answer");
    };
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("open=") && answer.ends_with("requests=1"),
        "{answer}"
    );
}

/// The workspace's `shardcast` binary, built beside this test's binary
/// (`cargo test --workspace` and `cargo nextest run --workspace` build it).
fn shardcast_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in target/PROFILE/deps");
    let binary = profile.join("shardcast");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p shardcast` (cargo test --workspace does)",
        binary.display()
    );
    binary
}

/// `shardcast serve` with two unpinned shards on a free port, killed when
/// dropped.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start() -> Serve {
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
                return Serve { child, port };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("shardcast serve exited with {status}");
            }
            thread::sleep(Duration::from_millis(25));
        }
        panic!("shardcast serve did not listen on {port} within 5 s");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn client_joins_publishes_receives_and_asks_echo() {
    let serve = Serve::start();
    let output = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--url", &format!("ws://127.0.0.1:{}/", serve.port)])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        "connecting (attempt 1)",
        "connected, session ",
        "joined lobby at 0@",
        "published at 1@",
        "received \"hello from Rust\" in lobby at 1@",
        "echo answered \"are you there?\"",
        "disconnected: Closed",
    ];
    let mut at = 0;
    for want in expected {
        let found = lines[at..]
            .iter()
            .position(|line| line.starts_with(want))
            .unwrap_or_else(|| panic!("no line {want:?} in order in:\n{stdout}"));
        at += found + 1;
    }
}
