//! Unit tests that need to build envelopes no writer of this crate would
//! produce, with the generated builders.

use flatbuffers::FlatBufferBuilder;

use super::shardcast_generated::shardcast::v_1::{BatchArgs, EnvelopeArgs};
use super::*;

/// A batch holding a batch holding ... `levels` deep, around one empty
/// batch.
fn nested_batches(levels: usize) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let inner = Batch::create(&mut fbb, &BatchArgs { items: None });
    let mut envelope = Envelope::create(
        &mut fbb,
        &EnvelopeArgs {
            body_type: Body::Batch,
            body: Some(inner.as_union_value()),
        },
    );
    for _ in 0..levels {
        let items = fbb.create_vector(&[envelope]);
        let batch = Batch::create(&mut fbb, &BatchArgs { items: Some(items) });
        envelope = Envelope::create(
            &mut fbb,
            &EnvelopeArgs {
                body_type: Body::Batch,
                body: Some(batch.as_union_value()),
            },
        );
    }
    fbb.finish(envelope, Some(ENVELOPE_IDENTIFIER));
    fbb.finished_data().to_vec()
}

#[test]
fn a_batch_inside_a_batch_is_refused() {
    let bytes = nested_batches(1);
    assert_eq!(
        read(&bytes, &VerifyLimits::default()).err(),
        Some(EnvelopeError::NestedBatch)
    );
}

#[test]
fn deeply_nested_batches_stop_at_the_depth_limit() {
    let bytes = nested_batches(1000);
    let error = read(&bytes, &VerifyLimits::default()).err();
    assert_eq!(error, Some(EnvelopeError::TooDeep));
    assert_eq!(
        error.map(|error| error.close_code()),
        Some(crate::CloseCode::INVALID_PAYLOAD)
    );
}

#[test]
fn an_envelope_without_body_is_refused() {
    let mut fbb = FlatBufferBuilder::new();
    let envelope = Envelope::create(&mut fbb, &EnvelopeArgs::default());
    fbb.finish(envelope, Some(ENVELOPE_IDENTIFIER));
    assert_eq!(
        read(fbb.finished_data(), &VerifyLimits::default()).err(),
        Some(EnvelopeError::MissingBody)
    );
}

#[test]
fn a_batch_item_without_body_is_refused() {
    let mut fbb = FlatBufferBuilder::new();
    let item = Envelope::create(&mut fbb, &EnvelopeArgs::default());
    let items = fbb.create_vector(&[item]);
    let batch = Batch::create(&mut fbb, &BatchArgs { items: Some(items) });
    let envelope = Envelope::create(
        &mut fbb,
        &EnvelopeArgs {
            body_type: Body::Batch,
            body: Some(batch.as_union_value()),
        },
    );
    fbb.finish(envelope, Some(ENVELOPE_IDENTIFIER));
    assert_eq!(
        read(fbb.finished_data(), &VerifyLimits::default()).err(),
        Some(EnvelopeError::MissingBody)
    );
}

#[test]
fn a_body_kind_newer_than_this_schema_is_let_through() {
    let mut fbb = FlatBufferBuilder::new();
    let body = Batch::create(&mut fbb, &BatchArgs { items: None });
    let envelope = Envelope::create(
        &mut fbb,
        &EnvelopeArgs {
            body_type: Body(200),
            body: Some(body.as_union_value()),
        },
    );
    fbb.finish(envelope, Some(ENVELOPE_IDENTIFIER));
    let envelope = read(fbb.finished_data(), &VerifyLimits::default()).expect("readable");
    assert_eq!(envelope.body_type(), Body(200));
    assert_eq!(items(envelope).count(), 1);
}

#[test]
fn a_missing_required_field_is_malformed() {
    // A `Join` with only its ack id: the generated builder would refuse to
    // leave out the required room, so the table is written by hand.
    let mut fbb = FlatBufferBuilder::new();
    let start = fbb.start_table();
    fbb.push_slot_always::<u64>(Join::VT_ACK, 5);
    let join = fbb.end_table(start);
    let envelope = Envelope::create(
        &mut fbb,
        &EnvelopeArgs {
            body_type: Body::Join,
            body: Some(join.as_union_value()),
        },
    );
    fbb.finish(envelope, Some(ENVELOPE_IDENTIFIER));
    assert!(matches!(
        read(fbb.finished_data(), &VerifyLimits::default()),
        Err(EnvelopeError::Malformed(_))
    ));
}

#[test]
fn invalid_envelopes_close_with_1007_and_size_limits_with_1009() {
    for error in [
        EnvelopeError::Empty,
        EnvelopeError::WrongIdentifier,
        EnvelopeError::TooDeep,
        EnvelopeError::MissingBody,
        EnvelopeError::NestedBatch,
    ] {
        assert_eq!(
            error.close_code(),
            crate::CloseCode::INVALID_PAYLOAD,
            "{error}"
        );
        assert_eq!(error.error_code(), ErrorCode::BadRequest, "{error}");
    }
    for error in [
        EnvelopeError::TooLarge { size: 2, max: 1 },
        EnvelopeError::TooManyTables,
        EnvelopeError::ApparentSizeTooLarge,
    ] {
        assert_eq!(
            error.close_code(),
            crate::CloseCode::MESSAGE_TOO_BIG,
            "{error}"
        );
        assert_eq!(error.error_code(), ErrorCode::TooLarge, "{error}");
    }
}
