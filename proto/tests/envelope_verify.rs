//! The reader refuses whatever is not a valid envelope within the limits,
//! with the right error, and never panics.

use proptest::prelude::*;
use shardcast_proto::CloseCode;
use shardcast_proto::envelope::{
    self, EnvelopeError, EnvelopeWriter, ErrorCode, PresenceKind, RecoveryReport, ResumePoint,
    VerifyLimits,
};

fn read(bytes: &[u8]) -> Result<(), EnvelopeError> {
    envelope::read(bytes, &VerifyLimits::default()).map(|_| ())
}

/// One valid envelope of each kind, and a batch of several.
fn samples() -> Vec<Vec<u8>> {
    let mut w = EnvelopeWriter::new();
    let report = RecoveryReport {
        room: "room",
        offset: 3,
        epoch: 4,
        error: Some(ErrorCode::GapTooLarge),
    };
    let point = ResumePoint {
        room: "room",
        offset: 3,
        epoch: 4,
    };
    let mut samples = vec![
        w.join("room", Some(1), true).to_vec(),
        w.leave("room", Some(2)).to_vec(),
        w.publish("room", b"payload", true, Some(3)).to_vec(),
        w.message("room", 1, 2, b"payload", Some("member")).to_vec(),
        w.event("name", b"payload", Some(4)).to_vec(),
        w.ack_ok(5, b"payload").to_vec(),
        w.ack_position(5, 6, 7).to_vec(),
        w.ack_error(5, ErrorCode::Forbidden, "no").to_vec(),
        w.welcome("session", b"token", 1000, true, &[report, report])
            .to_vec(),
        w.resume("session", b"token", &[point, point]).to_vec(),
        w.presence("room", PresenceKind::Joined, "member", 2)
            .to_vec(),
        w.error(ErrorCode::Internal, "oops", Some(6), Some("room"))
            .to_vec(),
    ];
    let mut batch = w.batch();
    batch
        .join("room", None, false)
        .publish("room", b"payload", false, Some(7))
        .welcome("session", b"token", 1000, true, &[report]);
    samples.push(batch.finish().to_vec());
    samples
}

/// Reads `bytes` and everything reachable from it, as the engine would.
fn read_everything(bytes: &[u8]) {
    if let Ok(envelope) = envelope::read(bytes, &VerifyLimits::default()) {
        for item in envelope::items(envelope) {
            // Debug walks every field of every table.
            let _ = format!("{item:?}");
        }
    }
}

#[test]
fn every_sample_is_valid() {
    for sample in samples() {
        assert_eq!(read(&sample), Ok(()));
    }
}

#[test]
fn an_empty_buffer_is_refused() {
    assert_eq!(read(&[]), Err(EnvelopeError::Empty));
}

/// Cutting a sample short is refused, except when only the alignment
/// padding at its end is cut: then it still reads as the whole sample.
#[test]
fn every_truncation_of_every_sample_is_refused_or_loses_only_padding() {
    let limits = VerifyLimits::default();
    for sample in samples() {
        let whole = format!("{:?}", envelope::read(&sample, &limits));
        let mut refused = 0;
        for len in 0..sample.len() {
            match envelope::read(&sample[..len], &limits) {
                Err(_) => refused += 1,
                Ok(envelope) => {
                    assert!(sample[len..].iter().all(|&byte| byte == 0), "{len}");
                    assert_eq!(format!("{:?}", Ok::<_, EnvelopeError>(envelope)), whole);
                }
            }
        }
        assert!(refused + 8 > sample.len(), "{refused} of {}", sample.len());
    }
}

#[test]
fn garbage_is_refused() {
    assert_eq!(read(b"GET / HTTP/1.1"), Err(EnvelopeError::WrongIdentifier));
    assert_eq!(read(&[0xff; 64]), Err(EnvelopeError::WrongIdentifier));
    // The right identifier in front of garbage.
    let mut bytes = vec![0xff, 0xff, 0, 0];
    bytes.extend_from_slice(b"SCV1");
    bytes.extend_from_slice(&[0xab; 32]);
    assert!(matches!(read(&bytes), Err(EnvelopeError::Malformed(_))));
}

#[test]
fn an_envelope_over_max_bytes_is_too_large() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.publish("room", &[0; 2000], false, None).to_vec();
    let limits = VerifyLimits {
        max_bytes: 1000,
        ..VerifyLimits::default()
    };
    let error = envelope::read(&bytes, &limits).expect_err("refused");
    assert_eq!(
        error,
        EnvelopeError::TooLarge {
            size: bytes.len(),
            max: 1000
        }
    );
    assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(error.error_code(), ErrorCode::TooLarge);
}

#[test]
fn a_batch_over_max_tables_is_refused() {
    let mut writer = EnvelopeWriter::new();
    let mut batch = writer.batch();
    for _ in 0..100 {
        batch.leave("room", None);
    }
    let bytes = batch.finish().to_vec();
    let limits = VerifyLimits {
        max_tables: 50,
        ..VerifyLimits::default()
    };
    let error = envelope::read(&bytes, &limits).expect_err("refused");
    assert_eq!(error, EnvelopeError::TooManyTables);
    assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(read(&bytes), Ok(()));
}

#[test]
fn an_envelope_deeper_than_max_depth_is_refused() {
    let mut writer = EnvelopeWriter::new();
    let mut batch = writer.batch();
    batch.welcome(
        "s",
        b"",
        1,
        true,
        &[RecoveryReport {
            room: "r",
            offset: 1,
            epoch: 1,
            error: None,
        }],
    );
    let bytes = batch.finish().to_vec();
    // Envelope > Batch > Envelope > Welcome > RoomRecovery: depth 5.
    let shallow = VerifyLimits {
        max_depth: 4,
        ..VerifyLimits::default()
    };
    let error = envelope::read(&bytes, &shallow).expect_err("refused");
    assert_eq!(error, EnvelopeError::TooDeep);
    assert_eq!(error.close_code(), CloseCode::INVALID_PAYLOAD);
    assert_eq!(error.error_code(), ErrorCode::BadRequest);
    let exact = VerifyLimits {
        max_depth: 5,
        ..VerifyLimits::default()
    };
    assert!(envelope::read(&bytes, &exact).is_ok());
}

#[test]
fn an_envelope_over_max_apparent_size_is_refused() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.publish("room", &[7; 4096], false, None).to_vec();
    let limits = VerifyLimits {
        max_apparent_size: 1024,
        ..VerifyLimits::default()
    };
    assert_eq!(
        envelope::read(&bytes, &limits).err(),
        Some(EnvelopeError::ApparentSizeTooLarge)
    );
}

#[test]
fn invalid_utf8_in_a_string_is_malformed_and_closes_with_1007() {
    let mut writer = EnvelopeWriter::new();
    let mut bytes = writer.join("ROOM", None, false).to_vec();
    let at = bytes
        .windows(4)
        .position(|window| window == b"ROOM")
        .expect("room name in the buffer");
    bytes[at] = 0xff;
    let error = read(&bytes).expect_err("refused");
    assert!(matches!(error, EnvelopeError::Malformed(_)), "{error:?}");
    assert_eq!(error.close_code(), CloseCode::INVALID_PAYLOAD);
    assert_eq!(CloseCode::from(error), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn every_single_byte_corruption_of_every_sample_is_handled() {
    for sample in samples() {
        for at in 0..sample.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff, sample[at] ^ 0x04] {
                let mut bytes = sample.clone();
                bytes[at] = value;
                read_everything(&bytes);
            }
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_everything(&bytes);
    }

    #[test]
    fn random_bytes_behind_the_identifier_never_panic(
        root in any::<u32>(),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = root.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"SCV1");
        bytes.extend_from_slice(&tail);
        read_everything(&bytes);
    }

    #[test]
    fn random_corruptions_of_valid_envelopes_never_panic(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let samples = samples();
        let mut bytes = samples[which.index(samples.len())].clone();
        let at = at.index(bytes.len());
        bytes[at] = value;
        read_everything(&bytes);
    }
}
