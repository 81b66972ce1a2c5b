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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Driver, on_both_drivers, start};
use shardcast::Echo;
use shardcast::middleware::ApiKey;
use shardcast::v1::{Protocol, Router, SUBPROTOCOL};

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

/// Runs `command` to its end, killing it past `deadline`.
fn run(mut command: Command, deadline: Duration) -> Output {
    let what = format!("{command:?}");
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
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
    let setup = run(Command::new(dir.join("setup")), SETUP_DEADLINE);
    assert!(
        setup.status.success(),
        "clients/python/setup failed\n{}",
        setup.show()
    );
    dir.join(".venv/bin/python")
}

/// Runs `clients/python/SCRIPT ARGS` with the venv's python.
fn python_script(script: &str, args: &[&str]) -> Output {
    let mut command = Command::new(python());
    command
        .arg(client_dir().join(script))
        .args(args)
        .current_dir(client_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run(command, SCRIPT_DEADLINE)
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
