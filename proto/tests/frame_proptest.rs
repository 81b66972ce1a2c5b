//! Round trips through the encoder and the decoder: arbitrary messages,
//! fragmented arbitrarily, masked or not, compressed or not, with control
//! frames between fragments, fed to the decoder at arbitrary read
//! boundaries. What comes out must equal what went in.

use proptest::prelude::*;
use proptest::sample::Index;
use shardcast_proto::deflate::{Deflater, Inflater};
use shardcast_proto::frame::{
    Decoder, DecoderConfig, Encoder, FrameHeader, MAX_HEADER_LEN, Message, OpCode, SendMask,
    apply_mask,
};
use shardcast_proto::{Client, Role, Server};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

impl From<Message<'_>> for Owned {
    fn from(message: Message<'_>) -> Self {
        match message {
            Message::Text(text) => Owned::Text(text.to_owned()),
            Message::Binary(data) => Owned::Binary(data.to_vec()),
            Message::Ping(data) => Owned::Ping(data.to_vec()),
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// One message to send and how to send it.
#[derive(Clone, Debug)]
struct Plan {
    text: bool,
    len: usize,
    seed: u8,
    compress: bool,
    /// Where to cut the (possibly compressed) payload into fragments.
    cuts: Vec<Index>,
    /// After which fragments a ping goes out, and its length.
    pings: Vec<(Index, usize)>,
}

/// Lengths that cross every header length encoding and its boundaries.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..300usize,
        1 => Just(125usize),
        1 => Just(126usize),
        1 => Just(65_535usize),
        1 => Just(65_536usize),
        1 => 60_000..70_000usize,
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        any::<bool>(),
        length(),
        any::<u8>(),
        any::<bool>(),
        prop::collection::vec(any::<Index>(), 0..4),
        prop::collection::vec((any::<Index>(), 0..=125usize), 0..3),
    )
        .prop_map(|(text, len, seed, compress, cuts, pings)| Plan {
            text,
            len,
            seed,
            compress,
            cuts,
            pings,
        })
}

/// Text mixing 1- to 4-byte characters, about `len` bytes long; bytes
/// repeating with a period, so that compression has something to do.
fn payload(plan: &Plan) -> Owned {
    if plan.text {
        let alphabet = ['a', 'é', '€', '😀', ' ', 'z', 'ß', '中'];
        let mut text = String::with_capacity(plan.len + 4);
        let mut index = usize::from(plan.seed);
        while text.len() < plan.len {
            text.push(alphabet[index % alphabet.len()]);
            index = index.wrapping_mul(31).wrapping_add(7) % 251;
        }
        Owned::Text(text)
    } else {
        let period = usize::from(plan.seed % 61) + 1;
        Owned::Binary(
            (0..plan.len)
                .map(|i| (i % period) as u8 ^ plan.seed)
                .collect(),
        )
    }
}

/// Appends one frame built by hand: the encoder has no call for a
/// compressed fragment, which only tests need.
fn raw_frame(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0; MAX_HEADER_LEN];
    let len = header.encode(&mut head);
    out.extend_from_slice(&head[..len]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// Encodes every plan into one byte stream and lists the messages the
/// decoder must produce, in order.
fn encode_stream<R: SendMask>(
    plans: &[Plan],
    compression: bool,
    key: impl Fn(usize) -> R::Key,
    header_key: impl Fn(usize) -> Option<[u8; 4]>,
) -> (Vec<u8>, Vec<Owned>) {
    let encoder = Encoder::<R>::new();
    let mut deflater = Deflater::new(Deflater::DEFAULT_LEVEL);
    let mut out = Vec::new();
    let mut expected = Vec::new();
    let mut frame_number = 0;
    for plan in plans {
        let message = payload(plan);
        let (opcode, bytes) = match &message {
            Owned::Text(text) => (OpCode::Text, text.as_bytes()),
            Owned::Binary(data) => (OpCode::Binary, &data[..]),
            Owned::Ping(_) => unreachable!("plans make data messages"),
        };
        let compressed = (compression && plan.compress)
            .then(|| deflater.compress(bytes).map(<[u8]>::to_vec))
            .flatten();
        let wire = compressed.as_deref().unwrap_or(bytes);
        let mut cuts: Vec<usize> = plan
            .cuts
            .iter()
            .map(|cut| cut.index(wire.len() + 1))
            .collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let mut start = 0;
        for (fragment, &end) in cuts.iter().enumerate() {
            let fin = fragment == cuts.len() - 1;
            let fragment_opcode = if fragment == 0 {
                opcode
            } else {
                OpCode::Continuation
            };
            let rsv1 = compressed.is_some() && fragment == 0;
            raw_frame(
                &mut out,
                fin,
                rsv1,
                fragment_opcode,
                &wire[start..end],
                header_key(frame_number),
            );
            frame_number += 1;
            start = end;
            for (after, len) in &plan.pings {
                if !fin && after.index(cuts.len()) == fragment {
                    let ping = vec![plan.seed; *len];
                    encoder.ping(&mut out, &ping, key(frame_number)).unwrap();
                    frame_number += 1;
                    expected.push(Owned::Ping(ping));
                }
            }
        }
        expected.push(message);
    }
    (out, expected)
}

/// Feeds `stream` in reads whose sizes cycle through `reads`.
fn decode_stream<R: Role>(stream: &[u8], reads: &[usize], compression: bool) -> Vec<Owned> {
    let mut decoder = Decoder::<R>::new(DecoderConfig {
        compression,
        ..DecoderConfig::DEFAULT
    });
    let mut inflater = Inflater::new();
    let mut messages = Vec::new();
    let mut offset = 0;
    let mut read = reads.iter().cycle();
    while offset < stream.len() {
        let size = (*read.next().unwrap()).min(stream.len() - offset);
        let mut scratch = stream[offset..offset + size].to_vec();
        offset += size;
        let mut input = &mut scratch[..];
        while !input.is_empty() {
            let (consumed, message) = decoder.decode(input, &mut inflater).unwrap();
            assert!(consumed > 0);
            messages.extend(message.map(Owned::from));
            input = &mut input[consumed..];
        }
        if offset % 3 == 0 {
            decoder.release_memory();
        }
    }
    messages
}

fn key_for(frame: usize) -> [u8; 4] {
    (frame as u32).wrapping_mul(0x9E37_79B9).to_ne_bytes()
}

fn reads() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![1..16usize, 16..5000usize, 5000..100_000usize],
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn client_to_server_masked_messages_round_trip(
        plans in prop::collection::vec(plan(), 1..4),
        compression in any::<bool>(),
        reads in reads(),
    ) {
        let (stream, expected) =
            encode_stream::<Client>(&plans, compression, key_for, |frame| Some(key_for(frame)));
        prop_assert_eq!(decode_stream::<Server>(&stream, &reads, compression), expected);
    }

    #[test]
    fn server_to_client_unmasked_messages_round_trip(
        plans in prop::collection::vec(plan(), 1..4),
        compression in any::<bool>(),
        reads in reads(),
    ) {
        let (stream, expected) = encode_stream::<Server>(&plans, compression, |_| (), |_| None);
        prop_assert_eq!(decode_stream::<Client>(&stream, &reads, compression), expected);
    }

    #[test]
    fn whole_messages_from_the_encoder_round_trip(
        plans in prop::collection::vec(plan(), 1..4),
        reads in reads(),
    ) {
        let encoder = Encoder::<Client>::with_compression_threshold(16);
        let mut deflater = Deflater::new(Deflater::DEFAULT_LEVEL);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (number, plan) in plans.iter().enumerate() {
            let message = payload(plan);
            let deflater = plan.compress.then_some(&mut deflater);
            match &message {
                Owned::Text(text) => encoder.text(&mut stream, text, deflater, key_for(number)),
                Owned::Binary(data) => encoder.binary(&mut stream, data, deflater, key_for(number)),
                Owned::Ping(_) => unreachable!("plans make data messages"),
            };
            expected.push(message);
        }
        prop_assert_eq!(decode_stream::<Server>(&stream, &reads, true), expected);
    }
}

/// Feeds `stream` to a fresh decoder until it is used up or refused; the
/// decoder must neither panic nor stall on any input.
fn feed_until_error<R: Role>(stream: &[u8], reads: &[usize], compression: bool) {
    let mut decoder = Decoder::<R>::new(DecoderConfig {
        compression,
        max_frame_size: 80_000,
        max_message_size: 100_000,
        max_decompressed_size: 100_000,
    });
    let mut inflater = Inflater::new();
    let mut offset = 0;
    let mut read = reads.iter().cycle();
    while offset < stream.len() {
        let size = (*read.next().unwrap()).min(stream.len() - offset);
        let mut scratch = stream[offset..offset + size].to_vec();
        offset += size;
        let mut input = &mut scratch[..];
        while !input.is_empty() {
            match decoder.decode(input, &mut inflater) {
                Ok((consumed, _)) => {
                    assert!(consumed > 0);
                    input = &mut input[consumed..];
                }
                Err(_) => {
                    assert!(decoder.is_closed());
                    return;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn decoder_survives_corrupted_streams(
        plans in prop::collection::vec(plan(), 1..3),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 1..6),
        compression in any::<bool>(),
        reads in reads(),
    ) {
        let (mut stream, _) =
            encode_stream::<Client>(&plans, compression, key_for, |frame| Some(key_for(frame)));
        for (at, byte) in &flips {
            let index = at.index(stream.len());
            stream[index] ^= byte;
        }
        feed_until_error::<Server>(&stream, &reads, compression);
        feed_until_error::<Client>(&stream, &reads, compression);
    }

    #[test]
    fn decoder_survives_arbitrary_bytes(
        stream in prop::collection::vec(any::<u8>(), 0..2000),
        compression in any::<bool>(),
        reads in reads(),
    ) {
        feed_until_error::<Server>(&stream, &reads, compression);
        feed_until_error::<Client>(&stream, &reads, compression);
    }
}
