//! What travels between shards for one published message: the
//! [`Publication`] on its way to the room's owner, and the [`Sequenced`]
//! message the owner numbered and hands to every subscribed shard.

use std::sync::{Arc, OnceLock};

use shardcast_proto::envelope::EnvelopeWriter;

use super::Position;
use crate::conn::ConnId;
use crate::prepared::PreparedMessage;

/// Who asked to hear the position a published message was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Receipt {
    /// The publishing connection.
    pub(crate) conn: ConnId,
    /// Its key in its shard's slab (checked against `conn` on return).
    pub(crate) key: u32,
    /// The publisher's tag, handed back in
    /// [`Handler::on_published`](crate::Handler::on_published).
    pub(crate) tag: u64,
}

/// A message published to a room, before its owner sequenced it.
#[derive(Debug)]
pub(crate) struct Publication {
    pub(crate) room: Arc<str>,
    pub(crate) message: PreparedMessage,
    /// A connection that does not receive it (its publisher, usually).
    pub(crate) except: Option<ConnId>,
    pub(crate) receipt: Option<Receipt>,
    /// The publisher's member id, revealed in `shardcast.v1` messages.
    pub(crate) publisher: Option<Arc<str>>,
}

/// A message with its place in its room's stream, shared by reference by
/// the owner's history, every subscribed shard and every member.
#[derive(Debug)]
pub(crate) struct Sequenced {
    pub(crate) room: Arc<str>,
    pub(crate) position: Position,
    /// The frame raw connections receive: the message as published.
    pub(crate) message: PreparedMessage,
    pub(crate) except: Option<ConnId>,
    pub(crate) publisher: Option<Arc<str>>,
    /// The frame `shardcast.v1` connections receive, made by the first
    /// shard that delivers to one.
    envelope: OnceLock<PreparedMessage>,
}

impl Sequenced {
    /// The message `publication` became at `position`.
    pub(crate) fn new(publication: Publication, position: Position) -> Sequenced {
        Sequenced {
            room: publication.room,
            position,
            message: publication.message,
            except: publication.except,
            publisher: publication.publisher,
            envelope: OnceLock::new(),
        }
    }

    /// The `shardcast.v1` `Message` envelope of this message (room,
    /// position, payload, publisher), framed once for every shard.
    pub(crate) fn envelope(&self) -> &PreparedMessage {
        self.envelope.get_or_init(|| {
            let mut writer = EnvelopeWriter::with_capacity(self.message.payload().len() + 96);
            let bytes = writer.message(
                &self.room,
                self.position.offset,
                self.position.epoch,
                self.message.payload(),
                self.publisher.as_deref(),
            );
            let envelope = PreparedMessage::binary(bytes);
            if self.message.is_droppable() {
                envelope.droppable()
            } else {
                envelope
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use shardcast_proto::envelope::{self, Body, VerifyLimits};

    use super::*;

    #[test]
    fn the_envelope_carries_the_room_position_payload_and_publisher() {
        let sequenced = Sequenced::new(
            Publication {
                room: "lobby".into(),
                message: PreparedMessage::text("hi").droppable(),
                except: None,
                receipt: None,
                publisher: Some("ada".into()),
            },
            Position {
                offset: 7,
                epoch: 99,
            },
        );
        let frame = sequenced.envelope();
        assert!(frame.is_droppable());
        assert!(!frame.is_text());
        let read = envelope::read(frame.payload(), &VerifyLimits::default()).unwrap();
        assert_eq!(read.body_type(), Body::Message);
        let message = read.body_as_message().unwrap();
        assert_eq!(message.room(), "lobby");
        assert_eq!(message.position().offset(), 7);
        assert_eq!(message.position().epoch(), 99);
        assert_eq!(envelope::bytes(message.payload()), b"hi");
        assert_eq!(message.publisher(), Some("ada"));
        // Made once, shared after.
        assert!(std::ptr::eq(frame, sequenced.envelope()));
    }
}
