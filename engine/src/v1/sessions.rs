//! [`SessionTable`]: the sessions one shard keeps, live (their connection
//! is open here) or parked (their connection closed, and the session
//! waits out its timeout for the client to resume it); and the notices
//! that hand a session from its keeper to the connection resuming it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::token::SessionId;
use crate::conn::{ConnAddress, JoinOptions};

/// What a session keeps while no connection holds it, and what moves to
/// the connection that resumes it, on whatever shard.
#[derive(Debug)]
pub(crate) struct Parked<S> {
    /// The generation of the last token issued; a resume must show it.
    pub(crate) generation: u32,
    /// The user id the session's connection was upgraded with: only the
    /// same user may resume it.
    pub(crate) user: Option<Arc<str>>,
    /// The rooms the session was in, and how they were joined.
    pub(crate) rooms: Vec<(Arc<str>, JoinOptions)>,
    /// The application's state.
    pub(crate) state: S,
}

/// To the shard that keeps a session: hand it over to `to`.
#[derive(Debug)]
pub(crate) struct Take {
    pub(crate) id: SessionId,
    pub(crate) generation: u32,
    pub(crate) user: Option<Arc<str>>,
    pub(crate) to: ConnAddress,
}

/// From a session's keeper to the connection resuming it: the session, or
/// `None` when it cannot be resumed.
#[derive(Debug)]
pub(crate) struct Handover<S> {
    pub(crate) id: SessionId,
    pub(crate) to: ConnAddress,
    pub(crate) session: Option<Parked<S>>,
}

/// Where a session is.
#[derive(Debug)]
enum Slot<S> {
    /// Its connection is open on this shard.
    Live { at: ConnAddress, generation: u32 },
    /// Its connection closed; resumable until `until`.
    Parked { session: Parked<S>, until: Instant },
}

/// What a shard holds where a resume asked to take a session.
#[derive(Debug)]
pub(crate) enum Found<S> {
    /// The session was parked: here it is.
    Parked(Parked<S>),
    /// The session's connection still looks open (the link may be dead
    /// and not known to be yet): the caller takes the session from it.
    Live(ConnAddress),
}

/// The sessions one shard keeps.
#[derive(Debug)]
pub(crate) struct SessionTable<S> {
    slots: HashMap<SessionId, Slot<S>>,
    /// Parked sessions by when they expire, oldest first (one timeout for
    /// all keeps it in order); entries of sessions resumed since are
    /// skipped.
    expiry: VecDeque<(Instant, SessionId)>,
    timeout: Duration,
    /// Sessions created on this shard so far.
    serial: u64,
}

impl<S> SessionTable<S> {
    /// No sessions; a closed connection's session stays resumable for
    /// `timeout`.
    pub(crate) fn new(timeout: Duration) -> SessionTable<S> {
        SessionTable {
            slots: HashMap::new(),
            expiry: VecDeque::new(),
            timeout,
            serial: 0,
        }
    }

    /// The next serial number for a session id.
    pub(crate) fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Records that session `id`, at `generation`, is held by the open
    /// connection at `at`.
    pub(crate) fn live(&mut self, id: SessionId, at: ConnAddress, generation: u32) {
        self.slots.insert(id, Slot::Live { at, generation });
    }

    /// Whether session `id` is held by the connection at `at`.
    pub(crate) fn is_live_at(&self, id: SessionId, at: ConnAddress) -> bool {
        matches!(self.slots.get(&id), Some(Slot::Live { at: held, .. }) if *held == at)
    }

    /// Forgets session `id` (its client ended it).
    pub(crate) fn end(&mut self, id: SessionId) {
        self.slots.remove(&id);
    }

    /// Parks session `id` when its connection closes, until the timeout.
    pub(crate) fn park(&mut self, id: SessionId, session: Parked<S>, now: Instant) {
        self.expire(now);
        let until = now + self.timeout;
        self.slots.insert(id, Slot::Parked { session, until });
        self.expiry.push_back((until, id));
    }

    /// Takes session `id` for a resume that showed `generation` for
    /// `user`: the parked session, or where its live connection is.
    /// `None` when there is no such session (never here, expired, already
    /// resumed with that token) or it belongs to another user; then the
    /// table is unchanged.
    pub(crate) fn take(
        &mut self,
        id: SessionId,
        generation: u32,
        user: Option<&Arc<str>>,
        now: Instant,
        owner_of_live: impl FnOnce(ConnAddress) -> Option<Option<Arc<str>>>,
    ) -> Option<Found<S>> {
        self.expire(now);
        match self.slots.get(&id)? {
            Slot::Parked { session, .. } => {
                if session.generation != generation || session.user.as_ref() != user {
                    return None;
                }
                match self.slots.remove(&id) {
                    Some(Slot::Parked { session, .. }) => Some(Found::Parked(session)),
                    _ => None,
                }
            }
            &Slot::Live {
                at,
                generation: live,
            } => {
                if live != generation || owner_of_live(at)?.as_ref() != user {
                    return None;
                }
                self.slots.remove(&id);
                Some(Found::Live(at))
            }
        }
    }

    /// Parked sessions.
    #[cfg(test)]
    pub(crate) fn parked(&self) -> usize {
        self.slots
            .values()
            .filter(|slot| matches!(slot, Slot::Parked { .. }))
            .count()
    }

    /// Drops the parked sessions whose timeout passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&(until, id)) = self.expiry.front() {
            if until > now {
                break;
            }
            self.expiry.pop_front();
            if matches!(self.slots.get(&id), Some(Slot::Parked { until: at, .. }) if *at == until) {
                self.slots.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnId;
    use crate::handler::ShardId;
    use crate::v1::token::SessionKeys;

    fn address(key: u32) -> ConnAddress {
        ConnAddress {
            key,
            id: ConnId::new(ShardId(0), u64::from(key)),
        }
    }

    fn parked(generation: u32, user: Option<&str>) -> Parked<u8> {
        Parked {
            generation,
            user: user.map(Into::into),
            rooms: vec![("a".into(), JoinOptions::default())],
            state: 5,
        }
    }

    #[test]
    fn a_parked_session_is_taken_once_with_its_generation_and_user() {
        let keys = SessionKeys::process();
        let mut table = SessionTable::new(Duration::from_secs(10));
        let id = keys.session_id(ShardId(0), table.next_serial());
        let now = Instant::now();
        table.park(id, parked(2, Some("ann")), now);
        assert_eq!(table.parked(), 1);
        let ann: Arc<str> = "ann".into();
        let bob: Arc<str> = "bob".into();
        assert!(table.take(id, 1, Some(&ann), now, |_| None).is_none());
        assert!(table.take(id, 2, Some(&bob), now, |_| None).is_none());
        assert!(table.take(id, 2, None, now, |_| None).is_none());
        let Some(Found::Parked(session)) = table.take(id, 2, Some(&ann), now, |_| None) else {
            panic!("the session is parked");
        };
        assert_eq!(session.state, 5);
        assert!(table.take(id, 2, Some(&ann), now, |_| None).is_none());
    }

    #[test]
    fn a_parked_session_expires_after_the_timeout() {
        let keys = SessionKeys::process();
        let mut table = SessionTable::new(Duration::from_secs(10));
        let id = keys.session_id(ShardId(0), table.next_serial());
        let start = Instant::now();
        table.park(id, parked(1, None), start);
        let later = start + Duration::from_secs(10);
        assert!(table.take(id, 1, None, later, |_| None).is_none());
        assert_eq!(table.parked(), 0);
    }

    #[test]
    fn a_live_session_is_handed_over_from_its_connection() {
        let keys = SessionKeys::process();
        let mut table: SessionTable<u8> = SessionTable::new(Duration::from_secs(10));
        let id = keys.session_id(ShardId(0), table.next_serial());
        table.live(id, address(4), 3);
        assert!(table.is_live_at(id, address(4)));
        assert!(!table.is_live_at(id, address(5)));
        let now = Instant::now();
        assert!(table.take(id, 2, None, now, |_| Some(None)).is_none());
        assert!(table.take(id, 3, None, now, |_| None).is_none(), "gone");
        let Some(Found::Live(at)) = table.take(id, 3, None, now, |_| Some(None)) else {
            panic!("the session is live");
        };
        assert_eq!(at, address(4));
        assert!(!table.is_live_at(id, address(4)));
    }
}
