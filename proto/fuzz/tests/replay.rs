//! Replays every checked-in seed and regression input through the fuzz
//! target bodies, on stable, so `ci/run` catches a regression without a
//! fuzzer. A target with no seeds fails: an empty corpus would make this
//! test pass while checking nothing.

use std::fs;
use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0usize;
    for folder in ["seeds", "regressions"] {
        let dir = root.join(folder).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            if path.extension().is_some_and(|ext| ext == "md") {
                continue;
            }
            let data = fs::read(&path).expect("readable input");
            body(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no seeds or regressions for {target}");
}

#[test]
fn deflate_inflate_seeds_and_regressions_hold() {
    replay("deflate_inflate", shardcast_proto_fuzz::deflate_inflate);
}

#[test]
fn envelope_verify_seeds_and_regressions_hold() {
    replay("envelope_verify", shardcast_proto_fuzz::envelope_verify);
}

#[test]
fn frame_decoder_seeds_and_regressions_hold() {
    replay("frame_decoder", shardcast_proto_fuzz::frame_decoder);
}

#[test]
fn handshake_request_seeds_and_regressions_hold() {
    replay("handshake_request", shardcast_proto_fuzz::handshake_request);
}
