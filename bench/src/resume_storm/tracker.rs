//! What one shardcast.v1 member of a room saw of the room's stream, and
//! of its session: the positions it received, the session it can resume,
//! and every message it missed or received twice. Pure bookkeeping, fed
//! with what the connection reads, so every rule of the session contract
//! (the schema `proto/schema/shardcast.fbs`, and the sessions paragraph
//! of the README's "Rooms and the shardcast.v1 protocol" section) that
//! the benchmark checks is tested without a socket.

use anyhow::bail;
use shardcast_proto::envelope::{ErrorCode, Position};

/// Where a member is in its session's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// A new connection: its `Join` sent, its `Ack` awaited.
    Joining,
    /// Receiving the room's messages.
    Live,
    /// Its connection cut, not reconnected yet.
    Cut,
    /// Reconnected, its `Resume` sent, the server's answer awaited.
    Resuming,
    /// Reconnected without a session to resume, or the resume failed: its
    /// `Join` sent again, its `Ack` awaited.
    Rejoining,
}

/// What the connection must do after an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing.
    Nothing,
    /// The first join was confirmed: the member is live.
    Joined,
    /// The member is back in its room after a reconnection (resumed, or
    /// joined again after a failed resume).
    Back,
    /// The member must join its room again: send a `Join`.
    Rejoin,
}

/// What a reconnected member sends first.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reconnect {
    /// `Resume` of this session, with the member's last position.
    Resume {
        /// The session's id.
        session_id: String,
        /// The session's current resume token.
        token: Vec<u8>,
        /// The last position the member saw in its room.
        position: Position,
    },
    /// A `Join` of its room: it has no session to resume.
    Join,
}

/// The result of one room in a resumed `Welcome`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recovery<'a> {
    /// The room.
    pub(crate) room: &'a str,
    /// Why messages were lost, if they were.
    pub(crate) error: Option<ErrorCode>,
    /// The room's position after the recovered messages.
    pub(crate) position: Position,
}

/// A session as a `Welcome` gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// Its id.
    id: String,
    /// Its current resume token.
    token: Vec<u8>,
}

/// What a member counted; all zero but `received` and `recovered` in a
/// run that lost nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Messages received in order, each once.
    pub(crate) received: u64,
    /// Of those, messages replayed from the room's history after a
    /// resumed `Welcome`.
    pub(crate) recovered: u64,
    /// Offsets never received: gaps in the stream, messages a recovery
    /// could not replay, and the end of the stream never reached.
    pub(crate) lost: u64,
    /// Messages received again, or out of order (an offset at or before
    /// the last one received).
    pub(crate) duplicated: u64,
    /// Times the room's epoch changed under the member: the messages
    /// missed then cannot be counted, and count as lost here.
    pub(crate) epoch_changes: u64,
    /// Resumes refused with `RecoveryFailed`.
    pub(crate) recovery_failed: u64,
    /// Reconnections with no session to resume (the server sent no
    /// `Welcome`).
    pub(crate) no_session: u64,
    /// Resumed `Welcome`s that did not list the member's room.
    pub(crate) missing_room: u64,
    /// Rooms of resumed `Welcome`s with an error (`GapTooLarge`,
    /// `EpochChanged`, ...).
    pub(crate) room_errors: u64,
}

impl Counts {
    /// Adds `other`'s counts to these.
    pub(crate) fn add(&mut self, other: &Counts) {
        self.received += other.received;
        self.recovered += other.recovered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.epoch_changes += other.epoch_changes;
        self.recovery_failed += other.recovery_failed;
        self.no_session += other.no_session;
        self.missing_room += other.missing_room;
        self.room_errors += other.room_errors;
    }

    /// Reconnections that did not recover the room's messages, for
    /// whatever reason.
    pub(crate) fn recovery_failures(&self) -> u64 {
        self.recovery_failed + self.no_session + self.missing_room + self.room_errors
    }

    /// Whether messages were lost or their count is unknown.
    pub(crate) fn lossy(&self) -> bool {
        self.lost > 0 || self.epoch_changes > 0
    }
}

/// One member of one room: its stage, its session, its last position,
/// and its counts.
#[derive(Clone, Debug)]
pub(crate) struct Tracker {
    /// The member's room.
    room: String,
    /// Where it is.
    stage: Stage,
    /// The session to resume after a cut, once a `Welcome` gave one.
    session: Option<Session>,
    /// While resuming: the new connection's fresh session, which it keeps
    /// if the resume fails.
    fresh: Option<Session>,
    /// The position its first join's `Ack` gave.
    joined_at: Option<Position>,
    /// The last position received (or given by an `Ack` or a recovery).
    last: Option<Position>,
    /// After a resume: messages up to this offset are replays.
    recover_until: u64,
    /// What it counted.
    counts: Counts,
}

impl Tracker {
    /// A member of `room` whose `Join` is on its way.
    pub(crate) fn new(room: &str) -> Tracker {
        Tracker {
            room: room.to_owned(),
            stage: Stage::Joining,
            session: None,
            fresh: None,
            joined_at: None,
            last: None,
            recover_until: 0,
            counts: Counts::default(),
        }
    }

    /// Its room.
    pub(crate) fn room(&self) -> &str {
        &self.room
    }

    /// What it counted so far.
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// The position of its first join.
    pub(crate) fn joined_at(&self) -> Option<Position> {
        self.joined_at
    }

    /// A `Welcome`: a new session (the first envelope of every
    /// connection), or the answer to the member's `Resume`.
    pub(crate) fn welcome<'a>(
        &mut self,
        session_id: &str,
        token: &[u8],
        resumed: bool,
        rooms: impl IntoIterator<Item = Recovery<'a>>,
    ) -> anyhow::Result<Step> {
        let session = Session {
            id: session_id.to_owned(),
            token: token.to_vec(),
        };
        match (self.stage, resumed) {
            (Stage::Joining, false) => {
                self.session = Some(session);
                Ok(Step::Nothing)
            }
            (Stage::Resuming, false) => {
                self.fresh = Some(session);
                Ok(Step::Nothing)
            }
            (Stage::Resuming, true) => {
                let ours = self.session.as_ref().map(|ours| ours.id.as_str());
                if ours != Some(session_id) {
                    bail!("resumed session {session_id:?}, but the client resumed {ours:?}");
                }
                self.session = Some(session);
                self.fresh = None;
                let Some(recovery) = rooms.into_iter().find(|room| room.room == self.room) else {
                    self.counts.missing_room += 1;
                    self.stage = Stage::Rejoining;
                    return Ok(Step::Rejoin);
                };
                self.recover(recovery)?;
                self.stage = Stage::Live;
                Ok(Step::Back)
            }
            (stage, resumed) => {
                bail!("a Welcome (resumed: {resumed}) while {stage:?}")
            }
        }
    }

    /// The member's room in a resumed `Welcome`.
    fn recover(&mut self, recovery: Recovery<'_>) -> anyhow::Result<()> {
        let position = recovery.position;
        if recovery.error.is_some() {
            self.counts.room_errors += 1;
            self.skip_to(position);
            return Ok(());
        }
        let last = self.last_position()?;
        if position.epoch() != last.epoch() || position.offset() < last.offset() {
            bail!(
                "room {}: recovered without an error, from offset {} of epoch {} to offset {} of epoch {}",
                self.room,
                last.offset(),
                last.epoch(),
                position.offset(),
                position.epoch()
            );
        }
        self.recover_until = position.offset();
        Ok(())
    }

    /// An `Ack`: of the member's join (with the room's position), or a
    /// refusal, which fails the member.
    pub(crate) fn ack(
        &mut self,
        position: Option<Position>,
        error: Option<(ErrorCode, &str)>,
    ) -> anyhow::Result<Step> {
        if let Some((code, message)) = error {
            bail!(
                "room {}: the server refused a join: {code:?}: {message}",
                self.room
            );
        }
        let Some(position) = position else {
            bail!(
                "room {}: a join's Ack without the room's position",
                self.room
            );
        };
        match self.stage {
            Stage::Joining => {
                self.joined_at = Some(position);
                self.last = Some(position);
                self.stage = Stage::Live;
                Ok(Step::Joined)
            }
            Stage::Rejoining => {
                self.skip_to(position);
                self.stage = Stage::Live;
                Ok(Step::Back)
            }
            stage => bail!("an Ack while {stage:?}"),
        }
    }

    /// An `Error` envelope: `RecoveryFailed` answering the member's
    /// `Resume` makes it join again; anything else fails it.
    pub(crate) fn error(&mut self, code: ErrorCode, message: &str) -> anyhow::Result<Step> {
        if self.stage == Stage::Resuming && code == ErrorCode::RecoveryFailed {
            self.counts.recovery_failed += 1;
            self.session = self.fresh.take();
            self.stage = Stage::Rejoining;
            return Ok(Step::Rejoin);
        }
        bail!(
            "the server sent an error while {:?}: {code:?}: {message}",
            self.stage
        )
    }

    /// A message of `room` at `position`: counted in order, as a gap, a
    /// duplicate, or an epoch change.
    pub(crate) fn message(&mut self, room: &str, position: Position) -> anyhow::Result<()> {
        if room != self.room {
            bail!("a message of room {room}, which this connection did not join");
        }
        if self.stage != Stage::Live {
            bail!(
                "room {room}: a message (offset {}) while {:?}",
                position.offset(),
                self.stage
            );
        }
        let last = self.last_position()?;
        // A room with no message yet may not have an epoch to give.
        let same_epoch = position.epoch() == last.epoch() || last == Position::new(0, 0);
        if !same_epoch {
            self.counts.epoch_changes += 1;
        } else if position.offset() <= last.offset() {
            self.counts.duplicated += 1;
            return Ok(());
        } else {
            self.counts.lost += position.offset() - last.offset() - 1;
        }
        self.counts.received += 1;
        if position.offset() <= self.recover_until {
            self.counts.recovered += 1;
        }
        self.last = Some(position);
        Ok(())
    }

    /// The connection was cut.
    pub(crate) fn cut(&mut self) -> anyhow::Result<()> {
        if self.stage != Stage::Live {
            bail!("cut while {:?}", self.stage);
        }
        self.stage = Stage::Cut;
        Ok(())
    }

    /// A new connection is up: what to send first on it.
    pub(crate) fn reconnected(&mut self) -> anyhow::Result<Reconnect> {
        if self.stage != Stage::Cut {
            bail!("reconnected while {:?}", self.stage);
        }
        match &self.session {
            Some(session) => {
                let reconnect = Reconnect::Resume {
                    session_id: session.id.clone(),
                    token: session.token.clone(),
                    position: self.last_position()?,
                };
                self.stage = Stage::Resuming;
                Ok(reconnect)
            }
            None => {
                self.counts.no_session += 1;
                self.stage = Stage::Rejoining;
                Ok(Reconnect::Join)
            }
        }
    }

    /// Whether the member has received the room's stream up to `last`, the
    /// room's final position.
    pub(crate) fn caught_up(&self, last: Position) -> bool {
        self.stage == Stage::Live
            && self
                .last
                .is_some_and(|seen| seen.epoch() == last.epoch() && seen.offset() >= last.offset())
    }

    /// The counts once the room's stream ended at `last`: what the member
    /// did not reach is lost.
    pub(crate) fn finish(&self, last: Position) -> Counts {
        let mut counts = self.counts;
        match self.last {
            Some(seen) if seen.epoch() == last.epoch() => {
                counts.lost += last.offset().saturating_sub(seen.offset());
            }
            Some(_) => counts.epoch_changes += 1,
            None => counts.lost += last.offset(),
        }
        counts
    }

    /// The last position, which every stage past the first join has.
    fn last_position(&self) -> anyhow::Result<Position> {
        match self.last {
            Some(last) => Ok(last),
            None => bail!("room {}: no position before the join's Ack", self.room),
        }
    }

    /// Moves the member to `position`, the room's position when it came
    /// back without a full recovery: the offsets in between are lost.
    fn skip_to(&mut self, position: Position) {
        match self.last {
            Some(last) if last.epoch() == position.epoch() => {
                self.counts.lost += position.offset().saturating_sub(last.offset());
            }
            _ => self.counts.epoch_changes += 1,
        }
        self.last = Some(position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position {
        Position::new(offset, 7)
    }

    /// A member of `r1` joined at offset 10, with a session.
    fn live() -> Tracker {
        let mut tracker = Tracker::new("r1");
        assert_eq!(
            tracker.welcome("s1", b"t1", false, []).unwrap(),
            Step::Nothing
        );
        assert_eq!(tracker.ack(Some(at(10)), None).unwrap(), Step::Joined);
        tracker
    }

    fn recovery(room: &str, error: Option<ErrorCode>, offset: u64) -> Recovery<'_> {
        Recovery {
            room,
            error,
            position: at(offset),
        }
    }

    #[test]
    fn messages_in_order_are_received_once() {
        let mut tracker = live();
        for offset in 11..=15 {
            tracker.message("r1", at(offset)).unwrap();
        }
        assert!(tracker.caught_up(at(15)));
        let counts = tracker.finish(at(15));
        assert_eq!(counts.received, 5);
        assert!(!counts.lossy());
        assert_eq!(counts.duplicated, 0);
        assert_eq!(tracker.joined_at(), Some(at(10)));
    }

    #[test]
    fn gaps_duplicates_epochs_and_a_short_end_are_counted() {
        let mut tracker = live();
        tracker.message("r1", at(11)).unwrap();
        tracker.message("r1", at(14)).unwrap();
        tracker.message("r1", at(14)).unwrap();
        tracker.message("r1", at(12)).unwrap();
        tracker.message("r1", Position::new(1, 8)).unwrap();
        let counts = tracker.counts();
        assert_eq!((counts.received, counts.lost, counts.duplicated), (3, 2, 2));
        assert_eq!(counts.epoch_changes, 1);
        assert!(!tracker.caught_up(Position::new(4, 8)));
        let end = tracker.finish(Position::new(4, 8));
        assert_eq!(end.lost, 2 + 3);
        assert_eq!(tracker.finish(at(20)).epoch_changes, 2);
    }

    #[test]
    fn a_room_without_an_epoch_takes_its_first_one() {
        let mut tracker = Tracker::new("r1");
        tracker.ack(Some(Position::new(0, 0)), None).unwrap();
        tracker.message("r1", Position::new(1, 9)).unwrap();
        tracker.message("r1", Position::new(2, 9)).unwrap();
        assert!(!tracker.counts().lossy());
    }

    #[test]
    fn a_resumed_session_replays_what_was_missed() {
        let mut tracker = live();
        tracker.message("r1", at(11)).unwrap();
        tracker.cut().unwrap();
        let resume = tracker.reconnected().unwrap();
        assert_eq!(
            resume,
            Reconnect::Resume {
                session_id: "s1".to_owned(),
                token: b"t1".to_vec(),
                position: at(11),
            }
        );
        assert_eq!(tracker.stage, Stage::Resuming);
        assert_eq!(
            tracker.welcome("s2", b"t2", false, []).unwrap(),
            Step::Nothing
        );
        assert!(tracker.message("r1", at(12)).is_err(), "before the Welcome");
        let rooms = [recovery("r0", None, 3), recovery("r1", None, 13)];
        assert_eq!(
            tracker.welcome("s1", b"t3", true, rooms).unwrap(),
            Step::Back
        );
        for offset in 12..=14 {
            tracker.message("r1", at(offset)).unwrap();
        }
        let counts = tracker.finish(at(14));
        assert_eq!((counts.received, counts.recovered), (4, 2));
        assert!(!counts.lossy());
        assert_eq!(counts.recovery_failures(), 0);
        tracker.cut().unwrap();
        let Reconnect::Resume { token, .. } = tracker.reconnected().unwrap() else {
            panic!("no session");
        };
        assert_eq!(token, b"t3", "the newest token");
    }

    #[test]
    fn unrecoverable_rooms_count_their_loss() {
        let mut tracker = live();
        tracker.cut().unwrap();
        tracker.reconnected().unwrap();
        let rooms = [recovery("r1", Some(ErrorCode::GapTooLarge), 30)];
        assert_eq!(
            tracker.welcome("s1", b"t2", true, rooms).unwrap(),
            Step::Back
        );
        tracker.message("r1", at(31)).unwrap();
        let counts = tracker.finish(at(31));
        assert_eq!((counts.lost, counts.room_errors), (20, 1));
        assert_eq!(counts.recovery_failures(), 1);
    }

    #[test]
    fn a_failed_resume_rejoins_on_the_fresh_session() {
        let mut tracker = live();
        tracker.cut().unwrap();
        tracker.reconnected().unwrap();
        tracker.welcome("s9", b"t9", false, []).unwrap();
        assert_eq!(
            tracker.error(ErrorCode::RecoveryFailed, "expired").unwrap(),
            Step::Rejoin
        );
        assert_eq!(tracker.stage, Stage::Rejoining);
        assert_eq!(tracker.ack(Some(at(25)), None).unwrap(), Step::Back);
        let counts = tracker.finish(at(25));
        assert_eq!((counts.lost, counts.recovery_failed), (15, 1));
        tracker.cut().unwrap();
        let Reconnect::Resume { session_id, .. } = tracker.reconnected().unwrap() else {
            panic!("no session");
        };
        assert_eq!(session_id, "s9");
    }

    #[test]
    fn a_room_missing_from_the_welcome_is_joined_again() {
        let mut tracker = live();
        tracker.cut().unwrap();
        tracker.reconnected().unwrap();
        let rooms = [recovery("r2", None, 3)];
        assert_eq!(
            tracker.welcome("s1", b"t2", true, rooms).unwrap(),
            Step::Rejoin
        );
        assert_eq!(tracker.ack(Some(at(10)), None).unwrap(), Step::Back);
        let counts = tracker.finish(at(10));
        assert_eq!((counts.lost, counts.missing_room), (0, 1));
    }

    #[test]
    fn without_a_session_a_reconnection_joins_again() {
        let mut tracker = Tracker::new("r1");
        tracker.ack(Some(at(10)), None).unwrap();
        tracker.cut().unwrap();
        assert_eq!(tracker.reconnected().unwrap(), Reconnect::Join);
        assert_eq!(tracker.ack(Some(at(12)), None).unwrap(), Step::Back);
        let counts = tracker.finish(at(12));
        assert_eq!((counts.lost, counts.no_session), (2, 1));
        assert!(counts.lossy());
    }

    #[test]
    fn what_the_contract_does_not_allow_fails() {
        let mut tracker = live();
        assert!(tracker.message("r2", at(11)).is_err());
        assert!(tracker.welcome("s1", b"t", false, []).is_err());
        assert!(tracker.error(ErrorCode::RecoveryFailed, "x").is_err());
        assert!(tracker.reconnected().is_err());
        tracker.cut().unwrap();
        tracker.reconnected().unwrap();
        assert!(tracker.welcome("other", b"t", true, []).is_err());
        let mut tracker = live();
        tracker.cut().unwrap();
        tracker.reconnected().unwrap();
        let backwards = [recovery("r1", None, 5)];
        assert!(tracker.welcome("s1", b"t", true, backwards).is_err());
        let mut tracker = Tracker::new("r1");
        assert!(tracker.ack(None, None).is_err());
        let refused = Some((ErrorCode::Forbidden, "no"));
        assert!(tracker.ack(Some(at(1)), refused).is_err());
    }
}
