//! Transparent huge pages. mimalloc asks the kernel for them
//! (`MADV_HUGEPAGE`) on its heap; with many idle connections, each 2 MiB
//! region touched then stays resident in full. By default the server
//! turns them off for the whole process with `PR_SET_THP_DISABLE`, first
//! thing in `main`, and turns them back on once the configuration says
//! so (`server.transparent_huge_pages`).

use std::io;

use tracing::{debug, warn};

/// Allows or forbids transparent huge pages for this process.
pub(crate) fn set_enabled(enabled: bool) -> io::Result<()> {
    let disable = libc::c_ulong::from(!enabled);
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and
    // touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, disable, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// [`set_enabled`] with the configured choice, logging the outcome: a
/// failure leaves the server running, with a warning.
pub(crate) fn apply(enabled: bool) {
    match set_enabled(enabled) {
        Ok(()) => debug!(enabled, "transparent huge pages set for the process"),
        Err(error) => warn!(%error, enabled, "could not set transparent huge pages"),
    }
}
