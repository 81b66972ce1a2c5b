//! `shardcast-bench latency` end to end, against a small tungstenite echo
//! server this test starts on a loopback port.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{CORRUPT, Faults, metric, run_bench, start_echo_server};
use serde_json::Value;

/// A server stalling 300 ms before its 400th answer on each connection.
const STALL_ONCE: Faults = Faults {
    corrupt: false,
    stall_once: Some((400, Duration::from_millis(300))),
};

/// Runs `latency` for about a second and returns its exit success and
/// JSON result.
fn run_latency(port: u16, extra: &[&str]) -> (bool, Value) {
    let url = format!("ws://127.0.0.1:{port}/");
    let mut args = vec![
        "latency",
        "--url",
        &url,
        "--warmup",
        "0.2",
        "--duration",
        "0.8",
        "--json",
    ];
    args.extend_from_slice(extra);
    run_bench(&args)
}

#[test]
fn a_low_rate_is_kept_and_every_echo_recorded() {
    let port = start_echo_server(Faults::default());
    let pid = std::process::id().to_string();
    let (success, result) = run_latency(
        port,
        &[
            "--connections",
            "10",
            "--rate",
            "2000",
            "--server-pid",
            &pid,
        ],
    );
    assert!(success, "{result}");
    assert_eq!(result["scenario"], "latency", "{result}");
    assert_eq!(result["params"]["rate"], 2000.0, "{result}");
    assert!(metric(&result, "count") > 0.0, "{result}");
    let (p50, p90, p99) = (
        metric(&result, "p50_us"),
        metric(&result, "p90_us"),
        metric(&result, "p99_us"),
    );
    let (p999, max) = (metric(&result, "p999_us"), metric(&result, "max_us"));
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max);
    let achieved = metric(&result, "achieved_rate");
    assert!((1800.0..=2200.0).contains(&achieved), "{result}");
    assert_eq!(metric(&result, "offered_rate"), 2000.0);
    assert_eq!(metric(&result, "mismatches"), 0.0, "{result}");
    assert_eq!(metric(&result, "unanswered"), 0.0, "{result}");
    assert!(metric(&result, "schedule_lag_max_us") >= metric(&result, "schedule_lag_p99_us"));
    assert!(metric(&result, "server_core_share") >= 0.0);
    assert!(metric(&result, "generator_core_share") > 0.0);
}

/// The generator's own floor against an echo that answers at once: a
/// pacer on a millisecond timer would put the median near 500 µs.
#[test]
fn the_median_is_far_below_a_millisecond() {
    let port = start_echo_server(Faults::default());
    let (success, result) = run_latency(port, &["--connections", "4", "--rate", "1000"]);
    assert!(success, "{result}");
    assert!(metric(&result, "p50_us") < 400.0, "{result}");
}

/// Coordinated omission corrected: while the server stalls, messages
/// keep leaving on schedule, and each of them is charged from its
/// intended send time. A closed loop would record one slow echo; here
/// about 300 of the window's 800 messages wait, the earliest ~300 ms.
#[test]
fn a_stall_is_charged_to_every_message_sent_during_it() {
    let port = start_echo_server(STALL_ONCE);
    let (success, result) = run_latency(port, &["--connections", "1", "--rate", "1000"]);
    assert!(success, "{result}");
    let achieved = metric(&result, "achieved_rate");
    assert!((900.0..=1100.0).contains(&achieved), "{result}");
    assert!(metric(&result, "max_us") >= 250_000.0, "{result}");
    assert!(metric(&result, "p90_us") >= 100_000.0, "{result}");
    assert!(
        metric(&result, "schedule_lag_p99_us") < 50_000.0,
        "{result}"
    );
}

#[test]
fn text_on_two_threads_and_blocking_between_sends() {
    let port = start_echo_server(Faults::default());
    let (success, result) = run_latency(
        port,
        &[
            "--connections",
            "6",
            "--threads",
            "2",
            "--text",
            "--size",
            "200",
            "--idle",
            "block",
            "--rate",
            "1000",
        ],
    );
    assert!(success, "{result}");
    assert!(metric(&result, "count") > 0.0, "{result}");
    assert_eq!(metric(&result, "mismatches"), 0.0, "{result}");
    assert_eq!(result["params"]["idle"], "block", "{result}");
}

#[test]
fn altered_echoes_are_mismatches_and_fail_the_run() {
    let port = start_echo_server(CORRUPT);
    let (success, result) = run_latency(port, &["--connections", "2", "--rate", "500"]);
    assert!(!success, "{result}");
    assert!(metric(&result, "mismatches") > 0.0, "{result}");
}

#[test]
fn an_unreachable_server_fails_every_connection() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (success, result) = run_latency(port, &["--connections", "3"]);
    assert!(!success, "{result}");
    assert_eq!(metric(&result, "failed"), 3.0, "{result}");
}

#[test]
fn messages_too_small_for_their_stamp_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .args(["latency", "--url", "ws://127.0.0.1:1/", "--size", "16"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 32"));
}
