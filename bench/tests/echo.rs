//! `shardcast-bench echo` end to end, against small tungstenite echo
//! servers this test starts on a loopback port.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::thread;

use common::{CORRUPT, Faults, metric, run_bench, start_echo_server};
use serde_json::Value;

/// Runs the generator for about a second and returns its exit success and
/// JSON result.
fn run_echo(port: u16, extra: &[&str]) -> (bool, Value) {
    let url = format!("ws://127.0.0.1:{port}/echo");
    let mut args = vec![
        "echo",
        "--url",
        &url,
        "--warmup",
        "0.3",
        "--duration",
        "0.7",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (success, result) = run_bench(&args);
    assert_eq!(result["scenario"], "echo", "{result}");
    assert!(
        result["params"]["connections"].as_u64().is_some(),
        "{result}"
    );
    (success, result)
}

#[test]
fn binary_echoes_are_counted_and_all_match() {
    let port = start_echo_server(Faults::default());
    let pid = std::process::id().to_string();
    let (success, result) = run_echo(
        port,
        &[
            "--connections",
            "8",
            "--size",
            "100",
            "--threads",
            "2",
            "--server-pid",
            &pid,
        ],
    );
    assert!(success, "{result}");
    assert!(
        result["metrics"]["echoes"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert_eq!(result["metrics"]["mismatches"], 0, "{result}");
    assert_eq!(result["metrics"]["failed_connections"], 0, "{result}");
    assert!(metric(&result, "messages_per_second") > 0.0);
    assert!(
        result["metrics"]["server_cpu_us_per_message"]
            .as_f64()
            .is_some(),
        "{result}"
    );
}

#[test]
fn text_with_several_messages_in_flight() {
    let port = start_echo_server(Faults::default());
    let (success, result) = run_echo(
        port,
        &[
            "--connections",
            "4",
            "--size",
            "3000",
            "--in-flight",
            "4",
            "--text",
        ],
    );
    assert!(success, "{result}");
    assert!(
        result["metrics"]["echoes"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert_eq!(result["metrics"]["mismatches"], 0, "{result}");
}

#[test]
fn the_legacy_driver_works_too() {
    let port = start_echo_server(Faults::default());
    let (success, result) = run_echo(port, &["--connections", "4", "--driver", "legacy"]);
    assert!(success, "{result}");
    assert_eq!(result["metrics"]["driver"], "legacy", "{result}");
    assert!(
        result["metrics"]["echoes"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert_eq!(result["metrics"]["mismatches"], 0, "{result}");
}

#[test]
fn altered_echoes_are_mismatches_and_fail_the_run() {
    let port = start_echo_server(CORRUPT);
    let (success, result) = run_echo(port, &["--connections", "2", "--size", "32"]);
    assert!(!success, "{result}");
    assert!(
        result["metrics"]["mismatches"].as_u64().unwrap() > 0,
        "{result}"
    );
}

#[test]
fn an_unreachable_server_fails_every_connection() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (success, result) = run_echo(port, &["--connections", "3"]);
    assert!(!success, "{result}");
    assert_eq!(result["metrics"]["failed_connections"], 3, "{result}");
}

#[test]
fn a_server_that_never_upgrades_stalls_the_run_and_fails_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds the connections, never answering the upgrade.
    thread::spawn(move || listener.incoming().collect::<Vec<_>>());
    let (success, result) = run_echo(port, &["--connections", "2", "--connect-timeout", "0.5"]);
    assert!(!success, "{result}");
    assert_eq!(result["metrics"]["stalled_connections"], 2, "{result}");
    assert_eq!(result["metrics"]["echoes"], 0, "{result}");
}

#[test]
fn a_core_that_cannot_be_pinned_fails_the_run_at_once() {
    let port = start_echo_server(Faults::default());
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .args(["echo", "--url", &format!("ws://127.0.0.1:{port}/")])
        .args(["--connections", "2", "--cores", "100000"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("core 100000"),
        "{output:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
