//! `shardcast-bench hops` end to end against a real `shardcast serve
//! --shards 2`, the binary of the workspace's `shardcast` package: every
//! case (local, subscriber-remote, owner-remote) gets its samples, and
//! the report section is written.
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

/// Runs `shardcast-bench hops` with `args`, the servers it starts not
/// pinning their shards (a test machine may lack the cores), and returns
/// its exit success and the one JSON object it printed.
fn run_hops(args: &[&str]) -> (bool, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .arg("hops")
        .args(args)
        .env("SHARDCAST_SERVER_PIN_CORES", "false")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let result = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "{error}: {stdout:?}, {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), result)
}

#[test]
fn every_case_gets_its_samples_against_two_shards() {
    let server = format!(
        "{} serve --listen 127.0.0.1:{{port}} --shards 2",
        shardcast_binary().display()
    );
    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hops-report.md");
    let _ = fs::remove_file(&report);
    let (ok, result) = run_hops(&[
        "--server",
        &server,
        "--samples",
        "30",
        "--warmup",
        "5",
        "--pause-us",
        "0",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{result}");
    assert_eq!(result["scenario"], "hops");
    for case in ["local", "subscriber_remote", "owner_remote"] {
        assert_eq!(
            metric(&result, &format!("{case}_samples")),
            30.0,
            "{result}"
        );
        let p50 = metric(&result, &format!("{case}_p50_us"));
        let max = metric(&result, &format!("{case}_max_us"));
        assert!(p50 > 0.0 && p50 <= max, "{case}: {result}");
    }
    assert_eq!(metric(&result, "local_p50_ratio"), 1.0);
    assert_eq!(metric(&result, "owner_remote_hops"), 2.0);
    assert!(
        result["diagnostics"]["connections_opened"]
            .as_u64()
            .unwrap()
            >= 4
    );
    let section = fs::read_to_string(&report).unwrap();
    assert!(section.contains("<!-- BEGIN engine-hops -->"), "{section}");
    assert!(section.contains("| owner-remote | 2 | 30 |"), "{section}");
}
