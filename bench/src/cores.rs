//! Checking a core list (parsed by `shardcast::CoreList`) against the
//! cores this process may run on, and pinning the current thread to one
//! core.

use anyhow::{Context, bail};

/// Fails unless every core of `cores` is one this process may run on.
pub(crate) fn check_available(cores: &[usize]) -> anyhow::Result<()> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .context("reading the cores this process may run on")?
        .into_iter()
        .map(|core| core.id)
        .collect();
    match cores.iter().find(|core| !available.contains(core)) {
        Some(core) => bail!("core {core} is not one of this process's cores {available:?}"),
        None => Ok(()),
    }
}

/// Pins the calling thread to `core`.
pub(crate) fn pin_current_thread(core: usize) -> anyhow::Result<()> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        bail!("could not pin a thread to core {core}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cores_of_this_process_are_available() {
        let mine = core_affinity::get_core_ids().unwrap()[0].id;
        assert!(check_available(&[mine]).is_ok());
        assert!(check_available(&[100_000]).is_err());
    }
}
