//! `shardcast-bench resume-storm` end to end against a real `shardcast
//! serve --shards 2`, the binary of the workspace's `shardcast` package:
//! every client cut at once resumes its session and misses nothing, and a
//! server whose room history cannot hold what the clients missed fails
//! the run.
//!
//! The server binary is the one cargo builds beside this test
//! (`target/debug/shardcast`): `cargo nextest run --workspace` and
//! `cargo test --workspace` build it; with `-p shardcast-bench` alone, run
//! `cargo build -p shardcast` first. Without it the test fails and says so.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::{metric, shardcast_binary};
use serde_json::Value;

/// Runs `shardcast-bench resume-storm` against a `shardcast serve
/// --shards 2` it starts with `{config}`, small and short, with `extra`
/// arguments; the server's shards are not pinned (a test machine may lack
/// the cores). Returns its exit success, the one JSON object it printed,
/// and its standard error.
fn run_resume_storm(extra: &[&str]) -> (bool, Value, String) {
    let server = format!(
        "{} serve --listen 127.0.0.1:{{port}} --shards 2 --config {{config}}",
        shardcast_binary().display()
    );
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .args(["resume-storm", "--server", &server])
        .args(["--clients", "200", "--rooms", "10", "--publishers", "2"])
        .args(["--rate", "200", "--probes", "2", "--probe-rate", "400"])
        .args(["--jitter-ms", "200", "--warmup", "0.2", "--baseline", "0.5"])
        .args(["--settle", "0.3", "--storm-timeout", "20", "--json"])
        .args(extra)
        .env("SHARDCAST_SERVER_PIN_CORES", "false")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let result = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("{error}: {stdout:?}, {stderr}"));
    (output.status.success(), result, stderr)
}

#[test]
fn every_client_resumes_and_misses_nothing() {
    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("resume-storm-report.md");
    let _ = fs::remove_file(&report);
    let (ok, result, stderr) = run_resume_storm(&["--report", report.to_str().unwrap()]);
    assert!(ok, "{result}\n{stderr}");
    assert_eq!(result["scenario"], "resume-storm");
    assert_eq!(metric(&result, "back"), 200.0, "{result}");
    assert_eq!(metric(&result, "failed"), 0.0, "{result}");
    assert_eq!(metric(&result, "lost"), 0.0, "{result}");
    assert_eq!(metric(&result, "duplicated"), 0.0, "{result}");
    assert_eq!(metric(&result, "recovery_failures"), 0.0, "{result}");
    assert_eq!(metric(&result, "probe_lost"), 0.0, "{result}");
    assert_eq!(
        metric(&result, "received"),
        metric(&result, "expected"),
        "{result}"
    );
    assert!(metric(&result, "received") > 0.0, "{result}");
    let all_back = metric(&result, "all_back_seconds");
    assert!((0.0..20.0).contains(&all_back), "{result}");
    assert!(metric(&result, "resume_max_ms") <= all_back * 1e3 + 1.0);
    for window in ["baseline", "storm"] {
        assert!(
            metric(&result, &format!("{window}_count")) > 0.0,
            "{result}"
        );
    }
    let section = fs::read_to_string(&report).unwrap();
    assert!(
        section.contains("<!-- BEGIN engine-resume-storm -->"),
        "{section}"
    );
    assert!(section.contains("| 200 | 10 | 200 |"), "{section}");
    assert!(section.contains("with 2 shards"), "{section}");
}

#[test]
fn a_history_too_short_for_the_storm_fails_the_run() {
    // No room history: whatever a client missed cannot be replayed.
    let (ok, result, stderr) = run_resume_storm(&["--history", "0"]);
    assert!(!ok, "{result}");
    assert!(stderr.contains("invalid run"), "{stderr}");
    assert!(metric(&result, "recovery_failures") > 0.0, "{result}");
    assert!(metric(&result, "lost") > 0.0, "{result}");
    assert_eq!(metric(&result, "back"), 200.0, "{result}");
}
