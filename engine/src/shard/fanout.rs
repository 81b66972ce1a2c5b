//! A shard's share of rooms and broadcast, once per loop turn: what its
//! inbox brought, what its handler published, the member counts its
//! rooms' owners must hear, the recovery of rejoined members, notices
//! between handlers, and the handler's `on_joined`, `on_recovered` and
//! `on_published` calls. Messages for other shards are pushed on their
//! inboxes as they come, and each shard written to is rung once, at the
//! end.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use shardcast_proto::envelope::EnvelopeWriter;
use tracing::error;

use super::Shard;
use crate::conn::{ConnAddress, ConnId};
use crate::connection::{guarded, panicked};
use crate::handler::{Handler, ShardId};
use crate::hub::Pending;
use crate::inbox::ShardMessage;
use crate::notice::{Notice, ShardConns};
use crate::prepared::PreparedMessage;
use crate::rooms::{
    Joined, Loss, MemberCount, Position, PresenceChange, Publication, Recovery, Sequenced, Step,
    owner_of,
};

/// Rounds of inbox, publications and callbacks in one turn: callbacks may
/// publish, and their publications are sent in the same turn, up to this.
const ROUNDS: usize = 4;

/// Inbox messages handled per round, so a flood from other shards cannot
/// keep the shard from its own sockets.
const INBOX_BUDGET: usize = 4096;

/// A handler call owed after room work.
#[derive(Debug)]
pub(super) enum Callback {
    Joined {
        key: u32,
        conn: ConnId,
        room: Arc<str>,
        position: Position,
    },
    Published {
        key: u32,
        conn: ConnId,
        tag: u64,
        room: Arc<str>,
        position: Position,
    },
    Recovered {
        key: u32,
        conn: ConnId,
        room: Arc<str>,
        recovery: Recovery,
    },
}

/// Room messages waiting for the end of the turn, per connection, in the
/// order they were delivered.
#[derive(Debug, Default)]
struct Batches {
    /// A connection's place in `pending`, by slab key.
    index: HashMap<u32, usize>,
    pending: Vec<(u32, ConnId, Vec<Arc<Sequenced>>)>,
}

/// The shard's working lists for room work, kept between turns so a busy
/// turn allocates nothing.
#[derive(Debug, Default)]
pub(super) struct Fanout {
    /// Shards pushed to this turn, to ring at its end.
    ring: Vec<bool>,
    callbacks: Vec<Callback>,
    pending: Vec<Pending>,
    counts: Vec<MemberCount>,
    changes: Vec<PresenceChange>,
    joined: Vec<Joined>,
    /// The shards a presence change goes to.
    watching: Vec<ShardId>,
    /// The envelope buffer for presence notifications and batches.
    writer: EnvelopeWriter,
    /// This turn's room messages per `shardcast.v1` connection, when
    /// deliveries are batched.
    batches: Batches,
    /// The last turn stopped with work left (budget or rounds spent): the
    /// next wait must not sleep.
    pub(super) more: bool,
}

impl Fanout {
    /// Working lists for a server of `shards` shards.
    pub(super) fn new(shards: usize) -> Fanout {
        Fanout {
            ring: vec![false; shards],
            ..Fanout::default()
        }
    }
}

impl<H: Handler> Shard<H> {
    /// This turn's room work, then one ring per shard written to.
    pub(super) fn exchange(&mut self, now: Instant) {
        self.fanout.more = true;
        for _ in 0..ROUNDS {
            let drained = self.drain_inbox(now);
            let published = self.run_pending(now);
            self.report_counts();
            let called = self.run_callbacks();
            if !drained && !published && !called {
                self.fanout.more = false;
                break;
            }
        }
        self.send_batches();
        let state = self.context.send.hub.state.borrow();
        self.counters.set_rooms(
            state.local.len(),
            state.local.memberships(),
            state.owned.len(),
        );
        drop(state);
        let inboxes = &self.context.shared.inboxes;
        for (index, ring) in self.fanout.ring.iter_mut().enumerate() {
            if std::mem::take(ring) {
                inboxes[index].ring();
            }
        }
    }

    /// Handles what other shards and handles sent; whether there was any.
    fn drain_inbox(&mut self, now: Instant) -> bool {
        let shared = Arc::clone(&self.context.shared);
        let inbox = &shared.inboxes[self.id.index()];
        inbox.clear_notified();
        let mut handled = 0;
        while handled < INBOX_BUDGET {
            let Some(message) = inbox.pop() else {
                break;
            };
            handled += 1;
            self.handle(message, now);
        }
        handled > 0
    }

    fn handle(&mut self, message: ShardMessage, now: Instant) {
        match message {
            ShardMessage::Publish(publication) => self.sequence(*publication, now),
            ShardMessage::Deliver(message) => self.deliver(&message),
            ShardMessage::Members {
                room,
                from,
                count,
                watchers,
                subscription,
            } => {
                let started = self.hub_state().owned.count(&room, from, count, watchers);
                if let Some(position) = started {
                    self.send_to(
                        from,
                        ShardMessage::Subscribed {
                            room,
                            subscription,
                            position,
                        },
                    );
                }
            }
            ShardMessage::Subscribed {
                room,
                subscription,
                position,
            } => {
                self.hub_state()
                    .local
                    .subscribed(&room, subscription, position);
            }
            ShardMessage::Published {
                conn,
                key,
                tag,
                room,
                position,
            } => self.fanout.callbacks.push(Callback::Published {
                key,
                conn,
                tag,
                room,
                position,
            }),
            ShardMessage::Presence(change) => self.announce(&change),
            ShardMessage::PresenceNote { room, frame } => self.notify_watchers(&room, &frame),
            ShardMessage::Broadcast(message) => self.broadcast_here(&message),
            ShardMessage::History {
                room,
                after,
                upto,
                to,
            } => {
                let history = self.hub_state().owned.history_between(&room, after, upto);
                self.replay(room, upto, history, to);
            }
            ShardMessage::Replay {
                room,
                joined,
                history,
                to,
            } => self.recovered(&room, joined, history, to),
            ShardMessage::Notice(notice) => self.notice(notice),
            ShardMessage::RoomSize { room, reply } => {
                let size = self.hub_state().owned.size(&room);
                // The asker may have given up waiting.
                let _ = reply.send(size);
            }
        }
    }

    /// Sends what the handler published and broadcast during its
    /// callbacks; whether there was any.
    fn run_pending(&mut self, now: Instant) -> bool {
        let mut pending = std::mem::take(&mut self.fanout.pending);
        std::mem::swap(
            &mut pending,
            &mut self.context.send.hub.state.borrow_mut().pending,
        );
        let any = !pending.is_empty();
        for item in pending.drain(..) {
            match item {
                Pending::Publish(publication) => {
                    let owner = owner_of(&publication.room, self.fanout.ring.len());
                    if owner == self.id {
                        self.sequence(publication, now);
                    } else {
                        self.send_to(owner, ShardMessage::Publish(Box::new(publication)));
                    }
                }
                Pending::Broadcast(message) => {
                    for index in 0..self.fanout.ring.len() {
                        if index != self.id.index() {
                            self.send_to(ShardId(index), ShardMessage::Broadcast(message.clone()));
                        }
                    }
                    self.broadcast_here(&message);
                }
                Pending::Notice(shard, notice) => {
                    if shard == self.id {
                        self.notice(notice);
                    } else {
                        self.send_to(shard, ShardMessage::Notice(notice));
                    }
                }
            }
        }
        self.fanout.pending = pending;
        any
    }

    /// Numbers a publication to a room this shard owns, hands it to every
    /// other shard with members, delivers it here, and answers its
    /// receipt.
    fn sequence(&mut self, publication: Publication, now: Instant) {
        let receipt = publication.receipt;
        let send = Rc::clone(&self.context.send);
        let mut state = send.hub.state.borrow_mut();
        let (message, members) = state.owned.sequence(publication, now, &send.hub.config);
        for (index, &count) in members.iter().enumerate() {
            if count > 0 && index != self.id.index() {
                self.context.shared.inboxes[index]
                    .push(ShardMessage::Deliver(Arc::clone(&message)));
                self.fanout.ring[index] = true;
            }
        }
        drop(state);
        self.deliver(&message);
        if let Some(receipt) = receipt {
            let (room, position) = (Arc::clone(&message.room), message.position);
            if receipt.conn.shard() == self.id {
                self.fanout.callbacks.push(Callback::Published {
                    key: receipt.key,
                    conn: receipt.conn,
                    tag: receipt.tag,
                    room,
                    position,
                });
            } else {
                self.send_to(
                    receipt.conn.shard(),
                    ShardMessage::Published {
                        conn: receipt.conn,
                        key: receipt.key,
                        tag: receipt.tag,
                        room,
                        position,
                    },
                );
            }
        }
    }

    /// Queues a sequenced message on every member of its room on this
    /// shard, in order: the raw frame or the `shardcast.v1` envelope,
    /// whichever each connection speaks.
    fn deliver(&mut self, message: &Arc<Sequenced>) {
        if self.hub_state().local.has_joined() {
            // A member hears that its join took effect before it hears
            // the room's messages.
            self.run_callbacks();
        }
        let send = Rc::clone(&self.context.send);
        let mut state = send.hub.state.borrow_mut();
        let Some(members) = state.local.deliverable(message) else {
            return;
        };
        for member in members {
            // A held member's copy was kept for it.
            if message.except == Some(member.id) || member.held {
                continue;
            }
            let Some(connection) = self.connections.get_mut(member.key as usize) else {
                continue;
            };
            let Some(open) = connection.open_mut() else {
                continue;
            };
            if open.conn.id() != member.id || open.conn.is_closing() {
                continue;
            }
            let frame = if !open.conn.speaks_v1() {
                &message.message
            } else if send.hub.config.batch_deliveries {
                let batches = &mut self.fanout.batches;
                let at = *batches.index.entry(member.key).or_insert_with(|| {
                    batches.pending.push((member.key, member.id, Vec::new()));
                    batches.pending.len() - 1
                });
                batches.pending[at].2.push(Arc::clone(message));
                continue;
            } else {
                message.envelope()
            };
            // A message that does not fit is dropped or closes the
            // connection, as the backpressure policy says; either way the
            // other members are served.
            let _ = open.conn.send_prepared(frame);
            Self::mark_dirty(&mut self.dirty, member.key as usize, connection);
        }
    }

    /// Sends each connection's batch of this turn's room messages: one
    /// message alone in its shared envelope, several in one `Batch`.
    fn send_batches(&mut self) {
        let mut pending = std::mem::take(&mut self.fanout.batches.pending);
        self.fanout.batches.index.clear();
        for (key, id, messages) in pending.drain(..) {
            let Some(connection) = self.connections.get_mut(key as usize) else {
                continue;
            };
            let Some(open) = connection.open_mut() else {
                continue;
            };
            if open.conn.id() != id || open.conn.is_closing() {
                continue;
            }
            if let [message] = &messages[..] {
                let _ = open.conn.send_prepared(message.envelope());
            } else {
                let mut batch = self.fanout.writer.batch();
                for message in &messages {
                    batch.message(
                        &message.room,
                        message.position.offset,
                        message.position.epoch,
                        message.message.payload(),
                        message.publisher.as_deref(),
                    );
                }
                let droppable = messages.iter().all(|m| m.message.is_droppable());
                let _ = open.conn.send_batch(batch.finish(), droppable);
            }
            Self::mark_dirty(&mut self.dirty, key as usize, connection);
        }
        self.fanout.batches.pending = pending;
    }

    /// Queues `message` on every open connection of this shard.
    fn broadcast_here(&mut self, message: &PreparedMessage) {
        for (key, connection) in &mut self.connections {
            let Some(open) = connection.open_mut() else {
                continue;
            };
            if open.conn.is_closing() {
                continue;
            }
            let _ = open.conn.send_prepared(message);
            Self::mark_dirty(&mut self.dirty, key, connection);
        }
    }

    /// Tells each room's owner the member counts that changed here, then
    /// the arrivals and departures behind them.
    fn report_counts(&mut self) {
        let send = Rc::clone(&self.context.send);
        let mut counts = std::mem::take(&mut self.fanout.counts);
        let mut changes = std::mem::take(&mut self.fanout.changes);
        {
            let mut state = send.hub.state.borrow_mut();
            state.local.drain_counts(&mut counts);
            state.local.drain_changes(&mut changes);
        }
        let shards = self.fanout.ring.len();
        for count in counts.drain(..) {
            let owner = owner_of(&count.room, shards);
            if owner == self.id {
                // This shard's own rooms are live from the first join.
                send.hub.state.borrow_mut().owned.count(
                    &count.room,
                    self.id,
                    count.count,
                    count.watchers,
                );
            } else {
                self.send_to(
                    owner,
                    ShardMessage::Members {
                        room: count.room,
                        from: self.id,
                        count: count.count,
                        watchers: count.watchers,
                        subscription: count.subscription,
                    },
                );
            }
        }
        for change in changes.drain(..) {
            let owner = owner_of(&change.room, shards);
            if owner == self.id {
                self.announce(&change);
            } else {
                self.send_to(owner, ShardMessage::Presence(Box::new(change)));
            }
        }
        self.fanout.counts = counts;
        self.fanout.changes = changes;
    }

    /// As a room's owner: tells the shards with presence watchers that a
    /// member arrived or left, in one `Presence` envelope framed once.
    fn announce(&mut self, change: &PresenceChange) {
        let frame = {
            let state = self.context.send.hub.state.borrow();
            let Some((members, shards)) = state.owned.watched(&change.room) else {
                return;
            };
            let frame = PreparedMessage::binary(self.fanout.writer.presence(
                &change.room,
                change.kind,
                &change.member,
                members,
            ));
            self.fanout.watching.clear();
            self.fanout.watching.extend(shards);
            frame
        };
        for index in 0..self.fanout.watching.len() {
            let shard = self.fanout.watching[index];
            if shard == self.id {
                self.notify_watchers(&change.room, &frame);
            } else {
                self.send_to(
                    shard,
                    ShardMessage::PresenceNote {
                        room: Arc::clone(&change.room),
                        frame: frame.clone(),
                    },
                );
            }
        }
    }

    /// Sends a `Presence` envelope to this shard's members of `room` that
    /// asked for them.
    fn notify_watchers(&mut self, room: &str, frame: &PreparedMessage) {
        let send = Rc::clone(&self.context.send);
        let state = send.hub.state.borrow();
        for member in state.local.watchers(room) {
            let Some(connection) = self.connections.get_mut(member.key as usize) else {
                continue;
            };
            let Some(open) = connection.open_mut() else {
                continue;
            };
            if open.conn.id() != member.id
                || open.conn.is_closing()
                || !open.conn.speaks_v1()
                || member.held
            {
                continue;
            }
            let _ = open.conn.send_prepared(frame);
            Self::mark_dirty(&mut self.dirty, member.key as usize, connection);
        }
    }

    /// Makes the handler calls room work owed; whether there were any.
    fn run_callbacks(&mut self) -> bool {
        let mut joined = std::mem::take(&mut self.fanout.joined);
        self.context
            .send
            .hub
            .state
            .borrow_mut()
            .local
            .drain_joined(&mut joined);
        for join in joined.drain(..) {
            if join.member.held {
                self.start_recovery(&join);
                continue;
            }
            self.fanout.callbacks.push(Callback::Joined {
                key: join.member.key,
                conn: join.member.id,
                room: join.room,
                position: join.position,
            });
        }
        self.fanout.joined = joined;
        let mut callbacks = std::mem::take(&mut self.fanout.callbacks);
        let any = !callbacks.is_empty();
        for callback in callbacks.drain(..) {
            let (Callback::Joined { key, conn, .. }
            | Callback::Published { key, conn, .. }
            | Callback::Recovered { key, conn, .. }) = callback;
            let Some(connection) = self.connections.get_mut(key as usize) else {
                continue;
            };
            let Some(open) = connection.open_mut() else {
                continue;
            };
            if open.conn.id() != conn || open.conn.is_closing() {
                continue;
            }
            let handler = &mut self.context.handler;
            let target = &mut open.conn;
            let (name, outcome) = match &callback {
                Callback::Joined { room, position, .. } => (
                    "on_joined",
                    guarded(|| handler.on_joined(target, room, *position)),
                ),
                Callback::Published {
                    room,
                    tag,
                    position,
                    ..
                } => (
                    "on_published",
                    guarded(|| handler.on_published(target, room, *tag, *position)),
                ),
                Callback::Recovered { room, recovery, .. } => (
                    "on_recovered",
                    guarded(|| handler.on_recovered(target, room, *recovery)),
                ),
            };
            if outcome.is_err() {
                panicked(&mut open.conn, name);
            }
            Self::mark_dirty(&mut self.dirty, key as usize, connection);
        }
        self.fanout.callbacks = callbacks;
        any
    }

    /// A held member's join took effect: what it missed is asked of the
    /// room's owner, or known at once.
    fn start_recovery(&mut self, join: &Joined) {
        let to = ConnAddress {
            key: join.member.key,
            id: join.member.id,
        };
        let step = self
            .hub_state()
            .local
            .recovery_step(to.key, &join.room, join.position);
        match step {
            None => {}
            Some(Step::Done(outcome)) => {
                self.recovered(&join.room, join.position, outcome.map(|()| Vec::new()), to);
            }
            Some(Step::Fetch { after }) => {
                let owner = owner_of(&join.room, self.fanout.ring.len());
                if owner == self.id {
                    let history =
                        self.hub_state()
                            .owned
                            .history_between(&join.room, after, join.position);
                    self.recovered(&join.room, join.position, history, to);
                } else {
                    self.send_to(
                        owner,
                        ShardMessage::History {
                            room: Arc::clone(&join.room),
                            after,
                            upto: join.position,
                            to,
                        },
                    );
                }
            }
        }
    }

    /// As a room's owner: hands a rejoined member's missed messages to
    /// its shard.
    fn replay(
        &mut self,
        room: Arc<str>,
        joined: Position,
        history: Result<Vec<Arc<Sequenced>>, Loss>,
        to: ConnAddress,
    ) {
        if to.shard() == self.id {
            self.recovered(&room, joined, history, to);
        } else {
            self.send_to(
                to.shard(),
                ShardMessage::Replay {
                    room,
                    joined,
                    history,
                    to,
                },
            );
        }
    }

    /// A rejoined member's missed messages are in (or known lost): the
    /// handler hears `on_recovered`.
    fn recovered(
        &mut self,
        room: &str,
        joined: Position,
        history: Result<Vec<Arc<Sequenced>>, Loss>,
        to: ConnAddress,
    ) {
        let recovery = self
            .hub_state()
            .local
            .recover(to.key, to.id, room, joined, history);
        if let Some(recovery) = recovery {
            let room = self
                .hub_state()
                .local
                .name(room)
                .unwrap_or_else(|| room.into());
            self.fanout.callbacks.push(Callback::Recovered {
                key: to.key,
                conn: to.id,
                room,
                recovery,
            });
        }
    }

    /// Hands a notice to the handler, with the shard's connections.
    fn notice(&mut self, notice: Notice) {
        let send = Rc::clone(&self.context.send);
        let mut conns = ShardConns {
            connections: &mut self.connections,
            dirty: &mut self.dirty,
            hub: &send.hub,
        };
        let handler = &mut self.context.handler;
        if guarded(|| handler.on_notice(&mut conns, notice)).is_err() {
            error!(
                shard = self.id.index(),
                "the handler panicked in on_notice; the notice is dropped"
            );
        }
    }

    /// Pushes `message` on `shard`'s inbox, to ring at the end of the turn.
    fn send_to(&mut self, shard: ShardId, message: ShardMessage) {
        self.context.shared.inboxes[shard.index()].push(message);
        self.fanout.ring[shard.index()] = true;
    }
}
