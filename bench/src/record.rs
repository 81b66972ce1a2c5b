//! One measured run as a JSON line: what `compare` writes as it goes and
//! what `report` reads to write BENCHMARKS.md.
//!
//! A record carries everything needed to read its figures on its own: the
//! command line, the machine and commit, the server and where it and its
//! load ran, the round, and the scenario's inputs (`params`) and results
//! (`metrics`) exactly as the scenario's module wrote them.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::machine::Machine;

/// One run of one scenario against one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// When the session this run belongs to started, seconds since the
    /// Unix epoch: records of one session were measured side by side.
    pub(crate) session: u64,
    /// The command line of the session.
    pub(crate) command: String,
    /// The machine and the commit measured.
    pub(crate) machine: Machine,
    /// The server's name, as in its `--server`.
    pub(crate) server: String,
    /// The server's cores (`taskset -c` list).
    pub(crate) server_cores: String,
    /// The load generator's cores.
    pub(crate) load_cores: String,
    /// The round of the session, from 1.
    pub(crate) round: u32,
    /// The scenario's kind: `echo`, `latency`, `fanout` or `storm`.
    pub(crate) scenario: String,
    /// The scenario's label, the same for every run of the same load
    /// (`100 × 32 B`), so runs group by it.
    pub(crate) label: String,
    /// The scenario's inputs.
    pub(crate) params: Value,
    /// The scenario's results.
    pub(crate) metrics: Value,
}

impl Record {
    /// The metric `key` as a number, if present and numeric.
    pub(crate) fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).and_then(Value::as_f64)
    }

    /// The input `key` as a number, if present and numeric.
    pub(crate) fn param(&self, key: &str) -> Option<f64> {
        self.params.get(key).and_then(Value::as_f64)
    }

    /// Whether the server and its load ran on a core in common.
    pub(crate) fn shares_cores(&self) -> bool {
        let load: Vec<&str> = self.load_cores.split(',').collect();
        self.server_cores
            .split(',')
            .any(|core| load.contains(&core))
    }
}

/// Appends records to a JSON-lines file, one line each, flushed per
/// record so a session cut short keeps every finished run.
pub(crate) struct RecordWriter {
    file: File,
}

impl RecordWriter {
    /// Opens `path` for appending, creating it and its folder.
    pub(crate) fn append_to(path: &Path) -> anyhow::Result<RecordWriter> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(RecordWriter { file })
    }

    /// Writes one record as one line.
    pub(crate) fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .context("writing a record")?;
        self.file.flush().context("writing a record")
    }
}

/// Reads every record of the JSON-lines files `paths`, in order; blank
/// lines are skipped, anything else that is not a record is an error
/// naming its file and line.
pub(crate) fn read_all(paths: &[impl AsRef<Path>]) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let record = serde_json::from_str(&line).with_context(|| {
                format!(
                    "{} line {}: not a benchmark record",
                    path.display(),
                    index + 1
                )
            })?;
            records.push(record);
        }
    }
    Ok(records)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A record of an echo run at 100 × 32 B with `metrics`, for tests
    /// of what reads records.
    pub(crate) fn record(server: &str, round: u32, metrics: Value) -> Record {
        Record {
            session: 1,
            command: "shardcast-bench compare".into(),
            machine: Machine {
                cpu: "Test CPU".into(),
                cores: 2,
                kernel: "6.0".into(),
                commit: "abc".into(),
                rustc: "rustc".into(),
            },
            server: server.into(),
            server_cores: "0".into(),
            load_cores: "1".into(),
            round,
            scenario: "echo".into(),
            label: "100 × 32 B".into(),
            params: json!({"connections": 100, "size": 32}),
            metrics,
        }
    }

    #[test]
    fn records_written_are_read_back_in_order() {
        let path = std::env::temp_dir().join(format!("records-{}.jsonl", std::process::id()));
        let _ = fs::remove_file(&path);
        let first = record("shardcast", 1, json!({"messages_per_second": 100.0}));
        let second = record("peer", 1, json!({"messages_per_second": 50.0}));
        let mut writer = RecordWriter::append_to(&path).unwrap();
        writer.write(&first).unwrap();
        writer.write(&second).unwrap();
        drop(writer);
        let read = read_all(&[&path]).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(read, [first.clone(), second]);
        assert_eq!(read[0].metric("messages_per_second"), Some(100.0));
        assert_eq!(read[0].param("size"), Some(32.0));
        assert_eq!(read[0].metric("missing"), None);
        assert!(!read[0].shares_cores());
    }

    #[test]
    fn a_line_that_is_not_a_record_names_its_file_and_line() {
        let path = std::env::temp_dir().join(format!("bad-records-{}.jsonl", std::process::id()));
        fs::write(&path, "\n{\"not\": \"a record\"}\n").unwrap();
        let error = read_all(&[&path]).unwrap_err();
        fs::remove_file(&path).unwrap();
        assert!(format!("{error:#}").contains("line 2"), "{error:#}");
    }
}
