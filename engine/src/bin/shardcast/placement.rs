//! Where shards run: how many there are and which cores they are pinned
//! to, each either `auto` (follow the process's affinity mask) or given.

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shardcast::CoreList;

/// The number of shards: `auto` (one per core the process may run on) or
/// a count of at least one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shards {
    /// One shard per core of the affinity mask, or of `cores`.
    Auto,
    /// This many shards.
    Count(NonZeroUsize),
}

/// The cores shards are pinned to: `auto` (those of the affinity mask) or
/// a core list such as `0-3` or `0,2,4`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cores {
    /// The cores of the process's affinity mask.
    Auto,
    /// These cores, in order.
    List(CoreList),
}

/// Why a shard count or core list was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlacementError {
    /// Neither `auto` nor a count of at least one.
    #[error("`{0}` is not a shard count: write \"auto\" or a number of at least 1")]
    Shards(String),
    /// Neither `auto` nor a core list.
    #[error("`{text}` is not a core list ({reason}): write \"auto\" or a list such as \"0-3\"")]
    Cores {
        /// The list as written.
        text: String,
        /// What is wrong with it.
        reason: shardcast::CoreListError,
    },
}

impl FromStr for Shards {
    type Err = PlacementError;

    fn from_str(text: &str) -> Result<Shards, PlacementError> {
        match text.trim() {
            "auto" => Ok(Shards::Auto),
            count => count
                .parse()
                .map(Shards::Count)
                .map_err(|_| PlacementError::Shards(text.to_owned())),
        }
    }
}

impl FromStr for Cores {
    type Err = PlacementError;

    fn from_str(text: &str) -> Result<Cores, PlacementError> {
        match text.trim() {
            "auto" => Ok(Cores::Auto),
            list => list
                .parse()
                .map(Cores::List)
                .map_err(|reason| PlacementError::Cores {
                    text: text.to_owned(),
                    reason,
                }),
        }
    }
}

impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cores::Auto => f.write_str("auto"),
            Cores::List(list) => list.fmt(f),
        }
    }
}

impl Serialize for Shards {
    /// `"auto"` or an integer, as a config file would say it.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Shards::Auto => serializer.serialize_str("auto"),
            Shards::Count(count) => serializer.serialize_u64(count.get() as u64),
        }
    }
}

impl Serialize for Cores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShardsVisitor)
    }
}

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// Reads a shard count from an integer or a string.
struct ShardsVisitor;

impl Visitor<'_> for ShardsVisitor {
    type Value = Shards;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"auto\" or a number of shards")
    }

    fn visit_i64<E: de::Error>(self, count: i64) -> Result<Shards, E> {
        self.visit_str(&count.to_string())
    }

    fn visit_u64<E: de::Error>(self, count: u64) -> Result<Shards, E> {
        self.visit_str(&count.to_string())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Shards, E> {
        text.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_auto_or_at_least_one() {
        assert_eq!("auto".parse(), Ok(Shards::Auto));
        assert_eq!(
            "4".parse(),
            Ok(Shards::Count(NonZeroUsize::new(4).unwrap()))
        );
        for bad in ["0", "-1", "many", ""] {
            assert_eq!(
                bad.parse::<Shards>(),
                Err(PlacementError::Shards(bad.into()))
            );
        }
    }

    #[test]
    fn cores_are_auto_or_a_core_list() {
        assert_eq!("auto".parse(), Ok(Cores::Auto));
        let list: Cores = "0-2,5".parse().unwrap();
        assert_eq!(list.to_string(), "0,1,2,5");
        let bad = "3-1".parse::<Cores>().unwrap_err().to_string();
        assert!(bad.starts_with("`3-1` is not a core list (core range `3-1` runs backwards)"));
    }

    #[test]
    fn toml_reads_both_forms() {
        #[derive(Debug, Deserialize)]
        struct Doc {
            shards: Shards,
            cores: Cores,
        }
        let doc: Doc = toml::from_str("shards = 2\ncores = \"1,3\"").unwrap();
        assert_eq!(doc.shards, Shards::Count(NonZeroUsize::new(2).unwrap()));
        assert_eq!(doc.cores, "1,3".parse().unwrap());
        let doc: Doc = toml::from_str("shards = \"auto\"\ncores = \"auto\"").unwrap();
        assert_eq!((doc.shards, doc.cores), (Shards::Auto, Cores::Auto));
        let zero = toml::from_str::<Doc>("shards = 0\ncores = \"auto\"").unwrap_err();
        assert!(zero.message().contains("not a shard count"), "{zero}");
    }
}
