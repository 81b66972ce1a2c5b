//! Fuzz target: see `shardcast_proto_fuzz::frame_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast_proto_fuzz::frame_decoder(data));
