//! The `shardcast serve` settings a plan or a sweep candidate chooses, and
//! the TOML config file they become: the one place the tuner names the
//! server's keys.
//!
//! Only what the tuner decides is written; every other key keeps the
//! server's embedded default (`shardcast serve --print-default-config`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cpulist;

/// Engine settings of one plan: where shards run and how each shard's
/// io_uring is shaped. `None` leaves the server's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServeConfig {
    /// `server.listen`: addresses to listen on; empty keeps the default.
    pub listen: Vec<String>,
    /// `server.shards`: one thread per shard.
    pub shards: Option<usize>,
    /// `server.cores`: the cores shards are pinned to, in order.
    pub cores: Option<Vec<u32>>,
    /// `server.pin_cores`: pin each shard to its core.
    pub pin_cores: Option<bool>,
    /// `server.backlog`: the listen(2) backlog.
    pub backlog: Option<u32>,
    /// `limits.max_connections`: connections over all shards.
    pub max_connections: Option<usize>,
    /// `io.ring_entries`: io_uring submission queue entries per shard.
    pub ring_entries: Option<u32>,
    /// `io.receive_buffers`: provided receive buffers per shard (a power
    /// of two).
    pub receive_buffers: Option<u16>,
    /// `io.receive_buffer_size`: bytes of each receive buffer.
    pub receive_buffer_size: Option<u32>,
    /// `io.sqpoll`: a kernel thread polls each shard's submission queue.
    pub sqpoll: Option<bool>,
    /// `io.sqpoll_idle`: how long the polling thread spins before it
    /// sleeps.
    #[serde(with = "millis")]
    pub sqpoll_idle: Option<Duration>,
    /// `io.sqpoll_cores`: the cores the polling threads are pinned to, in
    /// shard order; `None` lets each run where its shard may.
    pub sqpoll_cores: Option<Vec<u32>>,
    /// `rooms.batch_deliveries`: one `Batch` envelope per connection per
    /// loop turn.
    pub batch_deliveries: Option<bool>,
}

impl ServeConfig {
    /// The config file for `shardcast serve --config`, one table per
    /// section that has a key set, with `header` as leading comment lines.
    pub fn to_toml(&self, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let mut server = Table::new("server");
        if !self.listen.is_empty() {
            let quoted: Vec<String> = self.listen.iter().map(|a| format!("{a:?}")).collect();
            server.key("listen", format!("[{}]", quoted.join(", ")));
        }
        server.opt("shards", self.shards.map(|n| n.to_string()));
        server.opt("cores", self.cores.as_deref().map(quoted_cpulist));
        server.opt("pin_cores", self.pin_cores.map(|b| b.to_string()));
        server.opt("backlog", self.backlog.map(|n| n.to_string()));
        let mut limits = Table::new("limits");
        limits.opt(
            "max_connections",
            self.max_connections.map(|n| n.to_string()),
        );
        let mut io = Table::new("io");
        io.opt("ring_entries", self.ring_entries.map(|n| n.to_string()));
        io.opt(
            "receive_buffers",
            self.receive_buffers.map(|n| n.to_string()),
        );
        io.opt(
            "receive_buffer_size",
            self.receive_buffer_size.map(|n| n.to_string()),
        );
        io.opt("sqpoll", self.sqpoll.map(|b| b.to_string()));
        io.opt(
            "sqpoll_idle",
            self.sqpoll_idle
                .map(|idle| format!("\"{}ms\"", idle.as_millis())),
        );
        io.opt(
            "sqpoll_cores",
            self.sqpoll_cores.as_deref().map(quoted_cpulist),
        );
        let mut rooms = Table::new("rooms");
        rooms.opt(
            "batch_deliveries",
            self.batch_deliveries.map(|b| b.to_string()),
        );
        for table in [server, limits, io, rooms] {
            table.write_to(&mut out);
        }
        out
    }
}

/// A core list as a TOML string: `"0-3"`.
fn quoted_cpulist(cores: &[u32]) -> String {
    format!("\"{}\"", cpulist::format(cores))
}

/// One `[table]` of the config file, written only if it has a key.
struct Table {
    name: &'static str,
    lines: String,
}

impl Table {
    fn new(name: &'static str) -> Table {
        Table {
            name,
            lines: String::new(),
        }
    }

    fn key(&mut self, key: &str, value: String) {
        let _ = writeln!(self.lines, "{key} = {value}");
    }

    fn opt(&mut self, key: &str, value: Option<String>) {
        if let Some(value) = value {
            self.key(key, value);
        }
    }

    fn write_to(self, out: &mut String) {
        if !self.lines.is_empty() {
            let _ = write!(out, "\n[{}]\n{}", self.name, self.lines);
        }
    }
}

/// `Option<Duration>` as whole milliseconds in JSON.
mod millis {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => {
                serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
            }
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_the_keys_set() {
        let config = ServeConfig {
            listen: vec!["0.0.0.0:8080".into()],
            shards: Some(4),
            cores: Some(vec![0, 1, 2, 3]),
            pin_cores: Some(true),
            sqpoll: Some(true),
            sqpoll_idle: Some(Duration::from_millis(50)),
            sqpoll_cores: Some(vec![4, 5]),
            ..ServeConfig::default()
        };
        let toml = config.to_toml("made by a test");
        assert_eq!(
            toml,
            "# made by a test\n\
             \n[server]\nlisten = [\"0.0.0.0:8080\"]\nshards = 4\ncores = \"0-3\"\npin_cores = true\n\
             \n[io]\nsqpoll = true\nsqpoll_idle = \"50ms\"\nsqpoll_cores = \"4-5\"\n"
        );
    }

    #[test]
    fn an_empty_config_is_only_its_header() {
        assert_eq!(ServeConfig::default().to_toml("x"), "# x\n");
    }
}
