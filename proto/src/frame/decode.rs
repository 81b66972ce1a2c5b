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
/// one fails the connection with close code 1009. A limit above 4 GiB
/// acts as 4 GiB: a decoder keeps its limits in 32 bits.
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
    /// Payload bytes still to come: a frame's declared length fits in
    /// 32 bits once checked against the (32-bit) limits.
    remaining: u32,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Header,
    Payload(Frame),
}

/// A [`DecoderConfig`] as a decoder keeps it: 32-bit limits (4 GiB at
/// most), so that each connection's decoder stays small.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_frame_size: u32,
    max_message_size: u32,
    max_decompressed_size: u32,
    compression: bool,
}

impl Limits {
    const fn of(config: DecoderConfig) -> Limits {
        const fn clamp(limit: usize) -> u32 {
            if limit > u32::MAX as usize {
                u32::MAX
            } else {
                limit as u32
            }
        }
        Limits {
            max_frame_size: clamp(config.max_frame_size),
            max_message_size: clamp(config.max_message_size),
            max_decompressed_size: clamp(config.max_decompressed_size),
            compression: config.compression,
        }
    }
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
    Input {
        opcode: OpCode,
        start: usize,
        end: usize,
    },
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
/// has been called; a partial header lives in a small inline array, a
/// control frame cut across reads in a small box freed once it is handed
/// out, and only data messages that are fragmented, compressed, or split
/// across reads go through the heap-allocated message buffer.
#[derive(Debug)]
pub struct Decoder<R> {
    limits: Limits,
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
    /// A control frame cut by a read boundary, gathered here: allocated
    /// when one is (rarely) cut, freed once it has been handed out, so a
    /// decoder does not carry 125 bytes for it.
    control: Option<Box<[u8; MAX_CONTROL_PAYLOAD]>>,
    control_returned: bool,
    role: PhantomData<R>,
}

impl<R: Role> Decoder<R> {
    /// A decoder at the start of a connection, with the given limits.
    #[must_use]
    pub const fn new(config: DecoderConfig) -> Self {
        Decoder {
            limits: Limits::of(config),
            buf: Vec::new(),
            state: State::Header,
            message: None,
            utf8: Utf8Validator::new(),
            closed: false,
            buf_returned: false,
            head_len: 0,
            control_len: 0,
            head: [0; MAX_HEADER_LEN],
            control: None,
            control_returned: false,
            role: PhantomData,
        }
    }

    /// The limits and options this decoder enforces (limits above
    /// 4 GiB read as 4 GiB, which is what is enforced).
    #[must_use]
    pub const fn config(&self) -> DecoderConfig {
        DecoderConfig {
            max_frame_size: self.limits.max_frame_size as usize,
            max_message_size: self.limits.max_message_size as usize,
            max_decompressed_size: self.limits.max_decompressed_size as usize,
            compression: self.limits.compression,
        }
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
        drop(self.take_buffer());
    }

    /// Takes the message buffer out, emptied, unless it holds part of a
    /// message still being received (then `None`), or has no capacity.
    ///
    /// With [`Decoder::lend_buffer`], lets many decoders share a pool of
    /// buffers: a server takes the buffer back when a connection goes idle
    /// and lends one before feeding the next bytes, so idle connections
    /// hold no heap memory and busy ones do not allocate.
    pub fn take_buffer(&mut self) -> Option<Vec<u8>> {
        if self.message.is_some() || self.buf.capacity() == 0 {
            return None;
        }
        self.buf_returned = false;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        Some(buf)
    }

    /// Gives the decoder `buffer` to gather messages in, if it holds no
    /// buffer of its own; otherwise hands `buffer` back. Its contents are
    /// discarded.
    pub fn lend_buffer(&mut self, mut buffer: Vec<u8>) -> Option<Vec<u8>> {
        if self.buf.capacity() != 0 {
            return Some(buffer);
        }
        buffer.clear();
        self.buf = buffer;
        None
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
        if self.control_returned {
            self.control_returned = false;
            self.control = None;
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
                self.control_returned = true;
                let payload = match &self.control {
                    Some(control) => &control[..usize::from(self.control_len)],
                    None => &[],
                };
                to_message(opcode, payload)
            }
            // Validated fragment by fragment already.
            Done::Buffered { text } => {
                self.buf_returned = true;
                to_message(data_opcode(text), &self.buf)
            }
            Done::Compressed { text } => {
                self.buf_returned = true;
                let max = self.limits.max_decompressed_size as usize;
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
                    let available = input.len() - pos;
                    if whole_message && frame.remaining as usize <= available {
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
            let take = (frame.remaining as usize).min(input.len() - pos);
            let chunk = &mut input[pos..pos + take];
            pos += take;
            if R::RECEIVES_MASKED {
                apply_mask(chunk, frame.key, usize::from(frame.mask_offset));
                frame.mask_offset = ((usize::from(frame.mask_offset) + take) % 4) as u8;
            }
            // `take` is at most `remaining`, a u32.
            frame.remaining -= take as u32;
            if frame.opcode.is_control() {
                let start = usize::from(self.control_len);
                let control = self
                    .control
                    .get_or_insert_with(|| Box::new([0; MAX_CONTROL_PAYLOAD]));
                control[start..start + take].copy_from_slice(chunk);
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
                        return Ok((
                            pos,
                            Some(Done::Compressed {
                                text: assembly.text,
                            }),
                        ));
                    }
                    if assembly.text {
                        self.utf8.finish()?;
                    }
                    return Ok((
                        pos,
                        Some(Done::Buffered {
                            text: assembly.text,
                        }),
                    ));
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
        if header.rsv1 && !self.limits.compression {
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
            if header.payload_len > u64::from(self.limits.max_frame_size) {
                return Err(ProtocolError::FrameTooLarge {
                    size: header.payload_len,
                    max: self.limits.max_frame_size as usize,
                });
            }
            let so_far = if self.message.is_some() {
                self.buf.len() as u64
            } else {
                0
            };
            let size = so_far.saturating_add(header.payload_len);
            if size > u64::from(self.limits.max_message_size) {
                return Err(ProtocolError::MessageTooLarge {
                    size,
                    max: self.limits.max_message_size as usize,
                });
            }
        }
        // A control frame's payload is at most 125 bytes and a data
        // frame's at most the 32-bit frame limit, both checked above.
        let remaining =
            u32::try_from(header.payload_len).map_err(|_| ProtocolError::FrameTooLarge {
                size: header.payload_len,
                max: self.limits.max_frame_size as usize,
            })?;
        Ok(Frame {
            opcode: header.opcode,
            fin: header.fin,
            key,
            mask_offset: 0,
            remaining,
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
/// close payloads. Never called with `Continuation`. Inlined into
/// `decode`: returned through memory, the message cost a store-forwarding
/// stall per frame.
#[inline]
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
#[cold]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Deflater;
    use crate::role::{Client, Server};

    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// Builds one frame by hand, masked when `mask` is given.
    fn raw(
        fin: bool,
        rsv1: bool,
        opcode: OpCode,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) -> Vec<u8> {
        let header = FrameHeader {
            fin,
            rsv1,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let mut head = [0; MAX_HEADER_LEN];
        let len = header.encode(&mut head);
        let mut out = head[..len].to_vec();
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
    }

    /// A frame as a client sends it to a server.
    fn client(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        raw(fin, false, opcode, payload, Some(KEY))
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
    }

    impl From<Message<'_>> for Owned {
        fn from(message: Message<'_>) -> Self {
            match message {
                Message::Text(text) => Owned::Text(text.to_owned()),
                Message::Binary(data) => Owned::Binary(data.to_vec()),
                Message::Ping(data) => Owned::Ping(data.to_vec()),
                Message::Pong(data) => Owned::Pong(data.to_vec()),
                Message::Close(frame) => {
                    Owned::Close(frame.map(|frame| (frame.code.0, frame.reason.to_owned())))
                }
            }
        }
    }

    /// Feeds `bytes` in reads of at most `read_size` bytes, each copied into
    /// a scratch buffer as the engine's shared read buffer would be.
    fn feed<R: Role>(
        decoder: &mut Decoder<R>,
        bytes: &[u8],
        read_size: usize,
    ) -> Result<Vec<Owned>, ProtocolError> {
        let mut inflater = Inflater::new();
        let mut messages = Vec::new();
        for read in bytes.chunks(read_size.max(1)) {
            let mut scratch = read.to_vec();
            let mut input = &mut scratch[..];
            while !input.is_empty() {
                let (consumed, message) = decoder.decode(input, &mut inflater)?;
                assert!(consumed > 0, "non-empty input must be consumed");
                messages.extend(message.map(Owned::from));
                input = &mut input[consumed..];
            }
        }
        Ok(messages)
    }

    fn server() -> Decoder<Server> {
        Decoder::default()
    }

    fn compressing_server() -> Decoder<Server> {
        Decoder::new(DecoderConfig {
            compression: true,
            ..DecoderConfig::DEFAULT
        })
    }

    fn first_error<R: Role>(decoder: &mut Decoder<R>, bytes: &[u8]) -> ProtocolError {
        feed(decoder, bytes, bytes.len()).unwrap_err()
    }

    #[test]
    fn server_rejects_unmasked_client_frame_with_1002() {
        let error = first_error(&mut server(), &raw(true, false, OpCode::Text, b"hi", None));
        assert_eq!(error, ProtocolError::UnmaskedFrame);
        assert_eq!(error.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn client_rejects_masked_server_frame_with_1002() {
        let mut decoder = Decoder::<Client>::default();
        let error = first_error(&mut decoder, &client(true, OpCode::Text, b"hi"));
        assert_eq!(error, ProtocolError::MaskedFrame);
        assert_eq!(error.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn client_accepts_unmasked_server_frames() {
        let mut decoder = Decoder::<Client>::default();
        let bytes = raw(true, false, OpCode::Binary, b"data", None);
        assert_eq!(
            feed(&mut decoder, &bytes, 1),
            Ok(vec![Owned::Binary(b"data".to_vec())])
        );
    }

    #[test]
    fn rfc_6455_masked_hello_example_decodes() {
        let mut bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut inflater = Inflater::new();
        let mut decoder = server();
        let (consumed, message) = decoder.decode(&mut bytes, &mut inflater).unwrap();
        assert_eq!((consumed, message), (11, Some(Message::Text("Hello"))));
    }

    #[test]
    fn control_frame_longer_than_125_is_protocol_error() {
        let error = first_error(&mut server(), &client(true, OpCode::Ping, &[0; 126]));
        assert_eq!(error, ProtocolError::ControlFrameTooLong(126));
        assert_eq!(error.close_code(), CloseCode::PROTOCOL_ERROR);
        let ok = feed(&mut server(), &client(true, OpCode::Ping, &[7; 125]), 1000);
        assert_eq!(ok, Ok(vec![Owned::Ping(vec![7; 125])]));
    }

    #[test]
    fn fragmented_control_frame_is_protocol_error() {
        let error = first_error(&mut server(), &client(false, OpCode::Ping, b"x"));
        assert_eq!(error, ProtocolError::FragmentedControlFrame);
    }

    #[test]
    fn rsv1_without_negotiated_compression_is_protocol_error() {
        let bytes = raw(true, true, OpCode::Text, b"x", Some(KEY));
        assert_eq!(
            first_error(&mut server(), &bytes),
            ProtocolError::ReservedBitsSet(0b100)
        );
    }

    #[test]
    fn rsv2_and_rsv3_are_always_protocol_errors() {
        for (bit, reported) in [(0x20, 0b010), (0x10, 0b001)] {
            let mut bytes = client(true, OpCode::Text, b"x");
            bytes[0] |= bit;
            let error = first_error(&mut compressing_server(), &bytes);
            assert_eq!(error, ProtocolError::ReservedBitsSet(reported));
        }
    }

    #[test]
    fn reserved_opcode_is_protocol_error() {
        let mut bytes = client(true, OpCode::Binary, b"x");
        bytes[0] = 0x80 | 0xB;
        assert_eq!(
            first_error(&mut server(), &bytes),
            ProtocolError::ReservedOpcode(0xB)
        );
    }

    #[test]
    fn rsv1_on_control_frame_is_protocol_error_even_with_compression() {
        let bytes = raw(true, true, OpCode::Ping, b"x", Some(KEY));
        let error = first_error(&mut compressing_server(), &bytes);
        assert_eq!(error, ProtocolError::CompressedControlFrame);
    }

    #[test]
    fn rsv1_on_continuation_frame_is_protocol_error() {
        let mut bytes = raw(false, true, OpCode::Binary, b"x", Some(KEY));
        bytes.extend(raw(true, true, OpCode::Continuation, b"y", Some(KEY)));
        let error = first_error(&mut compressing_server(), &bytes);
        assert_eq!(error, ProtocolError::CompressedContinuation);
    }

    #[test]
    fn continuation_without_message_is_protocol_error() {
        let error = first_error(&mut server(), &client(true, OpCode::Continuation, b"x"));
        assert_eq!(error, ProtocolError::UnexpectedContinuation);
    }

    #[test]
    fn new_data_frame_during_fragmented_message_is_protocol_error() {
        let mut bytes = client(false, OpCode::Text, b"a");
        bytes.extend(client(true, OpCode::Binary, b"b"));
        assert_eq!(
            first_error(&mut server(), &bytes),
            ProtocolError::ExpectedContinuation
        );
    }

    #[test]
    fn sixty_four_bit_length_with_top_bit_set_is_protocol_error() {
        let bytes = [0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        let error = first_error(&mut server(), &bytes);
        assert_eq!(error, ProtocolError::InvalidPayloadLength);
    }

    #[test]
    fn non_minimal_length_encoding_is_accepted() {
        let mut bytes = vec![0x82, 0x80 | 126, 0, 3];
        bytes.extend_from_slice(&KEY);
        let mut payload = *b"abc";
        apply_mask(&mut payload, KEY, 0);
        bytes.extend_from_slice(&payload);
        assert_eq!(
            feed(&mut server(), &bytes, 100),
            Ok(vec![Owned::Binary(b"abc".to_vec())])
        );
    }

    #[test]
    fn control_frames_interleave_with_fragments_without_disturbing_the_message() {
        let mut bytes = client(false, OpCode::Text, b"Hel");
        bytes.extend(client(true, OpCode::Ping, b"p1"));
        bytes.extend(client(false, OpCode::Continuation, b"lo, "));
        bytes.extend(client(true, OpCode::Pong, b"p2"));
        bytes.extend(client(true, OpCode::Continuation, "wörld".as_bytes()));
        let expected = vec![
            Owned::Ping(b"p1".to_vec()),
            Owned::Pong(b"p2".to_vec()),
            Owned::Text("Hello, wörld".to_owned()),
        ];
        for read_size in [1, 2, 3, 5, 7, 11, bytes.len()] {
            let mut decoder = server();
            assert_eq!(
                feed(&mut decoder, &bytes, read_size),
                Ok(expected.clone()),
                "{read_size}"
            );
        }
    }

    #[test]
    fn every_read_boundary_decodes_the_same_messages() {
        let mut bytes = client(true, OpCode::Binary, &[1; 200]);
        bytes.extend(client(false, OpCode::Text, "añ".as_bytes()));
        bytes.extend(client(true, OpCode::Ping, &[9; 125]));
        bytes.extend(client(true, OpCode::Continuation, "b€😀".as_bytes()));
        bytes.extend(client(true, OpCode::Text, &[]));
        bytes.extend(client(true, OpCode::Binary, &[2; 70_000]));
        let expected = feed(&mut server(), &bytes, bytes.len()).unwrap();
        assert_eq!(expected.len(), 5);
        for split in 0..bytes.len().min(400) {
            let mut decoder = server();
            let mut inflater = Inflater::new();
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                let mut scratch = part.to_vec();
                let mut input = &mut scratch[..];
                while !input.is_empty() {
                    let (consumed, message) = decoder.decode(input, &mut inflater).unwrap();
                    got.extend(message.map(Owned::from));
                    input = &mut input[consumed..];
                }
            }
            assert_eq!(got, expected, "split {split}");
        }
    }

    #[test]
    fn empty_input_returns_nothing_consumed() {
        let mut inflater = Inflater::new();
        assert_eq!(server().decode(&mut [], &mut inflater), Ok((0, None)));
    }

    #[test]
    fn each_call_returns_at_most_one_message() {
        let mut bytes = client(true, OpCode::Binary, b"one");
        bytes.extend(client(true, OpCode::Binary, b"two"));
        let first_len = bytes.len() / 2;
        let mut decoder = server();
        let mut inflater = Inflater::new();
        let (consumed, message) = decoder.decode(&mut bytes, &mut inflater).unwrap();
        assert_eq!(
            (consumed, message),
            (first_len, Some(Message::Binary(b"one")))
        );
    }

    #[test]
    fn complete_frame_is_returned_zero_copy_from_input() {
        let mut bytes = client(true, OpCode::Binary, &[5; 300]);
        let range = bytes.as_ptr_range();
        let mut decoder = server();
        let mut inflater = Inflater::new();
        let (_, message) = decoder.decode(&mut bytes, &mut inflater).unwrap();
        let Some(Message::Binary(payload)) = message else {
            panic!("expected a binary message, got {message:?}");
        };
        assert!(range.contains(&payload.as_ptr()));
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn empty_close_payload_is_accepted() {
        let bytes = client(true, OpCode::Close, &[]);
        assert_eq!(
            feed(&mut server(), &bytes, 100),
            Ok(vec![Owned::Close(None)])
        );
    }

    #[test]
    fn close_code_and_reason_are_read() {
        let bytes = client(true, OpCode::Close, b"\x03\xe8bye");
        for read_size in [1, 100] {
            let expected = vec![Owned::Close(Some((1000, "bye".to_owned())))];
            assert_eq!(feed(&mut server(), &bytes, read_size), Ok(expected));
        }
    }

    #[test]
    fn one_byte_close_payload_is_protocol_error() {
        let error = first_error(&mut server(), &client(true, OpCode::Close, &[3]));
        assert_eq!(error, ProtocolError::InvalidClosePayload);
    }

    #[test]
    fn close_code_not_allowed_on_wire_is_protocol_error() {
        for code in [999u16, 1005, 1006, 1015, 5000] {
            for read_size in [1, 100] {
                let bytes = client(true, OpCode::Close, &code.to_be_bytes());
                let error = feed(&mut server(), &bytes, read_size).unwrap_err();
                assert_eq!(error, ProtocolError::InvalidCloseCode(code));
                assert_eq!(error.close_code(), CloseCode::PROTOCOL_ERROR);
            }
        }
    }

    #[test]
    fn close_reason_that_is_not_utf8_fails_with_1007() {
        let bytes = client(true, OpCode::Close, b"\x03\xe8\xff");
        let error = first_error(&mut server(), &bytes);
        assert_eq!(error, ProtocolError::InvalidUtf8);
        assert_eq!(error.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn frame_after_close_is_protocol_error() {
        let mut bytes = client(true, OpCode::Close, b"\x03\xe8");
        bytes.extend(client(true, OpCode::Ping, b""));
        let mut decoder = server();
        let mut inflater = Inflater::new();
        let (consumed, message) = decoder.decode(&mut bytes, &mut inflater).unwrap();
        assert!(matches!(message, Some(Message::Close(Some(_)))));
        assert!(decoder.is_closed());
        let error = decoder
            .decode(&mut bytes[consumed..], &mut inflater)
            .unwrap_err();
        assert_eq!(error, ProtocolError::FrameAfterClose);
    }

    #[test]
    fn decoder_refuses_input_after_an_error() {
        let mut decoder = server();
        let _ = first_error(&mut decoder, &raw(true, false, OpCode::Text, b"x", None));
        assert!(decoder.is_closed());
        let error = first_error(&mut decoder, &client(true, OpCode::Text, b"x"));
        assert_eq!(error, ProtocolError::FrameAfterClose);
    }

    #[test]
    fn frame_larger_than_limit_fails_with_1009_before_buffering() {
        let mut decoder = Decoder::<Server>::new(DecoderConfig {
            max_frame_size: 1000,
            ..DecoderConfig::DEFAULT
        });
        // Only the header arrives: the limit is checked from it alone.
        let header = FrameHeader {
            fin: true,
            rsv1: false,
            opcode: OpCode::Binary,
            mask: Some(KEY),
            payload_len: 1 << 40,
        };
        let mut head = [0; MAX_HEADER_LEN];
        let len = header.encode(&mut head);
        let error = first_error(&mut decoder, &head[..len]);
        assert_eq!(
            error,
            ProtocolError::FrameTooLarge {
                size: 1 << 40,
                max: 1000
            }
        );
        assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn message_larger_than_limit_across_fragments_fails_with_1009() {
        let mut decoder = Decoder::<Server>::new(DecoderConfig {
            max_message_size: 10,
            ..DecoderConfig::DEFAULT
        });
        let mut bytes = client(false, OpCode::Binary, &[0; 6]);
        bytes.extend(client(true, OpCode::Continuation, &[0; 5]));
        let error = first_error(&mut decoder, &bytes);
        assert_eq!(error, ProtocolError::MessageTooLarge { size: 11, max: 10 });
        assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
    }

    #[test]
    fn message_exactly_at_limits_is_accepted() {
        let mut decoder = Decoder::<Server>::new(DecoderConfig {
            max_frame_size: 6,
            max_message_size: 12,
            ..DecoderConfig::DEFAULT
        });
        let mut bytes = client(false, OpCode::Binary, &[1; 6]);
        bytes.extend(client(true, OpCode::Continuation, &[1; 6]));
        assert_eq!(
            feed(&mut decoder, &bytes, 5),
            Ok(vec![Owned::Binary(vec![1; 12])])
        );
    }

    fn compressed_frame(payload: &[u8], opcode: OpCode) -> Vec<u8> {
        let mut deflater = Deflater::new(Deflater::DEFAULT_LEVEL);
        let compressed = deflater.compress(payload).expect("compressible").to_vec();
        raw(true, true, opcode, &compressed, Some(KEY))
    }

    #[test]
    fn compressed_message_is_inflated() {
        let text = "compress me please, ".repeat(40);
        let bytes = compressed_frame(text.as_bytes(), OpCode::Text);
        for read_size in [3, bytes.len()] {
            let got = feed(&mut compressing_server(), &bytes, read_size);
            assert_eq!(got, Ok(vec![Owned::Text(text.clone())]));
        }
    }

    #[test]
    fn fragmented_compressed_message_is_inflated_whole() {
        let data = vec![42u8; 5000];
        let mut deflater = Deflater::new(Deflater::DEFAULT_LEVEL);
        let compressed = deflater.compress(&data).unwrap().to_vec();
        let (first, second) = compressed.split_at(compressed.len() / 2);
        let mut bytes = raw(false, true, OpCode::Binary, first, Some(KEY));
        bytes.extend(client(true, OpCode::Ping, b"!"));
        bytes.extend(client(true, OpCode::Continuation, second));
        let got = feed(&mut compressing_server(), &bytes, 7);
        assert_eq!(
            got,
            Ok(vec![Owned::Ping(b"!".to_vec()), Owned::Binary(data)])
        );
    }

    #[test]
    fn decompressed_message_larger_than_limit_fails_with_1009() {
        let mut decoder = Decoder::<Server>::new(DecoderConfig {
            compression: true,
            max_decompressed_size: 1000,
            ..DecoderConfig::DEFAULT
        });
        let bytes = compressed_frame(&[0; 100_000], OpCode::Binary);
        let error = first_error(&mut decoder, &bytes);
        assert_eq!(error, ProtocolError::DecompressedTooLarge { max: 1000 });
        assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
    }

    #[test]
    fn corrupt_compressed_message_fails_with_1007() {
        let bytes = raw(true, true, OpCode::Binary, &[0xFF; 20], Some(KEY));
        let error = first_error(&mut compressing_server(), &bytes);
        assert_eq!(error, ProtocolError::InvalidCompressedData);
        assert_eq!(error.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn compressed_text_is_validated_after_inflating() {
        let mut invalid = vec![b'a'; 500];
        invalid.extend_from_slice(b"\xED\xA0\x80");
        let bytes = compressed_frame(&invalid, OpCode::Text);
        let error = first_error(&mut compressing_server(), &bytes);
        assert_eq!(error, ProtocolError::InvalidUtf8);
    }

    #[test]
    fn text_message_fails_fast_on_invalid_utf8_prefix_in_first_fragment() {
        // The message never ends: the error must come from the first fragment.
        let bytes = client(false, OpCode::Text, b"ok\xF4\x90\x80\x80");
        let error = first_error(&mut server(), &bytes);
        assert_eq!(error, ProtocolError::InvalidUtf8);
        assert_eq!(error.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn text_message_fails_fast_on_invalid_utf8_in_partial_frame() {
        // Only part of a single-frame message arrives, invalid already.
        let mut bytes = client(
            true,
            OpCode::Text,
            b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80edited",
        );
        bytes.truncate(6 + 14);
        let error = first_error(&mut server(), &bytes);
        assert_eq!(error, ProtocolError::InvalidUtf8);
    }

    #[test]
    fn text_message_fails_fast_on_invalid_continuation_fragment() {
        let mut bytes = client(false, OpCode::Text, "é".as_bytes());
        bytes.extend(client(false, OpCode::Continuation, b"\xC3"));
        bytes.extend(client(false, OpCode::Continuation, b"\x28"));
        assert_eq!(
            first_error(&mut server(), &bytes),
            ProtocolError::InvalidUtf8
        );
    }

    #[test]
    fn text_message_ending_in_a_partial_code_point_fails_with_1007() {
        let mut bytes = client(false, OpCode::Text, b"ab");
        bytes.extend(client(true, OpCode::Continuation, b"\xE2\x82"));
        assert_eq!(
            first_error(&mut server(), &bytes),
            ProtocolError::InvalidUtf8
        );
    }

    #[test]
    fn code_point_split_across_fragments_is_valid() {
        let euro = "€".as_bytes();
        let mut bytes = client(false, OpCode::Text, &euro[..1]);
        bytes.extend(client(false, OpCode::Continuation, &euro[1..2]));
        bytes.extend(client(true, OpCode::Continuation, &euro[2..]));
        assert_eq!(
            feed(&mut server(), &bytes, 2),
            Ok(vec![Owned::Text("€".to_owned())])
        );
    }

    #[test]
    fn many_small_fragments_grow_the_buffer_amortized() {
        // Autobahn 9.3 style: one message in 65,536 fragments.
        let fragment = [7u8; 16];
        let count = 65_536;
        let mut bytes = Vec::with_capacity(count * (fragment.len() + 6));
        for index in 0..count {
            let opcode = if index == 0 {
                OpCode::Binary
            } else {
                OpCode::Continuation
            };
            bytes.extend(client(index == count - 1, opcode, &fragment));
        }
        let mut decoder = server();
        let mut inflater = Inflater::new();
        let total = bytes.len();
        let (consumed, message) = decoder.decode(&mut bytes, &mut inflater).unwrap();
        assert_eq!(consumed, total);
        let Some(Message::Binary(payload)) = message else {
            panic!("expected a binary message");
        };
        assert_eq!(payload.len(), count * fragment.len());
        assert!(decoder.heap_bytes() <= 2 * count * fragment.len());
    }

    #[test]
    fn buffer_is_cleared_on_next_call_and_released_on_request() {
        let mut bytes = client(false, OpCode::Binary, &[1; 100]);
        bytes.extend(client(true, OpCode::Continuation, &[2; 100]));
        let mut decoder = server();
        assert_eq!(feed(&mut decoder, &bytes, 1000).unwrap().len(), 1);
        assert!(decoder.heap_bytes() >= 200);
        let again = feed(&mut decoder, &bytes, 1000).unwrap();
        assert_eq!(again, vec![Owned::Binary([[1; 100], [2; 100]].concat())]);
        decoder.release_memory();
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn a_lent_buffer_is_used_and_taken_back_only_between_messages() {
        let mut decoder = server();
        let mut inflater = Inflater::new();
        assert!(decoder.take_buffer().is_none(), "nothing to take");
        let lent = Vec::with_capacity(4096);
        let address = lent.as_ptr();
        assert!(decoder.lend_buffer(lent).is_none());
        assert!(decoder.lend_buffer(vec![1]).is_some(), "it already has one");
        // A fragmented message goes through the lent buffer.
        let mut first = client(false, OpCode::Text, b"hel");
        assert_eq!(decoder.decode(&mut first, &mut inflater).unwrap().1, None);
        assert!(decoder.take_buffer().is_none(), "a message is in progress");
        let mut last = client(true, OpCode::Continuation, b"lo");
        let (_, message) = decoder.decode(&mut last, &mut inflater).unwrap();
        assert_eq!(message, Some(Message::Text("hello")));
        let back = decoder.take_buffer().expect("the buffer comes back");
        assert!(back.is_empty());
        assert_eq!(back.as_ptr(), address, "no allocation of its own");
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn release_memory_keeps_a_message_in_progress() {
        let mut decoder = server();
        feed(&mut decoder, &client(false, OpCode::Binary, b"first"), 100).unwrap();
        decoder.release_memory();
        let got = feed(
            &mut decoder,
            &client(true, OpCode::Continuation, b" second"),
            100,
        );
        assert_eq!(got, Ok(vec![Owned::Binary(b"first second".to_vec())]));
    }

    #[test]
    fn large_buffer_is_not_kept_after_its_message() {
        let mut bytes = client(false, OpCode::Binary, &[0; 100_000]);
        bytes.extend(client(true, OpCode::Continuation, &[0; 10]));
        bytes.extend(client(true, OpCode::Ping, b""));
        let mut decoder = server();
        assert_eq!(feed(&mut decoder, &bytes, bytes.len()).unwrap().len(), 2);
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn idle_decoder_is_compact_and_holds_no_heap_memory() {
        let decoder = server();
        assert_eq!(decoder.heap_bytes(), 0);
        assert!(
            size_of::<Decoder<Server>>() <= 256,
            "{}",
            size_of::<Decoder<Server>>()
        );
    }
}
