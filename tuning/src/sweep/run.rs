//! Running the candidates: each one's config file, checked by the server
//! itself, then one `shardcast-bench compare` session over all of them,
//! followed through the records it writes.
//!
//! One session rather than one per candidate: compare shuffles the
//! servers afresh for every scenario and round, so drift on a busy
//! machine spreads over every candidate instead of landing on whichever
//! ran last. Every run restarts its server, so no candidate inherits
//! another's warm state.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::sweep::candidates::{Candidate, DEFAULT};
use crate::sweep::records::{Follower, RecordsError, Run};
use crate::sweep::summary::median;
use crate::sweep::target::{self, Stage, Target};

/// How the session runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The `shardcast` binary.
    pub shardcast: PathBuf,
    /// The `shardcast-bench` binary.
    pub bench: PathBuf,
    /// Where the config files, records and compare's log go.
    pub out: PathBuf,
    /// What the scenarios are chosen for.
    pub target: Target,
    /// Rounds over every scenario and candidate.
    pub rounds: u32,
    /// Seconds of warm-up per run.
    pub warmup: f64,
    /// Seconds measured per run.
    pub duration: f64,
}

/// Why the session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Creating or writing a file of the session failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// compare splits server commands on whitespace, so a path with a
    /// space would be cut in two.
    #[error(
        "{0} has whitespace in it; shardcast-bench compare splits server commands on whitespace"
    )]
    Whitespace(PathBuf),
    /// A program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The server refused a candidate's config file.
    #[error("shardcast refuses the config of candidate {name} ({path}): {message}")]
    Refused {
        /// The candidate.
        name: String,
        /// Its config file.
        path: PathBuf,
        /// What the server said.
        message: String,
    },
    /// The compare session failed.
    #[error("shardcast-bench compare failed ({status}); the end of its log ({log}):\n{tail}")]
    Compare {
        /// How it ended.
        status: ExitStatus,
        /// Its full log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// The records could not be read.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// A load offered at a share of the default's echo rate, with no echo
    /// run of the default before it to take the rate from.
    #[error("no echo run of the default to offer {0} a share of")]
    NoDefaultEcho(String),
}

impl Plan {
    /// The config file of candidate `name`.
    pub fn config_path(&self, name: &str) -> PathBuf {
        self.out.join(format!("{name}.toml"))
    }

    /// The records file of the session.
    pub fn records_path(&self) -> PathBuf {
        self.out.join("records.jsonl")
    }

    /// compare's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.out.join("compare.log")
    }

    /// Writes every candidate's config file, then has the server parse
    /// each (`serve --config FILE --print-config`): a key this binary does
    /// not know fails here, naming the candidate, not minutes into the
    /// session.
    pub fn write_configs(&self, candidates: &[Candidate]) -> Result<(), RunError> {
        fs::create_dir_all(&self.out).map_err(|source| RunError::Write {
            path: self.out.clone(),
            source,
        })?;
        for candidate in candidates {
            let path = self.config_path(&candidate.name);
            let header = format!(
                "shardcast-tune sweep, candidate {}: {}.\n\
                 Only the keys this candidate decides; the server's defaults fill the rest.",
                candidate.name, candidate.description
            );
            fs::write(&path, candidate.config.to_toml(&header)).map_err(|source| {
                RunError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            let output = Command::new(&self.shardcast)
                .arg("serve")
                .arg("--config")
                .arg(&path)
                .arg("--print-config")
                .stdin(Stdio::null())
                .output()
                .map_err(|source| RunError::Spawn {
                    program: self.shardcast.clone(),
                    source,
                })?;
            if !output.status.success() {
                return Err(RunError::Refused {
                    name: candidate.name.clone(),
                    path,
                    message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The arguments of `shardcast-bench` for one stage: a server per
    /// candidate with the candidate's config, raw echo (`serve --echo`) or
    /// shardcast.v1 rooms (`serve`) as the stage needs; each placed as the
    /// candidate says (the load narrowed to one CPU if the stage asks);
    /// `default` the baseline. A load offered at a share of the default's
    /// echo rate takes the median of the default's echo runs in `earlier`.
    pub fn compare_args(
        &self,
        candidates: &[Candidate],
        stage: &Stage,
        earlier: &[Run],
    ) -> Result<Vec<String>, RunError> {
        let shardcast = self.spaceless(&self.shardcast)?;
        let mut args: Vec<String> = vec![
            "compare".into(),
            "--baseline".into(),
            DEFAULT.into(),
            "--rounds".into(),
            self.rounds.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--duration".into(),
            self.duration.to_string(),
            "--results".into(),
            self.records_path().display().to_string(),
        ];
        for candidate in candidates {
            let config = self.spaceless(&self.config_path(&candidate.name))?;
            let name = &candidate.name;
            args.push("--server".into());
            args.push(if stage.rooms {
                format!(
                    "{name}=shardcast-v1:{shardcast} serve --listen 127.0.0.1:{{port}} --config {config}"
                )
            } else {
                format!("{name}={shardcast} serve --echo --listen 127.0.0.1:{{port}} --config {config}")
            });
            let mut placement = candidate.placement.clone();
            if stage.one_load_cpu {
                // The last load CPU: candidates with fewer shards than
                // CPUs pin them to the first ones, so on a host where
                // server and load share CPUs this one carries the fewest.
                placement.load = placement.load.last().copied().into_iter().collect();
            }
            args.push("--placement".into());
            args.push(format!("{name}={}", placement.to_arg()));
        }
        let mut default_echo_rates: Vec<f64> = earlier
            .iter()
            .filter(|run| run.server == DEFAULT && run.scenario == "echo")
            .filter_map(|run| run.metric("messages_per_second"))
            .collect();
        let default_echo_rate = median(&mut default_echo_rates);
        for scenario in stage.scenarios {
            let arg = scenario
                .arg(default_echo_rate)
                .ok_or_else(|| RunError::NoDefaultEcho(format!("{scenario:?}")))?;
            args.push("--scenario".into());
            args.push(arg);
        }
        Ok(args)
    }

    fn spaceless(&self, path: &Path) -> Result<String, RunError> {
        let text = path.display().to_string();
        if text.chars().any(char::is_whitespace) {
            return Err(RunError::Whitespace(path.to_owned()));
        }
        Ok(text)
    }

    /// Runs every stage of the target, a progress bar on stderr ticking
    /// as each run's record lands, and returns every run. compare's own
    /// output goes to [`Plan::log_path`].
    pub fn run(&self, candidates: &[Candidate]) -> Result<Vec<Run>, RunError> {
        let records = self.records_path();
        remove_stale(&records)?;
        let log_path = self.log_path();
        remove_stale(&log_path)?;
        let total = candidates.len() * target::scenarios(self.target).len() * self.rounds as usize;
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} runs, about {eta} left: {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        bar.set_message("starting");
        let mut follower = Follower::new(&records);
        let mut runs = Vec::new();
        for stage in target::stages(self.target) {
            let args = match self.compare_args(candidates, stage, &runs) {
                Ok(args) => args,
                Err(error) => {
                    bar.abandon();
                    return Err(error);
                }
            };
            if let Err(error) = self.run_stage(&args, &mut follower, &bar, &mut runs) {
                bar.abandon();
                return Err(error);
            }
        }
        bar.finish_and_clear();
        Ok(runs)
    }

    fn run_stage(
        &self,
        args: &[String],
        follower: &mut Follower,
        bar: &ProgressBar,
        runs: &mut Vec<Run>,
    ) -> Result<(), RunError> {
        let log_path = self.log_path();
        let write_error = |source| RunError::Write {
            path: log_path.clone(),
            source,
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(write_error)?;
        writeln!(&log, "$ {} {}", self.bench.display(), args.join(" ")).map_err(write_error)?;
        let log_err = log.try_clone().map_err(write_error)?;
        let mut child = Command::new(&self.bench)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| RunError::Spawn {
                program: self.bench.clone(),
                source,
            })?;
        let result = self.follow(&mut child, follower, bar, runs);
        if result.is_err() {
            // Let the session end rather than kill it: compare stops the
            // server of a run (its own process group) only when it exits
            // normally, and every run is bounded in time.
            let _ = child.wait();
        }
        let status = result?;
        if !status.success() {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            return Err(RunError::Compare {
                status,
                log: log_path,
                tail: lines[lines.len().saturating_sub(15)..].join("\n"),
            });
        }
        Ok(())
    }

    /// Ticks `bar` for each record `follower` finds until `child` exits.
    fn follow(
        &self,
        child: &mut Child,
        follower: &mut Follower,
        bar: &ProgressBar,
        runs: &mut Vec<Run>,
    ) -> Result<ExitStatus, RunError> {
        loop {
            let exited = child.try_wait().map_err(|source| RunError::Spawn {
                program: self.bench.clone(),
                source,
            })?;
            for run in follower.poll()? {
                bar.set_message(format!("{} {} {}", run.server, run.scenario, run.label));
                bar.inc(1);
                runs.push(run);
            }
            if let Some(status) = exited {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

fn remove_stale(path: &Path) -> Result<(), RunError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(RunError::Write {
            path: path.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve_config::ServeConfig;
    use crate::sweep::candidates::Placement;
    use crate::sweep::records::Machine;

    fn plan(out: &str, target: Target) -> Plan {
        Plan {
            shardcast: "bin/shardcast".into(),
            bench: "bin/shardcast-bench".into(),
            out: out.into(),
            target,
            rounds: 1,
            warmup: 0.5,
            duration: 1.0,
        }
    }

    fn candidate(name: &str) -> Candidate {
        Candidate {
            name: name.into(),
            description: String::new(),
            config: ServeConfig::default(),
            placement: Placement {
                server: vec![0, 1, 2],
                load: vec![3, 4],
            },
        }
    }

    #[test]
    fn every_candidate_is_a_server_with_its_config_and_placement() {
        let plan = plan("out", Target::Throughput);
        let candidates = [candidate("default"), candidate("shards-1")];
        let stages = target::stages(Target::Throughput);
        let echo = plan
            .compare_args(&candidates, &stages[0], &[])
            .unwrap()
            .join(" ");
        for part in [
            "compare --baseline default --rounds 1 --warmup 0.5 --duration 1 --results out/records.jsonl",
            "--server default=bin/shardcast serve --echo --listen 127.0.0.1:{port} --config out/default.toml",
            "--placement shards-1=0-2/3-4",
            "--scenario echo:100x32",
        ] {
            assert!(echo.contains(part), "{part:?} not in {echo:?}");
        }
        assert!(
            !echo.contains("shardcast-v1:") && !echo.contains("fanout"),
            "{echo}"
        );
        let fanout = plan
            .compare_args(&candidates, &stages[1], &[])
            .unwrap()
            .join(" ");
        for part in [
            "--server shards-1=shardcast-v1:bin/shardcast serve --listen 127.0.0.1:{port} --config out/shards-1.toml",
            "--placement default=0-2/4",
            "--scenario fanout:1000x32/10",
        ] {
            assert!(fanout.contains(part), "{part:?} not in {fanout:?}");
        }
        assert!(!fanout.contains("--echo"), "{fanout}");
    }

    #[test]
    fn a_path_with_a_space_is_refused() {
        let error = plan("my out", Target::Latency)
            .compare_args(
                &[candidate("default")],
                &target::stages(Target::Latency)[0],
                &[],
            )
            .unwrap_err();
        assert!(matches!(error, RunError::Whitespace(_)), "{error}");
    }

    fn echo_run(server: &str, rate: f64) -> Run {
        Run {
            server: server.into(),
            round: 1,
            scenario: "echo".into(),
            label: "100 × 32 B".into(),
            server_cores: "0-2".into(),
            load_cores: "3-4".into(),
            machine: Machine {
                cpu: "test".into(),
                cores: 5,
                kernel: "6.18".into(),
                commit: "abc1234".into(),
                rustc: "rustc".into(),
            },
            metrics: serde_json::json!({ "messages_per_second": rate }),
        }
    }

    #[test]
    fn latency_is_offered_at_half_the_default_median_echo_to_every_candidate() {
        let plan = plan("out", Target::Latency);
        let candidates = [candidate("default"), candidate("shards-1")];
        let latency = &target::stages(Target::Latency)[1];
        let error = plan.compare_args(&candidates, latency, &[]).unwrap_err();
        assert!(matches!(error, RunError::NoDefaultEcho(_)), "{error}");
        let earlier = [
            echo_run("default", 100_000.0),
            echo_run("default", 90_000.0),
            echo_run("default", 120_000.0),
            echo_run("shards-1", 500_000.0),
        ];
        let args = plan
            .compare_args(&candidates, latency, &earlier)
            .unwrap()
            .join(" ");
        assert!(args.contains("--scenario latency:100x32@50000"), "{args}");
        assert_eq!(args.matches("--scenario").count(), 1, "{args}");
    }
}
