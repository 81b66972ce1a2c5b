//! Recovery of a membership after a reconnection: the messages a member
//! missed, replayed from the room's history before the live ones, with no
//! gap and no duplicate at the seam.
//!
//! A connection that rejoins a room ([`Conn::rejoin`](crate::Conn::rejoin))
//! says the last position its client saw. It becomes a *held* member:
//! from the moment it joins, the room's live messages are kept for it
//! rather than sent. Once the join takes effect at the room's position,
//! the missed messages between the client's position and that one are
//! asked of the room's owner (its history); they go in front of the held
//! ones, and the handler hears [`Handler::on_recovered`](crate::Handler::on_recovered).
//! [`Conn::release_recovered`](crate::Conn::release_recovered) then sends
//! them all and makes the member live.

use std::sync::Arc;

use super::{Position, Sequenced};

/// What a rejoined membership recovered, handed to
/// [`Handler::on_recovered`](crate::Handler::on_recovered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The room's position when the rejoin took effect: every message
    /// after it follows, live.
    pub position: Position,
    /// Missed messages replayed from the room's history, sent before the
    /// live ones.
    pub replayed: usize,
    /// Set when missed messages could not be replayed: the client must
    /// refetch the room's state.
    pub lost: Option<Loss>,
}

/// Why missed messages could not be replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Loss {
    /// The room's history no longer reaches back to the client's position.
    #[error("the room's history no longer holds every missed message")]
    GapTooLarge,
    /// The room's stream started over (a new epoch) since the client's
    /// position, or the client knew no position: offsets do not compare.
    #[error("the room's stream was reset since the client's position")]
    EpochChanged,
}

/// What a rejoin needs once it takes effect at `joined`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to replay, or nothing that can be: done.
    Done(Result<(), Loss>),
    /// The messages after `after` up to `joined` must come from the
    /// owner's history.
    Fetch { after: Position },
}

/// A held membership: the client's position and the messages kept for it.
#[derive(Debug)]
pub(crate) struct Held {
    /// The room's id in the shard's index.
    pub(crate) room: u32,
    /// The last position the client saw.
    pub(crate) after: Position,
    /// Messages kept for the member, in order: the replayed ones once they
    /// came, then the live ones.
    pub(crate) messages: Vec<Arc<Sequenced>>,
    /// Set once the missed messages are in (or known lost).
    pub(crate) recovered: bool,
}

impl Held {
    /// A membership held from `after`.
    pub(crate) fn new(room: u32, after: Position) -> Held {
        Held {
            room,
            after,
            messages: Vec::new(),
            recovered: false,
        }
    }

    /// What the rejoin needs now that it took effect at `joined`.
    pub(crate) fn step(&self, joined: Position) -> Step {
        if self.after.epoch != joined.epoch {
            Step::Done(Err(Loss::EpochChanged))
        } else if self.after.offset >= joined.offset {
            Step::Done(Ok(()))
        } else {
            Step::Fetch { after: self.after }
        }
    }

    /// Puts the replayed messages (`history`: those after the client's
    /// position up to `joined`, or why there are none) in front of the
    /// live ones kept so far, and drops anything the client already saw.
    pub(crate) fn recover(
        &mut self,
        joined: Position,
        history: Result<Vec<Arc<Sequenced>>, Loss>,
    ) -> Recovery {
        let after = self.after;
        let seen = |message: &Arc<Sequenced>| {
            message.position.epoch == after.epoch && message.position.offset <= after.offset
        };
        let (mut replayed, lost) = match history {
            Ok(history) => (history, None),
            Err(loss) => (Vec::new(), Some(loss)),
        };
        replayed.retain(|message| !seen(message) && message.position.offset <= joined.offset);
        let count = replayed.len();
        replayed.extend(self.messages.drain(..).filter(|message| !seen(message)));
        self.messages = replayed;
        self.recovered = true;
        Recovery {
            position: joined,
            replayed: count,
            lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PreparedMessage;
    use crate::rooms::Publication;

    fn at(offset: u64) -> Position {
        Position { offset, epoch: 7 }
    }

    fn message(offset: u64) -> Arc<Sequenced> {
        Arc::new(Sequenced::new(
            Publication {
                room: "a".into(),
                message: PreparedMessage::text("m"),
                except: None,
                receipt: None,
                publisher: None,
            },
            at(offset),
        ))
    }

    fn offsets(held: &Held) -> Vec<u64> {
        held.messages.iter().map(|m| m.position.offset).collect()
    }

    #[test]
    fn replayed_messages_go_before_the_live_ones_without_a_seam() {
        let mut held = Held::new(0, at(3));
        assert_eq!(held.step(at(6)), Step::Fetch { after: at(3) });
        held.messages.extend([message(7), message(8)]);
        let history = (2..=9).map(message).collect();
        let recovery = held.recover(at(6), Ok(history));
        assert_eq!(recovery.replayed, 3);
        assert_eq!(recovery.lost, None);
        assert_eq!(offsets(&held), [4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_client_ahead_of_the_shard_gets_nothing_twice() {
        let mut held = Held::new(0, at(9));
        assert_eq!(held.step(at(6)), Step::Done(Ok(())));
        held.messages.extend((7..=11).map(message));
        let recovery = held.recover(at(6), Ok(Vec::new()));
        assert_eq!(recovery.replayed, 0);
        assert_eq!(offsets(&held), [10, 11]);
    }

    #[test]
    fn a_loss_keeps_the_live_messages_and_says_why() {
        let mut held = Held::new(
            0,
            Position {
                offset: 5,
                epoch: 1,
            },
        );
        assert_eq!(held.step(at(2)), Step::Done(Err(Loss::EpochChanged)));
        held.messages.push(message(3));
        let recovery = held.recover(at(2), Err(Loss::EpochChanged));
        assert_eq!(recovery.lost, Some(Loss::EpochChanged));
        assert_eq!(offsets(&held), [3]);
        let mut held = Held::new(0, at(1));
        let recovery = held.recover(at(4), Err(Loss::GapTooLarge));
        assert_eq!(recovery.lost, Some(Loss::GapTooLarge));
        assert!(held.recovered);
    }
}
