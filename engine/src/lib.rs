//! shardcast: a WebSocket server engine for Linux, thread-per-core.
//!
//! Each shard is one OS thread pinned to a core, running its own event
//! loop on its own io_uring instance: multishot accept, one multishot
//! receive per connection into a small ring of provided buffers the shard
//! shares, and one `sendmsg` per connection per loop turn. Where io_uring
//! is unavailable (or [`ServerBuilder::force_epoll`] is set) the same loop
//! runs on epoll. Every shard listens on the same addresses with
//! `SO_REUSEPORT`, so the kernel spreads connections and no thread hands
//! sockets to another. A shard owns its connections (a slab of entries,
//! about 200 bytes each while idle: no task, buffer or timer per
//! connection), its [`Handler`], its receive buffers, one compressor and
//! one inflater: no locks on the data path. The protocol itself (upgrade, frames,
//! permessage-deflate) is the sans-I/O `shardcast-proto` crate; this crate
//! owns sockets, time and threads.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use shardcast::{Echo, Server};
//!
//! let handle = Server::builder()
//!     .listen("127.0.0.1:0".parse().unwrap())
//!     .build(|_shard| Echo)
//!     .start()
//!     .unwrap();
//! println!("echo server on {:?}", handle.local_addrs());
//! let report = handle.shutdown(Instant::now() + Duration::from_secs(5));
//! println!("{} connections closed cleanly", report.closed_cleanly);
//! ```
//!
//! Sending: [`Conn::send_text`] and [`Conn::send_binary`] frame a message
//! into the connection's send buffer (lent by the shard's pool while it
//! holds frames, so an idle connection holds none); a [`PreparedMessage`]
//! is framed, and compressed, once and queued by reference on every
//! connection it is sent to. Whatever a connection queued during one
//! batch of input leaves in one vectored write.
//!
//! Flow control: each send buffer is bounded
//! ([`ServerBuilder::max_send_buffer`]); a message past the bound is
//! dropped if marked droppable, or closes that connection, as the
//! [`Backpressure`] policy says. Producers that would rather wait pause on
//! [`Conn::is_backpressured`] and resume in [`Handler::on_drain`]. A slow
//! reader costs only its own bounded buffer: the shard's other
//! connections are served as before. Heartbeat pings
//! ([`ServerBuilder::heartbeat`]) and the idle timeout reach a connection
//! even while its peer does not read.
//!
//! Rooms: [`Conn::join`] puts a connection in a room, and a message
//! published to it ([`Conn::publish`], [`Hub`], [`ServerHandle::publish`])
//! reaches every member on every shard, in one order per room. Each room
//! has an owner shard that numbers its messages ([`Position`]) and keeps
//! a bounded history; other shards with members subscribe to it, and
//! cross shards through one lock-free inbox each, woken once per batch.
//! [`Hub::broadcast`] reaches every connection.
//!
//! [`v1::Protocol`] serves the `shardcast.v1` envelope protocol on top:
//! rooms, routed events with acknowledgements, presence, sessions that a
//! reconnecting client resumes on any shard with what it missed
//! replayed ([`Conn::rejoin`], [`Recovery`]), with
//! [`middleware`] (origin, API keys, connection and request rates) and
//! plugins.
//!
//! What it does not do yet: TLS, and the HTTP side
//! (metrics, admin, long-polling). The library sets no global allocator
//! and no logger; the `shardcast` binary does both.
#![deny(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

mod admission;
mod buffer_pool;
mod config;
mod conn;
mod connection;
mod core_list;
mod deadlines;
// The kernel interfaces (io_uring, epoll, sockets): every unsafe block
// there says why it is sound.
#[allow(unsafe_code)]
mod driver;
mod error;
mod handler;
mod hub;
mod inbox;
pub mod middleware;
mod notice;
mod prepared;
mod rooms;
mod send_queue;
mod server;
mod shard;
mod stats;
pub mod v1;

pub use config::{Backpressure, ServerBuilder};
pub use conn::{Conn, ConnAddress, ConnId, JoinOptions, PublishOptions, SendError};
pub use core_list::{CoreList, CoreListError};
pub use error::Error;
pub use handler::{Echo, Handler, Message, Rejection, ShardId};
pub use hub::Hub;
pub use notice::{Notice, ShardConns};
pub use prepared::PreparedMessage;
pub use rooms::{Loss, Position, Recovery, RoomError};
pub use server::{Server, ServerHandle, ShutdownReport};
pub use shardcast_proto::CloseCode;
pub use shardcast_proto::handshake::UpgradeRequest;
pub use stats::{IoDriver, ShardStats};
