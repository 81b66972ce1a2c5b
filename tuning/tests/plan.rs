//! Runs the built `shardcast-tune plan` on the captured fixtures (see
//! tests/fixtures/README.md): the choices it prints and writes, and an
//! `--apply` then `--revert` round trip in a copy of a fixture, checked
//! byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardcast-tune"))
        .arg("plan")
        .args(args)
        .output()
        .expect("run shardcast-tune")
}

fn ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "plan {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn plan_json(name: &str, args: &[&str]) -> Value {
    let root = fixture(name);
    let mut all = vec!["--json", "--root", path(&root)];
    all.extend(args);
    serde_json::from_str(&ok(&all)).expect("plan prints JSON")
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|n| n.as_u64().expect("number"))
        .collect()
}

/// A directory under cargo's scratch space for this test, empty.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("plan-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Copies a tree, symlinks as symlinks (the fixtures' `device` links
/// dangle on purpose).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file, link and directory under `dir`: relative path to its bytes
/// (a link to its target, a directory to nothing).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            let rel = entry.path().strip_prefix(base).unwrap().to_owned();
            if kind.is_symlink() {
                let target = std::fs::read_link(entry.path()).unwrap();
                out.insert(rel, Some(target.into_os_string().into_encoded_bytes()));
            } else if kind.is_dir() {
                out.insert(rel, None);
                walk(base, &entry.path(), out);
            } else {
                out.insert(rel, Some(std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The text printed for a file: from its `--- path ---` line to the next
/// file's, or to the end.
fn printed_file<'a>(stdout: &'a str, file: &str) -> &'a str {
    let marker = format!("\n--- {file} ---\n");
    let start = stdout
        .find(&marker)
        .unwrap_or_else(|| panic!("{file} not printed"))
        + marker.len();
    let rest = &stdout[start..];
    let end = rest
        .find("\n--- /")
        .unwrap_or_else(|| rest.find("\napplied:").unwrap_or(rest.len()));
    &rest[..end]
}

const FILES: [&str; 3] = [
    "/etc/shardcast/shardcast.toml",
    "/etc/sysctl.d/90-shardcast.conf",
    "/etc/systemd/system/shardcast.service.d/50-shardcast-tune.conf",
];

#[test]
fn epyc_runs_a_shard_per_physical_core() {
    let plan = plan_json("epyc-16c", &[]);
    assert_eq!(plan["serve"]["shards"], 16);
    assert_eq!(
        numbers(&plan["cores"]["shard_cpus"]),
        (0..16).collect::<Vec<_>>()
    );
    assert_eq!(plan["serve"]["ring_entries"], 4096);
    assert_eq!(plan["serve"]["sqpoll"], false);
    let sysctls: Vec<&str> = plan["sysctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // somaxconn 4096 holds a backlog of 6250 per shard only once raised;
    // tcp_max_syn_backlog is 2048.
    assert_eq!(
        sysctls,
        ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"]
    );
}

#[test]
fn xeon_latency_keeps_irq_cores_out_and_polls_on_siblings() {
    let plan = plan_json("xeon-2s", &["--target", "latency"]);
    assert_eq!(
        numbers(&plan["cores"]["shard_cpus"]),
        (12..24).collect::<Vec<_>>()
    );
    assert_eq!(numbers(&plan["cores"]["irq_cores_kept_out"]), [0, 1]);
    assert_eq!(plan["serve"]["sqpoll"], true);
    assert_eq!(
        numbers(&plan["serve"]["sqpoll_cores"]),
        (36..48).collect::<Vec<_>>()
    );
    let toml = plan["files"][0]["text"].as_str().unwrap();
    assert!(
        toml.contains("\n[server]\nshards = 12\ncores = \"12-23\"\n"),
        "{toml}"
    );
    assert!(toml.contains("\nsqpoll = true\nsqpoll_idle = \"1000ms\"\nsqpoll_cores = \"36-47\"\n"));
    // With the isolated CPUs, node 0 (the NIC's) fills first.
    let plan = plan_json("xeon-2s", &["--use-isolated", "--shards", "4"]);
    assert_eq!(numbers(&plan["cores"]["shard_cpus"]), [0, 1, 2, 3]);
}

#[test]
fn prints_every_choice_and_writes_out_what_it_prints() {
    let root = fixture("this-machine");
    let out = scratch("out");
    let stdout = ok(&[
        "--root",
        path(&root),
        "--connections",
        "20000",
        "--listen",
        "0.0.0.0:8080",
        "--listen",
        "[::]:8080",
        "--out",
        path(&out),
    ]);
    assert!(
        stdout.contains("\n[server]\nlisten = [\"0.0.0.0:8080\", \"[::]:8080\"]\nshards = 2\n")
    );
    for setting in [
        "server.shards",
        "io.ring_entries",
        "io.sqpoll",
        "LimitNOFILE",
        "CPUAffinity",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(setting)),
            "{setting} not printed:\n{stdout}"
        );
    }
    for file in FILES {
        let name = Path::new(file).file_name().unwrap();
        let written = std::fs::read_to_string(out.join(name)).unwrap();
        assert_eq!(printed_file(&stdout, file), written);
    }
    // --out writes only the three files; the fixture is untouched.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
    assert!(!root.join("etc").exists());
}

#[test]
fn impossible_requests_fail_with_a_reason() {
    let root = fixture("this-machine");
    let output = run(&["--root", path(&root), "--shards", "3"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--shards 3: only 2 usable CPUs"),
        "{stderr}"
    );
    let empty = scratch("no-backup");
    let output = run(&["--root", path(&empty), "--revert"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nothing to revert"), "{stderr}");
}

#[test]
fn apply_then_revert_restores_the_root_exactly() {
    let root = scratch("apply");
    copy_tree(&fixture("epyc-16c"), &root);
    // An older sysctl.d file of the same name: backed up, then restored.
    std::fs::create_dir_all(root.join("etc/sysctl.d")).unwrap();
    std::fs::write(
        root.join("etc/sysctl.d/90-shardcast.conf"),
        b"net.core.somaxconn = 1\n",
    )
    .unwrap();
    let before = snapshot(&root);
    let args = [
        "--root",
        path(&root),
        "--connections",
        "600000",
        "--target",
        "latency",
    ];

    // Printing changes nothing.
    let printed = ok(&args);
    assert_eq!(snapshot(&root), before);

    let mut apply_args = args.to_vec();
    apply_args.push("--apply");
    let stdout = ok(&apply_args);
    assert!(stdout.starts_with(&printed), "apply prints the plan first");
    for file in FILES {
        let written = std::fs::read_to_string(root.join(&file[1..])).unwrap();
        assert_eq!(written, printed_file(&printed, file), "{file}");
    }
    let backups: Vec<PathBuf> = std::fs::read_dir(root.join("var/lib/shardcast-tune/backup"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1);
    let backup = &backups[0];
    assert_eq!(
        std::fs::read(backup.join("files/etc/sysctl.d/90-shardcast.conf")).unwrap(),
        b"net.core.somaxconn = 1\n"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    let existed: Vec<(&str, bool)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["existed"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        existed,
        [(FILES[0], false), (FILES[1], true), (FILES[2], false)]
    );
    // The live values of the sysctls raised, as the root's /proc/sys has them.
    let sysctls: Vec<(&str, &str)> = manifest["sysctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["before"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sysctls,
        [
            ("net.core.somaxconn", "4096"),
            ("net.ipv4.tcp_max_syn_backlog", "2048"),
            ("net.ipv4.tcp_mem", "771564 1028753 1543128")
        ]
    );
    assert!(stdout.contains(&format!("applied: backup in {}", backup.display())));
    assert!(stdout.ends_with(&format!(
        "undo with: shardcast-tune plan --root {} --revert\n",
        root.display()
    )));

    // The same plan again: nothing to do, no second backup.
    let again = ok(&apply_args);
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(
        std::fs::read_dir(root.join("var/lib/shardcast-tune/backup"))
            .unwrap()
            .count(),
        1
    );

    // An edit since apply blocks revert; restoring it lets revert through.
    let drop_in = root.join(&FILES[2][1..]);
    let applied = std::fs::read(&drop_in).unwrap();
    std::fs::write(&drop_in, b"[Service]\nLimitNOFILE=1\n").unwrap();
    let output = run(&["--root", path(&root), "--revert"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("changed since it was applied"));
    std::fs::write(&drop_in, applied).unwrap();

    let reverted = ok(&["--root", path(&root), "--revert"]);
    assert!(reverted.contains("reverted:"), "{reverted}");
    assert_eq!(snapshot(&root), before, "revert restores the root exactly");
}
