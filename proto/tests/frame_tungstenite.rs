//! Cross-check with an independent implementation, tungstenite 0.30: what
//! we encode it decodes, what it encodes we decode, in both roles.

use std::io::{self, Cursor, Read, Write};

use shardcast_proto::deflate::Inflater;
use shardcast_proto::frame::{CloseFrame, Decoder, Encoder, Message, OpCode};
use shardcast_proto::{Client, CloseCode, Role, Server};
use tungstenite::protocol::frame::coding::{
    CloseCode as TCloseCode, Control, Data, OpCode as TOpCode,
};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{Role as TRole, WebSocket};
use tungstenite::{Bytes, Message as TMessage};

/// An in-memory connection: reads come from `input`, writes go to `output`.
struct Pipe {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.input.read(buf)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            read => Ok(read),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const SIZES: [usize; 9] = [0, 1, 125, 126, 127, 65_535, 65_536, 65_537, 100_000];
const KEY: [u8; 4] = [0xA1, 0x02, 0xF3, 0x44];

fn ours_to_theirs(opcode: OpCode) -> TOpCode {
    match opcode {
        OpCode::Continuation => TOpCode::Data(Data::Continue),
        OpCode::Text => TOpCode::Data(Data::Text),
        OpCode::Binary => TOpCode::Data(Data::Binary),
        OpCode::Close => TOpCode::Control(Control::Close),
        OpCode::Ping => TOpCode::Control(Control::Ping),
        OpCode::Pong => TOpCode::Control(Control::Pong),
    }
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Parses every frame in `bytes` with tungstenite's frame parser and
/// returns header and unmasked payload of each.
fn tungstenite_frames(bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut cursor = Cursor::new(bytes);
    let mut frames = Vec::new();
    while (cursor.position() as usize) < bytes.len() {
        let (header, len) = FrameHeader::parse(&mut cursor)
            .unwrap()
            .expect("whole header");
        let start = cursor.position() as usize;
        let mut payload = bytes[start..start + len as usize].to_vec();
        if let Some(key) = header.mask {
            for (index, byte) in payload.iter_mut().enumerate() {
                *byte ^= key[index % 4];
            }
        }
        cursor.set_position((start + len as usize) as u64);
        frames.push((header, payload));
    }
    frames
}

fn check_frames_parsed_by_tungstenite(
    bytes: &[u8],
    expected: &[(OpCode, bool, Vec<u8>)],
    mask: Option<[u8; 4]>,
) {
    let frames = tungstenite_frames(bytes);
    assert_eq!(frames.len(), expected.len());
    for ((header, payload), (opcode, fin, data)) in frames.iter().zip(expected) {
        assert_eq!(header.opcode, ours_to_theirs(*opcode));
        assert_eq!(header.is_final, *fin);
        assert!(!header.rsv1 && !header.rsv2 && !header.rsv3);
        assert_eq!(header.mask, mask);
        assert_eq!(payload, data);
    }
}

#[test]
fn frames_we_encode_as_server_are_parsed_by_tungstenite() {
    let encoder = Encoder::<Server>::new();
    for len in SIZES {
        let data = sample(len);
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for opcode in [OpCode::Text, OpCode::Binary] {
            encoder.frame(&mut out, opcode, true, &data, ());
            expected.push((opcode, true, data.clone()));
        }
        let control = &data[..len.min(125)];
        encoder.ping(&mut out, control, ()).unwrap();
        encoder.pong(&mut out, control, ()).unwrap();
        expected.push((OpCode::Ping, true, control.to_vec()));
        expected.push((OpCode::Pong, true, control.to_vec()));
        check_frames_parsed_by_tungstenite(&out, &expected, None);
    }
}

#[test]
fn frames_we_encode_as_client_are_parsed_by_tungstenite() {
    let encoder = Encoder::<Client>::new();
    for len in SIZES {
        let data = sample(len);
        let mut out = Vec::new();
        encoder.frame(&mut out, OpCode::Binary, false, &data, KEY);
        encoder.frame(&mut out, OpCode::Continuation, false, &data, KEY);
        encoder.frame(&mut out, OpCode::Continuation, true, &data, KEY);
        let expected = [OpCode::Binary, OpCode::Continuation, OpCode::Continuation]
            .into_iter()
            .zip([false, false, true])
            .map(|(opcode, fin)| (opcode, fin, data.clone()))
            .collect::<Vec<_>>();
        check_frames_parsed_by_tungstenite(&out, &expected, Some(KEY));
    }
}

/// Runs `bytes` through a tungstenite WebSocket of `role` and collects
/// every message it reads, up to and including a close.
fn tungstenite_messages(bytes: Vec<u8>, role: TRole) -> Vec<TMessage> {
    let pipe = Pipe {
        input: Cursor::new(bytes),
        output: Vec::new(),
    };
    let mut socket = WebSocket::from_raw_socket(pipe, role, None);
    let mut messages = Vec::new();
    loop {
        match socket.read() {
            Ok(message) => {
                let close = message.is_close();
                messages.push(message);
                if close {
                    return messages;
                }
            }
            Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                return messages;
            }
            Err(error) => panic!("tungstenite refused our frames: {error}"),
        }
    }
}

fn messages_for_tungstenite<R: shardcast_proto::frame::SendMask>(
    key: R::Key,
) -> (Vec<u8>, Vec<TMessage>) {
    let encoder = Encoder::<R>::new();
    let mut out = Vec::new();
    let mut expected = Vec::new();
    for len in SIZES {
        let text = String::from_utf8(sample(len)).unwrap();
        encoder.text(&mut out, &text, None, key);
        expected.push(TMessage::text(text.clone()));
        encoder.binary(&mut out, text.as_bytes(), None, key);
        expected.push(TMessage::binary(text.clone().into_bytes()));
    }
    let unicode = "€uro 😀 ".repeat(30);
    let bytes = unicode.as_bytes();
    encoder.frame(&mut out, OpCode::Text, false, &bytes[..1], key);
    encoder.ping(&mut out, b"between", key).unwrap();
    encoder.frame(&mut out, OpCode::Continuation, false, &bytes[1..100], key);
    encoder.frame(&mut out, OpCode::Continuation, true, &bytes[100..], key);
    expected.push(TMessage::Ping(Bytes::from_static(b"between")));
    expected.push(TMessage::text(unicode));
    let reason = "é".repeat(100);
    let frame = CloseFrame {
        code: CloseCode::GOING_AWAY,
        reason: &reason,
    };
    encoder.close(&mut out, Some(frame), key).unwrap();
    expected.push(TMessage::Close(Some(tungstenite::protocol::CloseFrame {
        code: TCloseCode::Away,
        reason: "é".repeat(61).into(),
    })));
    (out, expected)
}

#[test]
fn messages_we_send_as_server_are_read_by_a_tungstenite_client() {
    let (bytes, expected) = messages_for_tungstenite::<Server>(());
    assert_eq!(tungstenite_messages(bytes, TRole::Client), expected);
}

#[test]
fn messages_we_send_as_client_are_read_by_a_tungstenite_server() {
    let (bytes, expected) = messages_for_tungstenite::<Client>(KEY);
    assert_eq!(tungstenite_messages(bytes, TRole::Server), expected);
}

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn decode_all<R: Role>(bytes: &[u8], read_size: usize) -> Vec<Owned> {
    let mut decoder = Decoder::<R>::default();
    let mut inflater = Inflater::new();
    let mut messages = Vec::new();
    for read in bytes.chunks(read_size) {
        let mut scratch = read.to_vec();
        let mut input = &mut scratch[..];
        while !input.is_empty() {
            let (consumed, message) = decoder.decode(input, &mut inflater).unwrap();
            messages.extend(message.map(|message| match message {
                Message::Text(text) => Owned::Text(text.to_owned()),
                Message::Binary(data) => Owned::Binary(data.to_vec()),
                Message::Ping(data) => Owned::Ping(data.to_vec()),
                Message::Pong(data) => Owned::Pong(data.to_vec()),
                Message::Close(frame) => {
                    Owned::Close(frame.map(|frame| (frame.code.0, frame.reason.to_owned())))
                }
            }));
            input = &mut input[consumed..];
        }
    }
    messages
}

/// Frames formatted by tungstenite, masked with `mask`, and what we must
/// decode from them.
fn tungstenite_encoded(mask: Option<[u8; 4]>) -> (Vec<u8>, Vec<Owned>) {
    let mut out = Vec::new();
    let mut expected = Vec::new();
    let mut push = |opcode: TOpCode, is_final: bool, payload: Vec<u8>| {
        let header = FrameHeader {
            is_final,
            opcode,
            mask,
            ..FrameHeader::default()
        };
        Frame::from_payload(header, Bytes::from(payload))
            .format(&mut out)
            .unwrap();
    };
    for len in SIZES {
        let data = sample(len);
        push(TOpCode::Data(Data::Text), true, data.clone());
        expected.push(Owned::Text(String::from_utf8(data.clone()).unwrap()));
        push(TOpCode::Data(Data::Binary), false, data.clone());
        push(
            TOpCode::Control(Control::Pong),
            true,
            data[..len.min(125)].to_vec(),
        );
        expected.push(Owned::Pong(data[..len.min(125)].to_vec()));
        push(TOpCode::Data(Data::Continue), true, data.clone());
        expected.push(Owned::Binary([&data[..], &data[..]].concat()));
        push(
            TOpCode::Control(Control::Ping),
            true,
            data[..len.min(125)].to_vec(),
        );
        expected.push(Owned::Ping(data[..len.min(125)].to_vec()));
    }
    let close = Frame::close(Some(tungstenite::protocol::CloseFrame {
        code: TCloseCode::Library(4001),
        reason: "done ✓".into(),
    }));
    let mut close_header = close.header().clone();
    close_header.mask = mask;
    Frame::from_payload(close_header, Bytes::copy_from_slice(close.payload()))
        .format(&mut out)
        .unwrap();
    expected.push(Owned::Close(Some((4001, "done ✓".to_owned()))));
    (out, expected)
}

#[test]
fn masked_frames_tungstenite_encodes_are_decoded_by_our_server() {
    let (bytes, expected) = tungstenite_encoded(Some(KEY));
    for read_size in [1, 7, 4096, bytes.len()] {
        assert_eq!(
            decode_all::<Server>(&bytes, read_size),
            expected,
            "reads of {read_size}"
        );
    }
}

#[test]
fn unmasked_frames_tungstenite_encodes_are_decoded_by_our_client() {
    let (bytes, expected) = tungstenite_encoded(None);
    for read_size in [1, 7, 4096, bytes.len()] {
        assert_eq!(
            decode_all::<Client>(&bytes, read_size),
            expected,
            "reads of {read_size}"
        );
    }
}

#[test]
fn messages_a_tungstenite_client_sends_are_decoded_by_our_server() {
    let pipe = Pipe {
        input: Cursor::new(Vec::new()),
        output: Vec::new(),
    };
    let mut socket = WebSocket::from_raw_socket(pipe, TRole::Client, None);
    let mut expected = Vec::new();
    for len in SIZES {
        let text = String::from_utf8(sample(len)).unwrap();
        socket.send(TMessage::text(text.clone())).unwrap();
        expected.push(Owned::Text(text.clone()));
        socket
            .send(TMessage::binary(text.clone().into_bytes()))
            .unwrap();
        expected.push(Owned::Binary(text.into_bytes()));
    }
    socket
        .send(TMessage::Ping(Bytes::from_static(b"hb")))
        .unwrap();
    expected.push(Owned::Ping(b"hb".to_vec()));
    socket.close(None).unwrap();
    socket.flush().unwrap();
    expected.push(Owned::Close(None));
    let bytes = socket.get_ref().output.clone();
    assert_eq!(decode_all::<Server>(&bytes, 1500), expected);
}
