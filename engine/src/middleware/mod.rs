//! Upgrade middleware: checks a request must pass before the application
//! sees it (origin, API key, connection rate), and the token bucket behind
//! per-connection message rate limits.
//!
//! An [`UpgradeLayer`] looks at an [`UpgradeRequest`](crate::UpgradeRequest)
//! and the client's address, and either passes it on, recording what it
//! learned in the client's [`Identity`] (an auth layer sets the user id),
//! or refuses it with a [`Rejection`](crate::Rejection). An
//! [`UpgradeLayers`] stack runs its layers in the order they were pushed
//! and stops at the first refusal. Like a [`Handler`](crate::Handler), a
//! stack lives on one shard: layers keep shard-local state behind
//! `&mut self`, without locks, and must not block.
//!
//! The layers shipped: [`OriginAllowlist`] (403 for other sites' pages),
//! [`ApiKey`] (401 without a valid key; a key may name its user) and
//! [`ConnectionRate`] (429 past a per-address rate of upgrades).
//!
//! [`TokenBucket`] is a 16-byte token bucket under a validated
//! [`RateLimit`], sans-I/O: the time is an argument, in [`Millis`] since
//! the shard's epoch. [`ConnectionRate`] keeps one per client address;
//! kept per connection, one limits a connection's requests (the
//! `shardcast.v1` layer's per-connection rate limit).
//!
//! Until the engine runs them itself, a handler runs a stack from
//! [`Handler::on_upgrade`](crate::Handler::on_upgrade) and keeps the
//! identity as the connection's state:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use shardcast::middleware::{
//!     ApiKey, ConnectionRate, Identity, OriginAllowlist, RateLimit, UpgradeLayers,
//! };
//! use shardcast::{Conn, Handler, Message, Rejection, UpgradeRequest};
//! use shardcast_proto::handshake::{HeadLimits, Progress, parse_request};
//!
//! struct App {
//!     layers: UpgradeLayers,
//! }
//!
//! impl Handler for App {
//!     type State = Identity;
//!
//!     fn on_upgrade(
//!         &mut self,
//!         request: &UpgradeRequest<'_>,
//!         peer: SocketAddr,
//!     ) -> Result<Identity, Rejection> {
//!         self.layers.check(request, peer)
//!     }
//!
//!     fn on_message(&mut self, conn: &mut Conn<Identity>, message: Message<'_>) {
//!         let user = conn.state().user_id().map_or("anonymous", |id| &**id);
//!         println!("{user}: {message:?}");
//!     }
//! }
//!
//! // One stack per shard, made by the server's handler factory.
//! let mut layers = UpgradeLayers::new();
//! layers
//!     .push(OriginAllowlist::new().allow("https://*.example.com")?)
//!     .push(ConnectionRate::new(RateLimit::per_window(
//!         30,
//!         Duration::from_secs(60),
//!         10,
//!     )?))
//!     .push(ApiKey::new().key_for_user("k3y-of-alice", "alice"));
//! let mut app = App { layers };
//!
//! let peer: SocketAddr = "192.0.2.7:50123".parse()?;
//! let head = |target: &str, origin: &str| {
//!     format!(
//!         "GET {target} HTTP/1.1\r\nHost: chat.example.com\r\nOrigin: {origin}\r\n\
//!          Upgrade: websocket\r\nConnection: Upgrade\r\n\
//!          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
//!     )
//! };
//! let outcome = |app: &mut App, head: String| {
//!     match parse_request(head.as_bytes(), &HeadLimits::default()) {
//!         Ok(Progress::Done { value: request, .. }) => app.on_upgrade(&request, peer),
//!         other => panic!("not a whole request: {other:?}"),
//!     }
//! };
//!
//! let alice = outcome(&mut app, head("/chat?api_key=k3y-of-alice", "https://app.example.com"))
//!     .expect("alice's key and origin pass");
//! assert_eq!(alice.user_id().map(|id| &**id), Some("alice"));
//!
//! let no_key = outcome(&mut app, head("/chat", "https://app.example.com")).unwrap_err();
//! assert_eq!(no_key.status(), 401);
//!
//! // The origin is checked first: a page of another site never gets to the key.
//! let elsewhere = outcome(&mut app, head("/chat?api_key=k3y-of-alice", "https://evil.test"));
//! assert_eq!(elsewhere.unwrap_err().status(), 403);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod api_key;
mod connection_rate;
mod constant_time;
mod identity;
mod layer;
mod millis;
mod origin;
mod query;
mod rate_limit;
mod stack;
#[cfg(test)]
mod test_request;
mod token_bucket;

pub use api_key::ApiKey;
pub use connection_rate::ConnectionRate;
pub use identity::Identity;
pub use layer::UpgradeLayer;
pub use millis::Millis;
pub use origin::{OriginAllowlist, OriginError};
pub use rate_limit::{RateLimit, RateLimitError};
pub use stack::UpgradeLayers;
pub use token_bucket::TokenBucket;
