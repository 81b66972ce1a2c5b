//! The runs `shardcast-bench compare` records, one JSON object per line
//! (the bench's `record.rs`), read as the session writes them: the sweep
//! follows the file to move its progress bar, and aggregates what it read.
//!
//! Only the fields the sweep uses are read; the bench may add others.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The machine and the code a session ran on, as the bench records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs the bench could run on.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// The commit measured, `-dirty` when tracked files differed from it.
    pub commit: String,
    /// The rustc that built the bench.
    pub rustc: String,
}

impl Machine {
    /// One line: "CPU, N logical cores, Linux X, rustc Y, commit `Z`".
    pub fn describe(&self) -> String {
        format!(
            "{}, {} logical cores, Linux {}, {}, commit `{}`",
            self.cpu, self.cores, self.kernel, self.rustc, self.commit
        )
    }
}

/// One measured run of one scenario against one candidate.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Run {
    /// The candidate's name (the bench's server name).
    pub server: String,
    /// The round, from 1.
    pub round: u32,
    /// The scenario's kind: `echo`, `latency` or `fanout`.
    pub scenario: String,
    /// The scenario's label, the same for every run of the same load.
    pub label: String,
    /// The server's CPUs.
    pub server_cores: String,
    /// The load's CPUs.
    pub load_cores: String,
    /// The machine and commit.
    pub machine: Machine,
    /// The scenario's results, as its module wrote them.
    pub metrics: Value,
}

impl Run {
    /// The metric `key` as a number, if present and numeric.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).and_then(Value::as_f64)
    }
}

/// Why records could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// The file exists but could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The records file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a run record.
    #[error("{path} line {line}: not a benchmark record: {source}")]
    Parse {
        /// The records file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Follows a records file as it grows, returning each complete line once.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    offset: u64,
    partial: String,
    lines: usize,
}

impl Follower {
    /// Follows `path` from its start; a file that does not exist yet has
    /// no records.
    pub fn new(path: &Path) -> Follower {
        Follower {
            path: path.to_owned(),
            offset: 0,
            partial: String::new(),
            lines: 0,
        }
    }

    /// The runs whose lines were completed since the last call.
    pub fn poll(&mut self) -> Result<Vec<Run>, RecordsError> {
        let io = |source| RecordsError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(error)),
        };
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else {
            return Ok(Vec::new());
        };
        let complete: String = self.partial.drain(..=end).collect();
        let first_line = self.lines + 1;
        self.lines += complete.lines().count();
        parse_lines(&complete, &self.path, first_line)
    }
}

/// Parses the records of a JSON-lines text; blank lines are skipped.
/// `path` and `first_line` only name the place of a bad line.
pub fn parse_lines(text: &str, path: &Path, first_line: usize) -> Result<Vec<Run>, RecordsError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|source| RecordsError::Parse {
                path: path.to_owned(),
                line: first_line + index,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LINE: &str = r#"{"session":1,"command":"c","machine":{"cpu":"X","cores":2,"kernel":"6","commit":"abc","rustc":"r"},"server":"default","server_cores":"0,1","load_cores":"0,1","round":1,"scenario":"echo","label":"100 × 32 B","params":{},"metrics":{"messages_per_second":5.0}}"#;

    #[test]
    fn a_follower_returns_each_complete_line_once() {
        let path = std::env::temp_dir().join(format!("follow-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut follower = Follower::new(&path);
        assert!(follower.poll().unwrap().is_empty());
        let mut file = File::create(&path).unwrap();
        write!(file, "{LINE}\n{}", &LINE[..20]).unwrap();
        let first = follower.poll().unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].metric("messages_per_second"), Some(5.0));
        assert!(follower.poll().unwrap().is_empty());
        writeln!(file, "{}", &LINE[20..]).unwrap();
        writeln!(file, "not json").unwrap();
        let error = follower.poll().unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(error.to_string().contains("line 3"), "{error}");
    }
}
