//! The envelopes a client sends, as data, and how they are written: one per
//! WebSocket message, or several in a `Batch`.

use shardcast_proto::envelope::{BatchWriter, EnvelopeWriter, ErrorCode};

/// One envelope to send to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// Join `room`, with presence updates if `presence`.
    Join {
        room: String,
        presence: bool,
        ack: Option<u64>,
    },
    /// Leave `room`.
    Leave { room: String, ack: Option<u64> },
    /// Publish `payload` to `room`.
    Publish {
        room: String,
        payload: Vec<u8>,
        exclude_self: bool,
        ack: Option<u64>,
    },
    /// The named event `name`.
    Event {
        name: String,
        payload: Vec<u8>,
        ack: Option<u64>,
    },
    /// The answer to the server's event with ack id `id`.
    Ack {
        id: u64,
        answer: Result<Vec<u8>, ErrorCode>,
    },
}

impl Outgoing {
    /// Where the ack id of a request goes, for the envelopes that can
    /// carry one.
    pub(crate) fn ack_mut(&mut self) -> Option<&mut Option<u64>> {
        match self {
            Outgoing::Join { ack, .. }
            | Outgoing::Leave { ack, .. }
            | Outgoing::Publish { ack, .. }
            | Outgoing::Event { ack, .. } => Some(ack),
            Outgoing::Ack { .. } => None,
        }
    }

    /// Writes this envelope alone.
    pub(crate) fn write<'w>(&self, writer: &'w mut EnvelopeWriter) -> &'w [u8] {
        match self {
            Outgoing::Join {
                room,
                presence,
                ack,
            } => writer.join(room, *ack, *presence),
            Outgoing::Leave { room, ack } => writer.leave(room, *ack),
            Outgoing::Publish {
                room,
                payload,
                exclude_self,
                ack,
            } => writer.publish(room, payload, *exclude_self, *ack),
            Outgoing::Event { name, payload, ack } => writer.event(name, payload, *ack),
            Outgoing::Ack { id, answer } => match answer {
                Ok(payload) => writer.ack_ok(*id, payload),
                Err(code) => writer.ack_error(*id, *code, ""),
            },
        }
    }

    /// Appends this envelope to a batch.
    fn push(&self, batch: &mut BatchWriter<'_>) {
        match self {
            Outgoing::Join {
                room,
                presence,
                ack,
            } => batch.join(room, *ack, *presence),
            Outgoing::Leave { room, ack } => batch.leave(room, *ack),
            Outgoing::Publish {
                room,
                payload,
                exclude_self,
                ack,
            } => batch.publish(room, payload, *exclude_self, *ack),
            Outgoing::Event { name, payload, ack } => batch.event(name, payload, *ack),
            Outgoing::Ack { id, answer } => match answer {
                Ok(payload) => batch.ack_ok(*id, payload),
                Err(code) => batch.ack_error(*id, *code, ""),
            },
        };
    }
}

/// Writes `items` as one WebSocket message: the envelope itself for one
/// item, a `Batch` of them in order for several (or none).
pub(crate) fn write_all<'a, 'w>(
    mut items: impl ExactSizeIterator<Item = &'a Outgoing>,
    writer: &'w mut EnvelopeWriter,
) -> &'w [u8] {
    if items.len() == 1 {
        if let Some(single) = items.next() {
            return single.write(writer);
        }
    }
    let mut batch = writer.batch();
    for item in items {
        item.push(&mut batch);
    }
    batch.finish()
}

#[cfg(test)]
mod tests {
    use shardcast_proto::envelope::{self, Body, VerifyLimits};

    use super::*;

    #[test]
    fn one_item_is_a_plain_envelope_several_are_a_batch() {
        let mut writer = EnvelopeWriter::new();
        let join = Outgoing::Join {
            room: "lobby".into(),
            presence: true,
            ack: Some(1),
        };
        let bytes = write_all(std::iter::once(&join), &mut writer).to_vec();
        let read = envelope::read(&bytes, &VerifyLimits::default()).unwrap();
        assert_eq!(read.body_type(), Body::Join);
        assert!(read.body_as_join().unwrap().presence());

        let items = [
            join,
            Outgoing::Publish {
                room: "lobby".into(),
                payload: b"hi".to_vec(),
                exclude_self: false,
                ack: None,
            },
            Outgoing::Event {
                name: "echo".into(),
                payload: b"x".to_vec(),
                ack: Some(2),
            },
            Outgoing::Ack {
                id: 9,
                answer: Err(ErrorCode::UnknownEvent),
            },
            Outgoing::Leave {
                room: "lobby".into(),
                ack: None,
            },
        ];
        let bytes = write_all(items.iter(), &mut writer).to_vec();
        let read = envelope::read(&bytes, &VerifyLimits::default()).unwrap();
        let kinds: Vec<Body> = envelope::items(read).map(|e| e.body_type()).collect();
        assert_eq!(
            kinds,
            [
                Body::Join,
                Body::Publish,
                Body::Event,
                Body::Ack,
                Body::Leave
            ]
        );
    }
}
