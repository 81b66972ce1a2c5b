//! Fuzz target: see `shardcast_proto_fuzz::handshake_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast_proto_fuzz::handshake_request(data));
