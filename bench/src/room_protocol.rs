//! The pub/sub protocols `shardcast-bench fanout` speaks: how a client
//! joins a room, publishes to it, and recognizes a delivery, for each
//! server family. One adapter per protocol, chosen by `--protocol`.
//!
//! Adding a protocol (shardcast's own `shardcast-v1` rooms, once shardcast
//! has rooms) is one more variant and one more arm in each method here;
//! the scenario itself does not change.

use anyhow::bail;
use monoio::net::TcpStream;
use shardcast_proto::Client;
use shardcast_proto::frame::{Encoder, Message, OpCode};

use crate::client::XorShift;
use crate::socket_io;

/// A room protocol, and the wire format that goes with it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoomProtocol {
    /// uWebSockets.js topics, as `bench/peers/uwebsockets-js/fanout.js`
    /// serves them: binary `J` + room subscribes (the server answers with
    /// the same message), `P` + room length (1 byte) + room + payload
    /// publishes, and a delivery is the bare payload.
    #[value(name = "uws-topics")]
    UwsTopics,
    /// Socket.IO rooms, as `bench/peers/socket.io/server.js` serves them:
    /// event "join" (room) with an acknowledgement, event "publish" (room,
    /// payload), and a delivery is event "message" (payload). Text only.
    #[value(name = "socket.io")]
    SocketIo,
}

/// What a message from the server meant to a fan-out client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound<'a> {
    /// The server confirmed the join: publishes to the room reach this
    /// connection from now on.
    Joined,
    /// A published payload.
    Delivery(&'a [u8]),
    /// Nothing for the scenario (a ping, answered; a pong).
    Nothing,
}

impl RoomProtocol {
    /// The protocol's name on the command line and in results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RoomProtocol::UwsTopics => "uws-topics",
            RoomProtocol::SocketIo => "socket.io",
        }
    }

    /// The request target to use when the URL gives none (`/`).
    pub(crate) fn default_path(self) -> &'static str {
        match self {
            RoomProtocol::UwsTopics => "/",
            RoomProtocol::SocketIo => socket_io::PATH,
        }
    }

    /// Opens the protocol's session on an upgraded connection; `leftover`
    /// holds the bytes after the upgrade response, and the bytes after the
    /// session's opening come back, to decode next.
    pub(crate) async fn open(
        self,
        stream: &mut TcpStream,
        leftover: Vec<u8>,
        rng: &mut XorShift,
    ) -> anyhow::Result<Vec<u8>> {
        match self {
            RoomProtocol::UwsTopics => Ok(leftover),
            RoomProtocol::SocketIo => socket_io::connect(stream, leftover, rng).await,
        }
    }

    /// Appends the frame that joins `room` to `out`; the server's answer
    /// reads as [`Inbound::Joined`]. `scratch` is working space.
    pub(crate) fn join(
        self,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        room: &[u8],
        rng: &mut XorShift,
    ) {
        scratch.clear();
        let opcode = match self {
            RoomProtocol::UwsTopics => {
                scratch.push(b'J');
                scratch.extend_from_slice(room);
                OpCode::Binary
            }
            RoomProtocol::SocketIo => {
                socket_io::event(scratch, Some(0), b"join", &[room]);
                OpCode::Text
            }
        };
        Encoder::<Client>::new().frame(out, opcode, true, scratch, rng.mask_key());
    }

    /// Appends the frame that publishes `payload` to `room` to `out`.
    /// `scratch` is working space, reused so that publishing allocates
    /// nothing once it has grown to the message's size.
    pub(crate) fn publish(
        self,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        room: &[u8],
        payload: &[u8],
        rng: &mut XorShift,
    ) {
        scratch.clear();
        let opcode = match self {
            RoomProtocol::UwsTopics => {
                scratch.push(b'P');
                // Room names are checked to fit a byte when the run starts.
                scratch.push(room.len() as u8);
                scratch.extend_from_slice(room);
                scratch.extend_from_slice(payload);
                OpCode::Binary
            }
            RoomProtocol::SocketIo => {
                socket_io::event(scratch, None, b"publish", &[room, payload]);
                OpCode::Text
            }
        };
        Encoder::<Client>::new().frame(out, opcode, true, scratch, rng.mask_key());
    }

    /// Reads one message from the server, appending any answer it needs
    /// (a WebSocket pong, an Engine.IO pong) to `out`. Anything the
    /// protocol does not send, a close included, is an error.
    pub(crate) fn read<'a>(
        self,
        message: Message<'a>,
        out: &mut Vec<u8>,
        rng: &mut XorShift,
    ) -> anyhow::Result<Inbound<'a>> {
        let encoder = Encoder::<Client>::new();
        match (self, message) {
            (_, Message::Ping(payload)) => {
                encoder.pong(out, payload, rng.mask_key())?;
                Ok(Inbound::Nothing)
            }
            (_, Message::Pong(_)) => Ok(Inbound::Nothing),
            (_, Message::Close(frame)) => bail!("the server closed the connection: {frame:?}"),
            (RoomProtocol::UwsTopics, Message::Binary(bytes)) => Ok(match bytes.first() {
                // Payloads start with a hex digit, never with 'J'.
                Some(b'J') => Inbound::Joined,
                _ => Inbound::Delivery(bytes),
            }),
            (RoomProtocol::SocketIo, Message::Text(text)) => {
                match socket_io::parse(text.as_bytes()) {
                    socket_io::Inbound::Ping => {
                        encoder.frame(out, OpCode::Text, true, socket_io::PONG, rng.mask_key());
                        Ok(Inbound::Nothing)
                    }
                    socket_io::Inbound::Ack(0) => Ok(Inbound::Joined),
                    socket_io::Inbound::Event {
                        name: b"message",
                        arg,
                    } => Ok(Inbound::Delivery(arg)),
                    other => bail!("unexpected Socket.IO packet {other:?}"),
                }
            }
            (_, other) => bail!("unexpected {other:?} for the {} protocol", self.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast_proto::Server;
    use shardcast_proto::deflate::Inflater;
    use shardcast_proto::frame::{Decoder, DecoderConfig};

    /// Decodes the one client frame in `frame` as the server would.
    fn server_reads(frame: &mut [u8]) -> Vec<u8> {
        let mut decoder = Decoder::<Server>::new(DecoderConfig::DEFAULT);
        let mut inflater = Inflater::new();
        let len = frame.len();
        let (used, message) = decoder.decode(frame, &mut inflater).unwrap();
        assert_eq!(used, len);
        match message.unwrap() {
            Message::Binary(bytes) => bytes.to_vec(),
            Message::Text(text) => text.as_bytes().to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn joins_and_publishes_are_written_per_protocol() {
        let mut rng = XorShift::new(1);
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        RoomProtocol::UwsTopics.join(&mut out, &mut scratch, b"r7", &mut rng);
        assert_eq!(server_reads(&mut out), b"Jr7");
        out.clear();
        RoomProtocol::UwsTopics.publish(&mut out, &mut scratch, b"r7", b"0001abc", &mut rng);
        assert_eq!(server_reads(&mut out), b"P\x02r70001abc");
        out.clear();
        RoomProtocol::SocketIo.join(&mut out, &mut scratch, b"r7", &mut rng);
        assert_eq!(server_reads(&mut out), b"420[\"join\",\"r7\"]");
        out.clear();
        RoomProtocol::SocketIo.publish(&mut out, &mut scratch, b"r7", b"0001abc", &mut rng);
        assert_eq!(
            server_reads(&mut out),
            b"42[\"publish\",\"r7\",\"0001abc\"]"
        );
    }

    #[test]
    fn server_messages_are_read_per_protocol() {
        let mut rng = XorShift::new(1);
        let mut out = Vec::new();
        let uws = RoomProtocol::UwsTopics;
        assert_eq!(
            uws.read(Message::Binary(b"Jr1"), &mut out, &mut rng)
                .unwrap(),
            Inbound::Joined
        );
        assert_eq!(
            uws.read(Message::Binary(b"00ab"), &mut out, &mut rng)
                .unwrap(),
            Inbound::Delivery(b"00ab")
        );
        assert!(uws.read(Message::Text("x"), &mut out, &mut rng).is_err());
        let sio = RoomProtocol::SocketIo;
        assert_eq!(
            sio.read(Message::Text("430[]"), &mut out, &mut rng)
                .unwrap(),
            Inbound::Joined
        );
        assert_eq!(
            sio.read(
                Message::Text("42[\"message\",\"00ab\"]"),
                &mut out,
                &mut rng
            )
            .unwrap(),
            Inbound::Delivery(b"00ab")
        );
        assert!(out.is_empty());
        assert_eq!(
            sio.read(Message::Text("2"), &mut out, &mut rng).unwrap(),
            Inbound::Nothing
        );
        assert_eq!(server_reads(&mut out), b"3");
        assert!(
            sio.read(Message::Binary(b"00ab"), &mut out, &mut rng)
                .is_err()
        );
        assert!(sio.read(Message::Close(None), &mut out, &mut rng).is_err());
    }
}
