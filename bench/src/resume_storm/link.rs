//! One client's shardcast.v1 connection: TCP, the upgrade offering
//! `shardcast.v1`, framing of the envelopes it sends, and a reading loop
//! that hands every envelope it receives to the caller, answering pings
//! on the way.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use anyhow::{Context, bail};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use shardcast_proto::Client;
use shardcast_proto::deflate::Inflater;
use shardcast_proto::envelope::{self, Envelope};
use shardcast_proto::frame::{Decoder, DecoderConfig, Encoder, Message, OpCode};

use crate::client::{self, Target, XorShift};
use crate::room_protocol::ENVELOPE_LIMITS;

/// The WebSocket subprotocol of shardcast's envelopes.
const SHARDCAST_V1: &str = "shardcast.v1";

/// Bytes a read asks for at most.
const READ_SIZE: usize = 4096;

/// Whether [`Link::pump`] goes on after an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// Return once the message that carried this envelope is handled.
    Stop,
}

/// How [`Link::pump`] ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The handler asked to stop.
    Stopped,
    /// The connection's reading side ended (the peer closed, or this end
    /// shut it down).
    Closed,
}

/// Frames for the server, written by [`Link::pump`] after each read.
pub(crate) struct Outbox<'a> {
    /// Framed bytes waiting to be written.
    out: &'a mut Vec<u8>,
    /// Masking keys.
    rng: &'a mut XorShift,
}

impl Outbox<'_> {
    /// Queues `envelope` as one binary message.
    pub(crate) fn send(&mut self, envelope: &[u8]) {
        Encoder::<Client>::new().frame(
            self.out,
            OpCode::Binary,
            true,
            envelope,
            self.rng.mask_key(),
        );
    }
}

/// The reading state of a connection: its decoder and the bytes read
/// and not decoded yet.
struct Decoding {
    /// The server's frames.
    decoder: Decoder<Client>,
    /// For compressed messages, which are not negotiated: shared by every
    /// link of a thread.
    inflater: Rc<RefCell<Inflater>>,
    /// Bytes read and not decoded yet.
    incoming: Vec<u8>,
}

impl Decoding {
    /// Decodes what was read, handing each envelope (each item of a batch)
    /// to `handle` and queuing pongs and what `handle` sends in `out`;
    /// stops after the message whose envelope asked to, keeping the bytes
    /// after it. Returns whether it stopped so.
    fn decode(
        &mut self,
        out: &mut Vec<u8>,
        rng: &mut XorShift,
        handle: &mut impl FnMut(Envelope<'_>, &mut Outbox<'_>) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<bool> {
        let Decoding {
            decoder,
            inflater,
            incoming,
        } = self;
        let mut inflater = inflater.borrow_mut();
        let filled = incoming.len();
        let (mut offset, mut stopped) = (0, false);
        while offset < filled && !stopped {
            let (used, message) = decoder.decode(&mut incoming[offset..filled], &mut inflater)?;
            offset += used;
            match message {
                None | Some(Message::Pong(_)) => {}
                Some(Message::Ping(payload)) => {
                    Encoder::<Client>::new().pong(out, payload, rng.mask_key())?;
                }
                Some(Message::Binary(bytes)) => {
                    let envelope = envelope::read(bytes, &ENVELOPE_LIMITS)
                        .context("reading a shardcast.v1 envelope")?;
                    let mut outbox = Outbox {
                        out: &mut *out,
                        rng: &mut *rng,
                    };
                    for item in envelope::items(envelope) {
                        stopped |= handle(item, &mut outbox)? == Flow::Stop;
                    }
                }
                Some(Message::Close(frame)) => {
                    bail!("the server closed the connection: {frame:?}")
                }
                Some(other) => bail!("unexpected {other:?} from the server"),
            }
        }
        incoming.drain(..offset);
        Ok(stopped)
    }

    /// Reads the next bytes from `reader`; false when the reading side
    /// ended.
    async fn read(&mut self, reader: &mut impl AsyncReadRent) -> anyhow::Result<bool> {
        let (result, incoming) = reader.read(std::mem::take(&mut self.incoming)).await;
        self.incoming = incoming;
        Ok(result.context("receiving")? > 0)
    }
}

/// An upgraded shardcast.v1 connection.
pub(crate) struct Link {
    /// The connection.
    stream: TcpStream,
    /// What it read.
    decoding: Decoding,
    /// Frames waiting to be written.
    out: Vec<u8>,
    /// Masking keys.
    rng: XorShift,
}

impl Link {
    /// Upgrades `stream`, connected to `target`, offering shardcast.v1,
    /// which the server must accept.
    pub(crate) async fn upgrade(
        mut stream: TcpStream,
        target: &Target,
        inflater: Rc<RefCell<Inflater>>,
        mut rng: XorShift,
    ) -> anyhow::Result<Link> {
        stream.set_nodelay(true)?;
        let mut incoming =
            client::handshake(&mut stream, target, Some(SHARDCAST_V1), &mut rng).await?;
        incoming.reserve(READ_SIZE);
        Ok(Link {
            stream,
            decoding: Decoding {
                decoder: Decoder::new(DecoderConfig::DEFAULT),
                inflater,
                incoming,
            },
            out: Vec::new(),
            rng,
        })
    }

    /// Connects to `target` from 127.0.0.1 and upgrades.
    pub(crate) async fn open(
        target: &Target,
        inflater: Rc<RefCell<Inflater>>,
        rng: XorShift,
    ) -> anyhow::Result<Link> {
        let stream = TcpStream::connect_addr(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        Link::upgrade(stream, target, inflater, rng).await
    }

    /// The connection's socket.
    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Queues `envelope` for the next write.
    pub(crate) fn send(&mut self, envelope: &[u8]) {
        Outbox {
            out: &mut self.out,
            rng: &mut self.rng,
        }
        .send(envelope);
    }

    /// Writes what is queued.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        write_out(&mut self.stream, &mut self.out).await
    }

    /// Reads and decodes what the server sends, handing each envelope
    /// (each item of a batch) to `handle`, which may queue envelopes in
    /// the [`Outbox`]; writes what is queued after each read. Answers
    /// pings. Returns when `handle` asks to stop (what was read after its
    /// message stays for the next call) or the reading side ends; fails on
    /// a close frame, anything but binary envelopes, a failure of
    /// `handle`, or a failed read or write.
    pub(crate) async fn pump(
        &mut self,
        mut handle: impl FnMut(Envelope<'_>, &mut Outbox<'_>) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<Ended> {
        loop {
            let stopped = self
                .decoding
                .decode(&mut self.out, &mut self.rng, &mut handle)?;
            self.flush().await?;
            if stopped {
                return Ok(Ended::Stopped);
            }
            if !self.decoding.read(&mut self.stream).await? {
                return Ok(Ended::Closed);
            }
        }
    }

    /// Splits the link into a reading task's side and a writer, for a
    /// connection that writes while its reads are awaited.
    pub(crate) fn split(self) -> (ReadSide, WriteSide) {
        let (reader, writer) = self.stream.into_split();
        let mut rng = self.rng;
        let read_side = ReadSide {
            reader,
            decoding: self.decoding,
            rng: XorShift::new(rng.next()),
            control: Rc::new(RefCell::new(Vec::new())),
        };
        let write_side = WriteSide {
            writer,
            out: self.out,
            rng,
            control: Rc::clone(&read_side.control),
        };
        (read_side, write_side)
    }
}

/// The reading side of a split [`Link`].
pub(crate) struct ReadSide {
    /// The connection's reading half.
    reader: OwnedReadHalf<TcpStream>,
    /// What it read.
    decoding: Decoding,
    /// Masking keys of its pongs.
    rng: XorShift,
    /// Pongs (and what the handler sends), written with the writer's next
    /// write.
    control: Rc<RefCell<Vec<u8>>>,
}

impl ReadSide {
    /// Reads until the connection ends, handing each envelope to `handle`
    /// as [`Link::pump`] does; what it queues goes out with the writer's
    /// next write. Ends with an error: the connection is not expected to
    /// end first.
    pub(crate) async fn run(
        mut self,
        mut handle: impl FnMut(Envelope<'_>, &mut Outbox<'_>) -> anyhow::Result<Flow>,
    ) -> anyhow::Error {
        loop {
            let decoded = {
                let mut control = self.control.borrow_mut();
                self.decoding
                    .decode(&mut control, &mut self.rng, &mut handle)
            };
            if let Err(error) = decoded {
                return error;
            }
            match self.decoding.read(&mut self.reader).await {
                Ok(true) => {}
                Ok(false) => return anyhow::anyhow!("the server closed the TCP connection"),
                Err(error) => return error,
            }
        }
    }
}

/// The writing side of a split [`Link`].
pub(crate) struct WriteSide {
    /// The connection's writing half.
    writer: OwnedWriteHalf<TcpStream>,
    /// Frames waiting to be written.
    out: Vec<u8>,
    /// Masking keys.
    rng: XorShift,
    /// What the reading side queued.
    control: Rc<RefCell<Vec<u8>>>,
}

impl WriteSide {
    /// Queues `envelope` for the next write.
    pub(crate) fn send(&mut self, envelope: &[u8]) {
        Outbox {
            out: &mut self.out,
            rng: &mut self.rng,
        }
        .send(envelope);
    }

    /// Writes what is queued, and what the reading side queued.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        self.out.append(&mut self.control.borrow_mut());
        write_out(&mut self.writer, &mut self.out).await
    }
}

/// Writes and clears `out`, if it holds anything.
async fn write_out(writer: &mut impl AsyncWriteRent, out: &mut Vec<u8>) -> anyhow::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let (result, written) = writer.write_all(std::mem::take(out)).await;
    *out = written;
    out.clear();
    result.context("sending")?;
    Ok(())
}
