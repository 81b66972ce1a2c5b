//! A scripted `shardcast.v1` server: each accepted connection is handed
//! to the test, which reads what the client sent and writes what the
//! server says, step by step, as the session contract lays it out (the
//! README's sessions paragraph, and the schema's `Welcome` and `Resume`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use shardcast_proto::deflate::{DeflateConfig, Inflater};
use shardcast_proto::envelope::{
    self, Body, EnvelopeWriter, ErrorCode, PresenceKind, RecoveryReport, SUBPROTOCOL, VerifyLimits,
};
use shardcast_proto::frame::{CloseFrame, Decoder, DecoderConfig, Encoder, Message};
use shardcast_proto::handshake::{Progress, parse_request};
use shardcast_proto::{CloseCode, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a scripted step waits for the client before failing the test.
pub(crate) const STEP: Duration = Duration::from_secs(5);

/// A listener on 127.0.0.1 whose connections the test takes one by one.
pub(crate) struct ScriptedServer {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<TcpStream>,
    /// A connection seen by `connects_within`, for the next `accept`.
    stashed: Option<TcpStream>,
}

impl ScriptedServer {
    /// Listens on a free port.
    pub(crate) async fn start() -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if sender.send(stream).is_err() {
                    return;
                }
            }
        });
        ScriptedServer {
            addr,
            accepted,
            stashed: None,
        }
    }

    /// The listening address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `ws://` URL of the server.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The next connection, upgraded (with `shardcast.v1` if the client
    /// offered it, with permessage-deflate if it offered that).
    pub(crate) async fn accept(&mut self) -> Conn {
        let stream = self.next_stream().await;
        timeout(STEP, Conn::upgrade(stream))
            .await
            .expect("no upgrade request in time")
            .expect("the client closed during the upgrade")
    }

    /// The next connection whose upgrade request arrives within `within`;
    /// `None` for one that stays silent that long (such as one opened
    /// through a blackhole) or closes.
    pub(crate) async fn try_accept(&mut self, within: Duration) -> Option<Conn> {
        let stream = self.next_stream().await;
        timeout(within, Conn::upgrade(stream)).await.ok().flatten()
    }

    async fn next_stream(&mut self) -> TcpStream {
        match self.stashed.take() {
            Some(stream) => stream,
            None => timeout(STEP, self.accepted.recv())
                .await
                .expect("no connection from the client in time")
                .unwrap(),
        }
    }

    /// Whether a connection arrives within `within` (it is kept for the
    /// next `accept`).
    pub(crate) async fn connects_within(&mut self, within: Duration) -> bool {
        if self.stashed.is_none() {
            self.stashed = timeout(within, self.accepted.recv()).await.ok().flatten();
        }
        self.stashed.is_some()
    }
}

/// One envelope (or control frame) the client sent, reduced to what tests
/// compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Got {
    /// `Join`: room, ack id, presence.
    Join(String, Option<u64>, bool),
    /// `Leave`: room, ack id.
    Leave(String, Option<u64>),
    /// `Publish`: room, payload, ack id.
    Publish(String, Vec<u8>, Option<u64>),
    /// `Event`: name, payload, ack id.
    Event(String, Vec<u8>, Option<u64>),
    /// `Ack`: id, payload, error.
    Ack(u64, Vec<u8>, Option<ErrorCode>),
    /// `Resume`: session id, token, (room, offset, epoch) per room.
    Resume(String, Vec<u8>, Vec<(String, u64, u64)>),
    /// A text message (raw mode).
    Text(String),
    /// A binary message that is not an envelope (raw mode).
    Binary(Vec<u8>),
    /// A ping frame.
    Ping,
    /// A pong frame, with its payload.
    Pong(Vec<u8>),
    /// A close frame, with its code.
    Close(Option<u16>),
}

/// One upgraded connection, played by the test.
pub(crate) struct Conn {
    stream: TcpStream,
    decoder: Decoder<Server>,
    inflater: Inflater,
    input: Vec<u8>,
    start: usize,
    /// Items of the last message not yet returned.
    items: VecDeque<Got>,
    writer: EnvelopeWriter,
    /// Whether the client negotiated `shardcast.v1`.
    pub(crate) v1: bool,
    /// The number of items in each binary message received so far, in
    /// order (1 for an envelope sent alone).
    pub(crate) message_sizes: Vec<usize>,
}

impl Conn {
    /// Reads the upgrade request and accepts it; `None` if the client
    /// closes first.
    async fn upgrade(mut stream: TcpStream) -> Option<Conn> {
        stream.set_nodelay(true).unwrap();
        let mut input = Vec::new();
        loop {
            let mut chunk = [0; 4096];
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            input.extend_from_slice(&chunk[..read]);
            let parsed = parse_request(&input, &Default::default()).unwrap();
            let Progress::Done {
                value: request,
                head_len,
            } = parsed
            else {
                continue;
            };
            let mut response = Vec::new();
            let accept = request.accept(&[SUBPROTOCOL], &DeflateConfig::default());
            let negotiated = accept.negotiated();
            accept.write_response(&[], &mut response).unwrap();
            stream.write_all(&response).await.unwrap();
            let v1 = negotiated.subprotocol.is_some();
            let compression = negotiated.deflate.is_some();
            input.drain(..head_len);
            return Some(Conn {
                stream,
                decoder: Decoder::new(DecoderConfig {
                    compression,
                    ..DecoderConfig::DEFAULT
                }),
                inflater: Inflater::new(),
                input,
                start: 0,
                items: VecDeque::new(),
                writer: EnvelopeWriter::new(),
                v1,
                message_sizes: Vec::new(),
            });
        }
    }

    async fn write_frame(&mut self, frame: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::new();
        frame(&mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    /// Sends one envelope, written by `write`.
    pub(crate) async fn send(&mut self, write: impl FnOnce(&mut EnvelopeWriter) -> &[u8]) {
        let bytes = write(&mut self.writer).to_vec();
        self.write_frame(|out| {
            Encoder::<Server>::new().binary(out, &bytes, None, ());
        })
        .await;
    }

    /// Sends a text message (raw mode).
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.write_frame(|out| {
            Encoder::<Server>::new().text(out, text, None, ());
        })
        .await;
    }

    /// Sends the fresh `Welcome` of session `id`, with pings every
    /// `heartbeat_ms`.
    pub(crate) async fn welcome(&mut self, id: &str, token: &[u8], heartbeat_ms: u32) {
        self.send(|w| w.welcome(id, token, heartbeat_ms, false, &[]))
            .await;
    }

    /// Sends the resumed `Welcome` of session `id`, with one
    /// `(room, offset, epoch, error)` per room.
    pub(crate) async fn resumed(
        &mut self,
        id: &str,
        token: &[u8],
        rooms: &[(&str, u64, u64, Option<ErrorCode>)],
    ) {
        let reports: Vec<RecoveryReport<'_>> = rooms
            .iter()
            .map(|&(room, offset, epoch, error)| RecoveryReport {
                room,
                offset,
                epoch,
                error,
            })
            .collect();
        self.send(|w| w.welcome(id, token, 30_000, true, &reports))
            .await;
    }

    /// Sends a message of `room` at `offset` in `epoch`.
    pub(crate) async fn message(&mut self, room: &str, offset: u64, epoch: u64, payload: &[u8]) {
        self.send(|w| w.message(room, offset, epoch, payload, Some("pub")))
            .await;
    }

    /// Sends a presence change of `room`.
    pub(crate) async fn presence(&mut self, room: &str, member: &str, joined: bool, count: u32) {
        let kind = if joined {
            PresenceKind::Joined
        } else {
            PresenceKind::Left
        };
        self.send(|w| w.presence(room, kind, member, count)).await;
    }

    /// Sends a ping frame.
    pub(crate) async fn ping(&mut self, payload: &[u8]) {
        self.write_frame(|out| Encoder::<Server>::new().ping(out, payload, ()).unwrap())
            .await;
    }

    /// Sends a close frame with `code`, then closes the TCP connection.
    pub(crate) async fn close(mut self, code: u16) {
        self.write_frame(|out| {
            let frame = CloseFrame {
                code: CloseCode(code),
                reason: "scripted",
            };
            Encoder::<Server>::new()
                .close(out, Some(frame), ())
                .unwrap();
        })
        .await;
        let _ = self.stream.shutdown().await;
    }

    /// The next thing the client sent, batches taken apart.
    pub(crate) async fn recv(&mut self) -> Got {
        timeout(STEP, self.next())
            .await
            .expect("nothing from the client in time")
            .expect("the client closed the connection")
    }

    /// The next thing the client sent that is not a ping or pong.
    pub(crate) async fn recv_envelope(&mut self) -> Got {
        loop {
            match self.recv().await {
                Got::Ping | Got::Pong(_) => {}
                other => return other,
            }
        }
    }

    /// Whatever the client sends within `within` (pings and pongs
    /// excluded), until it is quiet or closes.
    pub(crate) async fn drain(&mut self, within: Duration) -> Vec<Got> {
        let mut got = Vec::new();
        while let Ok(Some(next)) = timeout(within, self.next()).await {
            if !matches!(next, Got::Ping | Got::Pong(_)) {
                got.push(next);
            }
        }
        got
    }

    /// Whether the client closed the TCP connection within `within`.
    pub(crate) async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// The next item, or `None` once the client closed the connection.
    async fn next(&mut self) -> Option<Got> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            if self.start < self.input.len() {
                let (consumed, message) = self
                    .decoder
                    .decode(&mut self.input[self.start..], &mut self.inflater)
                    .unwrap();
                let mut envelopes = None;
                let got = message.map(|message| match message {
                    Message::Text(text) => vec![Got::Text(text.to_owned())],
                    Message::Binary(bytes) if self.v1 => {
                        let items = parse(bytes);
                        envelopes = Some(items.len());
                        items
                    }
                    Message::Binary(bytes) => vec![Got::Binary(bytes.to_vec())],
                    Message::Ping(_) => vec![Got::Ping],
                    Message::Pong(payload) => vec![Got::Pong(payload.to_vec())],
                    Message::Close(frame) => vec![Got::Close(frame.map(|f| f.code.0))],
                });
                self.start += consumed;
                self.message_sizes.extend(envelopes);
                self.items.extend(got.into_iter().flatten());
                continue;
            }
            self.input.clear();
            self.start = 0;
            let mut chunk = [0; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.input.extend_from_slice(&chunk[..read]),
            }
        }
    }
}

/// The envelopes of one binary message.
fn parse(bytes: &[u8]) -> Vec<Got> {
    let envelope = envelope::read(bytes, &VerifyLimits::default()).unwrap();
    envelope::items(envelope)
        .map(|item| match item.body_type() {
            Body::Join => {
                let join = item.body_as_join().unwrap();
                Got::Join(join.room().to_owned(), join.ack(), join.presence())
            }
            Body::Leave => {
                let leave = item.body_as_leave().unwrap();
                Got::Leave(leave.room().to_owned(), leave.ack())
            }
            Body::Publish => {
                let publish = item.body_as_publish().unwrap();
                Got::Publish(
                    publish.room().to_owned(),
                    envelope::bytes(publish.payload()).to_vec(),
                    publish.ack(),
                )
            }
            Body::Event => {
                let event = item.body_as_event().unwrap();
                Got::Event(
                    event.name().to_owned(),
                    envelope::bytes(event.payload()).to_vec(),
                    event.ack(),
                )
            }
            Body::Ack => {
                let ack = item.body_as_ack().unwrap();
                Got::Ack(
                    ack.id(),
                    envelope::bytes(ack.payload()).to_vec(),
                    ack.error(),
                )
            }
            Body::Resume => {
                let resume = item.body_as_resume().unwrap();
                let rooms = resume
                    .rooms()
                    .into_iter()
                    .flatten()
                    .map(|room| {
                        (
                            room.room().to_owned(),
                            room.position().offset(),
                            room.position().epoch(),
                        )
                    })
                    .collect();
                Got::Resume(
                    resume.session_id().to_owned(),
                    envelope::bytes(resume.token()).to_vec(),
                    rooms,
                )
            }
            other => panic!("a client does not send {other:?}"),
        })
        .collect()
}
