//! The configuration of `shardcast serve`: one struct per table of
//! `default.toml`, one field per key, and how they become a
//! [`ServerBuilder`].
//!
//! To add a key: add the field to its table's struct here, add the key with
//! a comment and its default to `default.toml`, and pass it on in
//! [`Settings::builder`] (which does not compile until you do). The
//! environment variable, `--print-config` and the checks for bad values
//! follow from these. A command-line flag for it, if it deserves one, goes
//! in `cli.rs`. A new table is a struct like those below and a field of
//! [`Settings`].
//!
//! Value types: [`ByteSize`] for bytes (`"64KiB"`), [`HumanDuration`] for a
//! duration (`"10s"`) and [`Timeout`] for one that may be `"off"`, a serde
//! enum with `rename_all` for a choice of words (like
//! [`Policy`]), and a `try_from` newtype for a checked number (like
//! [`CompressionLevel`]). An integer or boolean needs nothing more.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shardcast::ServerBuilder;
use shardcast_proto::handshake::HeadLimits;

use crate::backpressure::{Policy, SendableCode};
use crate::duration::{HumanDuration, Timeout};
use crate::logging::{LogFilter, LogFormat};
use crate::placement::{Cores, Shards};
use crate::size::ByteSize;

/// The embedded defaults: every key, each with a comment. The
/// documentation of the file format.
pub(crate) const DEFAULT_TOML: &str = include_str!("default.toml");

/// Everything `shardcast serve` runs with. No key has a serde default:
/// `default.toml` must list every one.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// `[server]`
    pub(crate) server: ServerTable,
    /// `[io]`
    pub(crate) io: IoTable,
    /// `[limits]`
    pub(crate) limits: LimitsTable,
    /// `[timeouts]`
    pub(crate) timeouts: TimeoutsTable,
    /// `[backpressure]`
    pub(crate) backpressure: BackpressureTable,
    /// `[compression]`
    pub(crate) compression: CompressionTable,
    /// `[rooms]`
    pub(crate) rooms: RoomsTable,
    /// `[sessions]`
    pub(crate) sessions: SessionsTable,
    /// `[log]`
    pub(crate) log: LogTable,
}

/// `[server]`: addresses, shards and cores. The keys of every table are
/// documented in `default.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerTable {
    pub(crate) listen: Listen,
    pub(crate) shards: Shards,
    pub(crate) cores: Cores,
    pub(crate) pin_cores: bool,
    pub(crate) force_epoll: bool,
    pub(crate) backlog: u32,
    pub(crate) transparent_huge_pages: bool,
    pub(crate) subprotocols: Vec<String>,
}

/// `[io]`: the shape of each shard's io_uring.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IoTable {
    pub(crate) ring_entries: u32,
    pub(crate) receive_buffers: u16,
    pub(crate) receive_buffer_size: ByteSize,
    pub(crate) sqpoll: bool,
    pub(crate) sqpoll_idle: HumanDuration,
    pub(crate) sqpoll_cores: Cores,
}

/// `[limits]`: connections and sizes.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsTable {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: CountLimit,
    pub(crate) max_frame_size: ByteSize,
    pub(crate) max_message_size: ByteSize,
    pub(crate) max_decompressed_size: ByteSize,
    pub(crate) max_request_head: ByteSize,
    pub(crate) max_request_headers: usize,
}

/// `[timeouts]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeoutsTable {
    pub(crate) handshake: HumanDuration,
    pub(crate) idle: Timeout,
    pub(crate) close: HumanDuration,
    pub(crate) ping_interval: Timeout,
    pub(crate) pong_timeout: HumanDuration,
    pub(crate) shutdown: HumanDuration,
}

/// `[backpressure]`: slow readers.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackpressureTable {
    pub(crate) max_send_buffer: ByteSize,
    pub(crate) drain_threshold: ByteSize,
    pub(crate) policy: Policy,
    pub(crate) close_code: SendableCode,
}

/// `[compression]`: permessage-deflate.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompressionTable {
    pub(crate) enabled: bool,
    pub(crate) threshold: ByteSize,
    pub(crate) level: CompressionLevel,
}

/// `[rooms]`: room history and limits, and the request rate of
/// `shardcast.v1` connections.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoomsTable {
    pub(crate) history_size: usize,
    pub(crate) history_ttl: Timeout,
    pub(crate) max_rooms_per_connection: usize,
    pub(crate) max_room_name: ByteSize,
    pub(crate) batch_deliveries: bool,
    pub(crate) request_rate: CountLimit,
    pub(crate) request_burst: u32,
}

/// `[sessions]`: how long a `shardcast.v1` session stays resumable after
/// its connection closed.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionsTable {
    pub(crate) timeout: Timeout,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogTable {
    pub(crate) format: LogFormat,
    pub(crate) level: LogFilter,
}

/// At least one address to listen on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Vec<SocketAddr>", into = "Vec<SocketAddr>")]
pub(crate) struct Listen(Vec<SocketAddr>);

/// An empty list of addresses.
#[derive(Debug, thiserror::Error)]
#[error("the server needs at least one address to listen on")]
pub(crate) struct NoAddress;

impl TryFrom<Vec<SocketAddr>> for Listen {
    type Error = NoAddress;

    fn try_from(addrs: Vec<SocketAddr>) -> Result<Listen, NoAddress> {
        if addrs.is_empty() {
            Err(NoAddress)
        } else {
            Ok(Listen(addrs))
        }
    }
}

impl From<Listen> for Vec<SocketAddr> {
    fn from(listen: Listen) -> Vec<SocketAddr> {
        listen.0
    }
}

/// A libdeflate level, 1 (fastest) to 12 (smallest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u8", into = "u8")]
pub(crate) struct CompressionLevel(u8);

/// A level outside 1 to 12.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a compression level: use 1 (fastest) to 12 (smallest)")]
pub(crate) struct LevelOutOfRange(u8);

impl TryFrom<u8> for CompressionLevel {
    type Error = LevelOutOfRange;

    fn try_from(level: u8) -> Result<CompressionLevel, LevelOutOfRange> {
        if (1..=12).contains(&level) {
            Ok(CompressionLevel(level))
        } else {
            Err(LevelOutOfRange(level))
        }
    }
}

impl From<CompressionLevel> for u8 {
    fn from(level: CompressionLevel) -> u8 {
        level.0
    }
}

/// A limit that may be off: `"off"`, or a count of at least 1 (connections
/// per client address, requests per second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CountLimit {
    /// No limit.
    Off,
    /// At most this many.
    Max(NonZeroUsize),
}

impl Serialize for CountLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CountLimit::Off => serializer.serialize_str("off"),
            CountLimit::Max(max) => serializer.serialize_u64(max.get() as u64),
        }
    }
}

impl<'de> Deserialize<'de> for CountLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountLimitVisitor)
    }
}

/// Reads a [`CountLimit`] from `"off"` or an integer.
struct CountLimitVisitor;

impl Visitor<'_> for CountLimitVisitor {
    type Value = CountLimit;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"off\" or a number of at least 1")
    }

    fn visit_i64<E: de::Error>(self, max: i64) -> Result<CountLimit, E> {
        usize::try_from(max)
            .ok()
            .and_then(NonZeroUsize::new)
            .map(CountLimit::Max)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(max), &self))
    }

    fn visit_u64<E: de::Error>(self, max: u64) -> Result<CountLimit, E> {
        usize::try_from(max)
            .ok()
            .and_then(NonZeroUsize::new)
            .map(CountLimit::Max)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(max), &self))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<CountLimit, E> {
        match text.trim() {
            "off" => Ok(CountLimit::Off),
            number => match number.parse::<u64>() {
                Ok(max) => self.visit_u64(max),
                Err(_) => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
            },
        }
    }
}

impl Settings {
    /// The embedded defaults.
    #[cfg(test)]
    pub(crate) fn defaults() -> Settings {
        toml::from_str(DEFAULT_TOML).expect("default.toml is a valid configuration")
    }

    /// A server builder with every knob of these settings.
    ///
    /// Every table is taken apart field by field, so a key added to a
    /// table does not compile until it is passed on here or marked as used
    /// elsewhere (`shutdown: _`).
    pub(crate) fn builder(&self) -> ServerBuilder {
        let Settings {
            server:
                ServerTable {
                    listen,
                    shards,
                    cores,
                    pin_cores,
                    force_epoll,
                    backlog,
                    // Used by serve.rs, for the whole process.
                    transparent_huge_pages: _,
                    subprotocols,
                },
            io:
                IoTable {
                    ring_entries,
                    receive_buffers,
                    receive_buffer_size,
                    sqpoll,
                    sqpoll_idle,
                    sqpoll_cores,
                },
            limits:
                LimitsTable {
                    max_connections,
                    max_connections_per_ip,
                    max_frame_size,
                    max_message_size,
                    max_decompressed_size,
                    max_request_head,
                    max_request_headers,
                },
            timeouts:
                TimeoutsTable {
                    handshake,
                    idle,
                    close,
                    ping_interval,
                    pong_timeout,
                    // Used by serve.rs, after the server starts.
                    shutdown: _,
                },
            backpressure:
                BackpressureTable {
                    max_send_buffer,
                    drain_threshold,
                    policy,
                    close_code,
                },
            compression:
                CompressionTable {
                    enabled,
                    threshold,
                    level,
                },
            rooms:
                RoomsTable {
                    history_size,
                    history_ttl,
                    max_rooms_per_connection,
                    max_room_name,
                    batch_deliveries,
                    // Used by serve.rs, by each shard's application.
                    request_rate: _,
                    request_burst: _,
                },
            // Used by serve.rs, by each shard's application.
            sessions: _,
            // Used by logging.rs, before the server starts.
            log: _,
        } = self;
        let mut head = HeadLimits::default();
        head.max_head_bytes = max_request_head.bytes();
        head.max_headers = *max_request_headers;
        let mut builder = ServerBuilder::new()
            .pin_cores(*pin_cores)
            .force_epoll(*force_epoll)
            .backlog(*backlog)
            .subprotocols(subprotocols.iter().cloned())
            .max_connections(*max_connections)
            .max_connections_per_ip(match max_connections_per_ip {
                CountLimit::Off => None,
                CountLimit::Max(max) => Some(max.get()),
            })
            .room_history(*history_size, history_ttl.get())
            .max_rooms_per_connection(*max_rooms_per_connection)
            .max_room_name(max_room_name.bytes())
            .batch_deliveries(*batch_deliveries)
            .max_frame_size(max_frame_size.bytes())
            .max_message_size(max_message_size.bytes())
            .max_decompressed_size(max_decompressed_size.bytes())
            .max_send_buffer(max_send_buffer.bytes())
            .drain_threshold(drain_threshold.bytes())
            .backpressure(policy.with_code(*close_code))
            .head_limits(head)
            .handshake_timeout(handshake.get())
            .idle_timeout(idle.get())
            .close_timeout(close.get())
            .heartbeat(ping_interval.get().map(|every| (every, pong_timeout.get())))
            .compression(*enabled)
            .compression_threshold(threshold.bytes())
            .compression_level((*level).into());
        for addr in &listen.0 {
            builder = builder.listen(*addr);
        }
        if let Shards::Count(count) = shards {
            builder = builder.shards(count.get());
        }
        if let Cores::List(cores) = cores {
            builder = builder.cores(cores.clone().into_vec());
        }
        builder = builder
            .ring_entries(*ring_entries)
            .receive_buffers(
                *receive_buffers,
                u32::try_from(receive_buffer_size.bytes()).unwrap_or(u32::MAX),
            )
            .sqpoll(sqpoll.then(|| sqpoll_idle.get()));
        if let Cores::List(cores) = sqpoll_cores {
            builder = builder.sqpoll_cores(cores.clone().into_vec());
        }
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_defaults_are_the_library_defaults() {
        let expected = ServerBuilder::new().listen("127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            format!("{:?}", Settings::defaults().builder()),
            format!("{expected:?}")
        );
    }

    #[test]
    fn the_defaults_print_as_a_config_that_reads_back_the_same() {
        let defaults = Settings::defaults();
        let printed = toml::to_string(&defaults).unwrap();
        assert_eq!(toml::from_str::<Settings>(&printed).unwrap(), defaults);
    }

    #[test]
    fn every_key_is_in_the_defaults_and_no_other() {
        let mut missing = DEFAULT_TOML.replace("idle = \"2m\"", "");
        let error = toml::from_str::<Settings>(&missing).unwrap_err();
        assert!(error.message().contains("missing field `idle`"), "{error}");
        missing = DEFAULT_TOML.replace("[log]", "[log]\ncolour = true");
        let error = toml::from_str::<Settings>(&missing).unwrap_err();
        assert!(
            error.message().contains("unknown field `colour`"),
            "{error}"
        );
    }

    #[test]
    fn keys_reach_the_builder() {
        let mut settings = Settings::defaults();
        settings.server.shards = "3".parse().unwrap();
        settings.server.cores = "1-2".parse().unwrap();
        settings.server.backlog = 64;
        settings.timeouts.idle = Timeout::Off;
        settings.limits.max_request_head = "16KiB".parse().unwrap();
        settings.limits.max_connections_per_ip = CountLimit::Max(NonZeroUsize::MIN);
        settings.timeouts.ping_interval = Timeout::Off;
        settings.backpressure.policy = Policy::Close;
        settings.backpressure.close_code = SendableCode::try_from(4000).unwrap();
        settings.io.ring_entries = 256;
        settings.io.receive_buffers = 64;
        settings.io.receive_buffer_size = "4KiB".parse().unwrap();
        settings.io.sqpoll = true;
        settings.io.sqpoll_idle = "5ms".parse().unwrap();
        settings.io.sqpoll_cores = "2-3".parse().unwrap();
        let debug = format!("{:?}", settings.builder());
        for field in [
            "shards: 3",
            "cores: Some([1, 2])",
            "backlog: 64",
            "idle_timeout: None",
            "max_head_bytes: 16384",
            "max_connections_per_ip: Some(1)",
            "heartbeat: None",
            "backpressure: Close(CloseCode(4000))",
            "ring_entries: 256",
            "receive_buffers: 64",
            "receive_buffer_size: 4096",
            "sqpoll_idle: Some(5ms)",
            "sqpoll_cores: Some([2, 3])",
        ] {
            assert!(debug.contains(field), "{field} not in {debug}");
        }
    }

    #[test]
    fn an_empty_listen_list_and_a_level_out_of_range_are_refused() {
        let empty = DEFAULT_TOML.replace("listen = [\"127.0.0.1:8080\"]", "listen = []");
        let error = toml::from_str::<Settings>(&empty).unwrap_err();
        assert!(error.message().contains("at least one address"), "{error}");
        let level = DEFAULT_TOML.replace("level = 6", "level = 13");
        let error = toml::from_str::<Settings>(&level).unwrap_err();
        assert!(
            error.message().contains("13 is not a compression level"),
            "{error}"
        );
    }

    #[test]
    fn a_per_address_limit_is_off_or_at_least_one() {
        let read = |value: &str| {
            let text = DEFAULT_TOML.replace(
                "max_connections_per_ip = \"off\"",
                &format!("max_connections_per_ip = {value}"),
            );
            toml::from_str::<Settings>(&text).map(|s| s.limits.max_connections_per_ip)
        };
        assert_eq!(read("\"off\"").unwrap(), CountLimit::Off);
        assert_eq!(
            read("8").unwrap(),
            CountLimit::Max(NonZeroUsize::new(8).unwrap())
        );
        assert_eq!(
            read("\"8\"").unwrap(),
            CountLimit::Max(NonZeroUsize::new(8).unwrap())
        );
        for bad in ["0", "-1", "\"none\""] {
            let error = read(bad).unwrap_err();
            assert!(
                error.message().contains("expected \"off\" or a number"),
                "{error}"
            );
        }
    }
}
