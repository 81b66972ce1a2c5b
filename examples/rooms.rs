//! Rooms with the library API, over plain WebSocket text messages, so any
//! client works (a browser, `wscat -c ws://127.0.0.1:9000`):
//!
//! - `/join ROOM` joins a room; the server answers `joined ROOM at OFFSET`
//!   once the join took effect (members hear every message after it);
//! - `/leave ROOM` leaves it (`left ROOM`);
//! - `/say ROOM TEXT` publishes `ROOM <id> TEXT` to every member of the
//!   room, on every shard, in the room's order; `/shout TEXT` broadcasts it
//!   to every connection;
//! - `/size ROOM` answers the room's members on this connection's shard.
//!
//! Run it with `cargo run -p shardcast-examples --bin rooms`.

use std::net::SocketAddr;

use shardcast::{
    Conn, Handler, Message, Position, PreparedMessage, PublishOptions, Rejection, Server,
    UpgradeRequest,
};

/// The shard's handler: no state of its own, the rooms are the engine's.
struct Rooms;

impl Handler for Rooms {
    type State = ();

    fn on_upgrade(&mut self, _: &UpgradeRequest<'_>, _: SocketAddr) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_message(&mut self, conn: &mut Conn<()>, message: Message<'_>) {
        let Message::Text(text) = message else {
            let _ = conn.send_text("error: this example speaks text");
            return;
        };
        let (command, rest) = text.split_once(' ').unwrap_or((text, ""));
        let answer = match command {
            "/join" => conn
                .join(rest)
                .map(|joined| (!joined).then(|| format!("already in {rest}")))
                .map_err(|error| error.to_string()),
            "/leave" => Ok(Some(if conn.leave(rest) {
                format!("left {rest}")
            } else {
                format!("not in {rest}")
            })),
            "/say" => {
                let (room, words) = rest.split_once(' ').unwrap_or((rest, ""));
                let line = PreparedMessage::text(&format!("{room} <{}> {words}", conn.id()));
                conn.publish_with(room, &line, &PublishOptions::new())
                    .map(|()| None)
                    .map_err(|error| error.to_string())
            }
            "/shout" => {
                conn.hub()
                    .broadcast(&PreparedMessage::text(&format!("* <{}> {rest}", conn.id())));
                Ok(None)
            }
            "/size" => Ok(Some(format!(
                "{rest} has {} members on shard {}",
                conn.hub().local_size(rest),
                conn.hub().shard()
            ))),
            _ => Err(
                "commands: /join ROOM, /leave ROOM, /say ROOM TEXT, /shout TEXT, /size ROOM".into(),
            ),
        };
        let _ = match answer {
            Ok(Some(text)) => conn.send_text(&text),
            Ok(None) => Ok(()),
            Err(error) => conn.send_text(&format!("error: {error}")),
        };
    }

    fn on_joined(&mut self, conn: &mut Conn<()>, room: &str, position: Position) {
        let _ = conn.send_text(&format!("joined {room} at {}", position.offset));
    }
}

fn main() -> anyhow::Result<()> {
    let handle = Server::builder()
        .listen(shardcast_examples::listen_addr()?)
        .build(|_shard| Rooms)
        .start()?;
    shardcast_examples::run_until_signal(&handle)
}
