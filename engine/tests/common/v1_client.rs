//! A `shardcast.v1` test client: tungstenite, with envelopes written and
//! read by `shardcast_proto`, reduced to what the tests compare.

use std::net::{SocketAddr, TcpStream};

use shardcast::ServerBuilder;
use shardcast::v1::{ErrorCode, Protocol, SUBPROTOCOL};
use shardcast_proto::envelope::{self, Body, EnvelopeWriter, ResumePoint, VerifyLimits};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use super::{Driver, TestServer, start};

/// A 4-shard server of `protocol`, which speaks shardcast.v1, configured
/// further by `configure`.
pub(crate) fn server(
    driver: Driver,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    protocol: impl Fn() -> Protocol<u32> + Send + Sync + 'static,
) -> TestServer {
    start(
        driver,
        |builder| configure(builder.subprotocols([SUBPROTOCOL]).shards(4)),
        move |_| protocol(),
    )
}

/// A `shardcast.v1` test client.
pub(crate) struct Client {
    pub(crate) socket: WebSocket<TcpStream>,
    writer: EnvelopeWriter,
    /// The session of the server's last `Welcome`: id, resume token.
    pub(crate) session: (String, Vec<u8>),
    /// The heartbeat interval the first `Welcome` gave, in milliseconds.
    pub(crate) heartbeat_ms: u32,
    /// The epoch of the last position read (a message's, or an ack's).
    pub(crate) epoch: u64,
}

/// One envelope the server sent, reduced to what the tests compare.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Got {
    /// An `Ack`: id, payload, error code, position offset.
    Ack(u64, Vec<u8>, Option<ErrorCode>, Option<u64>),
    /// An `Error`: code, room.
    Error(ErrorCode, Option<String>),
    /// A `Message`: room, offset, payload, publisher.
    Message(String, u64, Vec<u8>, Option<String>),
    /// An `Event`: name, payload.
    Event(String, Vec<u8>),
    /// A `Presence`: room, whether the member joined, member, count.
    Presence(String, bool, String, u32),
    /// A `Welcome`: whether it resumed, and per room: name, error, offset.
    Welcome(bool, Vec<(String, Option<ErrorCode>, u64)>),
}

impl Client {
    /// Connects with `headers`, offering shardcast.v1, and reads the
    /// server's first envelope, which must be a fresh session's `Welcome`.
    pub(crate) fn connect(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(super::READ_TIMEOUT)).unwrap();
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        let (socket, _) = tungstenite::client(request, stream).unwrap();
        let mut client = Client {
            socket,
            writer: EnvelopeWriter::new(),
            session: (String::new(), Vec::new()),
            heartbeat_ms: 0,
            epoch: 0,
        };
        assert_eq!(client.read(), Got::Welcome(false, Vec::new()));
        client
    }

    /// Sends a `Resume` of `session` with the last `positions` seen, as
    /// `(room, offset, epoch)`.
    pub(crate) fn resume(&mut self, session: &(String, Vec<u8>), positions: &[(&str, u64, u64)]) {
        let points: Vec<ResumePoint<'_>> = positions
            .iter()
            .map(|&(room, offset, epoch)| ResumePoint {
                room,
                offset,
                epoch,
            })
            .collect();
        let bytes = self.writer.resume(&session.0, &session.1, &points).to_vec();
        self.socket.send(Message::binary(bytes)).unwrap();
    }

    pub(crate) fn send(&mut self, write: impl FnOnce(&mut EnvelopeWriter) -> &[u8]) {
        let bytes = write(&mut self.writer).to_vec();
        self.socket.send(Message::binary(bytes)).unwrap();
    }

    /// The next envelope; a `Welcome` also updates [`Client::session`].
    pub(crate) fn read(&mut self) -> Got {
        let bytes = loop {
            match self.socket.read().unwrap() {
                Message::Binary(bytes) => break bytes,
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        };
        let envelope = envelope::read(&bytes, &VerifyLimits::default()).unwrap();
        match envelope.body_type() {
            Body::Ack => {
                let ack = envelope.body_as_ack().unwrap();
                if let Some(position) = ack.position() {
                    self.epoch = position.epoch();
                }
                Got::Ack(
                    ack.id(),
                    envelope::bytes(ack.payload()).to_vec(),
                    ack.error(),
                    ack.position().map(|p| p.offset()),
                )
            }
            Body::Error => {
                let error = envelope.body_as_error().unwrap();
                Got::Error(error.code(), error.room().map(str::to_owned))
            }
            Body::Message => {
                let message = envelope.body_as_message().unwrap();
                self.epoch = message.position().epoch();
                Got::Message(
                    message.room().to_owned(),
                    message.position().offset(),
                    envelope::bytes(message.payload()).to_vec(),
                    message.publisher().map(str::to_owned),
                )
            }
            Body::Event => {
                let event = envelope.body_as_event().unwrap();
                Got::Event(
                    event.name().to_owned(),
                    envelope::bytes(event.payload()).to_vec(),
                )
            }
            Body::Presence => {
                let presence = envelope.body_as_presence().unwrap();
                Got::Presence(
                    presence.room().to_owned(),
                    presence.kind() == envelope::PresenceKind::Joined,
                    presence.member().to_owned(),
                    presence.count(),
                )
            }
            Body::Welcome => {
                let welcome = envelope.body_as_welcome().unwrap();
                self.session = (
                    welcome.session_id().to_owned(),
                    envelope::bytes(welcome.resume_token()).to_vec(),
                );
                if !welcome.resumed() {
                    self.heartbeat_ms = welcome.heartbeat_ms();
                }
                let rooms = welcome
                    .rooms()
                    .into_iter()
                    .flatten()
                    .map(|room| {
                        (
                            room.room().to_owned(),
                            room.error(),
                            room.position().offset(),
                        )
                    })
                    .collect();
                Got::Welcome(welcome.resumed(), rooms)
            }
            other => panic!("unexpected body {other:?}"),
        }
    }

    /// Closes, and reads until the server's answer, so shutdown need not
    /// wait for this client.
    pub(crate) fn close(mut self) {
        self.socket.close(None).unwrap();
        while self.socket.read().is_ok() {}
    }

    pub(crate) fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.socket.read() {
                Ok(Message::Close(frame)) => {
                    // Sends tungstenite's answer, ending the handshake.
                    let _ = self.socket.flush();
                    return frame.map(|f| u16::from(f.code));
                }
                Ok(_) => {}
                Err(error) => panic!("no close frame: {error}"),
            }
        }
    }
}
