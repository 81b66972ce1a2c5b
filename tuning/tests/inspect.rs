//! Runs the built `shardcast-tune inspect --json` on the captured fixtures
//! (see tests/fixtures/README.md) and on this machine, and checks the numbers
//! against the layouts the fixtures were captured or written from.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn inspect(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-tune"))
        .arg("inspect")
        .arg("--json")
        .args(args)
        .output()
        .expect("run shardcast-tune");
    assert!(
        output.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("inspect prints JSON")
}

fn inspect_fixture(name: &str) -> Value {
    inspect(&["--root", fixture(name).to_str().expect("UTF-8 path")])
}

fn len(v: &Value) -> usize {
    v.as_array().expect("array").len()
}

fn cpus(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|c| c.as_u64().expect("CPU number"))
        .collect()
}

fn interface<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["network"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn severity<'a>(report: &'a Value, subject: &str) -> &'a str {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == subject)
        .unwrap_or_else(|| panic!("no finding for {subject}"))["severity"]
        .as_str()
        .unwrap()
}

fn fix<'a>(report: &'a Value, subject: &str) -> &'a str {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == subject)
        .unwrap()["fix"]
        .as_str()
        .unwrap_or("")
}

#[test]
fn epyc_16c_single_socket_smt() {
    let r = inspect_fixture("epyc-16c");
    let t = &r["topology"];
    assert_eq!(t["packages"], 1);
    assert_eq!(len(&t["nodes"]), 1);
    assert_eq!(len(&t["cpus"]), 32);
    assert_eq!(len(&t["physical_cores"]), 16);
    assert_eq!(t["threads_per_core"], 2);
    assert_eq!(t["physical_cores"][3], serde_json::json!([3, 19]));
    assert_eq!(len(&t["l3_groups"]), 2);
    assert_eq!(
        cpus(&t["l3_groups"][1]),
        [8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31]
    );
    assert_eq!(cpus(&t["cpuset"]), (0..32).collect::<Vec<_>>());
    let eth0 = interface(&r, "eth0");
    assert_eq!(
        (eth0["rx_queues"].as_u64(), eth0["tx_queues"].as_u64()),
        (Some(16), Some(16))
    );
    assert_eq!(len(&eth0["irqs"]), 16);
    assert_eq!(cpus(&eth0["irq_cpus"]), (0..16).collect::<Vec<_>>());
    assert_eq!(len(&eth0["rps_cpus"]), 0);
    assert_eq!(cpus(&eth0["xps_cpus"]), (0..16).collect::<Vec<_>>());
    let lo = interface(&r, "lo");
    assert_eq!(lo["loopback"], true);
    assert_eq!(len(&lo["irqs"]), 0);
    assert_eq!(r["io_uring"]["source"], "not probed (--root)");
    assert_eq!(severity(&r, "io_uring"), "info");
    assert_eq!(severity(&r, "RLIMIT_NOFILE"), "error");
    assert_eq!(severity(&r, "cpu governor"), "warn");
    assert_eq!(severity(&r, "net.ipv4.tcp_max_syn_backlog"), "warn");
    assert_eq!(severity(&r, "eth0"), "ok");
    assert_eq!(severity(&r, "lo"), "info");
}

#[test]
fn xeon_2s_two_nodes_irqs_on_node_0() {
    let r = inspect_fixture("xeon-2s");
    let t = &r["topology"];
    assert_eq!(t["packages"], 2);
    assert_eq!(len(&t["nodes"]), 2);
    assert_eq!(
        cpus(&t["nodes"][1]["cpus"]),
        (12..24).chain(36..48).collect::<Vec<_>>()
    );
    assert_eq!(len(&t["cpus"]), 48);
    // core_id repeats across sockets and skips 6 and 7: cores are counted by sibling sets.
    assert_eq!(len(&t["physical_cores"]), 24);
    assert_eq!(t["threads_per_core"], 2);
    assert_eq!(t["physical_cores"][13], serde_json::json!([13, 37]));
    assert_eq!(len(&t["l3_groups"]), 2);
    assert_eq!(
        cpus(&t["isolated"]),
        (2..12).chain(26..36).collect::<Vec<_>>()
    );
    assert_eq!(
        cpus(&t["allowed"]["cpus"]),
        [0, 1]
            .into_iter()
            .chain(12..26)
            .chain(36..48)
            .collect::<Vec<_>>()
    );
    assert_eq!(len(&t["cmdline"]), 2);
    let nic = interface(&r, "ens1f0");
    assert_eq!(nic["device"], "0000:3b:00.0");
    assert_eq!(nic["rx_queues"], 24);
    assert_eq!(len(&nic["irqs"]), 24);
    assert_eq!(
        cpus(&nic["irq_cpus"]),
        (0..12).chain(24..36).collect::<Vec<_>>()
    );
    assert_eq!(severity(&r, "ens1f0"), "info");
    assert_eq!(r["io_uring"]["source"], "captured");
    assert_eq!(severity(&r, "io_uring"), "ok");
    assert_eq!(severity(&r, "accept_multishot"), "warn");
    assert_eq!(severity(&r, "buffer_ring"), "warn");
    assert_eq!(severity(&r, "RLIMIT_NOFILE"), "ok");
    assert_eq!(severity(&r, "net.core.somaxconn"), "warn");
    assert_eq!(severity(&r, "transparent_hugepage"), "info");
    assert_eq!(severity(&r, "allowed CPUs"), "info");
}

#[test]
fn this_machine_fixture() {
    let r = inspect_fixture("this-machine");
    let t = &r["topology"];
    assert_eq!(t["packages"], 1);
    assert_eq!(len(&t["cpus"]), 2);
    assert_eq!(len(&t["physical_cores"]), 2);
    assert_eq!(t["threads_per_core"], 1);
    assert_eq!(len(&t["l3_groups"]), 1);
    let eth0 = interface(&r, "eth0");
    assert_eq!(eth0["device"], "virtio2");
    // virtio2-input.0, virtio2-output.0 and virtio2-config.
    assert_eq!(len(&eth0["irqs"]), 3);
    assert_eq!(interface(&r, "lo")["loopback"], true);
    assert_eq!(r["io_uring"]["source"], "captured");
    assert_eq!(r["io_uring"]["features"]["accept_multishot"], true);
    assert_eq!(severity(&r, "RLIMIT_NOFILE"), "error");
    // One RX queue for two cores, RPS off: spread with RPS over CPUs 0-1.
    assert_eq!(severity(&r, "eth0"), "info");
    assert!(fix(&r, "eth0").contains("echo 00000003 > $q/rps_cpus"));
}

#[test]
fn connections_change_the_judgement() {
    let few = inspect(&[
        "--root",
        fixture("epyc-16c").to_str().unwrap(),
        "--connections",
        "500",
    ]);
    assert_eq!(few["connections"], 500);
    assert_eq!(severity(&few, "RLIMIT_NOFILE"), "error");
    let r = inspect(&[
        "--root",
        fixture("xeon-2s").to_str().unwrap(),
        "--connections",
        "2000000",
    ]);
    assert_eq!(severity(&r, "RLIMIT_NOFILE"), "error");
    assert_eq!(severity(&r, "fs.nr_open"), "error");
}

#[test]
fn live_host() {
    let r = inspect(&[]);
    assert!(r["root"].is_null());
    assert!(len(&r["topology"]["cpus"]) >= 1);
    assert!(len(&r["topology"]["physical_cores"]) >= 1);
    assert_eq!(r["io_uring"]["source"], "live");
    assert!(r["io_uring"]["setup"].is_boolean());
    assert!(r["topology"]["allowed"]["source"] == "sched_getaffinity");
    assert!(r["limits"]["nofile"].is_object());
}

#[test]
fn missing_root_fails_with_the_path() {
    let output = Command::new(env!("CARGO_BIN_EXE_shardcast-tune"))
        .args(["inspect", "--root", "/nonexistent-shardcast-root"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("missing /sys/devices/system/cpu/online")
    );
}
