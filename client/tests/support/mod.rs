//! What the client's integration tests share: a scripted `shardcast.v1`
//! server, a proxy that cuts or blackholes connections, and event helpers.
//!
//! Every test binary compiles its own copy of this module and uses only
//! part of it, so what one binary leaves unused is not dead code: another
//! binary uses it.
#![allow(dead_code)]

pub(crate) mod proxy;
pub(crate) mod server;

use std::time::Duration;

use shardcast_client::{Config, Event, Events};
use tokio::time::timeout;

/// A configuration for tests: quick backoff, short timeouts.
pub(crate) fn config(url: &str) -> Config {
    let mut config = Config::new(url);
    config.backoff.initial_delay = Duration::from_millis(20);
    config.backoff.max_delay = Duration::from_millis(200);
    config.connect_timeout = Duration::from_secs(3);
    config.request_timeout = Duration::from_secs(3);
    config
}

/// The next event, within a few seconds.
pub(crate) async fn next(events: &mut Events) -> Event {
    timeout(server::STEP, events.next())
        .await
        .expect("no event in time")
        .expect("the event stream ended")
}

/// Whether the event stream ends (with no event left) within a few
/// seconds.
pub(crate) async fn ended(events: &mut Events) -> bool {
    matches!(timeout(server::STEP, events.next()).await, Ok(None))
}

/// Events until one matches `wanted` (returned with those before it).
pub(crate) async fn until(
    events: &mut Events,
    wanted: impl Fn(&Event) -> bool,
) -> (Event, Vec<Event>) {
    let mut before = Vec::new();
    loop {
        let event = next(events).await;
        if wanted(&event) {
            return (event, before);
        }
        before.push(event);
    }
}
