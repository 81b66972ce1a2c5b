//! The open file limit (`RLIMIT_NOFILE`). Every connection is a file
//! descriptor, and the usual soft limit, 1024, would cap the server near
//! a thousand connections; the hard limit is typically 2^19 or more. Like
//! Go's runtime and nginx's `worker_rlimit_nofile`, the server raises its
//! soft limit to the hard limit at startup.

use std::io;

use tracing::{info, warn};

/// The open file limit before and after [`raise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileLimit {
    /// The soft limit the process started with.
    pub(crate) before: u64,
    /// The soft limit now in force.
    pub(crate) soft: u64,
    /// The hard limit, the most the soft limit may be raised to.
    pub(crate) hard: u64,
}

/// Raises the soft open file limit to the hard limit. An unlimited hard
/// limit means the kernel's ceiling, `fs.nr_open`, which is as far as Linux
/// lets the soft limit go.
pub(crate) fn raise() -> io::Result<FileLimit> {
    let before = get()?;
    let target = if before.rlim_max == libc::RLIM_INFINITY {
        nr_open()?
    } else {
        before.rlim_max
    };
    if before.rlim_cur < target {
        set(&libc::rlimit {
            rlim_cur: target,
            rlim_max: before.rlim_max,
        })?;
    }
    let after = get()?;
    Ok(FileLimit {
        before: before.rlim_cur,
        soft: after.rlim_cur,
        hard: after.rlim_max,
    })
}

/// Raises the limit as [`raise`] does and logs the outcome: the limit in
/// force at info, and a warning when it cannot be raised or is below
/// `max_connections`, past which accepts fail.
pub(crate) fn raise_and_log(max_connections: usize) {
    let soft = match raise() {
        Ok(limit) => {
            info!(
                limit = limit.soft,
                was = limit.before,
                hard = limit.hard,
                "open file limit (RLIMIT_NOFILE)"
            );
            limit.soft
        }
        Err(error) => match get() {
            Ok(limit) => {
                warn!(
                    %error,
                    limit = limit.rlim_cur,
                    "could not raise the open file limit (RLIMIT_NOFILE)"
                );
                limit.rlim_cur
            }
            Err(error) => {
                warn!(%error, "could not read the open file limit (RLIMIT_NOFILE)");
                return;
            }
        },
    };
    if u64::try_from(max_connections).is_ok_and(|max| max > soft) {
        warn!(
            limit = soft,
            max_connections,
            "the open file limit is below limits.max_connections: accepts will fail past it; \
             raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd)"
        );
    }
}

/// The most file descriptors the kernel allows a process.
fn nr_open() -> io::Result<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")?
        .trim()
        .parse()
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

fn get() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which
    // points to a live, writable `rlimit` for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        Ok(limit)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set(limit: &libc::rlimit) -> io::Result<()> {
    // SAFETY: setrlimit only reads the `rlimit` behind the pointer, which
    // is live for the whole call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let limit = raise().unwrap();
        assert!(limit.soft >= limit.before, "{limit:?}");
        let ceiling = if limit.hard == libc::RLIM_INFINITY {
            nr_open().unwrap()
        } else {
            limit.hard
        };
        assert_eq!(limit.soft, ceiling, "{limit:?}");
        assert_eq!(get().unwrap().rlim_cur, limit.soft);
    }
}
