//! Independent cross-check of permessage-deflate: our compressed messages
//! inflate with zlib (through flate2), and messages deflated by zlib the way
//! browsers send them (raw DEFLATE, sync-flushed, tail stripped) inflate
//! with ours.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use proptest::prelude::*;
use shardcast_proto::deflate::{Deflater, Inflater, MESSAGE_TAIL};

/// Inflates a received message with zlib, as RFC 7692 §7.2.2 says: append
/// the tail, inflate raw DEFLATE with a sync flush.
fn zlib_inflate(message: &[u8]) -> Vec<u8> {
    let mut input = message.to_vec();
    input.extend_from_slice(&MESSAGE_TAIL);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(message.len() * 8 + 64);
    loop {
        let consumed = inflater.total_in() as usize;
        let status = inflater
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .expect("zlib inflates our message");
        // zlib may hold output back until there is room for it: it is done
        // only when the input is used up and the output did not fill.
        let input_done = inflater.total_in() as usize == input.len();
        if status == Status::StreamEnd || (input_done && out.len() < out.capacity()) {
            return out;
        }
        out.reserve(out.capacity().max(1024));
    }
}

/// Deflates a message with zlib as a browser does: raw DEFLATE, a sync
/// flush at the end of the message, and the four-byte tail removed.
fn zlib_deflate_like_a_browser(payload: &[u8], level: u32) -> Vec<u8> {
    let mut deflater = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    loop {
        let consumed = deflater.total_in() as usize;
        deflater
            .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .expect("zlib deflates");
        if deflater.total_in() as usize == payload.len() && out.ends_with(&MESSAGE_TAIL) {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    out.truncate(out.len() - MESSAGE_TAIL.len());
    out
}

fn text_like(seed: u64, len: usize) -> Vec<u8> {
    let words: [&[u8]; 6] = [
        b"shard ",
        b"room ",
        b"message ",
        b"cast ",
        b"{\"id\":",
        b"42} ",
    ];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(words[(state % words.len() as u64) as usize]);
    }
    out.truncate(len);
    out
}

#[test]
fn our_compressed_messages_inflate_with_zlib() {
    let mut deflater = Deflater::default();
    for len in [100, 1024, 65_536, 1 << 20] {
        let payload = text_like(len as u64, len);
        let compressed = deflater.compress(&payload).expect("text compresses");
        assert_eq!(zlib_inflate(compressed), payload, "length {len}");
    }
}

#[test]
fn browser_style_zlib_messages_inflate_with_ours() {
    let mut inflater = Inflater::new();
    for level in [1, 6, 9] {
        for len in [0, 1, 16, 1024, 65_536, 1 << 20] {
            let payload = text_like(len as u64 + u64::from(level), len);
            let mut message = zlib_deflate_like_a_browser(&payload, level);
            let inflated = inflater.inflate(&mut message, 1 << 21).expect("inflates");
            assert_eq!(inflated, &payload[..], "level {level} length {len}");
        }
    }
}

#[test]
fn zlib_message_of_stored_blocks_inflates_with_ours() {
    let payload = text_like(7, 200_000);
    let mut message = zlib_deflate_like_a_browser(&payload, 0);
    let mut inflater = Inflater::new();
    assert_eq!(
        inflater.inflate(&mut message, 1 << 20).unwrap(),
        &payload[..]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_payloads_round_trip_between_us_and_zlib(
        payload in prop::collection::vec(any::<u8>(), 0..4096),
        repeat in 1usize..8,
        level in 1u32..=9,
    ) {
        let payload = payload.repeat(repeat);
        let mut deflater = Deflater::default();
        if let Some(compressed) = deflater.compress(&payload) {
            prop_assert!(compressed.len() < payload.len());
            prop_assert_eq!(zlib_inflate(compressed), payload.clone());
        }
        let mut message = zlib_deflate_like_a_browser(&payload, level);
        let mut inflater = Inflater::new();
        prop_assert_eq!(inflater.inflate(&mut message, 1 << 20).unwrap(), &payload[..]);
    }
}
