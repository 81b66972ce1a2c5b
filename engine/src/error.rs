//! Why a server could not start.

use std::io;
use std::net::SocketAddr;

/// A server failed to start. The `Display` text is for logs and is not
/// stable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given no address to listen on.
    #[error("no listen address configured")]
    NoListenAddress,
    /// The builder was asked for zero shards.
    #[error("the shard count must be at least 1")]
    NoShards,
    /// A setting is outside what the engine or the kernel accepts.
    #[error("the {setting} setting {reason}")]
    Setting {
        /// The setting, as the builder method names it.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A shard could not bind or listen on an address.
    #[error("shard {shard} could not listen on {addr}")]
    Bind {
        /// The shard that tried.
        shard: usize,
        /// The address it tried.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A shard could not set up either I/O driver (io_uring or epoll).
    #[error("shard {shard} could not set up an I/O driver")]
    Runtime {
        /// The shard that tried.
        shard: usize,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The operating system refused a thread or a socket pair the server
    /// needs for its shards.
    #[error("could not set up shard {shard}")]
    Setup {
        /// The shard being set up.
        shard: usize,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A shard thread ended (it panicked) before reporting that it listens.
    #[error("shard {shard} stopped during startup")]
    ShardStopped {
        /// The shard that stopped.
        shard: usize,
    },
}
