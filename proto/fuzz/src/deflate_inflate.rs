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
/// limit; whatever it inflates, zlib inflates to the same bytes (libdeflate
/// and zlib are independent implementations of RFC 1951).
pub fn deflate_inflate(data: &[u8]) {
    let mut inflater = Inflater::new();
    let mut message = data.to_vec();
    match inflater.inflate(&mut message, MAX_SIZE) {
        Ok(ours) => {
            assert!(ours.len() <= MAX_SIZE);
            if let Some(theirs) = zlib_inflate(data) {
                assert!(
                    theirs.starts_with(ours),
                    "zlib inflated {} bytes that differ from our {}",
                    theirs.len(),
                    ours.len()
                );
            }
        }
        Err(ProtocolError::InvalidCompressedData | ProtocolError::DecompressedTooLarge { .. }) => {}
        Err(other) => panic!("inflating returned an unexpected error: {other}"),
    }
}

/// zlib's reading of the same message, or `None` when it rejects the data
/// or would go past the limit.
fn zlib_inflate(message: &[u8]) -> Option<Vec<u8>> {
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
            return Some(out);
        }
        // zlib may hold output back until there is room for it: it is done
        // only when the input is used up and the output did not fill.
        let input_done = zlib.total_in() as usize == input.len();
        let output_full = out.len() == out.capacity();
        if input_done && !output_full {
            return Some(out);
        }
        if out.len() > MAX_SIZE || (zlib.total_in(), zlib.total_out()) == (read, written) {
            return None;
        }
        out.reserve(out.capacity());
    }
}
