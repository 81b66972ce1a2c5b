//! What an envelope a member reads means to its [`Tracker`]: the storm
//! clients and the probes feed their trackers this way, and join with the
//! same acknowledgement id.

use anyhow::{Context, bail};
use shardcast_proto::envelope::{self, Body, Envelope};

use super::tracker::{Recovery, Step, Tracker};

/// The acknowledgement id of every join: a member has one join in flight
/// at most.
pub(super) const JOIN_ACK: u64 = 0;

/// What `item` means to `tracker`: what the member must do next, and the
/// payload when it was a message.
pub(super) fn track<'a>(
    tracker: &mut Tracker,
    item: Envelope<'a>,
) -> anyhow::Result<(Step, Option<&'a [u8]>)> {
    match item.body_type() {
        Body::Message => {
            let message = item
                .body_as_message()
                .context("a Message without its body")?;
            tracker.message(message.room(), *message.position())?;
            Ok((Step::Nothing, Some(envelope::bytes(message.payload()))))
        }
        Body::Ack => {
            let ack = item.body_as_ack().context("an Ack without its body")?;
            let error = ack
                .error()
                .map(|code| (code, ack.message().unwrap_or_default()));
            Ok((tracker.ack(ack.position().copied(), error)?, None))
        }
        Body::Welcome => {
            let welcome = item
                .body_as_welcome()
                .context("a Welcome without its body")?;
            let rooms = welcome.rooms().into_iter().flatten().map(|room| Recovery {
                room: room.room(),
                error: room.error(),
                position: *room.position(),
            });
            let step = tracker.welcome(
                welcome.session_id(),
                envelope::bytes(welcome.resume_token()),
                welcome.resumed(),
                rooms,
            )?;
            Ok((step, None))
        }
        Body::Error => {
            let error = item.body_as_error().context("an Error without its body")?;
            let step = tracker.error(error.code(), error.message().unwrap_or_default())?;
            Ok((step, None))
        }
        Body::Join
        | Body::Leave
        | Body::Publish
        | Body::Event
        | Body::Resume
        | Body::Presence
        | Body::Batch => bail!(
            "unexpected shardcast.v1 {:?} from the server",
            item.body_type()
        ),
        // A body newer than the schema: skipped, as clients must.
        _ => Ok((Step::Nothing, None)),
    }
}
