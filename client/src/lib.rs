//! shardcast-client: a Rust client for shardcast servers, on Tokio.
//!
//! It speaks `shardcast.v1` (rooms with ordered, exactly-once messages,
//! named events, requests with acknowledgements, presence) or raw
//! WebSocket messages, over the sans-I/O protocol of
//! [`shardcast_proto`], and keeps a connection up for its application:
//!
//! - **Reconnection** with exponential backoff and full jitter
//!   ([`Backoff`]), up to a number of attempts or forever.
//! - **Session resume**: after a reconnection the client sends `Resume`
//!   with the last position it saw in each room; the server replays what
//!   was missed. Rooms that could not be recovered are rejoined and
//!   reported with [`Event::RecoveryFailed`], so a lost message is never
//!   silent.
//! - **A send buffer** ([`SendBuffer`]): what the application sends while
//!   disconnected waits (bounded, failing or waiting when full) and is
//!   written once after the session is back: never twice.
//! - **Order checks**: per room, a message whose offset is not the next one
//!   is reported as [`Event::Gap`]; duplicates are dropped.
//! - **Heartbeats**: pings are answered; a server silent for longer than
//!   the bound ([`Heartbeat`], by default twice the server's interval and a
//!   second) is taken as gone, and the client reconnects.
//! - **Batching** of outgoing envelopes ([`Batching`]), optional.
//!
//! Everything that happens comes in order on the [`Events`] stream:
//! messages, presence, and each change of the connection's state.
//!
//! # A reconnection, step by step
//!
//! 1. The link is lost: the server closed it, the TCP stream ended, a
//!    read or write failed, or nothing was heard for the silence bound.
//!    [`Event::Disconnected`] says which. Requests written on it and not
//!    answered fail with [`Error::Disconnected`] (they may have been
//!    acted on; they are not sent again).
//! 2. After a wait drawn from the [`Backoff`], [`Event::Connecting`] with
//!    the attempt number, then the TCP connection and the upgrade.
//! 3. `shardcast.v1`: the client sends `Resume` (session, token, the last
//!    position per room) at once, then reads the server's fresh
//!    `Welcome`, then its answer: a resumed `Welcome` gives
//!    [`Event::Resumed`], then [`Event::RecoveryFailed`] for each room
//!    whose missed messages are lost; rooms the server's session is not in
//!    are joined again and reported the same way once the join is
//!    answered. An `Error{RecoveryFailed}` keeps the fresh session
//!    ([`Event::Connected`]) and every room is joined again and reported.
//! 4. What waited in the send buffer is written, in order, once.
//!
//! A failed attempt goes back to step 2; the client gives up with
//! [`Event::GaveUp`] after [`Backoff::max_attempts`] in a row.
//!
//! What it does not do: TLS. Only `ws://` URLs are accepted; reach a
//! `wss://` endpoint through a local TLS-terminating proxy. And it needs a
//! Tokio runtime (any flavour) to run its connection task on.
//!
//! # Example
//!
//! ```no_run
//! use shardcast_client::{Client, Config, Event};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), shardcast_client::Error> {
//!     let (client, mut events) = Client::start(Config::new("ws://127.0.0.1:8080/"))?;
//!
//!     // Answer the server's "greet" events.
//!     client.on("greet", |payload| Ok([b"hello, ", payload].concat()));
//!
//!     // Requests wait for the session; they are sent once it is up.
//!     let position = client.join("lobby").await?;
//!     println!("joined lobby at {position}");
//!     let sent_at = client.publish_acked("lobby", b"hi all").await?;
//!     println!("published at {sent_at}");
//!     let echo = client.request("echo", b"ping").await?;
//!     assert_eq!(echo, b"ping");
//!
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::Message(message) => {
//!                 println!("{} #{}: {:?}", message.room, message.position, message.payload);
//!                 if message.position == sent_at {
//!                     break;
//!                 }
//!             }
//!             Event::RecoveryFailed { room, code, .. } => {
//!                 println!("lost messages of {room} ({code:?}): refetch its state");
//!             }
//!             other => println!("{other:?}"),
//!         }
//!     }
//!     client.close().await;
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]
#![doc(test(attr(deny(warnings))))]

mod backoff;
mod batch;
mod client;
mod config;
mod driver;
mod endpoint;
mod error;
mod event;
mod link;
mod outbox;
mod outgoing;
mod sequence;
mod session;

pub use backoff::Backoff;
pub use batch::Batching;
pub use client::Client;
pub use config::{Config, Heartbeat, Mode};
pub use error::Error;
pub use event::{DisconnectReason, Event, Events, Presence, RoomMessage};
pub use outbox::{SendBuffer, WhenFull};
pub use sequence::Position;
pub use shardcast_proto::CloseCode;
pub use shardcast_proto::envelope::ErrorCode;
