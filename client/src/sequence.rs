//! Positions in a room's message stream, and the check every received
//! message passes: the next one in order, a duplicate, or a gap.

use std::fmt;

/// A place in a room's message stream: the offset of a message within an
/// epoch. The server numbers a room's messages 1, 2, 3, ... within an
/// epoch; a new epoch (the room's history was reset) starts again, and
/// offsets of different epochs cannot be compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Position {
    /// Offset of the message in its epoch (0: before the first message).
    pub offset: u64,
    /// Generation of the room's stream; 0 when unknown.
    pub epoch: u64,
}

impl Position {
    /// The position `offset` in `epoch`.
    #[must_use]
    pub const fn new(offset: u64, epoch: u64) -> Position {
        Position { offset, epoch }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.offset, self.epoch)
    }
}

impl From<&shardcast_proto::envelope::Position> for Position {
    fn from(position: &shardcast_proto::envelope::Position) -> Self {
        Position::new(position.offset(), position.epoch())
    }
}

/// What to do with a message at `got` after the last one at `last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next message in order (or the first one known): deliver it.
    Next,
    /// A message at or before the last one of the same epoch: already
    /// delivered, drop it.
    Duplicate,
    /// Messages are missing between `last` and `got` (or the epoch changed
    /// without the server saying so): report it, then deliver.
    Gap,
}

/// Checks a message at `got` against the last position of its room.
pub(crate) fn check(last: Option<Position>, got: Position) -> Verdict {
    match last {
        None => Verdict::Next,
        Some(last) if last.epoch != got.epoch => Verdict::Gap,
        Some(last) if got.offset <= last.offset => Verdict::Duplicate,
        Some(last) if got.offset == last.offset + 1 => Verdict::Next,
        Some(_) => Verdict::Gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn at(offset: u64) -> Position {
        Position::new(offset, 7)
    }

    #[test]
    fn the_next_offset_is_in_order() {
        assert_eq!(check(Some(at(4)), at(5)), Verdict::Next);
        assert_eq!(
            check(Some(at(0)), at(1)),
            Verdict::Next,
            "after a join at 0"
        );
        assert_eq!(check(None, at(42)), Verdict::Next, "nothing known yet");
    }

    #[test]
    fn offsets_at_or_before_the_last_are_duplicates() {
        for offset in [1, 3, 4] {
            assert_eq!(check(Some(at(4)), at(offset)), Verdict::Duplicate);
        }
    }

    #[test]
    fn a_skipped_offset_or_another_epoch_is_a_gap() {
        assert_eq!(check(Some(at(4)), at(6)), Verdict::Gap);
        assert_eq!(check(Some(at(4)), Position::new(5, 8)), Verdict::Gap);
        assert_eq!(check(Some(at(4)), Position::new(1, 8)), Verdict::Gap);
    }
}
