//! `shardcast-bench connections` end to end, against a real
//! `shardcast serve --echo`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Builds the `shardcast` binary with the cargo that builds this test (a
/// no-op when it is fresh) and returns its path.
fn shardcast_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(env!("CARGO"))
        .args(["build", "--package", "shardcast", "--bin", "shardcast"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "building shardcast: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == "shardcast"
        })
        // The library is an artifact of the same name, without an executable.
        .find_map(|artifact| artifact["executable"].as_str().map(PathBuf::from))
        .expect("cargo named no shardcast executable")
}

#[test]
fn idle_connections_from_two_sources_against_shardcast() {
    let shardcast = shardcast_binary();
    let server = format!(
        "shardcast={} serve --echo --listen 127.0.0.1:{{port}} --shards 1 --cores 0",
        shardcast.display()
    );
    let report = std::env::temp_dir().join(format!("connections-{}.md", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .arg("connections")
        .args([
            "--server",
            &server,
            "--counts",
            // The last is above the most descriptors any process may hold.
            "100,200,2000000000",
            "--sources",
            "2",
            "--server-cores",
            "0",
            "--load-core",
            "0",
            "--settle-interval",
            "0.2",
            "--json",
            "--report",
            report.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let result: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {:?}", output.stdout));
    assert_eq!(
        result["sources"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );
    let server = &result["servers"][0];
    assert_eq!(server["name"], "shardcast", "{result}");
    assert_eq!(server["stopped"], Value::Null, "{result}");
    let before = server["rss_before"].as_u64().unwrap();
    assert!(before > 0, "{result}");
    let checkpoints = server["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 2, "{result}");
    for (checkpoint, count) in checkpoints.iter().zip([100, 200]) {
        assert_eq!(checkpoint["connections"], count, "{result}");
        assert_eq!(checkpoint["closed_by_server"], 0, "{result}");
        assert!(
            checkpoint["handshakes_per_second"].as_f64().unwrap() > 0.0,
            "{result}"
        );
        // Far less than a megabyte per connection. RSS grows by whole pages
        // (2 MiB at a time in huge pages), so a few hundred connections may
        // fit in memory the allocator already holds: no growth is valid.
        let bytes = checkpoint["bytes_per_connection"].as_f64().unwrap();
        assert!((0.0..1e6).contains(&bytes), "{result}");
        assert!(checkpoint["rss"].as_u64().unwrap() >= before, "{result}");
    }
    assert!(checkpoints[1]["marginal_bytes_per_connection"].is_number());
    let out_of_reach = result["out_of_reach"].as_array().unwrap();
    assert_eq!(out_of_reach.len(), 1, "{result}");
    assert!(
        out_of_reach[0]
            .as_str()
            .unwrap()
            .starts_with("2,000,000,000 connections: a process holding them needs"),
        "{result}"
    );

    let text = std::fs::read_to_string(&report).unwrap();
    std::fs::remove_file(&report).unwrap();
    assert!(text.contains("<!-- BEGIN engine-connections -->"), "{text}");
    assert!(
        text.contains("--counts 100,200,2000000000 --sources 2"),
        "{text}"
    );
    assert!(
        text.contains("Not measured, out of this machine's reach: 2,000,000,000"),
        "{text}"
    );
    assert!(text.contains("| shardcast | 200 |"), "{text}");
    assert!(text.contains("127.0.0.2 to 127.0.0.3"), "{text}");
}
