//! Where a server and its load run: the cores of each, as `compare`
//! places them and the reports describe them.

use std::str::FromStr;

use anyhow::{Context, bail};
use shardcast::CoreList;

/// The cores a server runs on and the cores its load runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The server's cores (`taskset -c`).
    pub(crate) server: CoreList,
    /// The load's cores, one generator thread pinned to each.
    pub(crate) load: CoreList,
}

/// A `--placement` value: the server it is for, and its placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NamedPlacement {
    /// The server's name, as in its `--server`.
    pub(crate) name: String,
    /// Where it and its load run.
    pub(crate) placement: Placement,
}

impl FromStr for NamedPlacement {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<NamedPlacement> {
        let expected = || format!("expected NAME=SERVER_CORES/LOAD_CORES, got {text:?}");
        let (name, cores) = text.split_once('=').with_context(expected)?;
        let (server, load) = cores.split_once('/').with_context(expected)?;
        let name = name.trim();
        if name.is_empty() {
            bail!(expected());
        }
        Ok(NamedPlacement {
            name: name.to_owned(),
            placement: Placement {
                server: server.parse().with_context(expected)?,
                load: load.parse().with_context(expected)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_parse_a_name_and_two_core_lists() {
        let named: NamedPlacement = "shardcast-2=0-1/0,1".parse().unwrap();
        assert_eq!(named.name, "shardcast-2");
        assert_eq!(named.placement.server.as_slice(), [0, 1]);
        assert_eq!(named.placement.load.as_slice(), [0, 1]);
        for bad in ["shardcast-2", "x=0", "=0/1", "x=0/", "x=a/1"] {
            assert!(bad.parse::<NamedPlacement>().is_err(), "{bad:?}");
        }
    }
}
