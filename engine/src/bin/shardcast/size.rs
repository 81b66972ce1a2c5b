//! Byte sizes as operators write them: `65536`, `"64KiB"`, `"16 MiB"`.
//!
//! Units are powers of 1024 only. `MB` and `KB` are refused rather than
//! guessed at, since they mean powers of 1000 to some readers and of 1024
//! to others.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The units a size may carry, largest first, with their shift in bits.
const UNITS: [(&str, u32); 4] = [("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)];

/// A number of bytes: an integer, or a string of a whole number and a
/// unit (B, KiB, MiB, GiB), with or without a space between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ByteSize(usize);

/// Why a size was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SizeError {
    /// Not a whole number followed by an optional unit.
    #[error(
        "`{0}` is not a size: write a number of bytes, or a whole number and a unit \
         (B, KiB, MiB or GiB, powers of 1024), like \"64KiB\""
    )]
    Malformed(String),
    /// A unit this parser does not know, such as `MB`.
    #[error("`{text}` has the unknown unit `{unit}`: use B, KiB, MiB or GiB (powers of 1024)")]
    UnknownUnit {
        /// The whole size as written.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// More bytes than this machine can address.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

impl ByteSize {
    /// The size in bytes.
    pub(crate) fn bytes(self) -> usize {
        self.0
    }
}

impl From<usize> for ByteSize {
    fn from(bytes: usize) -> Self {
        ByteSize(bytes)
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(text: &str) -> Result<ByteSize, SizeError> {
        let trimmed = text.trim();
        let digits = trimmed.len()
            - trimmed
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        let (number, unit) = trimmed.split_at(digits);
        let number: usize = match number.parse() {
            Ok(number) => number,
            Err(_) if number.is_empty() => return Err(SizeError::Malformed(text.to_owned())),
            Err(_) => return Err(SizeError::TooLarge(text.to_owned())),
        };
        let unit = unit.trim_start();
        if !unit.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(SizeError::Malformed(text.to_owned()));
        }
        let shift = if unit.is_empty() {
            0
        } else {
            UNITS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
                .map(|&(_, shift)| shift)
                .ok_or_else(|| SizeError::UnknownUnit {
                    text: text.to_owned(),
                    unit: unit.to_owned(),
                })?
        };
        number
            .checked_mul(1 << shift)
            .map(ByteSize)
            .ok_or_else(|| SizeError::TooLarge(text.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    /// Writes the size in the largest unit that divides it exactly, so it
    /// reads back as the same number of bytes: `16MiB`, `65600KiB`, `100B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, shift) = UNITS
            .iter()
            .find(|&&(_, shift)| self.0 != 0 && self.0 % (1 << shift) == 0)
            .copied()
            .unwrap_or(("B", 0));
        write!(f, "{}{unit}", self.0 >> shift)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Reads a size from an integer or a string.
struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size: a number of bytes, or a string like \"64KiB\"")
    }

    fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
        usize::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| E::custom(SizeError::TooLarge(bytes.to_string())))
    }

    fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
        match u64::try_from(bytes) {
            Ok(bytes) => self.visit_u64(bytes),
            Err(_) => Err(E::custom(format!(
                "`{bytes}` is negative: a size is 0 or more"
            ))),
        }
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
        text.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<usize, SizeError> {
        text.parse::<ByteSize>().map(ByteSize::bytes)
    }

    #[test]
    fn numbers_and_binary_units_are_read() {
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse("1234").unwrap(), 1234);
        assert_eq!(parse("128B").unwrap(), 128);
        assert_eq!(parse("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse("16 MiB").unwrap(), 16 << 20);
        assert_eq!(parse(" 2GiB ").unwrap(), 2 << 30);
        assert_eq!(parse("8kib").unwrap(), 8 << 10);
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert_eq!(parse("").unwrap_err(), SizeError::Malformed(String::new()));
        assert_eq!(
            parse("MiB").unwrap_err(),
            SizeError::Malformed("MiB".into())
        );
        assert_eq!(parse("-1").unwrap_err(), SizeError::Malformed("-1".into()));
        assert_eq!(
            parse("1.5MiB").unwrap_err(),
            SizeError::Malformed("1.5MiB".into())
        );
        assert_eq!(
            parse("64 MB").unwrap_err().to_string(),
            "`64 MB` has the unknown unit `MB`: use B, KiB, MiB or GiB (powers of 1024)"
        );
        assert_eq!(
            parse("64MB").unwrap_err(),
            SizeError::UnknownUnit {
                text: "64MB".into(),
                unit: "MB".into()
            }
        );
        assert_eq!(
            parse("99999999999999999999").unwrap_err(),
            SizeError::TooLarge("99999999999999999999".into())
        );
        let huge = format!("{}GiB", usize::MAX >> 20);
        assert_eq!(parse(&huge).unwrap_err(), SizeError::TooLarge(huge));
    }

    #[test]
    fn a_size_prints_in_its_largest_exact_unit_and_reads_back() {
        for (bytes, text) in [
            (0, "0B"),
            (100, "100B"),
            (1024, "1KiB"),
            (1536, "1536B"),
            ((64 << 20) + (64 << 10), "65600KiB"),
            (16 << 20, "16MiB"),
            (3 << 30, "3GiB"),
        ] {
            assert_eq!(ByteSize(bytes).to_string(), text);
            assert_eq!(parse(text).unwrap(), bytes);
        }
    }

    #[test]
    fn toml_integers_and_strings_are_sizes() {
        #[derive(Deserialize)]
        struct Doc {
            size: ByteSize,
        }
        let read = |text: &str| toml::from_str::<Doc>(text).map(|doc| doc.size.bytes());
        assert_eq!(read("size = 4096").unwrap(), 4096);
        assert_eq!(read("size = \"4KiB\"").unwrap(), 4096);
        let negative = read("size = -1").unwrap_err();
        assert!(negative.message().contains("negative"), "{negative}");
        let boolean = read("size = true").unwrap_err();
        assert!(boolean.message().contains("expected a size"), "{boolean}");
    }
}
