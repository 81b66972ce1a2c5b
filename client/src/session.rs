//! What a `shardcast.v1` client keeps across connections: its session, the
//! rooms it is in and the last position it saw in each, and what a
//! resume's answer means for each room.

use std::collections::BTreeMap;
use std::time::Duration;

use shardcast_proto::envelope::ErrorCode;

use crate::sequence::{self, Position, Verdict};

/// A session the server granted in a `Welcome`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The session's id, sent back in `Resume`.
    pub(crate) id: String,
    /// The proof of ownership, sent back in `Resume`; replaced by every
    /// `Welcome`.
    pub(crate) token: Vec<u8>,
    /// The server's ping interval; `None` when it does not ping.
    pub(crate) heartbeat: Option<Duration>,
}

impl Session {
    /// The session of a `Welcome` with these fields.
    pub(crate) fn new(id: &str, token: &[u8], heartbeat_ms: u32) -> Session {
        Session {
            id: id.to_owned(),
            token: token.to_vec(),
            heartbeat: (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms.into())),
        }
    }
}

/// One room the client is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Room {
    /// Joined with presence updates.
    presence: bool,
    /// The last position seen: the last message delivered, or the join's.
    last: Option<Position>,
    /// The server acknowledged the join (until then the room is dropped if
    /// the join fails or its connection is lost).
    confirmed: bool,
}

/// What happens to a message received in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Receipt {
    /// Deliver it.
    Deliver,
    /// Deliver it after reporting the gap since `last`.
    GapThenDeliver {
        /// The last position delivered before it.
        last: Position,
    },
    /// Already delivered: drop it.
    Duplicate,
    /// The client is not in the room (it left, or its join failed): drop
    /// it.
    NotJoined,
}

/// What to do after a resumed `Welcome`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Rooms whose missed messages were lost, with the server's reason and
    /// the position their stream continues from.
    pub(crate) lost: Vec<(String, ErrorCode, Position)>,
    /// Rooms the server's session is not in: join them again.
    pub(crate) rejoin: Vec<(String, bool)>,
    /// Rooms the server's session is in and the client is not (it left, or
    /// its join's outcome was lost with a connection): leave them.
    pub(crate) leave: Vec<String>,
}

/// The rooms a client is in, with the last position seen in each.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rooms {
    rooms: BTreeMap<String, Room>,
}

impl Rooms {
    /// A join of `room` was written.
    pub(crate) fn joining(&mut self, room: &str, presence: bool) {
        self.rooms
            .entry(room.to_owned())
            .and_modify(|known| known.presence = presence)
            .or_insert(Room {
                presence,
                last: None,
                confirmed: false,
            });
    }

    /// The server acknowledged the join of `room` at `position` (absent
    /// from an older server's ack): the stream continues after it, unless
    /// messages already came.
    pub(crate) fn joined(&mut self, room: &str, position: Option<Position>) {
        if let Some(known) = self.rooms.get_mut(room) {
            known.confirmed = true;
            if known.last.is_none() {
                known.last = position;
            }
        }
    }

    /// The server joined `room` again (after a lost session) at
    /// `position`: the old position means nothing any more.
    pub(crate) fn rejoined(&mut self, room: &str, position: Option<Position>) {
        if let Some(known) = self.rooms.get_mut(room) {
            known.confirmed = true;
            known.last = position;
        }
    }

    /// The join of `room` failed, or its answer was lost: forget the room
    /// unless an earlier join of it had succeeded.
    pub(crate) fn join_failed(&mut self, room: &str) {
        if self.rooms.get(room).is_some_and(|known| !known.confirmed) {
            self.rooms.remove(room);
        }
    }

    /// The client left `room`, or can no longer be in it.
    pub(crate) fn remove(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// Checks a message of `room` at `got`, and makes it the room's last
    /// position if it is to be delivered.
    pub(crate) fn receive(&mut self, room: &str, got: Position) -> Receipt {
        let Some(known) = self.rooms.get_mut(room) else {
            return Receipt::NotJoined;
        };
        let verdict = sequence::check(known.last, got);
        let last = known.last;
        match verdict {
            Verdict::Duplicate => return Receipt::Duplicate,
            Verdict::Next | Verdict::Gap => known.last = Some(got),
        }
        match (verdict, last) {
            (Verdict::Gap, Some(last)) => Receipt::GapThenDeliver { last },
            _ => Receipt::Deliver,
        }
    }

    /// Each room with the last position seen (epoch 0 when none), for a
    /// `Resume`.
    pub(crate) fn resume_points(&self) -> Vec<(String, Position)> {
        self.rooms
            .iter()
            .map(|(room, known)| (room.clone(), known.last.unwrap_or_default()))
            .collect()
    }

    /// Every room with its presence flag: what to join again when the
    /// session was lost.
    pub(crate) fn all(&self) -> Vec<(String, bool)> {
        self.rooms
            .iter()
            .map(|(room, known)| (room.clone(), known.presence))
            .collect()
    }

    /// Applies a resumed `Welcome`'s report, one `(room, error, position)`
    /// per room of the server's session, and says what is left to do.
    pub(crate) fn recover<'a>(
        &mut self,
        report: impl IntoIterator<Item = (&'a str, Option<ErrorCode>, Position)>,
    ) -> Recovery {
        let mut recovery = Recovery::default();
        let mut listed = Vec::new();
        for (room, error, position) in report {
            let Some(known) = self.rooms.get_mut(room) else {
                recovery.leave.push(room.to_owned());
                continue;
            };
            listed.push(room);
            known.confirmed = true;
            if let Some(code) = error {
                known.last = Some(position);
                recovery.lost.push((room.to_owned(), code, position));
            }
        }
        recovery.rejoin = self
            .rooms
            .iter()
            .filter(|(room, _)| !listed.contains(&room.as_str()))
            .map(|(room, known)| (room.clone(), known.presence))
            .collect();
        recovery
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position {
        Position::new(offset, 3)
    }

    fn joined(room: &str, offset: u64) -> Rooms {
        let mut rooms = Rooms::default();
        rooms.joining(room, false);
        rooms.joined(room, Some(at(offset)));
        rooms
    }

    #[test]
    fn messages_in_order_are_delivered_duplicates_dropped_gaps_reported() {
        let mut rooms = joined("a", 10);
        assert_eq!(rooms.receive("a", at(11)), Receipt::Deliver);
        assert_eq!(rooms.receive("a", at(12)), Receipt::Deliver);
        assert_eq!(rooms.receive("a", at(12)), Receipt::Duplicate);
        assert_eq!(rooms.receive("a", at(5)), Receipt::Duplicate);
        assert_eq!(
            rooms.receive("a", at(15)),
            Receipt::GapThenDeliver { last: at(12) }
        );
        assert_eq!(
            rooms.receive("a", at(16)),
            Receipt::Deliver,
            "from the gap on"
        );
        assert_eq!(
            rooms.receive("a", Position::new(1, 4)),
            Receipt::GapThenDeliver { last: at(16) },
            "a new epoch nobody announced"
        );
        assert_eq!(rooms.receive("b", at(1)), Receipt::NotJoined);
        assert_eq!(
            rooms.resume_points(),
            [("a".to_owned(), Position::new(1, 4))]
        );
    }

    #[test]
    fn a_failed_join_forgets_only_an_unconfirmed_room() {
        let mut rooms = Rooms::default();
        rooms.joining("new", true);
        assert_eq!(
            rooms.resume_points(),
            [("new".to_owned(), Position::default())]
        );
        rooms.join_failed("new");
        assert!(rooms.all().is_empty());
        let mut rooms = joined("old", 4);
        rooms.joining("old", true);
        rooms.join_failed("old");
        assert_eq!(
            rooms.all(),
            [("old".to_owned(), true)],
            "kept, presence updated"
        );
    }

    #[test]
    fn a_join_ack_after_messages_keeps_the_messages_position() {
        let mut rooms = Rooms::default();
        rooms.joining("a", false);
        assert_eq!(rooms.receive("a", at(8)), Receipt::Deliver);
        rooms.joined("a", Some(at(7)));
        assert_eq!(rooms.resume_points(), [("a".to_owned(), at(8))]);
        rooms.rejoined("a", Some(Position::new(2, 9)));
        assert_eq!(
            rooms.resume_points(),
            [("a".to_owned(), Position::new(2, 9))]
        );
    }

    #[test]
    fn recovery_keeps_recovered_rooms_reports_lost_ones_and_lists_the_rest() {
        let mut rooms = joined("kept", 10);
        for room in ["lost", "absent"] {
            rooms.joining(room, true);
            rooms.joined(room, Some(at(1)));
        }
        let recovery = rooms.recover([
            ("kept", None, at(14)),
            ("lost", Some(ErrorCode::GapTooLarge), at(900)),
            ("stranger", None, at(1)),
        ]);
        assert_eq!(
            recovery,
            Recovery {
                lost: vec![("lost".into(), ErrorCode::GapTooLarge, at(900))],
                rejoin: vec![("absent".into(), true)],
                leave: vec!["stranger".into()],
            }
        );
        assert_eq!(rooms.receive("kept", at(11)), Receipt::Deliver, "recovered");
        assert_eq!(rooms.receive("lost", at(901)), Receipt::Deliver);
    }

    #[test]
    fn a_welcome_heartbeat_of_zero_means_no_pings() {
        assert_eq!(Session::new("s", b"t", 0).heartbeat, None);
        assert_eq!(
            Session::new("s", b"t", 250).heartbeat,
            Some(Duration::from_millis(250))
        );
    }
}
