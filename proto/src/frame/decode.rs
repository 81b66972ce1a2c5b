//! The per-connection frame decoder: bytes in, whole messages out.

use std::marker::PhantomData;

use super::header::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::opcode::OpCode;
use crate::close::CloseCode;
use crate::deflate::Inflater;
use crate::error::ProtocolError;
use crate::role::Role;
use crate::utf8::Utf8Validator;

/// A message buffer larger than this, in bytes, is freed rather than kept
/// for reuse once its message has been handed out: messages up to 64 KiB
/// reuse one allocation, larger ones do not pin their memory.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// The limits and negotiated options of one connection's [`Decoder`].
///
/// Every limit is checked before memory is reserved for it, and crossing
/// one fails the connection with close code 1009.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// The largest payload one frame may declare, in bytes. Default 16 MiB.
    ///
    /// Checked against the header's length field before any of the payload
    /// is buffered. Lower it to bound the memory a peer can make one
    /// connection hold; raising it only matters for peers that do not
    /// fragment large messages.
    pub max_frame_size: usize,
    /// The largest message, in bytes, summed over its fragments (compressed
    /// size for a compressed message). Default 64 MiB.
    ///
    /// Checked as each frame header arrives, before its payload is
    /// buffered. This bounds the memory one connection's message buffer may
    /// reach; the engine's number of connections times this is the worst
    /// case, so lower it for many-connection deployments with small
    /// messages.
    pub max_message_size: usize,
    /// The largest size, in bytes, a compressed message may inflate to.
    /// Default 64 MiB.
    ///
    /// Enforced while inflating, so a small message that would inflate to
    /// gigabytes (a "zip bomb") fails without that memory being reserved.
    pub max_decompressed_size: usize,
    /// Whether permessage-deflate was negotiated in the handshake. Default
    /// `false`.
    ///
    /// When set, RSV1 is accepted on the first frame of a data message and
    /// means the message is compressed; when clear, RSV1 is a protocol
    /// error like RSV2 and RSV3.
    pub compression: bool,
}

impl DecoderConfig {
    /// The defaults: 16 MiB frames, 64 MiB messages, 64 MiB inflated, no
    /// compression.
    pub const DEFAULT: DecoderConfig = DecoderConfig {
        max_frame_size: 16 << 20,
        max_message_size: 64 << 20,
        max_decompressed_size: 64 << 20,
        compression: false,
    };
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig::DEFAULT
    }
}

/// A whole message received from the peer.
///
/// It borrows either the caller's input buffer (a complete frame that
/// arrived in one read is unmasked in place and returned without a copy),
/// the decoder's message buffer, or the inflater's output buffer; use it
/// before the next call to [`Decoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, validated as UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping: answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong: the answer to a ping this end sent, or a heartbeat.
    Pong(&'a [u8]),
    /// The peer started the close handshake (or answered ours): `None` when
    /// the frame carried no status code. Answer with a close frame, then
    /// close the connection; the decoder refuses any further frame.
    Close(Option<CloseFrame<'a>>),
}

/// The status code and reason of a close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// Why the connection is closing.
    pub code: CloseCode,
    /// A human-readable reason, possibly empty; at most 123 bytes on the wire.
    pub reason: &'a str,
}

/// The frame whose payload is being received.
#[derive(Clone, Copy, Debug)]
struct Frame {
    opcode: OpCode,
    fin: bool,
    key: [u8; 4],
    /// Payload bytes already received, modulo 4: where the mask resumes.
    mask_offset: u8,
    remaining: u64,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Header,
    Payload(Frame),
}

/// The data message being assembled in the message buffer.
#[derive(Clone, Copy, Debug)]
struct Assembly {
    text: bool,
    compressed: bool,
}

/// What a call to `advance` completed, before it is turned into a borrowed
/// [`Message`].
#[derive(Clone, Copy, Debug)]
enum Done {
    /// A whole frame inside the input, unmasked in place at `start..end`.
    Input { opcode: OpCode, start: usize, end: usize },
    /// A control frame gathered in the decoder's control array.
    Control(OpCode),
    /// A data message gathered in the message buffer.
    Buffered { text: bool },
    /// A compressed data message gathered in the message buffer.
    Compressed { text: bool },
}

/// Decodes the frames one peer sends into whole messages: a sans-I/O state
/// machine, one per connection, for role `R` (a `Decoder<Server>` reads
/// what a client sends).
///
/// It enforces RFC 6455 and RFC 7692 framing rules and the limits of its
/// [`DecoderConfig`], reassembles fragmented messages, answers no frame
/// itself (pings, close) and never touches a socket.
///
/// An idle decoder holds no heap memory once [`Decoder::release_memory`]
/// has been called; a partial header or control frame lives in small inline
/// arrays, and only data messages that are fragmented, compressed, or split
/// across reads go through the heap-allocated message buffer.
#[derive(Debug)]
pub struct Decoder<R> {
    config: DecoderConfig,
    /// The data message being assembled; after a buffered message is
    /// returned, it stays here until the next call clears it.
    buf: Vec<u8>,
    state: State,
    message: Option<Assembly>,
    utf8: Utf8Validator,
    closed: bool,
    buf_returned: bool,
    head_len: u8,
    control_len: u8,
    head: [u8; MAX_HEADER_LEN],
    control: [u8; MAX_CONTROL_PAYLOAD],
    role: PhantomData<R>,
}

impl<R: Role> Decoder<R> {
    /// A decoder at the start of a connection, with the given limits.
    #[must_use]
    pub const fn new(config: DecoderConfig) -> Self {
        Decoder {
            config,
            buf: Vec::new(),
            state: State::Header,
            message: None,
            utf8: Utf8Validator::new(),
            closed: false,
            buf_returned: false,
            head_len: 0,
            control_len: 0,
            head: [0; MAX_HEADER_LEN],
            control: [0; MAX_CONTROL_PAYLOAD],
            role: PhantomData,
        }
    }

    /// The limits and options this decoder enforces.
    #[must_use]
    pub const fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Whether the decoder accepts no more frames: the peer sent a close
    /// frame, or [`Decoder::decode`] returned an error.
    #[must_use]
    pub const fn is_closed(&self) -> bool {
        self.closed
    }

    /// Heap memory this decoder holds, in bytes: the capacity of its message
    /// buffer. For metrics, and to check that idle connections hold none.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Frees the message buffer unless it holds part of a message still
    /// being received.
    ///
    /// Call it when a connection goes idle (its socket has no data ready),
    /// so idle connections hold no heap memory; the next message that needs
    /// buffering allocates again. Not calling it keeps up to 64 KiB per
    /// connection for reuse.
    pub fn release_memory(&mut self) {
        if self.message.is_none() {
            self.buf = Vec::new();
            self.buf_returned = false;
        }
    }

    /// Feeds bytes read from the connection and returns how many were
    /// consumed, and the message they completed, if any.
    ///
    /// Call it whenever bytes arrive, with all of them, and again with
    /// `&mut input[consumed..]` until `input` is used up: each call
    /// consumes bytes up to the end of the next complete message (at most
    /// one per call) or to the end of `input`, and returns `(0, None)` only
    /// for an empty `input`. Nothing needs to be kept or fed again: a
    /// partial header or frame is copied into the decoder, so `input` may
    /// be a buffer shared by every connection of the shard.
    ///
    /// `input` is modified: payloads are unmasked in place, and a complete
    /// unfragmented frame is returned as a slice of it without a copy. The
    /// returned [`Message`] borrows `input`, the decoder or `inflater`,
    /// and must be handled before the next call. Answer a
    /// [`Message::Ping`] with a pong and a [`Message::Close`] with a close
    /// frame; the decoder sends nothing itself.
    ///
    /// `inflater` is used only for compressed messages; one per shard is
    /// enough.
    ///
    /// # Errors
    /// Any breach of RFC 6455, RFC 7692 or a configured limit. Send a close
    /// frame with [`ProtocolError::close_code`] and close the connection;
    /// the decoder is closed from then on and refuses further input with
    /// [`ProtocolError::FrameAfterClose`].
    #[must_use = "the consumed count and the message must be acted on"]
    pub fn decode<'a>(
        &'a mut self,
        input: &'a mut [u8],
        inflater: &'a mut Inflater,
    ) -> Result<(usize, Option<Message<'a>>), ProtocolError> {
        if self.buf_returned {
            self.recycle_buffer();
        }
        if input.is_empty() {
            return Ok((0, None));
        }
        if self.closed {
            return Err(ProtocolError::FrameAfterClose);
        }
        let (consumed, done) = match self.advance(input) {
            Ok((consumed, Some(done))) => (consumed, done),
            Ok((consumed, None)) => return Ok((consumed, None)),
            Err(error) => {
                self.closed = true;
                return Err(error);
            }
        };
        let message = match done {
            Done::Input { opcode, start, end } => {
                let message = to_message(opcode, &input[start..end]);
                if message.is_err() || opcode == OpCode::Close {
                    self.closed = true;
                }
                message
            }
            // A close frame has already closed the decoder, so an invalid
            // one needs no more bookkeeping.
            Done::Control(opcode) => {
                to_message(opcode, &self.control[..usize::from(self.control_len)])
            }
            // Validated fragment by fragment already.
            Done::Buffered { text } => {
                self.buf_returned = true;
                to_message(data_opcode(text), &self.buf)
            }
            Done::Compressed { text } => {
                self.buf_returned = true;
                let max = self.config.max_decompressed_size;
                let message = inflater
                    .inflate(&mut self.buf, max)
                    .and_then(|inflated| to_message(data_opcode(text), inflated));
                if message.is_err() {
                    self.closed = true;
                }
                message
            }
        }?;
        Ok((consumed, Some(message)))
    }

    fn recycle_buffer(&mut self) {
        self.buf_returned = false;
        if self.buf.capacity() > RETAINED_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Consumes `input` up to the end of the next message or of `input`.
    fn advance(&mut self, input: &mut [u8]) -> Result<(usize, Option<Done>), ProtocolError> {
        let mut pos = 0;
        loop {
            let mut frame = match self.state {
                State::Payload(frame) => frame,
                State::Header => {
                    let Some(header) = self.read_header(input, &mut pos)? else {
                        return Ok((pos, None));
                    };
                    let frame = self.start_frame(&header)?;
                    let whole_message = header.opcode.is_control()
                        || (header.fin && !header.rsv1 && header.opcode != OpCode::Continuation);
                    let available = (input.len() - pos) as u64;
                    if whole_message && frame.remaining <= available {
                        // Zero-copy: the whole frame is here and is the whole message.
                        let start = pos;
                        pos += frame.remaining as usize;
                        if R::RECEIVES_MASKED {
                            apply_mask(&mut input[start..pos], frame.key, 0);
                        }
                        let done = Done::Input {
                            opcode: header.opcode,
                            start,
                            end: pos,
                        };
                        return Ok((pos, Some(done)));
                    }
                    if header.opcode.is_control() {
                        self.control_len = 0;
                    } else if header.opcode != OpCode::Continuation {
                        self.utf8.reset();
                        self.message = Some(Assembly {
                            text: header.opcode == OpCode::Text,
                            compressed: header.rsv1,
                        });
                    }
                    frame
                }
            };
            let take = frame.remaining.min((input.len() - pos) as u64) as usize;
            let chunk = &mut input[pos..pos + take];
            pos += take;
            if R::RECEIVES_MASKED {
                apply_mask(chunk, frame.key, usize::from(frame.mask_offset));
                frame.mask_offset = ((usize::from(frame.mask_offset) + take) % 4) as u8;
            }
            frame.remaining -= take as u64;
            if frame.opcode.is_control() {
                let start = usize::from(self.control_len);
                self.control[start..start + take].copy_from_slice(chunk);
                self.control_len += take as u8;
            } else {
                if let Some(Assembly {
                    text: true,
                    compressed: false,
                }) = self.message
                {
                    self.utf8.feed(chunk)?;
                }
                self.buf.extend_from_slice(chunk);
            }
            if frame.remaining > 0 {
                self.state = State::Payload(frame);
                return Ok((pos, None));
            }
            self.state = State::Header;
            if frame.opcode.is_control() {
                if frame.opcode == OpCode::Close {
                    self.closed = true;
                }
                return Ok((pos, Some(Done::Control(frame.opcode))));
            }
            if frame.fin {
                if let Some(assembly) = self.message.take() {
                    if assembly.compressed {
                        return Ok((pos, Some(Done::Compressed { text: assembly.text })));
                    }
                    if assembly.text {
                        self.utf8.finish()?;
                    }
                    return Ok((pos, Some(Done::Buffered { text: assembly.text })));
                }
            }
        }
    }

    /// Reads a header from the partial header kept from earlier calls and
    /// `input[*pos..]`, consuming only the header's bytes; keeps whatever
    /// it finds if the header is still incomplete.
    fn read_header(
        &mut self,
        input: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, ProtocolError> {
        let rest = &input[*pos..];
        let have = usize::from(self.head_len);
        if have == 0 {
            if let Some((header, len)) = FrameHeader::parse(rest)? {
                *pos += len;
                return Ok(Some(header));
            }
            // Incomplete, so shorter than MAX_HEADER_LEN.
            self.head[..rest.len()].copy_from_slice(rest);
            self.head_len = rest.len() as u8;
            *pos = input.len();
            return Ok(None);
        }
        let take = (MAX_HEADER_LEN - have).min(rest.len());
        self.head[have..have + take].copy_from_slice(&rest[..take]);
        match FrameHeader::parse(&self.head[..have + take])? {
            Some((header, len)) => {
                // The kept bytes were not a whole header, so `len > have`.
                *pos += len.saturating_sub(have);
                self.head_len = 0;
                Ok(Some(header))
            }
            None => {
                self.head_len = (have + take) as u8;
                *pos += take;
                Ok(None)
            }
        }
    }

    /// Checks a complete header against the role, the negotiated
    /// extensions, the message in progress and the limits, before any of
    /// its payload is stored.
    fn start_frame(&self, header: &FrameHeader) -> Result<Frame, ProtocolError> {
        let key = match (R::RECEIVES_MASKED, header.mask) {
            (true, None) => return Err(ProtocolError::UnmaskedFrame),
            (false, Some(_)) => return Err(ProtocolError::MaskedFrame),
            (_, key) => key.unwrap_or_default(),
        };
        if header.rsv1 && !self.config.compression {
            return Err(ProtocolError::ReservedBitsSet(0b100));
        }
        if header.opcode.is_control() {
            if header.rsv1 {
                return Err(ProtocolError::CompressedControlFrame);
            }
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong(header.payload_len));
            }
        } else {
            match (header.opcode, self.message.is_some()) {
                (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Continuation, true) if header.rsv1 => {
                    return Err(ProtocolError::CompressedContinuation);
                }
                (OpCode::Text | OpCode::Binary, true) => {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                _ => {}
            }
            if header.payload_len > self.config.max_frame_size as u64 {
                return Err(ProtocolError::FrameTooLarge {
                    size: header.payload_len,
                    max: self.config.max_frame_size,
                });
            }
            let so_far = if self.message.is_some() {
                self.buf.len() as u64
            } else {
                0
            };
            let size = so_far.saturating_add(header.payload_len);
            if size > self.config.max_message_size as u64 {
                return Err(ProtocolError::MessageTooLarge {
                    size,
                    max: self.config.max_message_size,
                });
            }
        }
        Ok(Frame {
            opcode: header.opcode,
            fin: header.fin,
            key,
            mask_offset: 0,
            remaining: header.payload_len,
        })
    }
}

impl<R: Role> Default for Decoder<R> {
    fn default() -> Self {
        Decoder::new(DecoderConfig::DEFAULT)
    }
}

fn data_opcode(text: bool) -> OpCode {
    if text { OpCode::Text } else { OpCode::Binary }
}

/// Turns a whole, unmasked payload into a message, validating text and
/// close payloads. Never called with `Continuation`.
fn to_message(opcode: OpCode, payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    match opcode {
        OpCode::Text => simdutf8::basic::from_utf8(payload)
            .map(Message::Text)
            .map_err(|_| ProtocolError::InvalidUtf8),
        OpCode::Binary | OpCode::Continuation => Ok(Message::Binary(payload)),
        OpCode::Ping => Ok(Message::Ping(payload)),
        OpCode::Pong => Ok(Message::Pong(payload)),
        OpCode::Close => parse_close(payload).map(Message::Close),
    }
}

/// Reads a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [high, low, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*high, *low]));
            if !code.is_allowed_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason =
                simdutf8::basic::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}
