//! What the bench's end-to-end tests share: a small thread-per-connection
//! tungstenite echo server on a loopback port, with the faults a broken
//! server would have, a run of the bench binary read back as JSON, and the
//! workspace's `shardcast` binary.
//!
//! Every test binary compiles its own copy of this module and uses only
//! part of it, so what one binary leaves unused is not dead code: another
//! binary uses it.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tungstenite::Message;

/// How the test's echo server misbehaves, if at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Flip a byte of every binary echo.
    pub(crate) corrupt: bool,
    /// Stall this long before answering each connection's message number
    /// `.0` (counted from 1).
    pub(crate) stall_once: Option<(usize, Duration)>,
}

/// A server that flips a byte of every binary echo.
pub(crate) const CORRUPT: Faults = Faults {
    corrupt: true,
    stall_once: None,
};

/// Starts the echo server on 127.0.0.1 and returns its port.
pub(crate) fn start_echo_server(faults: Faults) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || echo_connection(stream, faults));
        }
    });
    port
}

fn echo_connection(stream: TcpStream, faults: Faults) {
    stream.set_nodelay(true).unwrap();
    let Ok(mut socket) = tungstenite::accept(stream) else {
        return;
    };
    // Clients may go without a close frame: read fails, the thread ends.
    let mut received = 0;
    while let Ok(message) = socket.read() {
        received += 1;
        if let Some((at, stall)) = faults.stall_once {
            if received == at {
                thread::sleep(stall);
            }
        }
        let reply = match message {
            Message::Binary(bytes) if faults.corrupt => {
                let mut bytes = bytes.to_vec();
                bytes[0] ^= 0x20;
                Message::binary(bytes)
            }
            Message::Binary(_) | Message::Text(_) => message,
            _ => continue,
        };
        if socket.send(reply).is_err() {
            return;
        }
    }
}

/// `target/PROFILE/shardcast`, next to the folder of the running test's
/// binary: `cargo nextest run --workspace` and `cargo test --workspace`
/// build it; with `-p shardcast-bench` alone, run `cargo build -p
/// shardcast` first. Without it the test fails and says so.
pub(crate) fn shardcast_binary() -> std::path::PathBuf {
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

/// Metric `name` of a result, which must be there and be a number.
pub(crate) fn metric(result: &Value, name: &str) -> f64 {
    result["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric {name}: {result}"))
}

/// Runs the bench with `args` and returns its exit success and the one
/// JSON object it printed.
pub(crate) fn run_bench(args: &[&str]) -> (bool, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let result = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("{error}: {stdout:?}, {:?}", output.stderr));
    (output.status.success(), result)
}
