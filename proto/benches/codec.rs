//! Micro-benchmarks of the protocol codec against its peers.
//!
//! # Convention
//!
//! `bench/src/codec_report.rs` turns criterion's results into BENCHMARKS.md
//! and relies on these ids: every benchmark is `GROUP/IMPLEMENTATION/SIZE`,
//! one [`BenchmarkGroup`] per GROUP and one [`BenchmarkId`] per
//! implementation and size, where
//!
//! - SIZE is the payload size in bytes of one frame or buffer, a plain
//!   integer;
//! - IMPLEMENTATION is `shardcast` or a peer: `tungstenite` (0.30),
//!   `memcpy`, `std` or `zlib` (through flate2);
//! - throughput is `Elements(frames per iteration)` for frame benchmarks and
//!   `Bytes(bytes per iteration)` for buffer benchmarks.
//!
//! Every peer runs in the same group as `shardcast`, in the same process and
//! session, so the ratios the report prints compare like with like. Before
//! anything is timed, each implementation's result on the benchmark's input
//! is checked once, so no benchmark can silently measure a failing path.
//!
//! # Copies and glibc on AMD
//!
//! glibc copies 2 KiB to 512 KiB with `rep movsb`, which on some AMD EPYC
//! hosts runs 20-30 times slower when source and destination sit at
//! unlucky offsets from each other modulo 64; where malloc put a buffer
//! then decides a result. Measured on such a host (glibc 2.36 under KVM):
//! 1.6 GB/s instead of 35 GB/s for 64 KiB. Run there with
//! `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=2097152` (vector
//! copies throughout) and put it in the report's command line.
//!
//! # Groups
//!
//! - `decode`, `decode_text`: a server reading masked client frames (binary,
//!   or valid UTF-8 text with validation on both sides) that arrived back to
//!   back in one read of about 64 KiB. Both sides pay one copy of the input
//!   per iteration: shardcast's decoder unmasks in place, so the pristine
//!   input is copied into a reused buffer; tungstenite's full server read
//!   path (`WebSocket::read`) copies it from an in-memory stream into its
//!   own read buffer.
//! - `encode`: a server framing unmasked binary messages into a reused
//!   buffer; tungstenite through its frame API (`Frame::format`).
//! - `encode_masked`: a client framing masked binary messages. tungstenite
//!   through its client send path (`WebSocketContext::write` then `flush`
//!   into a stream that discards), because its public frame API copies a
//!   masked payload into a fresh allocation that its own send path avoids.
//!   tungstenite draws a random key per frame, which is inside its time;
//!   shardcast takes the key as an argument, so the caller's random number
//!   generator is outside ours.
//! - `unmask`: masking SIZE bytes in place, against `memcpy` of SIZE bytes
//!   as the floor. tungstenite's masking function is private, so it has no
//!   entry here (its masking is inside its `decode` and `encode_masked`
//!   times).
//! - `utf8`: validating mixed ASCII and multibyte text of SIZE bytes, against
//!   `std::str::from_utf8`.
//! - `deflate`, `inflate`: one permessage-deflate message of JSON-like chat
//!   text, without context takeover, against zlib at level 6 with a sync
//!   flush and raw inflate, its state objects reset and reused between
//!   messages as a tuned server would.

use std::hint::black_box;
use std::io::{self, Cursor, Read, Write};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use shardcast_proto::deflate::{Deflater, Inflater, MESSAGE_TAIL};
use shardcast_proto::frame::{Decoder, DecoderConfig, Encoder, Message, OpCode, apply_mask};
use shardcast_proto::utf8::Utf8Validator;
use shardcast_proto::{Client, Server};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message as TMessage};

/// Frame and buffer sizes of the frame, unmask and UTF-8 groups.
const SIZES: [usize; 3] = [16, 1024, 65_536];

/// Message sizes of the compression groups.
const DEFLATE_SIZES: [usize; 2] = [1024, 65_536];

/// About how many payload bytes one iteration of a frame benchmark handles.
const BYTES_PER_ITERATION: usize = 64 * 1024;

/// The key of every frame shardcast's client encodes.
const KEY: [u8; 4] = [0x6d, 0xb6, 0xb2, 0x80];

/// The permessage-deflate level of both sides: libdeflate's and zlib's 6.
const LEVEL: u8 = 6;

/// How many frames of `size` bytes one iteration handles: about
/// [`BYTES_PER_ITERATION`] worth, and at least one.
fn frames_per_iteration(size: usize) -> usize {
    (BYTES_PER_ITERATION / size).max(1)
}

// ---------------------------------------------------------------------------
// Input builders

/// A deterministic xorshift64 generator, so every run sees the same input.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// `len` bytes of binary payload.
fn binary_payload(len: usize) -> Vec<u8> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Exactly `len` bytes of valid UTF-8 that mixes ASCII with 2-, 3- and
/// 4-byte characters, as chat in many languages does.
fn mixed_text(len: usize) -> String {
    const PIECES: [&str; 10] = [
        "hello ",
        "world ",
        "héllo ",
        "wörld ",
        "Grüße ",
        "привет ",
        "日本語 ",
        "中文 ",
        "😀 ",
        "ok, ",
    ];
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut text = String::with_capacity(len);
    loop {
        let piece = *rng.pick(&PIECES);
        if text.len() + piece.len() > len {
            break;
        }
        text.push_str(piece);
    }
    while text.len() < len {
        text.push('.');
    }
    text
}

/// Exactly `len` bytes of JSON-like chat messages, the kind of text
/// permessage-deflate is negotiated for.
fn chat_json(len: usize) -> Vec<u8> {
    const ROOMS: [&str; 4] = ["lobby", "general", "random", "support"];
    const WORDS: [&str; 16] = [
        "the", "shard", "is", "up", "again", "see", "you", "at", "noon", "thanks", "deploy",
        "went", "fine", "who", "broke", "staging",
    ];
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut out = String::with_capacity(len + 256);
    while out.len() < len {
        let words: Vec<&str> = (0..3 + rng.next() % 10)
            .map(|_| *rng.pick(&WORDS))
            .collect();
        out.push_str(&format!(
            "{{\"type\":\"message\",\"room\":\"{}\",\"user\":\"user{}\",\"ts\":{},\"text\":\"{}\"}}\n",
            rng.pick(&ROOMS),
            rng.next() % 500,
            1_700_000_000 + rng.next() % 100_000,
            words.join(" "),
        ));
    }
    out.truncate(len);
    out.into_bytes()
}

/// `count` masked frames of `opcode` carrying `payload`, back to back, as a
/// client sends them: each with its own key.
fn client_frames(opcode: OpCode, payload: &[u8], count: usize) -> Vec<u8> {
    let encoder = Encoder::<Client>::new();
    let mut out = Vec::new();
    let mut rng = XorShift(0x0bad_5eed_0bad_5eed);
    for _ in 0..count {
        let key = (rng.next() as u32).to_ne_bytes();
        encoder.frame(&mut out, opcode, true, payload, key);
    }
    out
}

/// A browser-style permessage-deflate message: raw DEFLATE at
/// [`LEVEL`], sync-flushed, tail stripped.
fn zlib_message(payload: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::new(u32::from(LEVEL)), false);
    let mut out = Vec::new();
    zlib_compress(&mut compress, payload, &mut out);
    out
}

/// The config under which tungstenite's limits cannot interfere.
fn tungstenite_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None)
}

// ---------------------------------------------------------------------------
// The code under test, as each benchmark calls it

/// Decodes every frame in `input` as a server and returns how many messages
/// came out, calling `each` with every one.
fn shardcast_decode(
    decoder: &mut Decoder<Server>,
    inflater: &mut Inflater,
    input: &mut [u8],
    mut each: impl FnMut(Message<'_>),
) -> usize {
    let mut pos = 0;
    let mut messages = 0;
    while pos < input.len() {
        let (consumed, message) = decoder
            .decode(&mut input[pos..], inflater)
            .expect("valid frames");
        pos += consumed;
        if let Some(message) = message {
            each(message);
            messages += 1;
        }
    }
    messages
}

/// An in-memory connection for tungstenite: reads come from `input` (and
/// would block once it is drained), writes are discarded unless `keep` is
/// set.
struct Pipe {
    input: Cursor<Vec<u8>>,
    keep: bool,
    written: Vec<u8>,
}

impl Pipe {
    fn new(input: Vec<u8>) -> Self {
        Pipe {
            input: Cursor::new(input),
            keep: false,
            written: Vec::new(),
        }
    }
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
        if self.keep {
            self.written.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raw-deflates `payload` with a sync flush into `out` (cleared first) and
/// strips the RFC 7692 tail.
fn zlib_compress(compress: &mut Compress, payload: &[u8], out: &mut Vec<u8>) {
    compress.reset();
    out.clear();
    out.reserve(payload.len() + payload.len() / 1000 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        compress
            .compress_vec(&payload[consumed..], out, FlushCompress::Sync)
            .expect("zlib deflates");
        if compress.total_in() as usize == payload.len() && out.ends_with(&MESSAGE_TAIL) {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    out.truncate(out.len() - MESSAGE_TAIL.len());
}

/// Raw-inflates `input` (a message with the RFC 7692 tail already
/// appended) into `out` (cleared first), which must have room for it all.
fn zlib_inflate<'a>(decompress: &mut Decompress, input: &[u8], out: &'a mut Vec<u8>) -> &'a [u8] {
    decompress.reset(false);
    out.clear();
    decompress
        .decompress_vec(input, out, FlushDecompress::Sync)
        .expect("zlib inflates");
    assert_eq!(
        decompress.total_in() as usize,
        input.len(),
        "room to inflate"
    );
    out
}

// ---------------------------------------------------------------------------
// Groups

/// `decode` and `decode_text`: a server reading a read's worth of masked
/// client frames.
fn decode(c: &mut Criterion) {
    for (group_name, opcode) in [("decode", OpCode::Binary), ("decode_text", OpCode::Text)] {
        let mut group = c.benchmark_group(group_name);
        for size in SIZES {
            decode_size(&mut group, opcode, size);
        }
        group.finish();
    }
}

fn decode_size(group: &mut BenchmarkGroup<'_, WallTime>, opcode: OpCode, size: usize) {
    let payload = match opcode {
        OpCode::Text => mixed_text(size).into_bytes(),
        _ => binary_payload(size),
    };
    let frames = frames_per_iteration(size);
    let pristine = client_frames(opcode, &payload, frames);
    assert!(
        pristine.len() <= tungstenite_config().read_buffer_size,
        "tungstenite takes the whole input in one read"
    );
    group.throughput(Throughput::Elements(frames as u64));

    // shardcast: check once, then time copy + decode.
    let mut decoder = Decoder::<Server>::new(DecoderConfig::DEFAULT);
    let mut inflater = Inflater::new();
    let mut work = pristine.clone();
    let mut matched = 0;
    let decoded = shardcast_decode(&mut decoder, &mut inflater, &mut work, |message| {
        let bytes = match message {
            Message::Text(text) if opcode == OpCode::Text => text.as_bytes(),
            Message::Binary(bytes) if opcode == OpCode::Binary => bytes,
            other => panic!("unexpected message {other:?}"),
        };
        assert_eq!(bytes, payload);
        matched += 1;
    });
    assert_eq!((decoded, matched), (frames, frames));
    group.bench_function(BenchmarkId::new("shardcast", size), |b| {
        b.iter(|| {
            work.copy_from_slice(&pristine);
            shardcast_decode(&mut decoder, &mut inflater, &mut work, |message| {
                black_box(message);
            })
        });
    });

    // tungstenite: its whole server read path over an in-memory stream.
    let mut socket = WebSocket::from_raw_socket(
        Pipe::new(pristine.clone()),
        TRole::Server,
        Some(tungstenite_config()),
    );
    for _ in 0..frames {
        let message = socket.read().expect("tungstenite reads our frames");
        match (&message, opcode) {
            (TMessage::Text(text), OpCode::Text) => assert_eq!(text.as_bytes(), payload),
            (TMessage::Binary(bytes), OpCode::Binary) => assert_eq!(bytes[..], payload[..]),
            _ => panic!("unexpected message {message:?}"),
        }
    }
    assert!(socket.read().is_err(), "nothing left: the read would block");
    group.bench_function(BenchmarkId::new("tungstenite", size), |b| {
        b.iter(|| {
            socket.get_mut().input.set_position(0);
            for _ in 0..frames {
                black_box(socket.read().expect("tungstenite reads our frames"));
            }
        });
    });
}

/// `encode` (server, unmasked) and `encode_masked` (client): a batch of
/// binary messages framed into a reused buffer.
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in SIZES {
        let payload = binary_payload(size);
        let frames = frames_per_iteration(size);
        group.throughput(Throughput::Elements(frames as u64));

        let encoder = Encoder::<Server>::new();
        let mut ours = Vec::new();
        for _ in 0..frames {
            encoder.binary(&mut ours, &payload, None, ());
        }
        check_encoded::<Client>(&ours, &payload, frames);
        group.bench_function(BenchmarkId::new("shardcast", size), |b| {
            b.iter(|| {
                ours.clear();
                for _ in 0..frames {
                    encoder.binary(&mut ours, black_box(&payload), None, ());
                }
                black_box(&ours);
            });
        });

        let bytes = Bytes::from(payload.clone());
        let binary = TOpCode::Data(Data::Binary);
        let mut theirs = Vec::new();
        for _ in 0..frames {
            Frame::message(bytes.clone(), binary, true)
                .format(&mut theirs)
                .expect("formats into a Vec");
        }
        ours.clear();
        for _ in 0..frames {
            encoder.binary(&mut ours, &payload, None, ());
        }
        assert_eq!(theirs, ours, "unmasked frames are the same bytes");
        group.bench_function(BenchmarkId::new("tungstenite", size), |b| {
            b.iter(|| {
                theirs.clear();
                for _ in 0..frames {
                    Frame::message(black_box(&bytes).clone(), binary, true)
                        .format(&mut theirs)
                        .expect("formats into a Vec");
                }
                black_box(&theirs);
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("encode_masked");
    for size in SIZES {
        let payload = binary_payload(size);
        let frames = frames_per_iteration(size);
        group.throughput(Throughput::Elements(frames as u64));

        let encoder = Encoder::<Client>::new();
        let mut ours = Vec::new();
        for _ in 0..frames {
            encoder.binary(&mut ours, &payload, None, KEY);
        }
        check_encoded::<Server>(&ours, &payload, frames);
        group.bench_function(BenchmarkId::new("shardcast", size), |b| {
            b.iter(|| {
                ours.clear();
                let key = black_box(KEY);
                for _ in 0..frames {
                    encoder.binary(&mut ours, black_box(&payload), None, key);
                }
                black_box(&ours);
            });
        });

        let bytes = Bytes::from(payload.clone());
        let mut context = WebSocketContext::new(TRole::Client, Some(tungstenite_config()));
        let mut pipe = Pipe::new(Vec::new());
        pipe.keep = true;
        for _ in 0..frames {
            context
                .write(&mut pipe, TMessage::Binary(bytes.clone()))
                .expect("tungstenite writes");
        }
        context.flush(&mut pipe).expect("tungstenite flushes");
        check_encoded::<Server>(&pipe.written, &payload, frames);
        pipe.keep = false;
        group.bench_function(BenchmarkId::new("tungstenite", size), |b| {
            b.iter(|| {
                for _ in 0..frames {
                    context
                        .write(&mut pipe, TMessage::Binary(black_box(&bytes).clone()))
                        .expect("tungstenite writes");
                }
                context.flush(&mut pipe).expect("tungstenite flushes");
            });
        });
    }
    group.finish();
}

/// Checks that `encoded` holds `frames` binary messages carrying `payload`,
/// by decoding it as the receiving role `R`.
fn check_encoded<R: shardcast_proto::Role>(encoded: &[u8], payload: &[u8], frames: usize) {
    let mut decoder = Decoder::<R>::new(DecoderConfig::DEFAULT);
    let mut inflater = Inflater::new();
    let mut input = encoded.to_vec();
    let mut pos = 0;
    let mut count = 0;
    while pos < input.len() {
        let (consumed, message) = decoder
            .decode(&mut input[pos..], &mut inflater)
            .expect("encoded frames decode");
        pos += consumed;
        if let Some(message) = message {
            assert_eq!(message, Message::Binary(payload));
            count += 1;
        }
    }
    assert_eq!(count, frames);
}

/// `unmask`: [`apply_mask`] over SIZE bytes in place, against copying SIZE
/// bytes.
fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let original = binary_payload(size);

        let mut buf = original.clone();
        apply_mask(&mut buf, KEY, 0);
        let expected: Vec<u8> = original
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ KEY[index % 4])
            .collect();
        assert_eq!(buf, expected);
        group.bench_function(BenchmarkId::new("shardcast", size), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), 0));
        });

        let mut copy = vec![0; size];
        copy.copy_from_slice(&original);
        assert_eq!(copy, original);
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| black_box(&mut copy).copy_from_slice(black_box(&original)));
        });
    }
    group.finish();
}

/// `utf8`: validating one buffer of mixed text, fed whole.
fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let text = mixed_text(size).into_bytes();
        assert_eq!(text.len(), size);

        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(&text), Ok(()));
        assert_eq!(validator.finish(), Ok(()));
        group.bench_function(BenchmarkId::new("shardcast", size), |b| {
            b.iter(|| {
                validator.feed(black_box(&text)).expect("valid");
                validator.finish().expect("complete");
            });
        });

        assert!(std::str::from_utf8(&text).is_ok());
        group.bench_function(BenchmarkId::new("std", size), |b| {
            b.iter(|| std::str::from_utf8(black_box(&text)).expect("valid").len());
        });
    }
    group.finish();
}

/// `deflate`: compressing one message of chat JSON.
fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    for size in DEFLATE_SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let payload = chat_json(size);

        let mut deflater = Deflater::new(LEVEL);
        let mut inflater = Inflater::new();
        let mut message = deflater
            .compress(&payload)
            .expect("text compresses")
            .to_vec();
        assert_eq!(inflater.inflate(&mut message, size).unwrap(), payload);
        group.bench_function(BenchmarkId::new("shardcast", size), |b| {
            b.iter(|| {
                deflater
                    .compress(black_box(&payload))
                    .expect("compresses")
                    .len()
            });
        });

        let mut compress = Compress::new(Compression::new(u32::from(LEVEL)), false);
        let mut out = Vec::new();
        zlib_compress(&mut compress, &payload, &mut out);
        let mut message = out.clone();
        assert_eq!(inflater.inflate(&mut message, size).unwrap(), payload);
        group.bench_function(BenchmarkId::new("zlib", size), |b| {
            b.iter(|| {
                zlib_compress(&mut compress, black_box(&payload), &mut out);
                out.len()
            });
        });
    }
    group.finish();
}

/// `inflate`: decompressing one message of chat JSON, compressed as a
/// browser sends it (zlib, sync flush). Both sides copy the received
/// message into a reused buffer and append to it per iteration.
fn inflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("inflate");
    for size in DEFLATE_SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let payload = chat_json(size);
        let message = zlib_message(&payload);

        let mut inflater = Inflater::new();
        let mut input = Vec::with_capacity(message.len() + 16);
        input.extend_from_slice(&message);
        assert_eq!(inflater.inflate(&mut input, size).unwrap(), payload);
        group.bench_function(BenchmarkId::new("shardcast", size), |b| {
            b.iter(|| {
                input.clear();
                input.extend_from_slice(black_box(&message));
                inflater.inflate(&mut input, size).expect("inflates").len()
            });
        });

        let mut decompress = Decompress::new(false);
        let mut out = Vec::with_capacity(size + 64);
        input.clear();
        input.extend_from_slice(&message);
        input.extend_from_slice(&MESSAGE_TAIL);
        assert_eq!(zlib_inflate(&mut decompress, &input, &mut out), payload);
        group.bench_function(BenchmarkId::new("zlib", size), |b| {
            b.iter(|| {
                input.clear();
                input.extend_from_slice(black_box(&message));
                input.extend_from_slice(&MESSAGE_TAIL);
                zlib_inflate(&mut decompress, &input, &mut out).len()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode, unmask, utf8, deflate, inflate);
criterion_main!(benches);
