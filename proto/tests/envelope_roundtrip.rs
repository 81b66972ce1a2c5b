//! Every envelope kind written by `EnvelopeWriter`, verified and read back,
//! with optional fields present and absent, alone and in a batch.

use shardcast_proto::envelope::{
    self, Body, Envelope, EnvelopeWriter, ErrorCode, PresenceKind, RecoveryReport, ResumePoint,
    VerifyLimits,
};

fn read(bytes: &[u8]) -> Envelope<'_> {
    envelope::read(bytes, &VerifyLimits::default()).expect("a valid envelope")
}

#[test]
fn join_round_trips_with_and_without_ack() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.join("room/1", Some(42), true).to_vec();
    let join = read(&bytes).body_as_join().expect("join");
    assert_eq!(join.room(), "room/1");
    assert_eq!(join.ack(), Some(42));
    assert!(join.presence());

    let bytes = writer.join("r", None, false).to_vec();
    let join = read(&bytes).body_as_join().expect("join");
    assert_eq!(join.room(), "r");
    assert_eq!(join.ack(), None);
    assert!(!join.presence());
}

#[test]
fn ack_id_zero_is_distinct_from_no_ack() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.leave("r", Some(0)).to_vec();
    assert_eq!(read(&bytes).body_as_leave().expect("leave").ack(), Some(0));
}

#[test]
fn leave_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.leave("lobby", Some(u64::MAX)).to_vec();
    let leave = read(&bytes).body_as_leave().expect("leave");
    assert_eq!(leave.room(), "lobby");
    assert_eq!(leave.ack(), Some(u64::MAX));

    let bytes = writer.leave("lobby", None).to_vec();
    assert_eq!(read(&bytes).body_as_leave().expect("leave").ack(), None);
}

#[test]
fn publish_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer
        .publish("news", &[0, 1, 2, 255], true, Some(9))
        .to_vec();
    let publish = read(&bytes).body_as_publish().expect("publish");
    assert_eq!(publish.room(), "news");
    assert_eq!(envelope::bytes(publish.payload()), [0, 1, 2, 255]);
    assert!(publish.exclude_self());
    assert_eq!(publish.ack(), Some(9));

    let bytes = writer.publish("news", b"", false, None).to_vec();
    let publish = read(&bytes).body_as_publish().expect("publish");
    assert!(publish.payload().is_none());
    assert_eq!(envelope::bytes(publish.payload()), b"");
    assert!(!publish.exclude_self());
    assert_eq!(publish.ack(), None);
}

#[test]
fn message_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer
        .message("chat", 17, 0xdead_beef, b"hi", Some("user-3"))
        .to_vec();
    let message = read(&bytes).body_as_message().expect("message");
    assert_eq!(message.room(), "chat");
    assert_eq!(message.position().offset(), 17);
    assert_eq!(message.position().epoch(), 0xdead_beef);
    assert_eq!(envelope::bytes(message.payload()), b"hi");
    assert_eq!(message.publisher(), Some("user-3"));

    let bytes = writer.message("chat", 0, 1, b"", None).to_vec();
    let message = read(&bytes).body_as_message().expect("message");
    assert_eq!(message.position().offset(), 0);
    assert_eq!(message.position().epoch(), 1);
    assert_eq!(envelope::bytes(message.payload()), b"");
    assert_eq!(message.publisher(), None);
}

#[test]
fn event_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.event("cursor.move", b"{\"x\":1}", Some(3)).to_vec();
    let event = read(&bytes).body_as_event().expect("event");
    assert_eq!(event.name(), "cursor.move");
    assert_eq!(envelope::bytes(event.payload()), b"{\"x\":1}");
    assert_eq!(event.ack(), Some(3));

    let bytes = writer.event("ping", b"", None).to_vec();
    let event = read(&bytes).body_as_event().expect("event");
    assert_eq!(event.name(), "ping");
    assert_eq!(envelope::bytes(event.payload()), b"");
    assert_eq!(event.ack(), None);
}

#[test]
fn ack_ok_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.ack_ok(5, b"answer").to_vec();
    let ack = read(&bytes).body_as_ack().expect("ack");
    assert_eq!(ack.id(), 5);
    assert_eq!(envelope::bytes(ack.payload()), b"answer");
    assert_eq!(ack.error(), None);
    assert_eq!(ack.message(), None);
    assert!(ack.position().is_none());
}

#[test]
fn ack_position_carries_the_room_position() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.ack_position(8, 120, 77).to_vec();
    let ack = read(&bytes).body_as_ack().expect("ack");
    assert_eq!(ack.id(), 8);
    assert_eq!(ack.error(), None);
    let position = ack.position().expect("position");
    assert_eq!((position.offset(), position.epoch()), (120, 77));
}

#[test]
fn ack_error_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer
        .ack_error(6, ErrorCode::Forbidden, "not in this room")
        .to_vec();
    let ack = read(&bytes).body_as_ack().expect("ack");
    assert_eq!(ack.id(), 6);
    assert_eq!(ack.error(), Some(ErrorCode::Forbidden));
    assert_eq!(ack.message(), Some("not in this room"));
    assert!(ack.payload().is_none());

    let bytes = writer.ack_error(6, ErrorCode::Internal, "").to_vec();
    let ack = read(&bytes).body_as_ack().expect("ack");
    assert_eq!(ack.error(), Some(ErrorCode::Internal));
    assert_eq!(ack.message(), None);
}

#[test]
fn welcome_of_a_new_session_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer
        .welcome("sess-1", &[9; 32], 25_000, false, &[])
        .to_vec();
    let welcome = read(&bytes).body_as_welcome().expect("welcome");
    assert_eq!(welcome.session_id(), "sess-1");
    assert_eq!(envelope::bytes(welcome.resume_token()), [9; 32]);
    assert_eq!(welcome.heartbeat_ms(), 25_000);
    assert!(!welcome.resumed());
    assert!(welcome.rooms().is_none());
}

#[test]
fn welcome_of_a_resumed_session_reports_each_room() {
    let mut writer = EnvelopeWriter::new();
    let rooms = [
        RecoveryReport {
            room: "a",
            offset: 10,
            epoch: 2,
            error: None,
        },
        RecoveryReport {
            room: "b",
            offset: 500,
            epoch: 2,
            error: Some(ErrorCode::GapTooLarge),
        },
        RecoveryReport {
            room: "c",
            offset: 1,
            epoch: 3,
            error: Some(ErrorCode::EpochChanged),
        },
    ];
    let bytes = writer
        .welcome("sess-1", b"token", 1000, true, &rooms)
        .to_vec();
    let welcome = read(&bytes).body_as_welcome().expect("welcome");
    assert!(welcome.resumed());
    let read_back: Vec<RecoveryReport<'_>> = welcome
        .rooms()
        .expect("rooms")
        .iter()
        .map(|room| RecoveryReport {
            room: room.room(),
            offset: room.position().offset(),
            epoch: room.position().epoch(),
            error: room.error(),
        })
        .collect();
    assert_eq!(read_back, rooms);
}

#[test]
fn resume_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let rooms = [
        ResumePoint {
            room: "a",
            offset: 10,
            epoch: 2,
        },
        ResumePoint {
            room: "never-saw-a-message",
            offset: 0,
            epoch: 0,
        },
    ];
    let bytes = writer.resume("sess-1", b"token", &rooms).to_vec();
    let resume = read(&bytes).body_as_resume().expect("resume");
    assert_eq!(resume.session_id(), "sess-1");
    assert_eq!(envelope::bytes(resume.token()), b"token");
    let read_back: Vec<ResumePoint<'_>> = resume
        .rooms()
        .expect("rooms")
        .iter()
        .map(|room| ResumePoint {
            room: room.room(),
            offset: room.position().offset(),
            epoch: room.position().epoch(),
        })
        .collect();
    assert_eq!(read_back, rooms);

    let bytes = writer.resume("sess-2", b"", &[]).to_vec();
    let resume = read(&bytes).body_as_resume().expect("resume");
    assert_eq!(resume.session_id(), "sess-2");
    assert!(resume.token().is_none());
    assert!(resume.rooms().is_none());
}

#[test]
fn presence_round_trips() {
    let mut writer = EnvelopeWriter::new();
    for (kind, count) in [(PresenceKind::Joined, 4), (PresenceKind::Left, 0)] {
        let bytes = writer.presence("lobby", kind, "user-9", count).to_vec();
        let presence = read(&bytes).body_as_presence().expect("presence");
        assert_eq!(presence.room(), "lobby");
        assert_eq!(presence.kind(), kind);
        assert_eq!(presence.member(), "user-9");
        assert_eq!(presence.count(), count);
    }
}

#[test]
fn error_round_trips() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer
        .error(ErrorCode::NotJoined, "join first", Some(11), Some("r"))
        .to_vec();
    let error = read(&bytes).body_as_error().expect("error");
    assert_eq!(error.code(), ErrorCode::NotJoined);
    assert_eq!(error.message(), Some("join first"));
    assert_eq!(error.ack(), Some(11));
    assert_eq!(error.room(), Some("r"));

    let bytes = writer
        .error(ErrorCode::SlowConsumer, "", None, None)
        .to_vec();
    let error = read(&bytes).body_as_error().expect("error");
    assert_eq!(error.code(), ErrorCode::SlowConsumer);
    assert_eq!(error.message(), None);
    assert_eq!(error.ack(), None);
    assert_eq!(error.room(), None);
}

#[test]
fn a_single_envelope_iterates_as_itself() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.join("r", None, false).to_vec();
    let items = envelope::items(read(&bytes));
    assert_eq!(items.len(), 1);
    let kinds: Vec<Body> = items.map(|item| item.body_type()).collect();
    assert_eq!(kinds, [Body::Join]);
}

#[test]
fn a_batch_of_every_kind_iterates_in_order() {
    let mut writer = EnvelopeWriter::new();
    let mut batch = writer.batch();
    assert!(batch.is_empty());
    batch
        .join("a", Some(1), true)
        .leave("b", None)
        .publish("a", b"p", true, Some(2))
        .message("a", 3, 4, b"m", Some("me"))
        .event("e", b"x", None)
        .ack_ok(1, b"ok")
        .ack_position(1, 5, 6)
        .ack_error(2, ErrorCode::RateLimited, "slow down")
        .welcome(
            "s",
            b"t",
            30_000,
            true,
            &[RecoveryReport {
                room: "a",
                offset: 7,
                epoch: 8,
                error: None,
            }],
        )
        .resume(
            "s",
            b"t",
            &[ResumePoint {
                room: "a",
                offset: 7,
                epoch: 8,
            }],
        )
        .presence("a", PresenceKind::Left, "you", 1)
        .error(ErrorCode::BadRequest, "bad", None, Some("a"));
    assert_eq!(batch.len(), 12);
    let bytes = batch.finish().to_vec();

    let envelope = read(&bytes);
    assert_eq!(envelope.body_type(), Body::Batch);
    let items: Vec<Envelope<'_>> = envelope::items(envelope).collect();
    let kinds: Vec<Body> = items.iter().map(|item| item.body_type()).collect();
    assert_eq!(
        kinds,
        [
            Body::Join,
            Body::Leave,
            Body::Publish,
            Body::Message,
            Body::Event,
            Body::Ack,
            Body::Ack,
            Body::Ack,
            Body::Welcome,
            Body::Resume,
            Body::Presence,
            Body::Error,
        ]
    );
    let message = items[3].body_as_message().expect("message");
    assert_eq!(
        (
            message.room(),
            message.position().offset(),
            message.publisher()
        ),
        ("a", 3, Some("me"))
    );
    let welcome = items[8].body_as_welcome().expect("welcome");
    assert_eq!(welcome.rooms().expect("rooms").get(0).room(), "a");
    let error = items[11].body_as_error().expect("error");
    assert_eq!(error.room(), Some("a"));
}

#[test]
fn an_empty_batch_has_no_items() {
    let mut writer = EnvelopeWriter::new();
    let bytes = writer.batch().finish().to_vec();
    let envelope = read(&bytes);
    assert_eq!(envelope.body_type(), Body::Batch);
    assert_eq!(envelope::items(envelope).count(), 0);
}

#[test]
fn the_writer_is_reusable_after_an_unfinished_batch() {
    let mut writer = EnvelopeWriter::new();
    writer.batch().join("dropped", None, false);
    let bytes = writer.leave("kept", None).to_vec();
    let leave = read(&bytes).body_as_leave().expect("leave");
    assert_eq!(leave.room(), "kept");

    let mut batch = writer.batch();
    batch.event("only", b"", None);
    let bytes = batch.finish().to_vec();
    assert_eq!(envelope::items(read(&bytes)).count(), 1);
}

#[test]
fn writing_is_deterministic_across_reuse() {
    let mut writer = EnvelopeWriter::new();
    let first = writer.publish("r", b"payload", false, Some(1)).to_vec();
    writer.welcome("s", &[1; 100], 5, false, &[]);
    let second = writer.publish("r", b"payload", false, Some(1)).to_vec();
    assert_eq!(first, second);
    assert_eq!(
        first,
        EnvelopeWriter::new().publish("r", b"payload", false, Some(1))
    );
}
