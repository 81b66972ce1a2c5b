//! Fuzzes the permessage-deflate inflater against zlib.

use flate2::{Decompress, FlushDecompress, Status};
use shardcast_proto::ProtocolError;
use shardcast_proto::deflate::{Inflater, MESSAGE_TAIL};

/// The output limit: large enough for real messages, small enough that a
/// fuzzer-made bomb stays cheap.
const MAX_SIZE: usize = 1 << 20;

/// Inflates arbitrary bytes as a received compressed message.
///
/// Property: our inflater never panics and never returns more than the
/// limit, and it agrees with zlib (an independent implementation of
/// RFC 1951) on every message zlib inflates: exactly, when the message
/// ends its own DEFLATE stream; as a prefix otherwise. A message that stops
/// in the middle of a block (no sender does that) is decoded a little
/// further by ours, which reads on into the final empty block it appends,
/// where zlib runs out of input.
pub fn deflate_inflate(data: &[u8]) {
    let mut inflater = Inflater::new();
    let mut message = data.to_vec();
    match inflater.inflate(&mut message, MAX_SIZE) {
        Ok(ours) => {
            assert!(ours.len() <= MAX_SIZE);
            match zlib_inflate(data) {
                Some((theirs, true)) => assert!(
                    ours == theirs,
                    "zlib inflated {} bytes, we {}, from a complete stream",
                    theirs.len(),
                    ours.len()
                ),
                Some((theirs, false)) => assert!(
                    ours.starts_with(&theirs),
                    "zlib's {} bytes are not where our {} begin",
                    theirs.len(),
                    ours.len()
                ),
                None => {}
            }
        }
        Err(ProtocolError::InvalidCompressedData | ProtocolError::DecompressedTooLarge { .. }) => {}
        Err(other) => panic!("inflating returned an unexpected error: {other}"),
    }
}

/// zlib's reading of the same message and whether it reached the end of a
/// DEFLATE stream, or `None` when it rejects the data or would go past the
/// limit.
fn zlib_inflate(message: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut input = message.to_vec();
    input.extend_from_slice(&MESSAGE_TAIL);
    let mut zlib = Decompress::new(false);
    let mut out = Vec::with_capacity(4096);
    loop {
        let (read, written) = (zlib.total_in(), zlib.total_out());
        let status = zlib
            .decompress_vec(&input[read as usize..], &mut out, FlushDecompress::Sync)
            .ok()?;
        if status == Status::StreamEnd {
            return Some((out, true));
        }
        // zlib may hold output back until there is room for it: it is done
        // only when the input is used up and the output did not fill.
        let input_done = zlib.total_in() as usize == input.len();
        let output_full = out.len() == out.capacity();
        if input_done && !output_full {
            return Some((out, false));
        }
        if out.len() > MAX_SIZE || (zlib.total_in(), zlib.total_out()) == (read, written) {
            return None;
        }
        out.reserve(out.capacity());
    }
}
