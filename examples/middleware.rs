//! Middleware on a `shardcast.v1` server, in the order it runs:
//!
//! 1. upgrade layers, before the application sees a connection: an origin
//!    allowlist (browsers from `https://example.com` only; other clients
//!    send no Origin and pass), an API key (`x-api-key`, a bearer token or
//!    `?api_key=`) that names the user, and a per-address limit of 20
//!    upgrades a minute;
//! 2. per request: a token bucket of 50 requests a second (bursts of 100)
//!    per connection, past which requests are refused `RateLimited`;
//! 3. message layers: publishes over 1 KiB are refused `TooLarge`; text
//!    publishes are trimmed of surrounding whitespace; rooms under
//!    `admin/` are `Forbidden` to everyone but `root`; the user `muted`
//!    is dropped without an answer.
//!
//! Keys: `key-alice` (alice), `key-root` (root), `key-muted` (muted).
//! Members' messages name their publisher. Run it with `cargo run -p
//! shardcast-examples --bin middleware`.

use std::borrow::Cow;
use std::time::Duration;

use shardcast::Server;
use shardcast::middleware::{ApiKey, ConnectionRate, OriginAllowlist, RateLimit};
use shardcast::v1::{
    ErrorCode, EventError, MessageLayer, Protocol, Request, Router, SUBPROTOCOL, Session, Verdict,
};

/// The largest publish accepted.
const MAX_PUBLISH: usize = 1024;

/// Refuses publishes over [`MAX_PUBLISH`] bytes and trims text ones.
struct PublishRules;

impl MessageLayer<()> for PublishRules {
    fn check(
        &mut self,
        _conn: &mut shardcast::Conn<Session<()>>,
        request: &mut Request<'_>,
    ) -> Verdict {
        let Request::Publish { payload, .. } = request else {
            return Verdict::Pass;
        };
        if payload.len() > MAX_PUBLISH {
            return Verdict::Refuse(EventError::new(
                ErrorCode::TooLarge,
                format!("publishes are at most {MAX_PUBLISH} bytes"),
            ));
        }
        if let Ok(text) = std::str::from_utf8(payload) {
            if text.trim().len() != text.len() {
                *payload = Cow::Owned(text.trim().as_bytes().to_vec());
            }
        }
        Verdict::Pass
    }
}

/// Which user a connection authenticated as.
fn user(conn: &shardcast::Conn<Session<()>>) -> &str {
    conn.state().identity().user_id().map_or("", |id| &**id)
}

/// The application, with its middleware, built on each shard.
fn protocol() -> anyhow::Result<Protocol<()>> {
    let origins = OriginAllowlist::new().allow("https://example.com")?;
    let keys = ApiKey::new()
        .key_for_user("key-alice", "alice")
        .key_for_user("key-root", "root")
        .key_for_user("key-muted", "muted");
    let upgrades = ConnectionRate::new(RateLimit::per_window(20, Duration::from_secs(60), 20)?);
    Ok(Protocol::new(Router::new())
        .upgrade_layer(origins)
        .upgrade_layer(keys)
        .upgrade_layer(upgrades)
        .rate_limit(RateLimit::new(50, 100)?)
        .message_layer(PublishRules)
        .message_layer(
            |conn: &mut shardcast::Conn<Session<()>>, request: &mut Request<'_>| {
                let admin_room = request
                    .room()
                    .is_some_and(|room| room.starts_with("admin/"));
                if admin_room && user(conn) != "root" {
                    Verdict::Refuse(EventError::forbidden("admin rooms are for root"))
                } else {
                    Verdict::Pass
                }
            },
        )
        .message_layer(
            |conn: &mut shardcast::Conn<Session<()>>, _request: &mut Request<'_>| {
                if user(conn) == "muted" {
                    Verdict::Drop
                } else {
                    Verdict::Pass
                }
            },
        )
        .reveal_publisher(true))
}

fn main() -> anyhow::Result<()> {
    // Checked once here, so the shards' factory cannot fail.
    protocol()?;
    let handle = Server::builder()
        .listen(shardcast_examples::listen_addr()?)
        .subprotocols([SUBPROTOCOL])
        .build(|_shard| protocol().expect("checked before the server started"))
        .start()?;
    shardcast_examples::run_until_signal(&handle)
}
