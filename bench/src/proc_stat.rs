//! A process's CPU time from `/proc/PID/stat`: how the benchmarks charge
//! a server (or the generator itself) for the messages it handled.

use std::fs;

use anyhow::{Context, bail};

/// CPU time a process (all its threads) has used since it started, in
/// clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Time in user space (`utime`, field 14).
    pub(crate) user_ticks: u64,
    /// Time in the kernel on the process's behalf (`stime`, field 15).
    pub(crate) system_ticks: u64,
}

/// CPU time used between two readings, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CpuSpent {
    /// User plus system time.
    pub(crate) total: f64,
    /// User time alone.
    pub(crate) user: f64,
}

impl CpuTimes {
    /// Reads the CPU times of process `pid`, with every other process of
    /// its process group when it leads one (a server that runs a process
    /// per core is charged for all of them: `RunningServer` starts each
    /// server as the leader of its own group); `None` reads this process.
    pub(crate) fn read(pid: Option<u32>) -> anyhow::Result<CpuTimes> {
        let Some(pid) = pid else {
            return CpuTimes::read_path("/proc/self/stat").map(|(times, _)| times);
        };
        let (mut times, group) = CpuTimes::read_path(&format!("/proc/{pid}/stat"))?;
        if group != pid {
            return Ok(times);
        }
        for entry in fs::read_dir("/proc").context("listing /proc")? {
            let Some(other) = entry
                .ok()
                .and_then(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&other| other != pid)
            else {
                continue;
            };
            // Processes come and go while /proc is listed: one that is
            // gone by the time it is read has nothing left to count.
            if let Ok((more, other_group)) = CpuTimes::read_path(&format!("/proc/{other}/stat")) {
                if other_group == pid {
                    times.user_ticks += more.user_ticks;
                    times.system_ticks += more.system_ticks;
                }
            }
        }
        Ok(times)
    }

    /// Reads one stat file: the CPU times and the process group.
    fn read_path(path: &str) -> anyhow::Result<(CpuTimes, u32)> {
        let line = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let times = CpuTimes::parse(&line).with_context(|| format!("parsing {path}"))?;
        let group = process_group(&line).with_context(|| format!("parsing {path}"))?;
        Ok((times, group))
    }

    /// Parses one `/proc/PID/stat` line. The command name (field 2) is in
    /// parentheses and may itself hold spaces and parentheses, so fields
    /// are counted from the last `)`.
    pub(crate) fn parse(line: &str) -> anyhow::Result<CpuTimes> {
        let Some((_, after_name)) = line.rsplit_once(')') else {
            bail!("no command name in {line:?}");
        };
        // After the name come the fields from 3 (state) on.
        let mut fields = after_name.split_ascii_whitespace().skip(14 - 3);
        let mut next = |name: &str| -> anyhow::Result<u64> {
            fields
                .next()
                .with_context(|| format!("no {name} field"))?
                .parse()
                .with_context(|| format!("{name} is not a number"))
        };
        let user_ticks = next("utime")?;
        let system_ticks = next("stime")?;
        Ok(CpuTimes {
            user_ticks,
            system_ticks,
        })
    }

    /// The CPU time spent from `earlier` to `self`, at `ticks_per_second`.
    pub(crate) fn since(&self, earlier: &CpuTimes, ticks_per_second: u64) -> CpuSpent {
        let tick = 1.0 / ticks_per_second as f64;
        let user = self.user_ticks.saturating_sub(earlier.user_ticks) as f64 * tick;
        let system = self.system_ticks.saturating_sub(earlier.system_ticks) as f64 * tick;
        CpuSpent {
            total: user + system,
            user,
        }
    }
}

/// The process group (field 5) of a `/proc/PID/stat` line.
fn process_group(line: &str) -> anyhow::Result<u32> {
    let Some((_, after_name)) = line.rsplit_once(')') else {
        bail!("no command name in {line:?}");
    };
    after_name
        .split_ascii_whitespace()
        .nth(5 - 3)
        .context("no pgrp field")?
        .parse()
        .context("pgrp is not a number")
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times
/// (`sysconf(_SC_CLK_TCK)`).
pub(crate) fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a configuration value; it takes no pointer and
    // has no precondition.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from the tokio-tungstenite echo peer under load, its
    /// command name (`tokio-tungsteni`) replaced by an awkward one.
    const LINE: &str = "11157 (echo (x) 1) R 10990 10990 7634 0 -1 4194304 3639 0 0 0 93 79 0 0 \
        20 0 1 0 433763 17227776 3924 18446744073709551615 94025226844544 94025227328032 \
        140731185724416 0 0 0 0 4102 1088 0 0 0 17 0 0 0 0 0 0 94025227350784 94025227353336 \
        94025590763520 140731185732121 140731185732213 140731185732213 140731185733556 0\n";

    #[test]
    fn user_and_system_ticks_come_after_the_last_parenthesis() {
        assert_eq!(
            CpuTimes::parse(LINE).unwrap(),
            CpuTimes {
                user_ticks: 93,
                system_ticks: 79,
            }
        );
    }

    #[test]
    fn the_process_group_is_the_fifth_field() {
        assert_eq!(process_group(LINE).unwrap(), 10990);
        assert!(process_group("4242 (echo) S 1").is_err());
    }

    #[test]
    fn truncated_or_garbled_lines_are_errors() {
        assert!(CpuTimes::parse("4242 (echo) S 1 2 3").is_err());
        assert!(CpuTimes::parse("no parenthesis at all").is_err());
        assert!(CpuTimes::parse(&LINE.replace(" 93 79 ", " x 79 ")).is_err());
    }

    #[test]
    fn spent_time_is_the_difference_in_seconds() {
        let before = CpuTimes {
            user_ticks: 100,
            system_ticks: 250,
        };
        let after = CpuTimes {
            user_ticks: 150,
            system_ticks: 400,
        };
        assert_eq!(
            after.since(&before, 100),
            CpuSpent {
                total: 2.0,
                user: 0.5,
            }
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let times = CpuTimes::read(None).unwrap();
        let again = CpuTimes::read(Some(std::process::id())).unwrap();
        assert!(again.user_ticks >= times.user_ticks);
        assert!(ticks_per_second() > 0);
    }
}
