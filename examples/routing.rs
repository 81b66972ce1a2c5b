//! Named events with acknowledgements over `shardcast.v1`, routed to
//! handlers with [`Router`]:
//!
//! - `add`: a payload of comma-separated integers; answers their sum, or
//!   `BadRequest` for anything else;
//! - `count`: answers how many `count` events this connection sent (per
//!   connection state);
//! - `announce`: publishes the payload to the room `announcements`, which
//!   the connection must have joined (`NotJoined` otherwise), and answers
//!   with nothing;
//! - `ping`: answers at once, and emits a `pong` event back as well;
//! - any other name: `UnknownEvent`.
//!
//! Clients send `Event` envelopes (`proto/schema/shardcast.fbs`) with an
//! ack id and read the `Ack`. Run it with `cargo run -p shardcast-examples
//! --bin routing`; `clients/python/shardcast_client.py HOST:PORT event add
//! 1,2,3` talks to it.

use shardcast::v1::{EventError, Protocol, Router, SUBPROTOCOL, emit};
use shardcast::{PreparedMessage, Server};

/// What the example keeps per connection.
#[derive(Debug, Default)]
struct Counter {
    count: u64,
}

/// The routes, built on each shard.
fn router() -> Router<Counter> {
    Router::<Counter>::new()
        .on("add", |_conn, payload| {
            let text = std::str::from_utf8(payload)
                .map_err(|_| EventError::bad_request("add takes text"))?;
            let mut sum: i64 = 0;
            for term in text.split(',') {
                let value: i64 = term
                    .trim()
                    .parse()
                    .map_err(|_| EventError::bad_request(format!("{term:?} is not an integer")))?;
                sum = sum
                    .checked_add(value)
                    .ok_or_else(|| EventError::bad_request("the sum overflows"))?;
            }
            Ok(sum.to_string().into_bytes())
        })
        .on("count", |conn, _payload| {
            let counter = conn.state_mut().state_mut();
            counter.count += 1;
            Ok(counter.count.to_string().into_bytes())
        })
        .on("announce", |conn, payload| {
            if !conn.is_member("announcements") {
                return Err(EventError::new(
                    shardcast::v1::ErrorCode::NotJoined,
                    "join announcements first",
                ));
            }
            conn.publish("announcements", &PreparedMessage::binary(payload))
                .map_err(|error| EventError::bad_request(error.to_string()))?;
            Ok(Vec::new())
        })
        .on("ping", |conn, payload| {
            emit(conn, "pong", payload).map_err(|error| EventError::internal(error.to_string()))?;
            Ok(Vec::new())
        })
}

fn main() -> anyhow::Result<()> {
    let handle = Server::builder()
        .listen(shardcast_examples::listen_addr()?)
        .subprotocols([SUBPROTOCOL])
        .build(|_shard| Protocol::new(router()))
        .start()?;
    shardcast_examples::run_until_signal(&handle)
}
