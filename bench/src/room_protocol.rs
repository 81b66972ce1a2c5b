//! The pub/sub protocols `shardcast-bench fanout` speaks: how a client
//! joins a room, publishes to it, and recognizes a delivery, for each
//! server family. One adapter per protocol, chosen by `--protocol`; the
//! scenario itself knows none of them.
//!
//! A connection writes its joins and publishes through
//! [`RoomProtocol::join`] and [`RoomProtocol::publish`] with a
//! [`Scratch`] of its own, and reads what the server sends through a
//! [`Reader`] of its own, which hands the scenario every [`Inbound`] a
//! WebSocket message carries: one for most protocols, several for a
//! shardcast.v1 `Batch`.

use anyhow::{Context, bail};
use monoio::net::TcpStream;
use shardcast_proto::Client;
use shardcast_proto::envelope::{self, Body, EnvelopeWriter, Position, VerifyLimits};
use shardcast_proto::frame::{DecoderConfig, Encoder, Message, OpCode};

use crate::client::XorShift;
use crate::socket_io;

/// The WebSocket subprotocol of shardcast's own envelopes.
const SHARDCAST_V1: &str = "shardcast.v1";

/// What the reader of shardcast.v1 envelopes accepts. The server under
/// test is trusted, so these only keep a broken one from making the
/// generator verify without end: as large as the WebSocket decoder's
/// messages, and batches of up to half a million deliveries.
pub(crate) const ENVELOPE_LIMITS: VerifyLimits = VerifyLimits {
    max_bytes: DecoderConfig::DEFAULT.max_message_size,
    max_depth: VerifyLimits::DEFAULT.max_depth,
    max_tables: 1 << 20,
    max_apparent_size: 2 * DecoderConfig::DEFAULT.max_message_size,
};

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
    /// shardcast's own rooms: the `shardcast.v1` subprotocol, one
    /// FlatBuffers envelope per binary message (`proto/schema/shardcast.fbs`).
    /// `Join` with an ack id, answered by an `Ack` with the room's
    /// position; `Publish` with `exclude_self`; a delivery is a `Message`,
    /// alone or in a `Batch`. The server refuses publishes to a room the
    /// connection has not joined, so publishers join the rooms they
    /// publish to (see [`RoomProtocol::publishers_join`]).
    #[value(name = "shardcast-v1")]
    ShardcastV1,
}

/// What a message from the server meant to a fan-out client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound<'a> {
    /// The server confirmed a join: publishes to the room reach this
    /// connection from now on.
    Joined,
    /// A published payload.
    Delivery(&'a [u8]),
}

/// A connection's working space for writing joins and publishes, reused
/// so that publishing allocates nothing once it has grown to the
/// message's size.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// A message's text or bytes, before framing (uws-topics, Socket.IO).
    bytes: Vec<u8>,
    /// The envelope builder (shardcast.v1); empty until first used.
    envelopes: EnvelopeWriter,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            bytes: Vec::new(),
            envelopes: EnvelopeWriter::with_capacity(0),
        }
    }
}

impl RoomProtocol {
    /// The protocol's name on the command line and in results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RoomProtocol::UwsTopics => "uws-topics",
            RoomProtocol::SocketIo => "socket.io",
            RoomProtocol::ShardcastV1 => "shardcast-v1",
        }
    }

    /// The request target to use when the URL gives none (`/`).
    pub(crate) fn default_path(self) -> &'static str {
        match self {
            RoomProtocol::UwsTopics | RoomProtocol::ShardcastV1 => "/",
            RoomProtocol::SocketIo => socket_io::PATH,
        }
    }

    /// The WebSocket subprotocol the upgrade request offers, which the
    /// server must accept; `None` to offer none.
    pub(crate) fn subprotocol(self) -> Option<&'static str> {
        match self {
            RoomProtocol::UwsTopics | RoomProtocol::SocketIo => None,
            RoomProtocol::ShardcastV1 => Some(SHARDCAST_V1),
        }
    }

    /// Whether a publisher must join the rooms it publishes to before its
    /// first publish (shardcast.v1). Its joins are no subscriptions of the
    /// scenario: it publishes with `exclude_self`, so its own messages do
    /// not come back to it, and what other publishers send to its rooms
    /// is read and ignored.
    pub(crate) fn publishers_join(self) -> bool {
        self == RoomProtocol::ShardcastV1
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
            RoomProtocol::UwsTopics | RoomProtocol::ShardcastV1 => Ok(leftover),
            RoomProtocol::SocketIo => socket_io::connect(stream, leftover, rng).await,
        }
    }

    /// Appends the frame that joins `room` to `out`, asking for an
    /// acknowledgement of id `ack` where the protocol has them (unique
    /// among a connection's joins in flight); the server's answer reads as
    /// [`Inbound::Joined`].
    pub(crate) fn join(
        self,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        room: &str,
        ack: u64,
        rng: &mut XorShift,
    ) {
        let encoder = Encoder::<Client>::new();
        let bytes = &mut scratch.bytes;
        bytes.clear();
        match self {
            RoomProtocol::UwsTopics => {
                bytes.push(b'J');
                bytes.extend_from_slice(room.as_bytes());
                encoder.frame(out, OpCode::Binary, true, bytes, rng.mask_key());
            }
            RoomProtocol::SocketIo => {
                socket_io::event(bytes, Some(ack), b"join", &[room.as_bytes()]);
                encoder.frame(out, OpCode::Text, true, bytes, rng.mask_key());
            }
            RoomProtocol::ShardcastV1 => {
                let envelope = scratch.envelopes.join(room, Some(ack), false);
                encoder.frame(out, OpCode::Binary, true, envelope, rng.mask_key());
            }
        }
    }

    /// Appends the frame that publishes `payload` to `room` to `out`.
    pub(crate) fn publish(
        self,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        room: &str,
        payload: &[u8],
        rng: &mut XorShift,
    ) {
        let encoder = Encoder::<Client>::new();
        let bytes = &mut scratch.bytes;
        bytes.clear();
        match self {
            RoomProtocol::UwsTopics => {
                bytes.push(b'P');
                // Room names are checked to fit a byte when the run starts.
                bytes.push(room.len() as u8);
                bytes.extend_from_slice(room.as_bytes());
                bytes.extend_from_slice(payload);
                encoder.frame(out, OpCode::Binary, true, bytes, rng.mask_key());
            }
            RoomProtocol::SocketIo => {
                socket_io::event(bytes, None, b"publish", &[room.as_bytes(), payload]);
                encoder.frame(out, OpCode::Text, true, bytes, rng.mask_key());
            }
            RoomProtocol::ShardcastV1 => {
                let envelope = scratch.envelopes.publish(room, payload, true, None);
                encoder.frame(out, OpCode::Binary, true, envelope, rng.mask_key());
            }
        }
    }
}

/// The reading side of one connection: turns the server's WebSocket
/// messages into [`Inbound`]s, and keeps what checking them needs between
/// messages.
#[derive(Debug)]
pub(crate) struct Reader {
    /// The connection's protocol.
    protocol: RoomProtocol,
    /// shardcast.v1 subscribers: the room whose offsets must follow each
    /// other, from the join's position on.
    sequence: Option<Sequence>,
}

/// A room's message stream as one subscriber saw it (shardcast.v1).
#[derive(Debug)]
struct Sequence {
    /// The room.
    room: String,
    /// The last position seen: the join's, then each message's; `None`
    /// until the join's `Ack` gave one.
    last: Option<Position>,
}

impl Reader {
    /// The reader of a subscriber of `room`: with shardcast.v1, each
    /// delivery must be the room's next offset after the join's position,
    /// in the same epoch, and must be of that room.
    pub(crate) fn subscriber(protocol: RoomProtocol, room: &str) -> Reader {
        Reader {
            protocol,
            sequence: (protocol == RoomProtocol::ShardcastV1).then(|| Sequence {
                room: room.to_owned(),
                last: None,
            }),
        }
    }

    /// The reader of a publisher: nothing is checked of its deliveries
    /// (with `exclude_self`, shardcast.v1 offsets skip its own messages).
    pub(crate) fn publisher(protocol: RoomProtocol) -> Reader {
        Reader {
            protocol,
            sequence: None,
        }
    }

    /// Reads one message from the server and passes what it means to
    /// `each`, in order: nothing (a ping, answered; a pong; a shardcast.v1
    /// `Welcome`), one item, or one per item of a batch. Answers the
    /// protocol needs (a WebSocket pong, an Engine.IO pong) are appended to
    /// `out`. Anything the protocol does not send, a close, an error
    /// envelope or a failed acknowledgement included, is an error, and so
    /// is a failure of `each`.
    pub(crate) fn read<'a>(
        &mut self,
        message: Message<'a>,
        out: &mut Vec<u8>,
        rng: &mut XorShift,
        mut each: impl FnMut(Inbound<'a>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let encoder = Encoder::<Client>::new();
        match (self.protocol, message) {
            (_, Message::Ping(payload)) => Ok(encoder.pong(out, payload, rng.mask_key())?),
            (_, Message::Pong(_)) => Ok(()),
            (_, Message::Close(frame)) => bail!("the server closed the connection: {frame:?}"),
            (RoomProtocol::UwsTopics, Message::Binary(bytes)) => each(match bytes.first() {
                // Payloads start with a hex digit, never with 'J'.
                Some(b'J') => Inbound::Joined,
                _ => Inbound::Delivery(bytes),
            }),
            (RoomProtocol::SocketIo, Message::Text(text)) => {
                match socket_io::parse(text.as_bytes()) {
                    socket_io::Inbound::Ping => {
                        encoder.frame(out, OpCode::Text, true, socket_io::PONG, rng.mask_key());
                        Ok(())
                    }
                    socket_io::Inbound::Ack(_) => each(Inbound::Joined),
                    socket_io::Inbound::Event {
                        name: b"message",
                        arg,
                    } => each(Inbound::Delivery(arg)),
                    other => bail!("unexpected Socket.IO packet {other:?}"),
                }
            }
            (RoomProtocol::ShardcastV1, Message::Binary(bytes)) => {
                let envelope = envelope::read(bytes, &ENVELOPE_LIMITS)
                    .context("reading a shardcast.v1 envelope")?;
                for item in envelope::items(envelope) {
                    if let Some(inbound) = self.envelope(item)? {
                        each(inbound)?;
                    }
                }
                Ok(())
            }
            (protocol, other) => bail!("unexpected {other:?} for the {} protocol", protocol.name()),
        }
    }

    /// What one envelope (not a batch) means, if anything; fails on an
    /// error, a failed acknowledgement, an offset out of sequence, and any
    /// envelope a server does not send to a member that asked for no
    /// presence. Bodies newer than the schema are skipped, as the
    /// protocol's compatibility rules ask of clients.
    fn envelope<'a>(
        &mut self,
        item: envelope::Envelope<'a>,
    ) -> anyhow::Result<Option<Inbound<'a>>> {
        match item.body_type() {
            Body::Message => {
                let message = item
                    .body_as_message()
                    .context("a Message without its body")?;
                if let Some(sequence) = &mut self.sequence {
                    sequence.follow(message.room(), *message.position())?;
                }
                Ok(Some(Inbound::Delivery(envelope::bytes(message.payload()))))
            }
            Body::Ack => {
                let ack = item.body_as_ack().context("an Ack without its body")?;
                if let Some(code) = ack.error() {
                    bail!(
                        "the server refused request {}: {code:?}: {}",
                        ack.id(),
                        ack.message().unwrap_or_default()
                    );
                }
                if let (Some(sequence), Some(position)) = (&mut self.sequence, ack.position()) {
                    sequence.last = Some(*position);
                }
                Ok(Some(Inbound::Joined))
            }
            Body::Welcome => Ok(None),
            Body::Error => {
                let error = item.body_as_error().context("an Error without its body")?;
                bail!(
                    "the server sent an error: {:?}: {}{}",
                    error.code(),
                    error.message().unwrap_or_default(),
                    error
                        .room()
                        .map(|room| format!(" (room {room})"))
                        .unwrap_or_default()
                );
            }
            Body::Join
            | Body::Leave
            | Body::Publish
            | Body::Event
            | Body::Resume
            | Body::Presence
            | Body::Batch => bail!(
                "unexpected shardcast.v1 {:?} from the server",
                item.body_type()
            ),
            _ => Ok(None),
        }
    }
}

impl Sequence {
    /// Takes a message of `room` at `position` into account: it must be
    /// this sequence's room, and the next offset in the same epoch.
    fn follow(&mut self, room: &str, position: Position) -> anyhow::Result<()> {
        if room != self.room {
            bail!("a message of room {room}, which this connection did not join");
        }
        if let Some(last) = self.last {
            if position.epoch() != last.epoch() || position.offset() != last.offset() + 1 {
                bail!(
                    "room {room}: offset {} of epoch {} after offset {} of epoch {}: messages missing or repeated",
                    position.offset(),
                    position.epoch(),
                    last.offset(),
                    last.epoch()
                );
            }
        }
        self.last = Some(position);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast_proto::Server;
    use shardcast_proto::deflate::Inflater;
    use shardcast_proto::envelope::ErrorCode;
    use shardcast_proto::frame::Decoder;

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

    /// Everything `reader` makes of `message`, in order.
    fn read_all<'a>(
        reader: &mut Reader,
        message: Message<'a>,
        out: &mut Vec<u8>,
    ) -> anyhow::Result<Vec<Inbound<'a>>> {
        let mut items = Vec::new();
        reader.read(message, out, &mut XorShift::new(1), |inbound| {
            items.push(inbound);
            Ok(())
        })?;
        Ok(items)
    }

    #[test]
    fn joins_and_publishes_are_written_per_protocol() {
        let mut rng = XorShift::new(1);
        let (mut out, mut scratch) = (Vec::new(), Scratch::default());
        RoomProtocol::UwsTopics.join(&mut out, &mut scratch, "r7", 0, &mut rng);
        assert_eq!(server_reads(&mut out), b"Jr7");
        out.clear();
        RoomProtocol::UwsTopics.publish(&mut out, &mut scratch, "r7", b"0001abc", &mut rng);
        assert_eq!(server_reads(&mut out), b"P\x02r70001abc");
        out.clear();
        RoomProtocol::SocketIo.join(&mut out, &mut scratch, "r7", 0, &mut rng);
        assert_eq!(server_reads(&mut out), b"420[\"join\",\"r7\"]");
        out.clear();
        RoomProtocol::SocketIo.publish(&mut out, &mut scratch, "r7", b"0001abc", &mut rng);
        assert_eq!(
            server_reads(&mut out),
            b"42[\"publish\",\"r7\",\"0001abc\"]"
        );
    }

    #[test]
    fn shardcast_v1_joins_and_publishes_are_envelopes() {
        let mut rng = XorShift::new(1);
        let (mut out, mut scratch) = (Vec::new(), Scratch::default());
        let protocol = RoomProtocol::ShardcastV1;
        assert_eq!(protocol.subprotocol(), Some("shardcast.v1"));
        protocol.join(&mut out, &mut scratch, "r7", 3, &mut rng);
        let bytes = server_reads(&mut out);
        let envelope = envelope::read(&bytes, &VerifyLimits::DEFAULT).unwrap();
        let join = envelope.body_as_join().expect("a Join");
        assert_eq!(
            (join.room(), join.ack(), join.presence()),
            ("r7", Some(3), false)
        );
        out.clear();
        protocol.publish(&mut out, &mut scratch, "r7", b"0001abc", &mut rng);
        let bytes = server_reads(&mut out);
        let envelope = envelope::read(&bytes, &VerifyLimits::DEFAULT).unwrap();
        let publish = envelope.body_as_publish().expect("a Publish");
        assert_eq!(publish.room(), "r7");
        assert_eq!(envelope::bytes(publish.payload()), b"0001abc");
        assert!(publish.exclude_self());
        assert_eq!(publish.ack(), None);
    }

    #[test]
    fn server_messages_are_read_per_protocol() {
        let mut out = Vec::new();
        let mut uws = Reader::subscriber(RoomProtocol::UwsTopics, "r1");
        assert_eq!(
            read_all(&mut uws, Message::Binary(b"Jr1"), &mut out).unwrap(),
            [Inbound::Joined]
        );
        assert_eq!(
            read_all(&mut uws, Message::Binary(b"00ab"), &mut out).unwrap(),
            [Inbound::Delivery(b"00ab")]
        );
        assert!(read_all(&mut uws, Message::Text("x"), &mut out).is_err());
        let mut sio = Reader::subscriber(RoomProtocol::SocketIo, "r1");
        assert_eq!(
            read_all(&mut sio, Message::Text("430[]"), &mut out).unwrap(),
            [Inbound::Joined]
        );
        assert_eq!(
            read_all(
                &mut sio,
                Message::Text("42[\"message\",\"00ab\"]"),
                &mut out
            )
            .unwrap(),
            [Inbound::Delivery(b"00ab")]
        );
        assert!(out.is_empty());
        assert_eq!(
            read_all(&mut sio, Message::Text("2"), &mut out).unwrap(),
            []
        );
        assert_eq!(server_reads(&mut out), b"3");
        assert!(read_all(&mut sio, Message::Binary(b"00ab"), &mut out).is_err());
        assert!(read_all(&mut sio, Message::Close(None), &mut out).is_err());
    }

    #[test]
    fn shardcast_v1_acks_messages_and_batches_are_joins_and_deliveries() {
        let mut writer = EnvelopeWriter::new();
        let mut out = Vec::new();
        let mut reader = Reader::subscriber(RoomProtocol::ShardcastV1, "r1");
        let welcome = writer.welcome("s1", b"token", 25_000, false, &[]).to_vec();
        assert_eq!(
            read_all(&mut reader, Message::Binary(&welcome), &mut out).unwrap(),
            []
        );
        let ack = writer.ack_position(0, 41, 7).to_vec();
        assert_eq!(
            read_all(&mut reader, Message::Binary(&ack), &mut out).unwrap(),
            [Inbound::Joined]
        );
        let message = writer.message("r1", 42, 7, b"0001abc", Some("m9")).to_vec();
        assert_eq!(
            read_all(&mut reader, Message::Binary(&message), &mut out).unwrap(),
            [Inbound::Delivery(b"0001abc")]
        );
        let mut batch = writer.batch();
        batch
            .message("r1", 43, 7, b"0002abc", None)
            .message("r1", 44, 7, b"0003abc", None);
        let batch = batch.finish().to_vec();
        assert_eq!(
            read_all(&mut reader, Message::Binary(&batch), &mut out).unwrap(),
            [Inbound::Delivery(b"0002abc"), Inbound::Delivery(b"0003abc")]
        );
        assert!(out.is_empty());
        assert_eq!(
            read_all(&mut reader, Message::Ping(b"p"), &mut out).unwrap(),
            []
        );
        assert!(!out.is_empty());
    }

    #[test]
    fn shardcast_v1_errors_refusals_and_gaps_fail() {
        let mut writer = EnvelopeWriter::new();
        let mut out = Vec::new();
        let fails = |bytes: &[u8], joined_at: Option<u64>| -> String {
            let mut reader = Reader::subscriber(RoomProtocol::ShardcastV1, "r1");
            if let Some(offset) = joined_at {
                let ack = EnvelopeWriter::new().ack_position(0, offset, 7).to_vec();
                read_all(&mut reader, Message::Binary(&ack), &mut Vec::new()).unwrap();
            }
            format!(
                "{:#}",
                read_all(&mut reader, Message::Binary(bytes), &mut Vec::new()).unwrap_err()
            )
        };
        let error = writer
            .error(ErrorCode::NotJoined, "join first", None, Some("r1"))
            .to_vec();
        let text = fails(&error, None);
        assert!(text.contains("NotJoined: join first (room r1)"), "{text}");
        let refused = writer
            .ack_error(0, ErrorCode::Forbidden, "not for you")
            .to_vec();
        let text = fails(&refused, None);
        assert!(text.contains("Forbidden: not for you"), "{text}");
        let skipped = writer.message("r1", 43, 7, b"x", None).to_vec();
        assert!(fails(&skipped, Some(41)).contains("missing or repeated"));
        let new_epoch = writer.message("r1", 42, 8, b"x", None).to_vec();
        assert!(fails(&new_epoch, Some(41)).contains("missing or repeated"));
        let other_room = writer.message("r2", 42, 7, b"x", None).to_vec();
        assert!(fails(&other_room, Some(41)).contains("did not join"));
        let echoed = writer.join("r1", Some(0), false).to_vec();
        assert!(fails(&echoed, None).contains("unexpected"));
        assert!(fails(b"not an envelope", None).contains("envelope"));
        let mut reader = Reader::subscriber(RoomProtocol::ShardcastV1, "r1");
        assert!(read_all(&mut reader, Message::Text("x"), &mut out).is_err());
    }

    #[test]
    fn shardcast_v1_publishers_take_any_offsets() {
        let mut writer = EnvelopeWriter::new();
        let mut reader = Reader::publisher(RoomProtocol::ShardcastV1);
        for (room, offset) in [("r1", 5), ("r1", 9), ("r2", 1)] {
            let message = writer.message(room, offset, 1, b"x", None).to_vec();
            assert_eq!(
                read_all(&mut reader, Message::Binary(&message), &mut Vec::new()).unwrap(),
                [Inbound::Delivery(b"x")]
            );
        }
    }
}
