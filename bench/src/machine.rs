//! The machine and the code a benchmark ran on, recorded beside every
//! figure so a reader can tell what the numbers mean.

use std::fs;
use std::process::Command;

/// What ran the benchmark: CPU, cores, kernel, and the commit measured.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Machine {
    /// CPU model name from /proc/cpuinfo.
    pub(crate) cpu: String,
    /// Logical CPUs this process may run on.
    pub(crate) cores: usize,
    /// Kernel release (`uname -r`).
    pub(crate) kernel: String,
    /// The checkout's commit, with `-dirty` when files other than
    /// BENCHMARKS.md differ from it (a report being regenerated section by
    /// section does not make the code measured dirty).
    pub(crate) commit: String,
    /// rustc version that built the benchmark.
    pub(crate) rustc: String,
}

impl Machine {
    /// Reads the machine's description; a fact that cannot be read is
    /// reported as "unknown" rather than guessed.
    pub(crate) fn read() -> Machine {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, name)| name.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Machine {
            cpu,
            cores,
            kernel,
            commit: commit(),
            rustc: command_output("rustc", &["--version"]),
        }
    }

    /// One line for a report: "CPU, N cores, Linux X, rustc Y, commit Z".
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}, {} logical cores, Linux {}, {}, commit `{}`",
            self.cpu, self.cores, self.kernel, self.rustc, self.commit
        )
    }
}

/// The short commit hash, `-dirty` when tracked files other than
/// BENCHMARKS.md are changed.
fn commit() -> String {
    let hash = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let changed = command_output(
        "git",
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)BENCHMARKS.md",
        ],
    );
    if changed.is_empty() {
        hash
    } else {
        format!("{hash}-dirty")
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}
