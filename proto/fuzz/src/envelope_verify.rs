//! Fuzzes the `shardcast.v1` envelope verifier.

use shardcast_proto::envelope::{self, Body, VerifyLimits};

/// Reads arbitrary bytes as an envelope from a client.
///
/// Property: verification never panics, and whatever it accepts can be
/// read in full (the generated `Debug` visits every field of every table)
/// without a panic, holds no nested batch, and reads the same twice.
pub fn envelope_verify(data: &[u8]) {
    let limits = VerifyLimits::default();
    let Ok(envelope) = envelope::read(data, &limits) else {
        return;
    };
    let first = format!("{envelope:?}");
    for item in envelope::items(envelope) {
        assert_ne!(
            item.body_type(),
            Body::Batch,
            "a nested batch passed verification"
        );
        let _ = format!("{item:?}");
    }
    let again = envelope::read(data, &limits).expect("accepted bytes are accepted again");
    assert_eq!(first, format!("{again:?}"));
}
