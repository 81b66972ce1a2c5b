//! Durations as operators write them: `"500ms"`, `"10s"`, `"2m"`, `"1h"`,
//! and timeouts that may be `"off"`.
//!
//! A duration always carries its unit: a bare `10` could mean seconds or
//! milliseconds, and a wrong guess is a timeout off by a factor of 1000.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The units a duration may carry, largest first, in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// A duration of at least one millisecond, in whole milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HumanDuration(Duration);

/// A timeout that may be turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timeout {
    /// Never time out: written `"off"`.
    Off,
    /// Time out after this long.
    After(HumanDuration),
}

/// Why a duration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// Not a whole number followed by a unit.
    #[error(
        "`{0}` is not a duration: write a whole number and a unit (ms, s, m or h), \
         like \"500ms\" or \"10s\""
    )]
    Malformed(String),
    /// A number without a unit.
    #[error("`{0}` has no unit: write \"{0}s\" for seconds or \"{0}ms\" for milliseconds")]
    NoUnit(String),
    /// A unit this parser does not know.
    #[error("`{text}` has the unknown unit `{unit}`: use ms, s, m or h")]
    UnknownUnit {
        /// The whole duration as written.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// Zero, which would expire at once.
    #[error("`{0}` is zero: a timeout must be at least 1ms")]
    Zero(String),
    /// More milliseconds than fit in 64 bits.
    #[error("`{0}` is too long")]
    TooLong(String),
}

impl HumanDuration {
    /// The duration.
    pub(crate) fn get(self) -> Duration {
        self.0
    }
}

impl Timeout {
    /// The duration, or `None` when off.
    pub(crate) fn get(self) -> Option<Duration> {
        match self {
            Timeout::Off => None,
            Timeout::After(duration) => Some(duration.get()),
        }
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<HumanDuration, DurationError> {
        let trimmed = text.trim();
        let digits = trimmed.len()
            - trimmed
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        let (number, unit) = trimmed.split_at(digits);
        let unit = unit.trim_start();
        if number.is_empty() || !unit.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(DurationError::Malformed(text.to_owned()));
        }
        if unit.is_empty() {
            return Err(DurationError::NoUnit(number.to_owned()));
        }
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, scale)| scale)
            .ok_or_else(|| DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: unit.to_owned(),
            })?;
        let millis = number
            .parse::<u64>()
            .ok()
            .and_then(|number| number.checked_mul(scale))
            .ok_or_else(|| DurationError::TooLong(text.to_owned()))?;
        if millis == 0 {
            return Err(DurationError::Zero(text.to_owned()));
        }
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl FromStr for Timeout {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Timeout, DurationError> {
        if text.trim() == "off" {
            Ok(Timeout::Off)
        } else {
            text.parse().map(Timeout::After)
        }
    }
}

impl fmt::Display for HumanDuration {
    /// Writes the duration in the largest unit that divides it exactly:
    /// `2m`, `90s`, `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole milliseconds below 2^64 by construction.
        let millis = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        let (unit, scale) = UNITS
            .iter()
            .find(|&&(_, scale)| millis % scale == 0)
            .copied()
            .unwrap_or(("ms", 1));
        write!(f, "{}{unit}", millis / scale)
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timeout::Off => f.write_str("off"),
            Timeout::After(duration) => duration.fmt(f),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Serialize for Timeout {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor(PhantomData))
    }
}

/// Reads a [`HumanDuration`] or a [`Timeout`] from a string, and explains
/// that a bare number needs a unit.
struct DurationVisitor<T>(PhantomData<T>);

impl<T> Visitor<'_> for DurationVisitor<T>
where
    T: FromStr<Err = DurationError>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: a string like \"10s\" or \"500ms\"")
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<T, E> {
        Err(E::custom(DurationError::NoUnit(number.to_string())))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<T, E> {
        let text = number.to_string();
        Err(E::custom(if number < 0 {
            DurationError::Malformed(text)
        } else {
            DurationError::NoUnit(text)
        }))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Duration, DurationError> {
        text.parse::<HumanDuration>().map(HumanDuration::get)
    }

    #[test]
    fn numbers_with_units_are_read() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse(" 2 m ").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        assert_eq!(parse("10").unwrap_err(), DurationError::NoUnit("10".into()));
        assert_eq!(
            parse("10").unwrap_err().to_string(),
            "`10` has no unit: write \"10s\" for seconds or \"10ms\" for milliseconds"
        );
        for malformed in ["", "s", "-1s", "1.5s", "ten seconds"] {
            assert_eq!(
                parse(malformed).unwrap_err(),
                DurationError::Malformed(malformed.into())
            );
        }
        assert_eq!(
            parse("3d").unwrap_err(),
            DurationError::UnknownUnit {
                text: "3d".into(),
                unit: "d".into()
            }
        );
        assert_eq!(parse("0s").unwrap_err(), DurationError::Zero("0s".into()));
        assert_eq!(
            parse("99999999999999999h").unwrap_err(),
            DurationError::TooLong("99999999999999999h".into())
        );
    }

    #[test]
    fn a_duration_prints_in_its_largest_exact_unit_and_reads_back() {
        for (millis, text) in [
            (1, "1ms"),
            (1500, "1500ms"),
            (5000, "5s"),
            (90_000, "90s"),
            (120_000, "2m"),
            (7_200_000, "2h"),
        ] {
            let duration = HumanDuration(Duration::from_millis(millis));
            assert_eq!(duration.to_string(), text);
            assert_eq!(parse(text).unwrap(), duration.get());
        }
    }

    #[test]
    fn a_timeout_may_be_off() {
        assert_eq!("off".parse::<Timeout>().unwrap().get(), None);
        assert_eq!(Timeout::Off.to_string(), "off");
        let after = "2m".parse::<Timeout>().unwrap();
        assert_eq!(after.get(), Some(Duration::from_secs(120)));
        assert_eq!(after.to_string(), "2m");
        assert_eq!(
            "never".parse::<Timeout>().unwrap_err(),
            DurationError::Malformed("never".into())
        );
    }

    #[test]
    fn toml_strings_are_durations_and_bare_numbers_are_refused() {
        #[derive(Deserialize)]
        struct Doc {
            timeout: Timeout,
        }
        let read = |text: &str| toml::from_str::<Doc>(text).map(|doc| doc.timeout);
        assert_eq!(read("timeout = \"off\"").unwrap(), Timeout::Off);
        assert_eq!(
            read("timeout = \"1s\"").unwrap().get(),
            Some(Duration::from_secs(1))
        );
        let bare = read("timeout = 30").unwrap_err();
        assert!(bare.message().contains("has no unit"), "{bare}");
    }
}
