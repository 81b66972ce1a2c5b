//! `shardcast-bench storm` end to end, against a small tungstenite echo
//! server this test starts on a loopback port.

mod common;

use std::net::TcpListener;

use common::{CORRUPT, Faults, metric, run_bench, start_echo_server};
use serde_json::Value;

/// Runs `storm` with short windows and returns its exit success and JSON
/// result.
fn run_storm(port: u16, extra: &[&str]) -> (bool, Value) {
    let url = format!("ws://127.0.0.1:{port}/");
    let mut args = vec!["storm", "--url", &url];
    args.extend_from_slice(&["--warmup", "0.1", "--baseline", "0.4", "--pause", "0.1"]);
    args.extend_from_slice(&["--probes", "4", "--probe-rate", "2000", "--json"]);
    args.extend_from_slice(extra);
    run_bench(&args)
}

#[test]
fn every_client_comes_back_in_every_round() {
    let port = start_echo_server(Faults::default());
    let pid = std::process::id().to_string();
    let (success, result) = run_storm(
        port,
        &[
            "--clients",
            "150",
            "--jitter-ms",
            "100",
            "--rounds",
            "2",
            "--server-pid",
            &pid,
        ],
    );
    assert!(success, "{result}");
    assert_eq!(result["scenario"], "storm", "{result}");
    assert_eq!(metric(&result, "handshakes"), 300.0, "{result}");
    assert_eq!(metric(&result, "failed"), 0.0, "{result}");
    assert_eq!(metric(&result, "stalled"), 0.0, "{result}");
    assert_eq!(result["rounds"].as_array().unwrap().len(), 2, "{result}");
    let all_back = metric(&result, "all_back_seconds");
    // The last client waits up to 100 ms before it reconnects.
    assert!((0.05..10.0).contains(&all_back), "{result}");
    assert!(metric(&result, "handshakes_per_second") > 0.0, "{result}");
    for window in ["baseline", "storm"] {
        assert!(
            metric(&result, &format!("{window}_count")) > 0.0,
            "{result}"
        );
        let p50 = metric(&result, &format!("{window}_p50_us"));
        let p99 = metric(&result, &format!("{window}_p99_us"));
        let max = metric(&result, &format!("{window}_max_us"));
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{result}");
    }
    assert_eq!(metric(&result, "probe_mismatches"), 0.0, "{result}");
    assert!(metric(&result, "server_cpu_us_per_handshake") >= 0.0);
    assert!(metric(&result, "listen_overflows") >= 0.0);
}

#[test]
fn all_at_once_from_two_source_addresses() {
    let port = start_echo_server(Faults::default());
    let (success, result) = run_storm(port, &["--clients", "100", "--sources", "2"]);
    assert!(success, "{result}");
    assert_eq!(result["params"]["sources"], 2, "{result}");
    assert_eq!(metric(&result, "handshakes"), 100.0, "{result}");
    assert_eq!(metric(&result, "stalled"), 0.0, "{result}");
}

#[test]
fn altered_probe_echoes_fail_the_run() {
    let port = start_echo_server(CORRUPT);
    let (success, result) = run_storm(port, &["--clients", "20", "--jitter-ms", "50"]);
    assert!(!success, "{result}");
    assert!(metric(&result, "probe_mismatches") > 0.0, "{result}");
}

#[test]
fn an_unreachable_server_fails_the_run() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (success, result) = run_storm(port, &["--clients", "5"]);
    assert!(!success, "{result}");
    assert!(metric(&result, "connect_failed") >= 5.0, "{result}");
}
