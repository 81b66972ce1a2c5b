//! The bodies of the cargo-fuzz targets, one function per target.
//!
//! They live in a library so that `tests/replay.rs` runs the same code over
//! the checked-in seeds and regressions on stable, in `ci/run`; the
//! `fuzz_targets/` binaries only hand libFuzzer's input to them. Each body
//! checks more than "no panic": a differential or round-trip property that
//! must hold for every input.

mod deflate_inflate;
mod envelope_verify;
mod frame_decoder;
mod handshake_request;

pub use deflate_inflate::deflate_inflate;
pub use envelope_verify::envelope_verify;
pub use frame_decoder::frame_decoder;
pub use handshake_request::{CLIENT_RANDOM, handshake_request};
