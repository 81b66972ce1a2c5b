//! CPU core lists as `taskset` and operators write them (`1`, `0,2`,
//! `0-3,6`): the `--cores` value of `shardcast serve`, and of the tools that
//! pin load generators and plan shards per core.

use std::fmt;
use std::str::FromStr;

/// Cores in the order given, each at most once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreList(Vec<usize>);

/// Why a core list was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreListError {
    /// A part that is not a core number.
    #[error("`{0}` is not a core number")]
    NotANumber(String),
    /// A range whose first core is above its last.
    #[error("core range `{0}` runs backwards")]
    Backwards(String),
    /// The same core listed twice.
    #[error("core {0} is listed twice")]
    Repeated(usize),
}

impl CoreList {
    /// The cores, in the order given.
    #[must_use]
    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }

    /// The cores as a vector, for [`ServerBuilder::cores`](crate::ServerBuilder::cores).
    #[must_use]
    pub fn into_vec(self) -> Vec<usize> {
        self.0
    }
}

impl FromStr for CoreList {
    type Err = CoreListError;

    /// Parses comma-separated core numbers and inclusive ranges.
    fn from_str(text: &str) -> Result<CoreList, CoreListError> {
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
                return Err(CoreListError::Backwards(part.to_owned()));
            }
            for core in first..=last {
                if cores.contains(&core) {
                    return Err(CoreListError::Repeated(core));
                }
                cores.push(core);
            }
        }
        Ok(CoreList(cores))
    }
}

impl fmt::Display for CoreList {
    /// Writes the cores comma-separated, as `taskset -c` reads them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, core) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{core}")?;
        }
        Ok(())
    }
}

fn parse_core(text: &str) -> Result<usize, CoreListError> {
    let text = text.trim();
    text.parse()
        .map_err(|_| CoreListError::NotANumber(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<usize>, CoreListError> {
        text.parse::<CoreList>().map(CoreList::into_vec)
    }

    #[test]
    fn single_cores_and_ranges_keep_their_order() {
        assert_eq!(parse("0").unwrap(), [0]);
        assert_eq!(parse("3,1").unwrap(), [3, 1]);
        assert_eq!(parse("0-3,6").unwrap(), [0, 1, 2, 3, 6]);
        assert_eq!(parse(" 2 - 3 , 5").unwrap(), [2, 3, 5]);
        assert_eq!(parse("0, 2-3").unwrap(), [0, 2, 3]);
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in ["", "a", "1,", "0,,1", "3-1", "1,1", "0-2,2", "-1", "1-"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_list_prints_as_taskset_reads_it() {
        assert_eq!("0-2,5".parse::<CoreList>().unwrap().to_string(), "0,1,2,5");
    }
}
