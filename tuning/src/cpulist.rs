//! The kernel's CPU list format (`0-3,8,10-11`), used by sysfs, procfs and
//! the kernel command line.

/// A CPU list that is not in the kernel's format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CPU list {text:?}")]
pub struct CpuListError {
    /// The text that failed to parse.
    pub text: String,
}

/// Parses `0-3,8,10-11` into sorted, deduplicated CPU numbers. An empty
/// string is the empty list (as in `/sys/devices/system/cpu/isolated`).
pub fn parse(text: &str) -> Result<Vec<u32>, CpuListError> {
    let err = || CpuListError {
        text: text.to_owned(),
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: u32 = lo.parse().map_err(|_| err())?;
                let hi: u32 = hi.parse().map_err(|_| err())?;
                if lo > hi {
                    return Err(err());
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(part.parse().map_err(|_| err())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Parses a hexadecimal CPU mask as in `rps_cpus` (`ff,00000000`): comma
/// separated 32-bit words, most significant first.
pub fn parse_mask(text: &str) -> Result<Vec<u32>, CpuListError> {
    let err = || CpuListError {
        text: text.to_owned(),
    };
    let mut cpus = Vec::new();
    let words: Vec<&str> = text.trim().split(',').collect();
    for (index, word) in words.iter().rev().enumerate() {
        let bits = u32::from_str_radix(word, 16).map_err(|_| err())?;
        let base = u32::try_from(index * 32).map_err(|_| err())?;
        cpus.extend((0..32).filter(|b| bits & (1 << b) != 0).map(|b| base + b));
    }
    Ok(cpus)
}

/// Prints CPU numbers as a hexadecimal mask in the format of `rps_cpus`
/// (32-bit words, most significant first, comma separated).
pub fn format_mask(cpus: &[u32]) -> String {
    let words = cpus.iter().map(|&c| c as usize / 32 + 1).max().unwrap_or(1);
    let mut bits = vec![0u32; words];
    for &cpu in cpus {
        bits[cpu as usize / 32] |= 1 << (cpu % 32);
    }
    bits.iter()
        .rev()
        .map(|w| format!("{w:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints CPU numbers in the kernel's format, folding runs into ranges.
/// The input need not be sorted.
pub fn format(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ranges_and_singles() {
        assert_eq!(parse("0-3,8,10-11").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse("5\n").unwrap(), vec![5]);
        assert_eq!(parse("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse("3,1-2,2").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("a-b").is_err());
        assert!(parse("4-2").is_err());
        assert!(parse("1-").is_err());
    }

    #[test]
    fn parses_masks() {
        assert_eq!(parse_mask("00000000").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_mask("f").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_mask("1,00000001").unwrap(), vec![0, 32]);
        assert!(parse_mask("zz").is_err());
    }

    #[test]
    fn formats_runs() {
        assert_eq!(format(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(format(&[]), "");
    }

    #[test]
    fn formats_masks() {
        assert_eq!(format_mask(&[]), "00000000");
        assert_eq!(format_mask(&[0, 1, 2, 3]), "0000000f");
        assert_eq!(format_mask(&[0, 32]), "00000001,00000001");
    }

    proptest! {
        #[test]
        fn mask_round_trips(cpus in proptest::collection::btree_set(0u32..512, 0..64)) {
            let cpus: Vec<u32> = cpus.into_iter().collect();
            prop_assert_eq!(parse_mask(&format_mask(&cpus)).unwrap(), cpus);
        }

        #[test]
        fn round_trips(cpus in proptest::collection::btree_set(0u32..512, 0..64)) {
            let cpus: Vec<u32> = cpus.into_iter().collect();
            prop_assert_eq!(parse(&format(&cpus)).unwrap(), cpus);
        }
    }
}
