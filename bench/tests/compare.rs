//! `shardcast-bench compare` and `report` end to end: two servers (the
//! bench's own trivial echo, started twice under two names) through the
//! echo, latency and storm scenarios, then the report and its plots.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn bench() -> &'static str {
    env!("CARGO_BIN_EXE_shardcast-bench")
}

/// A fresh folder for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardcast-bench-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(bench()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn records(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_session_records_every_run_and_the_report_has_every_section_and_plot() {
    let dir = scratch("compare");
    let results = dir.join("results.jsonl");
    let report = dir.join("BENCHMARKS.md");
    let trivial = format!("{} trivial-echo {{port}}", bench());
    let (success, log) = run(&[
        "compare",
        "--server",
        &format!("shardcast={trivial}"),
        "--server",
        &format!("trivial-echo={trivial}"),
        "--scenario",
        "echo:4x32",
        "--scenario",
        "latency:4x32@20%",
        "--scenario",
        "storm:20",
        "--rounds",
        "2",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--server-cores",
        "0",
        "--load-cores",
        "0",
        "--results",
        results.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--plots",
        "plots",
    ]);
    assert!(success, "{log}");
    let records = records(&results);
    // 2 servers × 2 rounds × 3 scenarios.
    assert_eq!(records.len(), 12, "{log}");
    for record in &records {
        assert!(record["machine"]["kernel"].is_string(), "{record}");
        assert!(record["command"].as_str().unwrap().contains("compare"));
    }
    let echo: Vec<&Value> = records.iter().filter(|r| r["scenario"] == "echo").collect();
    assert_eq!(echo.len(), 4);
    assert!(
        echo.iter()
            .all(|r| r["metrics"]["messages_per_second"].as_f64().unwrap() > 0.0)
    );
    // The latency runs offer a fifth of each server's own echo maximum.
    for latency in records.iter().filter(|r| r["scenario"] == "latency") {
        let server = latency["server"].as_str().unwrap();
        let mut maxima: Vec<f64> = echo
            .iter()
            .filter(|r| r["server"] == server)
            .map(|r| r["metrics"]["messages_per_second"].as_f64().unwrap())
            .collect();
        maxima.sort_by(f64::total_cmp);
        let median = (maxima[0] + maxima[1]) / 2.0;
        let offered = latency["metrics"]["offered_rate"].as_f64().unwrap();
        assert!(
            (offered - median * 0.2).abs() < 1.0,
            "{offered} against {median}"
        );
    }
    let text = fs::read_to_string(&report).unwrap();
    for section in ["engine-echo", "engine-latency", "engine-storm"] {
        assert!(
            text.contains(&format!("<!-- BEGIN {section} -->")),
            "{text}"
        );
    }
    assert!(
        text.contains("### Where the generator was the limit"),
        "{text}"
    );
    assert!(text.contains("| trivial-echo |"), "{text}");
    assert!(
        text.contains("![Echo throughput, 32 B messages](plots/echo-throughput-32B.svg)"),
        "{text}"
    );
    for plot in [
        "echo-throughput-32B.svg",
        "latency-4x32B-p99.svg",
        "latency-4x32B-p50.svg",
    ] {
        let svg = fs::read_to_string(dir.join("plots").join(plot)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("shardcast"), "{plot}");
    }

    // The report command alone gives the same sections from the records.
    let again = dir.join("AGAIN.md");
    let (success, log) = run(&[
        "report",
        "--results",
        results.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(success, "{log}");
    let again = fs::read_to_string(&again).unwrap();
    assert!(again.contains("<!-- BEGIN engine-latency -->"));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_server_that_fails_stops_the_session_with_its_name() {
    let dir = scratch("compare-fail");
    let (success, log) = run(&[
        "compare",
        "--server",
        "broken=/bin/false {port}",
        "--scenario",
        "echo:2x32",
        "--rounds",
        "1",
        "--results",
        dir.join("results.jsonl").to_str().unwrap(),
    ]);
    assert!(!success, "{log}");
    assert!(log.contains("broken"), "{log}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reports_refuse_files_that_are_not_records() {
    let dir = scratch("report-bad");
    let bad = dir.join("bad.jsonl");
    fs::write(&bad, "{\"scenario\": \"echo\"}\n").unwrap();
    let (success, log) = run(&[
        "report",
        "--results",
        bad.to_str().unwrap(),
        "--out",
        dir.join("B.md").to_str().unwrap(),
    ]);
    assert!(!success);
    assert!(log.contains("line 1: not a benchmark record"), "{log}");
    fs::remove_dir_all(&dir).unwrap();
}
