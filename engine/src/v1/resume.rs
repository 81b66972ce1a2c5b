//! Sessions on `shardcast.v1`: the `Welcome` every connection starts
//! with, parking a session when its connection closes, and `Resume`.
//!
//! A resume goes in four steps, whatever shards are involved:
//! 1. The connection that received the `Resume` checks the token (any
//!    shard can: they share the key) and learns from it which shard keeps
//!    the session; it sends that shard a `Take` notice.
//! 2. The keeper hands the session over: a parked one, or one still held
//!    by an open connection (a link that died without anyone knowing
//!    yet), which it closes with 4001. It answers with a `Handover`.
//! 3. The new connection rejoins the session's rooms from the positions
//!    the client sent ([`Conn::rejoin`]); each room's missed messages
//!    come from its owner's history ([`Protocol::on_recovered`](crate::Handler::on_recovered)).
//! 4. Once every room is recovered (or known lost), the resumed `Welcome`
//!    goes out, with each room's result, and then the kept messages:
//!    replayed ones first, then the live ones, with no gap and no
//!    duplicate at the seam.
//!
//! A resume that cannot be honoured (forged, stale or expired token,
//! another user, a session that is gone) is answered `RecoveryFailed`,
//! and the connection keeps the fresh session of its first `Welcome`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use shardcast_proto::envelope::{self, ErrorCode, RecoveryReport};
use tracing::debug;

use super::Session;
use super::protocol::Protocol;
use super::router::EventError;
use super::sessions::{Found, Handover, Parked, Take};
use super::token::{SessionId, SessionKeys};
use crate::CloseCode;
use crate::conn::Conn;
use crate::notice::ShardConns;
use crate::rooms::{Loss, Position, Recovery};

/// The close code of a connection whose session a newer connection
/// resumed: the client reconnected while this link still looked open.
pub const SESSION_RESUMED_ELSEWHERE: CloseCode = CloseCode(4001);

/// A resume in progress on its new connection.
#[derive(Debug)]
pub(crate) struct Resuming {
    /// The session being resumed.
    id: SessionId,
    /// The last position the client saw in each room.
    positions: HashMap<Box<str>, Position>,
    /// Rooms whose recovery has not come yet.
    waiting: usize,
    /// Each rejoined room's recovery.
    rooms: Vec<(Arc<str>, Recovery)>,
}

impl<S: Default + Send + 'static> Protocol<S> {
    /// Starts a fresh session on a new `shardcast.v1` connection and
    /// sends its `Welcome`.
    pub(super) fn start_session(&mut self, conn: &mut Conn<Session<S>>) {
        let Some(table) = &mut self.sessions else {
            return;
        };
        let shard = conn.hub().shard();
        let id = SessionKeys::process().session_id(shard, table.next_serial());
        table.live(id, conn.address(), 1);
        let session = conn.state_mut();
        session.session = Some(id);
        session.generation = 1;
        self.send_welcome(conn, false, &[]);
    }

    /// Sends the `Welcome` of the connection's session at its generation.
    fn send_welcome(
        &mut self,
        conn: &mut Conn<Session<S>>,
        resumed: bool,
        rooms: &[RecoveryReport<'_>],
    ) {
        let Some(id) = conn.state().session else {
            return;
        };
        let token = SessionKeys::process().token(id, conn.hub().shard(), conn.state().generation);
        let heartbeat_ms = conn.heartbeat_interval().map_or(0, |interval| {
            u32::try_from(interval.as_millis()).unwrap_or(u32::MAX)
        });
        let bytes = self
            .writer
            .welcome(&id.to_string(), &token, heartbeat_ms, resumed, rooms);
        // A failed send has already closed the connection with the reason.
        let _ = conn.send_binary(bytes);
    }

    /// A client's `Resume`: checks it, then asks the session's keeper for
    /// the session.
    pub(super) fn resume(&mut self, conn: &mut Conn<Session<S>>, resume: envelope::Resume<'_>) {
        if self.sessions.is_none() {
            self.refuse_resume(conn, "this server keeps no sessions");
            return;
        }
        if conn.state().resuming.is_some() || !conn.rooms().is_empty() {
            let error = EventError::bad_request(
                "resume is the first request of a connection, before any join",
            );
            self.answer(conn, None, None, Err(error));
            return;
        }
        let token = envelope::bytes(resume.token());
        let checked = SessionId::parse(resume.session_id()).and_then(|id| {
            SessionKeys::process()
                .verify(id, token)
                .map(|(keeper, generation)| (id, keeper, generation))
        });
        let Some((id, keeper, generation)) = checked else {
            self.refuse_resume(conn, "the session id or resume token is not valid");
            return;
        };
        if conn.state().session == Some(id) || keeper.index() >= conn.hub().shards() {
            self.refuse_resume(conn, "the session id or resume token is not valid");
            return;
        }
        let positions = resume
            .rooms()
            .into_iter()
            .flatten()
            .map(|room| {
                let at = room.position();
                let position = Position {
                    offset: at.offset(),
                    epoch: at.epoch(),
                };
                (Box::from(room.room()), position)
            })
            .collect();
        conn.state_mut().resuming = Some(Box::new(Resuming {
            id,
            positions,
            waiting: 0,
            rooms: Vec::new(),
        }));
        let take = Take {
            id,
            generation,
            user: conn.state().identity().user_id().cloned(),
            to: conn.address(),
        };
        conn.hub().notify(keeper, Box::new(take));
    }

    fn refuse_resume(&mut self, conn: &mut Conn<Session<S>>, reason: &'static str) {
        debug!(conn = %conn.id(), reason, "resume refused");
        let error = EventError::new(ErrorCode::RecoveryFailed, reason);
        self.answer(conn, None, None, Err(error));
    }

    /// As a session's keeper: hands it over to the connection that
    /// resumes it, or says it cannot.
    pub(super) fn take(&mut self, conns: &mut ShardConns<'_, Session<S>>, take: Take) {
        let Some(table) = &mut self.sessions else {
            return;
        };
        let found = table.take(
            take.id,
            take.generation,
            take.user.as_ref(),
            Instant::now(),
            |at| conns.with(at, |old| old.state().identity().user_id().cloned()),
        );
        let session = match found {
            None => None,
            Some(Found::Parked(session)) => Some(session),
            Some(Found::Live(at)) => conns.with(at, |old| {
                debug!(conn = %old.id(), "session resumed on another connection; closing this one");
                let parked = park(old);
                let _ = old.close(SESSION_RESUMED_ELSEWHERE, "session resumed elsewhere");
                parked
            }),
        };
        let handover = Handover {
            id: take.id,
            to: take.to,
            session,
        };
        conns.hub().notify(take.to.shard(), Box::new(handover));
    }

    /// On the resuming connection: the keeper's answer.
    pub(super) fn hand_over(
        &mut self,
        conns: &mut ShardConns<'_, Session<S>>,
        handover: Handover<S>,
    ) {
        let Handover { id, to, session } = handover;
        let resumed = conns.with(to, |conn| {
            let Some(session) = session else {
                conn.state_mut().resuming = None;
                self.refuse_resume(
                    conn,
                    "the session is unknown, expired, already resumed, or another user's",
                );
                return;
            };
            self.adopt(conn, id, session);
        });
        if resumed.is_none() {
            debug!(%id, "the resuming connection closed first; the session is lost");
        }
    }

    /// Makes `session` the connection's own, in place of its fresh one,
    /// and rejoins its rooms from the client's positions.
    fn adopt(&mut self, conn: &mut Conn<Session<S>>, id: SessionId, session: Parked<S>) {
        let Some(table) = &mut self.sessions else {
            return;
        };
        if let Some(fresh) = conn.state().session {
            table.end(fresh);
        }
        let generation = session.generation.wrapping_add(1);
        table.live(id, conn.address(), generation);
        let member = conn.state().identity().user_id().cloned();
        let state = conn.state_mut();
        state.session = Some(id);
        state.generation = generation;
        *state.state_mut() = session.state;
        let mut positions = state
            .resuming
            .as_mut()
            .map(|resuming| std::mem::take(&mut resuming.positions))
            .unwrap_or_default();
        let mut waiting = 0;
        for (room, mut options) in session.rooms {
            options.member.clone_from(&member);
            let after = positions.remove(&*room).unwrap_or_default();
            match conn.rejoin(&room, &options, after) {
                Ok(true) => waiting += 1,
                Ok(false) => {}
                Err(error) => debug!(conn = %conn.id(), %room, %error, "room not rejoined"),
            }
        }
        match &mut conn.state_mut().resuming {
            Some(resuming) if resuming.id == id => resuming.waiting = waiting,
            _ => return,
        }
        if waiting == 0 {
            self.finish_resume(conn);
        }
    }

    /// A rejoined room's recovery is known; the last one sends the
    /// resumed `Welcome` and what was kept.
    pub(super) fn recovered(
        &mut self,
        conn: &mut Conn<Session<S>>,
        room: &str,
        recovery: Recovery,
    ) {
        let Some(resuming) = &mut conn.state_mut().resuming else {
            conn.release_recovered();
            return;
        };
        resuming.rooms.push((room.into(), recovery));
        resuming.waiting = resuming.waiting.saturating_sub(1);
        if resuming.waiting == 0 {
            self.finish_resume(conn);
        }
    }

    fn finish_resume(&mut self, conn: &mut Conn<Session<S>>) {
        let Some(resuming) = conn.state_mut().resuming.take() else {
            return;
        };
        let reports: Vec<RecoveryReport<'_>> = resuming
            .rooms
            .iter()
            .map(|(room, recovery)| RecoveryReport {
                room,
                offset: recovery.position.offset,
                epoch: recovery.position.epoch,
                error: recovery.lost.map(|loss| match loss {
                    Loss::GapTooLarge => ErrorCode::GapTooLarge,
                    Loss::EpochChanged => ErrorCode::EpochChanged,
                }),
            })
            .collect();
        self.send_welcome(conn, true, &reports);
        conn.release_recovered();
    }

    /// The connection closed: its session waits for a resume until the
    /// timeout, unless it was ended on purpose: a close frame with 1000,
    /// or with no code (1005).
    pub(super) fn end_session(&mut self, conn: &mut Conn<Session<S>>, code: CloseCode) {
        let (Some(table), Some(id)) = (&mut self.sessions, conn.state().session) else {
            return;
        };
        if !table.is_live_at(id, conn.address()) {
            return;
        }
        if code == CloseCode::NORMAL || code == CloseCode::NO_STATUS {
            table.end(id);
        } else {
            let parked = park(conn);
            table.park(id, parked, Instant::now());
        }
    }
}

/// What of the connection's session outlives it: its rooms, user and
/// application state. The connection keeps no session after this.
fn park<S: Default>(conn: &mut Conn<Session<S>>) -> Parked<S> {
    let rooms = conn.memberships();
    let session = conn.state_mut();
    session.session = None;
    Parked {
        generation: session.generation,
        user: session.identity().user_id().cloned(),
        rooms,
        state: std::mem::take(session.state_mut()),
    }
}
