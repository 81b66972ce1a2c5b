//! Fuzz target: see `shardcast_proto_fuzz::envelope_verify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast_proto_fuzz::envelope_verify(data));
