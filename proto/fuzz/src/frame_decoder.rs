//! Fuzzes the frame decoder, with the fuzzer also choosing read
//! boundaries.

use shardcast_proto::deflate::Inflater;
use shardcast_proto::frame::{Decoder, DecoderConfig, Message};
use shardcast_proto::{Client, ProtocolError, Role, Server};

/// Small limits, so that the fuzzer reaches them with short inputs.
const CONFIG: DecoderConfig = DecoderConfig {
    max_frame_size: 1 << 12,
    max_message_size: 1 << 14,
    max_decompressed_size: 1 << 15,
    compression: false,
};

/// What a decode produced, owned, so two runs can be compared.
#[derive(Debug, PartialEq)]
enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Failed(ProtocolError),
}

/// Decodes arbitrary bytes as a connection's input stream.
///
/// The first byte picks the role (bit 0), whether compression was
/// negotiated (bit 1) and the seed of the read sizes (bits 2-7).
/// Property: the decoder never panics, always makes progress, and yields
/// the same messages and the same error whether the bytes arrive in one
/// read or in reads of 1 to 64 bytes.
pub fn frame_decoder(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let config = DecoderConfig {
        compression: control & 0b10 != 0,
        ..CONFIG
    };
    let seed = control >> 2;
    if control & 1 == 0 {
        compare_reads::<Server>(config, stream, seed);
    } else {
        compare_reads::<Client>(config, stream, seed);
    }
}

fn compare_reads<R: Role>(config: DecoderConfig, stream: &[u8], seed: u8) {
    let whole = decode_all::<R>(config, stream, |_| usize::MAX);
    let mut state = u32::from(seed) | 0x100;
    let chunked = decode_all::<R>(config, stream, |_| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        1 + (state >> 16) as usize % 64
    });
    assert_eq!(whole, chunked, "read boundaries changed what was decoded");
}

fn decode_all<R: Role>(
    config: DecoderConfig,
    stream: &[u8],
    mut next_read: impl FnMut(usize) -> usize,
) -> Vec<Event> {
    let mut decoder = Decoder::<R>::new(config);
    let mut inflater = Inflater::new();
    let mut events = Vec::new();
    let mut position = 0;
    while position < stream.len() {
        let end = position + next_read(position).min(stream.len() - position);
        let mut read = stream[position..end].to_vec();
        let mut offset = 0;
        while offset < read.len() {
            let remaining = read.len() - offset;
            match decoder.decode(&mut read[offset..], &mut inflater) {
                Ok((consumed, message)) => {
                    assert!(
                        consumed > 0 || message.is_some(),
                        "no progress on a non-empty read"
                    );
                    assert!(consumed <= remaining);
                    offset += consumed;
                    if let Some(message) = message {
                        events.push(owned(message));
                    }
                }
                Err(error) => {
                    assert!(decoder.is_closed(), "decoder still open after {error}");
                    events.push(Event::Failed(error));
                    return events;
                }
            }
        }
        position = end;
    }
    events
}

fn owned(message: Message<'_>) -> Event {
    match message {
        Message::Text(text) => Event::Text(text.to_owned()),
        Message::Binary(bytes) => Event::Binary(bytes.to_vec()),
        Message::Ping(bytes) => Event::Ping(bytes.to_vec()),
        Message::Pong(bytes) => Event::Pong(bytes.to_vec()),
        Message::Close(frame) => {
            Event::Close(frame.map(|frame| (frame.code.0, frame.reason.to_owned())))
        }
    }
}
