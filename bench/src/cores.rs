//! CPU core lists as `taskset` writes them (`1`, `0,2`, `0-3,6`), and
//! pinning the current thread to one core.

use std::str::FromStr;

use anyhow::{Context, bail};

/// A parsed core list, as a command-line value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CoreList(pub(crate) Vec<usize>);

impl FromStr for CoreList {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<CoreList> {
        parse_list(text).map(CoreList)
    }
}

/// Parses a core list: comma-separated core numbers and inclusive ranges,
/// in the order given, without repeats.
pub(crate) fn parse_list(text: &str) -> anyhow::Result<Vec<usize>> {
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (parse_core(first)?, parse_core(last)?),
            None => {
                let core = parse_core(part)?;
                (core, core)
            }
        };
        if first > last {
            bail!("core range {part} runs backwards");
        }
        for core in first..=last {
            if cores.contains(&core) {
                bail!("core {core} is listed twice in {text}");
            }
            cores.push(core);
        }
    }
    Ok(cores)
}

fn parse_core(text: &str) -> anyhow::Result<usize> {
    text.trim()
        .parse()
        .with_context(|| format!("{text:?} is not a core number"))
}

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
    fn single_cores_and_ranges_keep_their_order() {
        assert_eq!(parse_list("1").unwrap(), [1]);
        assert_eq!(parse_list("3,1").unwrap(), [3, 1]);
        assert_eq!(parse_list("0-3,6").unwrap(), [0, 1, 2, 3, 6]);
        assert_eq!(parse_list(" 2 - 3 , 5").unwrap(), [2, 3, 5]);
    }

    #[test]
    fn only_cores_of_this_process_are_available() {
        let mine = core_affinity::get_core_ids().unwrap()[0].id;
        assert!(check_available(&[mine]).is_ok());
        assert!(check_available(&[100_000]).is_err());
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in ["", "a", "1,", "3-1", "1,1", "0-2,2", "-1", "1-"] {
            assert!(parse_list(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
