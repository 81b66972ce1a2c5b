//! One WebSocket connection on Tokio: the TCP connect, the upgrade
//! handshake and the frame codec of shardcast-proto, with owned messages
//! out and a write buffer in.

use std::io;
use std::time::Duration;

use shardcast_proto::deflate::{Deflater, Inflater};
use shardcast_proto::envelope::SUBPROTOCOL;
use shardcast_proto::frame::{CloseFrame, Decoder, DecoderConfig, Encoder, Message};
use shardcast_proto::handshake::{ClientHandshake, Progress, generate_key};
use shardcast_proto::{Client, CloseCode, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::config::{Config, Mode};
use crate::endpoint::Endpoint;
use crate::error::Error;

/// How much a read asks the socket for at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A message received, owned: the decoder's borrowed messages are copied
/// out so that handling them may use the connection again.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A text message.
    Text(String),
    /// A binary message (a `shardcast.v1` envelope in v1 mode).
    Binary(Vec<u8>),
    /// A ping, with its payload to echo.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// The server's close frame: its code (1005 when none) and reason.
    Close(CloseCode, String),
}

/// An upgraded connection.
pub(crate) struct Link {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    decoder: Decoder<Client>,
    inflater: Inflater,
    encoder: Encoder<Client>,
    /// The compressor when permessage-deflate was negotiated, and the
    /// largest message it may compress (the server's window for us).
    deflater: Option<(Deflater, usize)>,
    /// Bytes read, of which `input[start..]` are not decoded yet.
    input: Vec<u8>,
    start: usize,
    output: Vec<u8>,
    masks: MaskKeys,
}

/// Masking keys drawn from the operating system's randomness, as RFC 6455
/// (section 10.3) asks: unpredictable, so a peer or an intermediary cannot
/// choose the bytes a frame puts on the wire. Drawn 64 at a time, so a
/// frame costs no system call.
struct MaskKeys {
    keys: [[u8; 4]; 64],
    next: usize,
}

impl MaskKeys {
    /// The first 64 keys.
    fn new() -> Result<MaskKeys, Error> {
        let mut keys = [[0; 4]; 64];
        getrandom::fill(keys.as_flattened_mut()).map_err(random_failed)?;
        Ok(MaskKeys { keys, next: 0 })
    }

    /// The next key. Should the system's randomness fail (it does not on
    /// Linux once booted), the last 64 keys are used again, rather than
    /// failing a frame.
    fn next(&mut self) -> [u8; 4] {
        if self.next == self.keys.len() {
            if let Err(error) = getrandom::fill(self.keys.as_flattened_mut()) {
                tracing::warn!(%error, "no system randomness: masking keys are reused");
            }
            self.next = 0;
        }
        self.next += 1;
        self.keys[self.next - 1]
    }
}

fn random_failed(error: getrandom::Error) -> Error {
    Error::Io(std::io::Error::other(error))
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("compression", &self.deflater.is_some())
            .field("queued_bytes", &self.output.len())
            .finish_non_exhaustive()
    }
}

/// Writes the upgrade request for `endpoint` under `config` into `out`,
/// with the key made of `random`. [`Client::start`](crate::Client::start)
/// writes one to refuse a bad URL or header before any attempt;
/// [`Link::open`] writes one per attempt.
pub(crate) fn write_request(
    endpoint: &Endpoint,
    config: &Config,
    random: [u8; 16],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    handshake(endpoint, config, random, &headers(config), |handshake| {
        handshake.write_request(out).map_err(Error::from)
    })
}

fn headers(config: &Config) -> Vec<(&str, &str)> {
    config
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// Runs `then` on the client handshake for `endpoint` under `config`.
fn handshake<'a, T>(
    endpoint: &'a Endpoint,
    config: &Config,
    random: [u8; 16],
    headers: &'a [(&'a str, &'a str)],
    then: impl FnOnce(&ClientHandshake<'a>) -> T,
) -> T {
    let mut handshake =
        ClientHandshake::new(&endpoint.host, &endpoint.target, generate_key(random));
    handshake.subprotocols = match config.mode {
        Mode::V1 => &[SUBPROTOCOL],
        Mode::Raw => &[],
    };
    handshake.offer_deflate = config.compression;
    handshake.extra_headers = headers;
    then(&handshake)
}

impl Link {
    /// Connects to `endpoint` and upgrades. Not bounded in time: the
    /// caller puts a deadline around it.
    pub(crate) async fn open(endpoint: &Endpoint, config: &Config) -> Result<Link, Error> {
        let stream = TcpStream::connect(endpoint.authority.as_str()).await?;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = stream.into_split();
        let mut random = [0; 16];
        getrandom::fill(&mut random).map_err(random_failed)?;
        let headers = headers(config);
        let mut request = Vec::new();
        handshake(endpoint, config, random, &headers, |handshake| {
            handshake.write_request(&mut request)
        })?;
        writer.write_all(&request).await?;
        let mut input = Vec::with_capacity(READ_CHUNK);
        let (compression, deflater, head_len) = loop {
            input.reserve(READ_CHUNK);
            if reader.read_buf(&mut input).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            let parsed = handshake(endpoint, config, random, &headers, |handshake| {
                handshake.parse_response(&input)
            })?;
            if let Progress::Done { value, head_len } = parsed {
                if config.mode == Mode::V1 && value.subprotocol.is_none() {
                    return Err(Error::SubprotocolRefused);
                }
                let deflater = value.deflate.map(|params| {
                    let bits = params.client_max_window_bits;
                    let limit = if bits >= 15 { usize::MAX } else { 1 << bits };
                    (Deflater::new(Deflater::DEFAULT_LEVEL), limit)
                });
                break (value.deflate.is_some(), deflater, head_len);
            }
        };
        input.drain(..head_len);
        let decoder = Decoder::new(DecoderConfig {
            max_message_size: config.max_message_size,
            max_decompressed_size: config.max_message_size,
            compression,
            ..DecoderConfig::DEFAULT
        });
        Ok(Link {
            reader,
            writer,
            decoder,
            inflater: Inflater::new(),
            encoder: Encoder::new(),
            deflater,
            input,
            start: 0,
            output: Vec::new(),
            masks: MaskKeys::new()?,
        })
    }

    /// Reads what the socket has into the input buffer; `Ok(0)` at the end
    /// of the stream. Decode it with [`Link::next_incoming`] until `None`.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes read are kept, a dropped call reads nothing.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        self.input.reserve(READ_CHUNK);
        self.reader.read_buf(&mut self.input).await
    }

    /// The next whole message in the bytes read so far, if any.
    ///
    /// # Errors
    /// The server broke RFC 6455 or a limit: send
    /// [`ProtocolError::close_code`] with [`Link::queue_close`] and drop
    /// the link.
    pub(crate) fn next_incoming(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        while self.start < self.input.len() {
            let (consumed, message) = self
                .decoder
                .decode(&mut self.input[self.start..], &mut self.inflater)?;
            let incoming = message.map(|message| match message {
                Message::Text(text) => Incoming::Text(text.to_owned()),
                Message::Binary(bytes) => Incoming::Binary(bytes.to_vec()),
                Message::Ping(payload) => Incoming::Ping(payload.to_vec()),
                Message::Pong(_) => Incoming::Pong,
                Message::Close(frame) => match frame {
                    Some(frame) => Incoming::Close(frame.code, frame.reason.to_owned()),
                    None => Incoming::Close(CloseCode::NO_STATUS, String::new()),
                },
            });
            self.start += consumed;
            if incoming.is_some() {
                return Ok(incoming);
            }
        }
        self.input.clear();
        self.start = 0;
        Ok(None)
    }

    fn mask(&mut self) -> [u8; 4] {
        self.masks.next()
    }

    /// Queues a binary message, compressed when that pays.
    pub(crate) fn queue_binary(&mut self, payload: &[u8]) {
        let key = self.mask();
        let deflater = match &mut self.deflater {
            Some((deflater, limit)) if payload.len() <= *limit => Some(deflater),
            _ => None,
        };
        self.encoder
            .binary(&mut self.output, payload, deflater, key);
    }

    /// Queues a text message, compressed when that pays.
    pub(crate) fn queue_text(&mut self, text: &str) {
        let key = self.mask();
        let deflater = match &mut self.deflater {
            Some((deflater, limit)) if text.len() <= *limit => Some(deflater),
            _ => None,
        };
        self.encoder.text(&mut self.output, text, deflater, key);
    }

    /// Queues the pong that answers a ping with `payload` (at most 125
    /// bytes, as the decoder guarantees for a received ping).
    pub(crate) fn queue_pong(&mut self, payload: &[u8]) {
        let key = self.mask();
        if let Err(error) = self.encoder.pong(&mut self.output, payload, key) {
            tracing::warn!(%error, "a ping's payload cannot be echoed");
        }
    }

    /// Queues a ping.
    pub(crate) fn queue_ping(&mut self) {
        let key = self.mask();
        if let Err(error) = self.encoder.ping(&mut self.output, b"", key) {
            tracing::warn!(%error, "ping not sent");
        }
    }

    /// Queues a close frame with `code` and `reason` (a code that may not
    /// be sent, such as 1005, becomes a close frame without a code).
    pub(crate) fn queue_close(&mut self, code: CloseCode, reason: &str) {
        let key = self.mask();
        let frame = code
            .is_allowed_on_wire()
            .then_some(CloseFrame { code, reason });
        if let Err(error) = self.encoder.close(&mut self.output, frame, key) {
            tracing::warn!(%error, "close frame not sent");
        }
    }

    /// Writes every queued byte, giving up after `bound`: a server (or a
    /// link) that takes nothing for that long is as dead as a silent one.
    ///
    /// # Cancel safety
    /// Not cancel safe: await it to the end.
    pub(crate) async fn flush(&mut self, bound: Duration) -> Result<(), Error> {
        if self.output.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(bound, self.writer.write_all(&self.output))
            .await
            .map_err(|_| Error::Timeout)??;
        self.output.clear();
        Ok(())
    }
}
