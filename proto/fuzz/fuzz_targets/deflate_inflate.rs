//! Fuzz target: see `shardcast_proto_fuzz::deflate_inflate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast_proto_fuzz::deflate_inflate(data));
