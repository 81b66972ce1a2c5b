//! `shardcast-tune sweep` without release binaries: candidates generated
//! from the captured topologies, a recorded session
//! (`tests/fixtures/sweep/records.jsonl`, 3 candidates × echo and fan-out
//! × 3 rounds on the development VM) aggregated and ranked, the report's
//! section written into a file, and the command itself run end to end
//! against stand-in `shardcast` and `shardcast-bench` scripts (on this
//! host's topology: any host with two CPUs or more has a `shards-1`, and
//! every host a `plan`).
//! ci/run runs a real two-candidate sweep with release binaries.

use std::path::{Path, PathBuf};

use shardcast_tune::Host;
use shardcast_tune::serve_config::ServeConfig;
use shardcast_tune::sweep::candidates::{self, Candidate, Placement};
use shardcast_tune::sweep::records::parse_lines;
use shardcast_tune::sweep::report;
use shardcast_tune::sweep::summary::{Session, SummaryError, summarize};
use shardcast_tune::sweep::table::{self, Table};
use shardcast_tune::sweep::target::Target;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn generate(name: &str, target: Target) -> Vec<Candidate> {
    candidates::for_host(&Host::at(fixture(name)), target).expect("fixture host")
}

fn names(candidates: &[Candidate]) -> Vec<&str> {
    candidates.iter().map(|c| c.name.as_str()).collect()
}

fn candidate<'a>(candidates: &'a [Candidate], name: &str) -> &'a Candidate {
    candidates
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no candidate {name} in {:?}", names(candidates)))
}

#[test]
fn this_machine_shares_its_two_cpus_and_tries_one_shard_and_no_pinning() {
    let all = generate("this-machine", Target::Throughput);
    assert_eq!(
        names(&all),
        [
            "default",
            "plan",
            "shards-1",
            "shards-2-unpinned",
            "sqpoll",
            "shards-1-sqpoll-apart",
            "rx-64x4KiB",
            "rx-64x32KiB",
            "batch"
        ]
    );
    let placement = &all[0].placement;
    assert_eq!(
        (placement.server.as_slice(), placement.load.as_slice()),
        (&[0, 1][..], &[0, 1][..])
    );
    assert!(placement.shared());
    assert_eq!(all[0].config, ServeConfig::default());
    let one = candidate(&all, "shards-1");
    assert_eq!(
        (
            one.config.shards,
            one.config.cores.clone(),
            one.config.pin_cores
        ),
        (Some(1), Some(vec![0]), Some(true))
    );
    assert_eq!(
        candidate(&all, "shards-2-unpinned").config.pin_cores,
        Some(false)
    );
    assert_eq!(candidate(&all, "batch").config.batch_deliveries, Some(true));
    // The probe captured here permits SQPOLL; no SMT, so the pollers of
    // `sqpoll` float, and `apart` gives the one shard's poller the other core.
    let sqpoll = &candidate(&all, "sqpoll").config;
    assert_eq!(
        (sqpoll.shards, sqpoll.sqpoll, sqpoll.sqpoll_cores.clone()),
        (Some(2), Some(true), None)
    );
    let apart = &candidate(&all, "shards-1-sqpoll-apart").config;
    assert_eq!(
        (apart.cores.clone(), apart.sqpoll_cores.clone()),
        (Some(vec![0]), Some(vec![1]))
    );
    let small = &candidate(&all, "rx-64x4KiB").config;
    assert_eq!(
        (small.receive_buffers, small.receive_buffer_size),
        (Some(64), Some(4096))
    );
    // No fan-out, so nothing to batch.
    let latency = generate("this-machine", Target::Latency);
    assert!(!names(&latency).contains(&"batch"));
    assert_eq!(latency.len(), all.len() - 1);
}

#[test]
fn epyc_sets_a_quarter_apart_for_the_load_and_weighs_siblings_against_cores() {
    // Captured without an io_uring probe: SQPOLL counts as not permitted.
    let all = generate("epyc-16c", Target::Latency);
    assert_eq!(
        names(&all),
        [
            "default",
            "plan",
            "shards-1",
            "shards-2",
            "shards-4",
            "shards-8",
            "shards-12",
            "shards-12-unpinned",
            "shards-12-siblings",
            "rx-64x4KiB",
            "rx-64x32KiB"
        ]
    );
    let placement = &all[0].placement;
    let server: Vec<u32> = (0..12).chain(16..28).collect();
    let load: Vec<u32> = (12..16).chain(28..32).collect();
    assert_eq!((&placement.server, &placement.load), (&server, &load));
    assert!(!placement.shared());
    assert!(all.iter().all(|c| &c.placement == placement));
    // The plan is made for the server's CPUs only: its shards stay off the load's.
    let plan = &candidate(&all, "plan").config;
    assert_eq!(plan.shards, Some(12));
    let planned = plan.cores.clone().expect("the plan pins its shards");
    assert!(
        planned.iter().all(|cpu| placement.server.contains(cpu)),
        "{planned:?}"
    );
    assert_eq!(
        candidate(&all, "shards-12").config.cores,
        Some((0..12).collect())
    );
    assert_eq!(
        candidate(&all, "shards-12-siblings").config.cores,
        Some(vec![0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21])
    );
}

#[test]
fn xeon_uses_only_the_cpus_outside_isolcpus() {
    let all = generate("xeon-2s", Target::Throughput);
    let placement = &all[0].placement;
    // 0-1 and 12-23 with their siblings (24-25, 36-47): 14 physical
    // cores, the last 3 for the load.
    let load: Vec<u32> = vec![21, 22, 23, 45, 46, 47];
    assert_eq!(placement.load, load);
    assert_eq!(placement.server.len(), 22);
    assert!(
        placement
            .server
            .iter()
            .all(|cpu| !(2..=11).contains(cpu) && !(26..=35).contains(cpu))
    );
    assert_eq!(
        names(&all)[1..7],
        [
            "plan",
            "shards-1",
            "shards-2",
            "shards-4",
            "shards-8",
            "shards-11"
        ]
    );
    assert_eq!(
        candidate(&all, "shards-4").config.cores,
        Some(vec![0, 1, 12, 13])
    );
    assert!(names(&all).contains(&"shards-11-siblings"));
    assert_eq!(names(&all).last(), Some(&"batch"));
    // SMT: each shard's poller on its core's sibling.
    let sqpoll = &candidate(&all, "sqpoll").config;
    assert_eq!(
        sqpoll.sqpoll_cores,
        Some(vec![24, 25, 36, 37, 38, 39, 40, 41, 42, 43, 44])
    );
    let apart = &candidate(&all, "shards-5-sqpoll-apart").config;
    assert_eq!(
        (apart.cores.clone(), apart.sqpoll_cores.clone()),
        (Some(vec![0, 1, 12, 13, 14]), Some(vec![15, 16, 17, 18, 19]))
    );
}

/// The candidates of the recorded session: names are what matter.
fn recorded_candidates() -> Vec<Candidate> {
    ["default", "shards-1", "batch"]
        .iter()
        .map(|name| Candidate {
            name: (*name).into(),
            description: format!("{name} as recorded"),
            config: ServeConfig::default(),
            placement: Placement {
                server: vec![0, 1],
                load: vec![0, 1],
            },
        })
        .collect()
}

fn session(target: Target) -> Session {
    Session {
        target,
        command: "shardcast-tune sweep --rounds 3".into(),
        rounds: 3,
    }
}

fn recorded_runs() -> Vec<shardcast_tune::sweep::records::Run> {
    let path = fixture("sweep/records.jsonl");
    let text = std::fs::read_to_string(&path).expect("the recorded session");
    parse_lines(&text, &path, 1).expect("records")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[test]
fn a_recorded_session_is_reduced_to_medians_and_ranked_against_the_default() {
    let runs = recorded_runs();
    assert_eq!(runs.len(), 18);
    let summary = summarize(&session(Target::Throughput), &recorded_candidates(), &runs).unwrap();
    let kinds: Vec<&str> = summary.scenarios.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["echo", "fanout"]);
    assert_eq!(summary.scenarios[1].load_cores, "1");
    assert_eq!(summary.machine.cores, 2);
    // The medians of each candidate's three rounds, read off the fixture.
    let (echo, fanout) = (
        [
            139_033.280_076_710_27,
            124_536.984_036_351,
            158_142.441_205_423_73,
        ],
        [
            101_068.912_525_856_26,
            74_802.860_042_595_17,
            93_504.257_511_069_13,
        ],
    );
    let order = ["batch", "default", "shards-1"];
    assert_eq!(
        summary
            .rows
            .iter()
            .map(|r| r.candidate.name.as_str())
            .collect::<Vec<_>>(),
        order
    );
    let row = |name: &str| {
        summary
            .rows
            .iter()
            .find(|r| r.candidate.name == name)
            .unwrap()
    };
    for (index, name) in ["default", "shards-1", "batch"].iter().enumerate() {
        let figures = &row(name).figures;
        let echo_figures = figures[0].as_ref().unwrap();
        assert_eq!(echo_figures.runs, 3);
        assert!(
            close(echo_figures.rate.unwrap(), echo[index]),
            "{name} echo"
        );
        assert_eq!(echo_figures.p99_us, None);
        assert!(
            close(figures[1].as_ref().unwrap().rate.unwrap(), fanout[index]),
            "{name} fanout"
        );
    }
    assert!(close(
        row("default").figures[1].as_ref().unwrap().p99_us.unwrap(),
        13_402.111
    ));
    assert!(close(
        row("shards-1").figures[1].as_ref().unwrap().p99_us.unwrap(),
        18_923.519
    ));
    let score = |i: usize| ((echo[i] / echo[0]) * (fanout[i] / fanout[0])).sqrt();
    assert!(close(row("default").score.unwrap(), 1.0));
    assert!(close(row("shards-1").score.unwrap(), score(1)));
    assert!(close(row("batch").score.unwrap(), score(2)));
    let (best, margin) = summary.best();
    assert_eq!(best.candidate.name, "batch");
    assert!(close(margin, score(2)) && margin > 1.0);

    // The default's fan-out rounds range from 59.0k to 166k around a
    // median of 101k: that spread dwarfs batch's margin.
    let noise = (165_961.428_240_616_86 - 59_025.229_515_689_08) / fanout[0];
    assert!(close(summary.noise().unwrap(), noise));
    let verdict = table::verdict(&summary);
    assert!(
        verdict.contains("The margin is within the default's own spread between rounds (106%)."),
        "{verdict}"
    );
    assert!(
        verdict.starts_with("Best plan: batch (batch as recorded), 1.026x the default."),
        "{verdict}"
    );
    assert!(
        verdict.contains("echo 100 × 32 B: default 139k messages/s; batch 158k messages/s."),
        "{verdict}"
    );
    let text = Table::of(&summary).to_text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("1  batch") && lines[3].starts_with("3  shards-1"),
        "{text}"
    );
    let svg_path = std::env::temp_dir().join(format!("tune-sweep-plot-{}.svg", std::process::id()));
    shardcast_tune::sweep::plot::draw(&summary, &svg_path).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    std::fs::remove_file(&svg_path).unwrap();
    for text in [
        "shards-1",
        "batch",
        "echo 100 × 32 B",
        "fanout 1000 subscribers × 32 B, 10 rooms p99",
        "(commit 4192dd6)",
    ] {
        assert!(svg.contains(text), "{text:?} not in the plot");
    }
    let json = table::to_json(&summary);
    assert_eq!(json["best"], "batch");
    assert_eq!(json["summary"]["rows"][0]["candidate"]["name"], "batch");
}

#[test]
fn latency_ranks_by_p99_and_echo_only_informs() {
    let record = |server: &str, scenario: &str, metrics: &str| {
        format!(
            r#"{{"machine":{{"cpu":"X","cores":2,"kernel":"6","commit":"c","rustc":"r"}},"server":"{server}","server_cores":"0,1","load_cores":"0,1","round":1,"scenario":"{scenario}","label":"L","metrics":{metrics}}}"#
        )
    };
    let text = [
        record("default", "echo", r#"{"messages_per_second": 100.0}"#),
        record("shards-1", "echo", r#"{"messages_per_second": 50.0}"#),
        record(
            "default",
            "latency",
            r#"{"achieved_rate": 50.0, "p50_us": 10.0, "p99_us": 100.0}"#,
        ),
        record(
            "shards-1",
            "latency",
            r#"{"achieved_rate": 25.0, "p50_us": 5.0, "p99_us": 40.0}"#,
        ),
    ]
    .join("\n");
    let runs = parse_lines(&text, Path::new("inline"), 1).unwrap();
    let summary = summarize(
        &session(Target::Latency),
        &recorded_candidates()[..2],
        &runs,
    )
    .unwrap();
    let (best, margin) = summary.best();
    assert_eq!(best.candidate.name, "shards-1");
    assert!(close(margin, 2.5));

    let without_baseline: Vec<_> = runs
        .into_iter()
        .filter(|r| !(r.server == "default" && r.scenario == "latency"))
        .collect();
    let error = summarize(
        &session(Target::Latency),
        &recorded_candidates()[..2],
        &without_baseline,
    )
    .unwrap_err();
    assert!(
        matches!(error, SummaryError::NoBaseline { figure: "p99", .. }),
        "{error}"
    );
    assert!(matches!(
        summarize(&session(Target::Latency), &recorded_candidates(), &[]),
        Err(SummaryError::NoRuns)
    ));
}

#[test]
fn the_report_section_replaces_the_last_one_and_keeps_the_rest() {
    let summary = summarize(
        &session(Target::Throughput),
        &recorded_candidates(),
        &recorded_runs(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("tune-sweep-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("TUNING.md");
    let _ = std::fs::remove_file(&path);
    let details = report::Details {
        warmup: 2.0,
        duration: 5.0,
        plot: Some(&dir.join("plots/sweep.svg")),
    };
    let body = report::section(&summary, &details, &path);
    for part in [
        "## Sweep: best plan for throughput",
        "3 candidates × 2 scenarios × 3 rounds, 2 s warm-up and 5 s measured",
        "    shardcast-tune sweep --rounds 3\n",
        "Machine: Intel(R) Xeon(R) Processor, 2 logical cores, Linux 6.18.44-fc-v1045",
        "Server and load share CPUs",
        "the load of echo 100 × 32 B: CPUs 0,1, of fanout 1000 subscribers × 32 B, 10 rooms: CPUs 1",
        "Best plan: batch",
        "| 1 | batch | 158k | 93.5k |",
        "](plots/sweep.svg)",
        "- `shards-1`: shards-1 as recorded.",
    ] {
        assert!(body.contains(part), "{part:?} not in:\n{body}");
    }
    report::write(&path, "tune-sweep-throughput", "first\n").unwrap();
    let created = std::fs::read_to_string(&path).unwrap();
    assert!(created.starts_with("# Tuning shardcast\n"), "{created}");
    std::fs::write(&path, format!("{created}\n## Notes\n\nkept\n")).unwrap();
    report::write(&path, "tune-sweep-throughput", &body).unwrap();
    report::write(&path, "tune-sweep-throughput", &body).unwrap();
    report::write(&path, "tune-sweep-latency", "other target\n").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!text.contains("first\n"), "{text}");
    assert_eq!(
        text.matches("<!-- BEGIN tune-sweep-throughput -->").count(),
        1,
        "{text}"
    );
    assert!(text.contains(&format!(
        "<!-- BEGIN tune-sweep-throughput -->\n{body}<!-- END tune-sweep-throughput -->\n"
    )));
    assert!(
        text.ends_with(
            "## Notes\n\nkept\n\n<!-- BEGIN tune-sweep-latency -->\nother target\n<!-- END tune-sweep-latency -->\n"
        ),
        "{text}"
    );
}

/// A directory with stand-ins for `shardcast` and `shardcast-bench`:
/// shell scripts that answer as the real ones do, in a fraction of a
/// second. The bench writes a record per server and `--scenario` to its
/// `--results`, `default` at half the rate of every other candidate; the
/// server accepts every config unless `refuse` names a candidate.
struct FakeBinaries {
    dir: PathBuf,
}

impl FakeBinaries {
    fn new(test: &str, refuse: &str) -> FakeBinaries {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tune-sweep-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let shardcast = format!(
            "#!/bin/sh\n\
             case \"$3\" in *'/{refuse}.toml') echo \"unknown key io.nonsense\" >&2; exit 1;; esac\n\
             [ \"$1 $2 $4\" = 'serve --config --print-config' ] && grep -q shardcast-tune \"$3\"\n"
        );
        let bench = r#"#!/bin/bash
set -e
[ "$1" = compare ] || exit 2
shift
names=() scenarios=()
while [ $# -gt 0 ]; do
    case $1 in
        --results) results=$2; shift 2;;
        --server) names+=("${2%%=*}"); shift 2;;
        --scenario) scenarios+=("$2"); shift 2;;
        *) shift;;
    esac
done
machine='{"cpu":"Fake CPU","cores":2,"kernel":"6.0","commit":"abc1234","rustc":"rustc 1"}'
for scenario in "${scenarios[@]}"; do
    for name in "${names[@]}"; do
        rate=2000; p99=50
        if [ "$name" = default ]; then rate=1000; p99=100; fi
        case $scenario in
            echo:*) kind=echo label='100 × 32 B' metrics="{\"messages_per_second\": $rate}";;
            fanout:*) kind=fanout label='1000 subscribers × 32 B, 10 rooms'
                metrics="{\"deliveries_per_second\": $rate, \"p50_us\": 10, \"p99_us\": $p99}";;
            latency:*) kind=latency label='100 × 32 B at 50% of max'
                metrics="{\"achieved_rate\": $rate, \"p50_us\": 10, \"p99_us\": $p99}";;
        esac
        echo "{\"session\":1,\"command\":\"fake\",\"machine\":$machine,\"server\":\"$name\",\"server_cores\":\"0,1\",\"load_cores\":\"1\",\"round\":1,\"scenario\":\"$kind\",\"label\":\"$label\",\"params\":{},\"metrics\":$metrics}" >> "$results"
    done
done
echo "the compare log"
"#;
        for (name, text) in [
            ("shardcast", shardcast.as_str()),
            ("shardcast-bench", bench),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeBinaries { dir }
    }

    /// Runs the built `shardcast-tune sweep` with these binaries, its
    /// output in the fake's directory, and `args`.
    fn sweep(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_shardcast-tune"))
            .arg("sweep")
            .arg("--shardcast")
            .arg(self.dir.join("shardcast"))
            .arg("--bench")
            .arg(self.dir.join("shardcast-bench"))
            .arg("--out")
            .arg(self.dir.join("out"))
            .args(args)
            .output()
            .expect("run shardcast-tune")
    }
}

impl Drop for FakeBinaries {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_command_runs_compare_per_stage_and_writes_table_json_plot_and_report() {
    let fake = FakeBinaries::new("runs", "none");
    let report = fake.dir.join("doc/TUNING.md");
    let plot = fake.dir.join("doc/plots/sweep.svg");
    let output = fake.sweep(&[
        "--max-candidates",
        "2",
        "--report",
        report.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // `default` and `plan`, echo then fan-out: both stages' records were read.
    assert!(stderr.contains("4 runs recorded"), "{stderr}");
    assert!(stdout.contains("Best plan: plan"), "{stdout}");
    assert!(stdout.contains("2.000x"), "{stdout}");
    let out = fake.dir.join("out");
    let config = std::fs::read_to_string(out.join("plan.toml")).unwrap();
    assert!(
        config.contains("shardcast-tune plan --target throughput")
            && config.contains("ring_entries = "),
        "{config}"
    );
    let log = std::fs::read_to_string(out.join("compare.log")).unwrap();
    assert_eq!(log.matches("the compare log").count(), 2, "{log}");
    assert!(
        log.contains("shardcast-bench compare --baseline default"),
        "{log}"
    );
    assert!(log.contains("--scenario fanout:1000x32/10"), "{log}");
    let section = std::fs::read_to_string(&report).unwrap();
    assert!(
        section.contains("<!-- BEGIN tune-sweep-throughput -->"),
        "{section}"
    );
    assert!(section.contains("commit `abc1234`"), "{section}");
    assert!(section.contains("](plots/sweep.svg)"), "{section}");
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));

    let json = fake.sweep(&["--target", "latency", "--candidates", "shards-1", "--json"]);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON on stdout");
    assert_eq!(value["best"], "shards-1");
    assert_eq!(value["margin"], 2.0);
    assert_eq!(value["summary"]["target"], "latency");
    assert_eq!(value["summary"]["scenarios"][1]["rank"], "p99");
}

#[test]
fn a_refused_config_or_a_missing_binary_stops_the_sweep_with_its_name() {
    let fake = FakeBinaries::new("refused", "shards-1");
    let output = fake.sweep(&["--candidates", "shards-1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("refuses the config of candidate shards-1"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown key io.nonsense"), "{stderr}");
    assert!(!fake.dir.join("out/records.jsonl").exists());

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast-tune"))
        .args(["sweep", "--shardcast", "/nonexistent/shardcast"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("cargo build --release -p shardcast -p shardcast-bench"),
        "{stderr}"
    );
    let unknown = fake.sweep(&["--candidates", "nope"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no candidate named \"nope\""));
}
