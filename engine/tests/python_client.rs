//! An independent client against the real server: the Python client in
//! clients/python (flatc-generated envelope code, the `flatbuffers` and
//! `websocket-client` packages from PyPI; none of our Rust code) joins,
//! publishes, receives and sends events over `shardcast.v1`.
//!
//! Each test makes the Python venv first (`clients/python/setup`: python3
//! with venv, and PyPI the first time; idempotent, and concurrent calls
//! wait for each other), then runs a script with a deadline and shows its
//! output if it fails.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Driver, on_both_drivers, start};
use shardcast::Echo;
use shardcast::middleware::ApiKey;
use shardcast::v1::{Protocol, Router, SUBPROTOCOL};
use shardcast_proto::envelope::{
    self, Body, EnvelopeWriter, ErrorCode, PresenceKind, RecoveryReport, VerifyLimits,
};

/// How long `clients/python/setup` may take: a fresh venv installs two
/// small packages from PyPI.
const SETUP_DEADLINE: Duration = Duration::from_secs(300);

/// How long one Python script may run.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

/// clients/python, from the engine crate.
fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clients/python")
        .canonicalize()
        .expect("clients/python exists")
}

/// What a finished command printed, and how it ended.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn show(&self) -> String {
        format!(
            "exit: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Reads a child's pipe to the end on a thread (so neither pipe fills up
/// while the other is read).
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `command` to its end with `input` on its standard input, killing
/// it past `deadline`.
fn run(mut command: Command, input: &[u8], deadline: Duration) -> Output {
    let what = format!("{command:?}");
    let mut child: Child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Dropped at the end of the thread: the child sees end of input.
    thread::spawn(move || stdin.write_all(&input));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let output = Output {
                status: child.wait().unwrap(),
                stdout: stdout.join().unwrap(),
                stderr: stderr.join().unwrap(),
            };
            panic!("{what} ran past {deadline:?}; killed\n{}", output.show());
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Makes clients/python/.venv (once) and returns its python.
fn python() -> PathBuf {
    let dir = client_dir();
    let setup = run(Command::new(dir.join("setup")), b"", SETUP_DEADLINE);
    assert!(
        setup.status.success(),
        "clients/python/setup failed\n{}",
        setup.show()
    );
    dir.join(".venv/bin/python")
}

/// Runs `clients/python/SCRIPT ARGS` with the venv's python.
fn python_script(script: &str, args: &[&str]) -> Output {
    python_script_with_input(script, args, b"")
}

/// Runs `clients/python/SCRIPT ARGS` with the venv's python, `input` on
/// its standard input.
fn python_script_with_input(script: &str, args: &[&str], input: &[u8]) -> Output {
    let mut command = Command::new(python());
    command
        .arg(client_dir().join(script))
        .args(args)
        .current_dir(client_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run(command, input, SCRIPT_DEADLINE)
}

/// check.py against a `shardcast.v1` server on two shards with an "echo"
/// route, an API key per client naming its user, and publishers revealed:
/// joins with positions, N publications acked and received in
/// order by every member with the publisher's id, exclude_self, a late
/// joiner, NotJoined with and without an ack id, echo, UnknownEvent, leave.
fn check_py(driver: Driver) {
    let server = start(
        driver,
        |builder| builder.subprotocols([SUBPROTOCOL]),
        |_shard| {
            let router = Router::new().on("echo", |_conn, payload| Ok(payload.to_vec()));
            let keys = ApiKey::new()
                .key_for_user("key-a", "user-a")
                .key_for_user("key-b", "user-b")
                .key_for_user("key-c", "user-c");
            Protocol::<()>::new(router)
                .upgrade_layer(keys)
                .reveal_publisher(true)
        },
    );
    let addr = server.addr().to_string();
    let args = [
        addr.as_str(),
        "--messages",
        "200",
        "--publisher",
        "--api-key",
        "key-a",
        "--api-key",
        "key-b",
        "--api-key",
        "key-c",
    ];
    let output = python_script("check.py", &args);
    assert!(
        output.status.success()
            && output.stdout.contains("every check passed")
            && output.stdout.contains("(publisher 'user-a')"),
        "check.py against the shardcast.v1 server on {driver} failed\n{}",
        output.show()
    );
    server.shutdown();
}
on_both_drivers!(check_py);

/// The client refuses a server that does not select `shardcast.v1` (a
/// server without the subprotocol accepts the upgrade with none).
#[test]
fn refuses_a_server_without_the_subprotocol() {
    let server = start(Driver::IoUring, |builder| builder, |_shard| Echo);
    let addr = server.addr().to_string();
    let output = python_script("shardcast_client.py", &[&addr, "event", "echo", "hi"]);
    assert!(
        !output.status.success() && output.stderr.contains(SUBPROTOCOL),
        "the Python client accepted a server without {SUBPROTOCOL}\n{}",
        output.show()
    );
    server.shutdown();
}

/// Lowercase hex, as codec.py reads and writes it.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The Python client reads every server envelope as shardcast-proto
/// writes it, a `Batch`'s items in order, and refuses what is not an
/// envelope: kinds the server under test does not send yet (`Welcome`,
/// `Presence`, batches) included.
#[test]
fn python_reads_what_shardcast_proto_writes() {
    let mut writer = EnvelopeWriter::new();
    let recovered = [RecoveryReport {
        room: "lobby",
        offset: 4,
        epoch: 7,
        error: None,
    }];
    let mut messages = vec![
        writer
            .welcome("session-1", b"\x01\x02", 25_000, true, &recovered)
            .to_vec(),
        writer
            .message("lobby", 1, 7, b"\x00\xffhi", Some("user-a"))
            .to_vec(),
    ];
    let mut batch = writer.batch();
    batch
        .message("lobby", 2, 7, b"", None)
        .ack_position(3, 2, 7)
        .ack_ok(4, b"pong")
        .ack_error(5, ErrorCode::NotJoined, "join first")
        .error(ErrorCode::SlowConsumer, "dropped", None, Some("lobby"))
        .error(ErrorCode::TooLarge, "", Some(6), None)
        .presence("lobby", PresenceKind::Left, "user-b", 1)
        .event("tick", b"\x01", Some(9))
        .join("lobby", None, false);
    messages.push(batch.finish().to_vec());
    messages.push(b"not an envelope at all".to_vec());
    let input: String = messages.iter().map(|m| hex(m) + "\n").collect();

    let output = python_script_with_input("codec.py", &["decode"], input.as_bytes());
    assert!(
        output.status.success(),
        "codec.py decode failed\n{}",
        output.show()
    );
    let expected = [
        "0 Welcome session=session-1 token=0102 heartbeat_ms=25000 resumed=true",
        "1 Message room=lobby offset=1 epoch=7 payload=00ff6869 publisher=user-a",
        "2 Message room=lobby offset=2 epoch=7 payload= publisher=-",
        "2 Ack id=3 payload= position=2/7",
        "2 Ack id=4 payload=706f6e67 position=-",
        "2 AckError id=5 code=NotJoined join first",
        "2 Error code=SlowConsumer ack=- room=lobby dropped",
        "2 Error code=TooLarge ack=6 room=-",
        "2 Presence room=lobby kind=1 member=user-b count=1",
        "2 Event name=tick payload=01 ack=9",
        "2 Ignored kind=1",
    ];
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(
        lines[..lines.len() - 1],
        expected,
        "codec.py decode\n{}",
        output.show()
    );
    assert!(
        lines[lines.len() - 1].starts_with("3 Refused "),
        "codec.py decode accepted a non-envelope\n{}",
        output.show()
    );
}

/// shardcast-proto's reader (the server's) accepts every request the
/// Python client writes, with its fields intact.
#[test]
fn shardcast_proto_reads_what_python_writes() {
    let output = python_script("codec.py", &["encode"]);
    assert!(
        output.status.success(),
        "codec.py encode failed\n{}",
        output.show()
    );
    let requests: Vec<Vec<u8>> = output.stdout.lines().map(unhex).collect();
    assert_eq!(requests.len(), 7, "codec.py encode\n{}", output.show());
    let limits = VerifyLimits::default();
    let read = |i: usize| {
        envelope::read(&requests[i], &limits).unwrap_or_else(|error| {
            panic!(
                "request {i} from Python is unreadable: {error}\n{}",
                output.show()
            )
        })
    };

    let join = read(0).body_as_join().unwrap();
    assert_eq!(
        (join.room(), join.ack(), join.presence()),
        ("lobby", Some(1), true)
    );
    let join = read(1).body_as_join().unwrap();
    assert_eq!(
        (join.room(), join.ack(), join.presence()),
        ("lobby", None, false)
    );
    let leave = read(2).body_as_leave().unwrap();
    assert_eq!((leave.room(), leave.ack()), ("lobby", Some(2)));
    let publish = read(3).body_as_publish().unwrap();
    assert_eq!(publish.room(), "lobby");
    assert_eq!(envelope::bytes(publish.payload()), b"\x00\xffhi");
    assert!(publish.exclude_self());
    assert_eq!(publish.ack(), Some(u64::MAX));
    let publish = read(4).body_as_publish().unwrap();
    assert_eq!(envelope::bytes(publish.payload()), b"");
    assert_eq!((publish.exclude_self(), publish.ack()), (false, None));
    let event = read(5).body_as_event().unwrap();
    assert_eq!(
        (event.name(), envelope::bytes(event.payload()), event.ack()),
        ("echo", &b"ping"[..], Some(3))
    );
    let event = read(6).body_as_event().unwrap();
    assert_eq!((event.name(), event.ack()), ("tick", None));
    assert_eq!(read(6).body_type(), Body::Event);
}
