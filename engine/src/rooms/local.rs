//! [`LocalRooms`]: the rooms a shard's own connections joined, and for
//! each connection the rooms it is in.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use shardcast_proto::envelope::PresenceKind;
use slab::Slab;

use super::recovery::{Held, Loss, Recovery, Step};
use super::{Position, RoomError, RoomsConfig, Sequenced};
use crate::conn::ConnId;

/// One member of a local room: the connection's slab key, to reach it,
/// and its id, to tell it from a later occupant of the key and to skip a
/// publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) key: u32,
    pub(crate) id: ConnId,
    /// The member asked for the room's presence notifications.
    pub(crate) presence: bool,
    /// The member rejoined after a reconnection: the room's messages are
    /// kept for it until its missed ones are recovered and it is released.
    pub(crate) held: bool,
}

/// Whether this shard receives a room's messages yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// The owner has not answered subscription number `.0` yet: messages
    /// that arrive now belong to an earlier subscription and are dropped.
    Subscribing(u32),
    /// Messages after this position are delivered, in order.
    Live(Position),
}

/// A room with members on this shard.
#[derive(Debug)]
struct LocalRoom {
    name: Arc<str>,
    members: Vec<Member>,
    stream: Stream,
    /// Joins waiting for the owner's answer to learn their position.
    awaiting: Vec<Member>,
    /// Members that asked for presence notifications.
    watchers: u32,
    /// Held members, whose messages are kept rather than sent.
    held: u32,
    /// The member and watcher counts the owner last heard from this shard.
    reported: (u32, u32),
    /// On the list of rooms whose count changed this turn.
    changed: bool,
}

/// Where one connection's membership sits: the room, and the member's
/// index in the room's member list (kept right as members move).
#[derive(Clone, Copy, Debug)]
struct Membership {
    room: u32,
    index: u32,
}

/// A join whose position is known: the handler hears
/// [`on_joined`](crate::Handler::on_joined).
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) member: Member,
    pub(crate) room: Arc<str>,
    pub(crate) position: Position,
}

/// A member arriving in or leaving a room, for the room's owner to tell
/// the room's presence watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PresenceChange {
    pub(crate) room: Arc<str>,
    pub(crate) kind: PresenceKind,
    /// The member's id in presence notifications.
    pub(crate) member: Arc<str>,
}

/// A room's member count on this shard, for its owner.
#[derive(Debug)]
pub(crate) struct MemberCount {
    pub(crate) room: Arc<str>,
    pub(crate) count: u32,
    /// Members here that asked for presence notifications.
    pub(crate) watchers: u32,
    /// The subscription the count belongs to; a count that rises from 0
    /// starts a new one, which the owner answers with its position.
    pub(crate) subscription: u32,
}

/// The rooms of one shard's connections.
#[derive(Debug, Default)]
pub(crate) struct LocalRooms {
    by_name: HashMap<Arc<str>, u32>,
    rooms: Slab<LocalRoom>,
    /// Each member connection's rooms, by slab key.
    joined: HashMap<u32, Vec<Membership>>,
    /// Each member connection's id in presence notifications, by slab key.
    names: HashMap<u32, Arc<str>>,
    /// Each rejoining connection's held memberships, by slab key.
    held: HashMap<u32, Vec<Held>>,
    /// Arrivals and departures since the owners last heard.
    changes: Vec<PresenceChange>,
    /// Rooms whose member count changed this turn.
    changed: Vec<u32>,
    /// Joins whose position became known.
    ready: Vec<Joined>,
    next_subscription: u32,
    /// Memberships over every room.
    memberships: usize,
}

impl LocalRooms {
    /// Adds `member` to `room`. `live` gives the room's position when this
    /// shard owns it (its members receive from there at once); otherwise
    /// the room subscribes to its owner, and the join's position comes
    /// with the owner's answer. A held member (a rejoin) gives `after`,
    /// the last position its client saw. `Ok(false)`: already a member.
    pub(crate) fn join(
        &mut self,
        member: Member,
        room: &str,
        name: Option<Arc<str>>,
        config: &RoomsConfig,
        after: Position,
        live: impl FnOnce(&Arc<str>) -> Option<Position>,
    ) -> Result<bool, RoomError> {
        config.check_name(room)?;
        let memberships = self.joined.get(&member.key).map_or(&[][..], Vec::as_slice);
        if let Some(&id) = self.by_name.get(room) {
            if memberships.iter().any(|m| m.room == id) {
                return Ok(false);
            }
        }
        if memberships.len() >= config.max_rooms_per_connection {
            return Err(RoomError::TooManyRooms {
                limit: config.max_rooms_per_connection,
            });
        }
        let id = match self.by_name.get(room) {
            Some(&id) => id,
            None => {
                let name: Arc<str> = room.into();
                let stream = match live(&name) {
                    Some(position) => Stream::Live(position),
                    None => {
                        self.next_subscription = self.next_subscription.wrapping_add(1);
                        Stream::Subscribing(self.next_subscription)
                    }
                };
                let id = self.rooms.insert(LocalRoom {
                    name: Arc::clone(&name),
                    members: Vec::new(),
                    stream,
                    awaiting: Vec::new(),
                    watchers: 0,
                    held: 0,
                    reported: (0, 0),
                    changed: false,
                });
                let id = u32::try_from(id).expect("fewer than 2^32 rooms per shard");
                self.by_name.insert(name, id);
                id
            }
        };
        let entry = &mut self.rooms[id as usize];
        let index = u32::try_from(entry.members.len()).expect("fewer than 2^32 members");
        entry.members.push(member);
        entry.watchers += u32::from(member.presence);
        if member.held {
            entry.held += 1;
            self.held
                .entry(member.key)
                .or_default()
                .push(Held::new(id, after));
        }
        let name = Arc::clone(
            self.names
                .entry(member.key)
                .or_insert_with(|| name.unwrap_or_else(|| member.id.to_string().into())),
        );
        self.changes.push(PresenceChange {
            room: Arc::clone(&entry.name),
            kind: PresenceKind::Joined,
            member: name,
        });
        match entry.stream {
            Stream::Live(position) => self.ready.push(Joined {
                member,
                room: Arc::clone(&entry.name),
                position,
            }),
            Stream::Subscribing(_) => entry.awaiting.push(member),
        }
        self.joined
            .entry(member.key)
            .or_default()
            .push(Membership { room: id, index });
        self.memberships += 1;
        self.mark_changed(id);
        Ok(true)
    }

    /// Removes the connection at `key` from `room`; `false` if it was not
    /// a member. Nothing of the room reaches it after this.
    pub(crate) fn leave(&mut self, key: u32, room: &str) -> bool {
        let Some(&id) = self.by_name.get(room) else {
            return false;
        };
        let Entry::Occupied(mut entry) = self.joined.entry(key) else {
            return false;
        };
        let memberships = entry.get_mut();
        let Some(at) = memberships.iter().position(|m| m.room == id) else {
            return false;
        };
        let membership = memberships.swap_remove(at);
        let last = memberships.is_empty();
        if last {
            entry.remove();
        }
        self.remove_member(key, membership);
        if last {
            self.names.remove(&key);
        }
        true
    }

    /// Removes the connection at `key` from every room it is in: it
    /// closed. Whether it was in any.
    pub(crate) fn leave_all(&mut self, key: u32) -> bool {
        let Some(memberships) = self.joined.remove(&key) else {
            return false;
        };
        for membership in memberships {
            self.remove_member(key, membership);
        }
        self.names.remove(&key);
        self.held.remove(&key);
        true
    }

    /// The names of the rooms the connection at `key` is in.
    pub(crate) fn rooms_of(&self, key: u32) -> Vec<Arc<str>> {
        self.joined.get(&key).map_or_else(Vec::new, |memberships| {
            memberships
                .iter()
                .map(|m| Arc::clone(&self.rooms[m.room as usize].name))
                .collect()
        })
    }

    /// The rooms the connection at `key` is in, each with whether it
    /// asked for presence notifications.
    pub(crate) fn memberships_of(&self, key: u32) -> Vec<(Arc<str>, bool)> {
        self.joined.get(&key).map_or_else(Vec::new, |memberships| {
            memberships
                .iter()
                .map(|m| {
                    let room = &self.rooms[m.room as usize];
                    (
                        Arc::clone(&room.name),
                        room.members[m.index as usize].presence,
                    )
                })
                .collect()
        })
    }

    /// Whether the connection at `key` is in `room`.
    pub(crate) fn is_member(&self, key: u32, room: &str) -> bool {
        let Some(&id) = self.by_name.get(room) else {
            return false;
        };
        self.joined
            .get(&key)
            .is_some_and(|memberships| memberships.iter().any(|m| m.room == id))
    }

    /// The interned name of `room`, if it has members here.
    pub(crate) fn name(&self, room: &str) -> Option<Arc<str>> {
        self.by_name
            .get_key_value(room)
            .map(|(name, _)| Arc::clone(name))
    }

    /// The members of `room` on this shard.
    pub(crate) fn members(&self, room: &str) -> &[Member] {
        self.by_name
            .get(room)
            .map_or(&[], |&id| &self.rooms[id as usize].members)
    }

    /// Takes `message` in order: the members to hand it to, and the
    /// position it moves the room to. `None` when it is not for this
    /// shard's members: no member, the subscription is not answered yet
    /// (it belongs to an earlier one), or it was already delivered.
    /// Held members are handed nothing: the message is kept for them.
    pub(crate) fn deliverable(&mut self, message: &Arc<Sequenced>) -> Option<&[Member]> {
        let &id = self.by_name.get(&*message.room)?;
        let room = &mut self.rooms[id as usize];
        let Stream::Live(last) = room.stream else {
            return None;
        };
        if last.epoch == message.position.epoch && message.position.offset <= last.offset {
            return None;
        }
        room.stream = Stream::Live(message.position);
        if room.held > 0 {
            let kept = room
                .members
                .iter()
                .filter(|member| member.held && message.except != Some(member.id));
            for member in kept {
                if let Some(held) = held_in(&mut self.held, member.key, id) {
                    held.messages.push(Arc::clone(message));
                }
            }
        }
        Some(&room.members)
    }

    /// What the held membership of the connection at `key` in `room`
    /// needs, now that its join took effect at `joined`.
    pub(crate) fn recovery_step(&mut self, key: u32, room: &str, joined: Position) -> Option<Step> {
        let &id = self.by_name.get(room)?;
        held_in(&mut self.held, key, id).map(|held| held.step(joined))
    }

    /// The held membership of connection `conn` (at `key`) in `room`
    /// learned its missed messages (or why there are none): they go in
    /// front of the messages kept for it. `None` if it is gone.
    pub(crate) fn recover(
        &mut self,
        key: u32,
        conn: ConnId,
        room: &str,
        joined: Position,
        history: Result<Vec<Arc<Sequenced>>, Loss>,
    ) -> Option<Recovery> {
        let &id = self.by_name.get(room)?;
        let membership = self.joined.get(&key)?.iter().find(|m| m.room == id)?;
        if self.rooms[id as usize].members[membership.index as usize].id != conn {
            return None;
        }
        held_in(&mut self.held, key, id).map(|held| held.recover(joined, history))
    }

    /// Makes the recovered held memberships of the connection at `key`
    /// live, and returns the messages kept for them, each room's in
    /// order. Memberships still waiting for their missed messages stay
    /// held.
    pub(crate) fn release(&mut self, key: u32) -> Vec<Arc<Sequenced>> {
        let Some(held) = self.held.get_mut(&key) else {
            return Vec::new();
        };
        let mut messages = Vec::new();
        let memberships = self.joined.get(&key).map_or(&[][..], Vec::as_slice);
        held.retain_mut(|entry| {
            if !entry.recovered {
                return true;
            }
            if let Some(membership) = memberships.iter().find(|m| m.room == entry.room) {
                let room = &mut self.rooms[entry.room as usize];
                room.members[membership.index as usize].held = false;
                room.held -= 1;
            }
            messages.append(&mut entry.messages);
            false
        });
        if held.is_empty() {
            self.held.remove(&key);
        }
        messages
    }

    /// The owner answered subscription `subscription` of `room`: its
    /// members receive every message after `position`, and the joins that
    /// waited learn it.
    pub(crate) fn subscribed(&mut self, room: &str, subscription: u32, position: Position) {
        let Some(&id) = self.by_name.get(room) else {
            return;
        };
        let entry = &mut self.rooms[id as usize];
        if entry.stream != Stream::Subscribing(subscription) {
            return;
        }
        entry.stream = Stream::Live(position);
        for member in entry.awaiting.drain(..) {
            self.ready.push(Joined {
                member,
                room: Arc::clone(&entry.name),
                position,
            });
        }
    }

    /// Appends the member counts that changed since the last call, for the
    /// rooms' owners, and forgets rooms left empty.
    pub(crate) fn drain_counts(&mut self, out: &mut Vec<MemberCount>) {
        for id in self.changed.drain(..) {
            let room = &mut self.rooms[id as usize];
            room.changed = false;
            let count = u32::try_from(room.members.len()).unwrap_or(u32::MAX);
            if (count, room.watchers) != room.reported {
                room.reported = (count, room.watchers);
                out.push(MemberCount {
                    room: Arc::clone(&room.name),
                    count,
                    watchers: room.watchers,
                    subscription: match room.stream {
                        Stream::Subscribing(subscription) => subscription,
                        Stream::Live(_) => 0,
                    },
                });
            }
            if count == 0 {
                let room = self.rooms.remove(id as usize);
                self.by_name.remove(&room.name);
            }
        }
    }

    /// Whether joins wait for their `on_joined`.
    pub(crate) fn has_joined(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Appends the arrivals and departures since the last call.
    pub(crate) fn drain_changes(&mut self, out: &mut Vec<PresenceChange>) {
        out.append(&mut self.changes);
    }

    /// The members of `room` here that asked for presence notifications.
    pub(crate) fn watchers(&self, room: &str) -> impl Iterator<Item = &Member> {
        self.members(room).iter().filter(|member| member.presence)
    }

    /// Appends the joins whose position became known since the last call.
    pub(crate) fn drain_joined(&mut self, out: &mut Vec<Joined>) {
        out.append(&mut self.ready);
    }

    /// Whether nothing is left: no room, no member, nothing to report.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
            && self.rooms.is_empty()
            && self.joined.is_empty()
            && self.names.is_empty()
            && self.held.is_empty()
            && self.changed.is_empty()
    }

    /// Rooms with members here.
    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Memberships over every room.
    pub(crate) fn memberships(&self) -> usize {
        self.memberships
    }

    fn remove_member(&mut self, key: u32, membership: Membership) {
        self.memberships -= 1;
        let room = &mut self.rooms[membership.room as usize];
        let index = membership.index as usize;
        let member = room.members.swap_remove(index);
        room.watchers -= u32::from(member.presence);
        if member.held {
            room.held -= 1;
            if let Some(held) = self.held.get_mut(&key) {
                held.retain(|entry| entry.room != membership.room);
                if held.is_empty() {
                    self.held.remove(&key);
                }
            }
        }
        if let Some(name) = self.names.get(&key) {
            self.changes.push(PresenceChange {
                room: Arc::clone(&room.name),
                kind: PresenceKind::Left,
                member: Arc::clone(name),
            });
        }
        room.awaiting.retain(|m| m.key != key);
        if let Some(moved) = room.members.get(index) {
            // The last member took the leaver's place: its membership
            // record follows it.
            if let Some(record) = self
                .joined
                .get_mut(&moved.key)
                .and_then(|ms| ms.iter_mut().find(|m| m.room == membership.room))
            {
                record.index = membership.index;
            }
        }
        self.ready
            .retain(|joined| !(joined.member.key == key && *joined.room == *room.name));
        self.mark_changed(membership.room);
    }

    fn mark_changed(&mut self, id: u32) {
        let room = &mut self.rooms[id as usize];
        if !room.changed {
            room.changed = true;
            self.changed.push(id);
        }
    }
}

/// The held membership of the connection at `key` in the room `room`.
fn held_in(held: &mut HashMap<u32, Vec<Held>>, key: u32, room: u32) -> Option<&mut Held> {
    held.get_mut(&key)?
        .iter_mut()
        .find(|entry| entry.room == room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::ShardId;
    use crate::rooms::Step;

    fn config() -> RoomsConfig {
        RoomsConfig {
            history_size: 0,
            history_ttl: None,
            max_rooms_per_connection: 3,
            max_room_name: 64,
            batch_deliveries: false,
        }
    }

    fn member(key: u32) -> Member {
        Member {
            key,
            id: ConnId::new(ShardId(0), u64::from(key) + 100),
            presence: key % 2 == 0,
            held: false,
        }
    }

    fn at(offset: u64) -> Position {
        Position { offset, epoch: 5 }
    }

    fn sequenced(room: &str, offset: u64) -> Arc<Sequenced> {
        Arc::new(Sequenced::new(
            super::super::Publication {
                room: room.into(),
                message: crate::PreparedMessage::text("m"),
                except: None,
                receipt: None,
                publisher: None,
            },
            at(offset),
        ))
    }

    #[test]
    fn owned_rooms_are_live_at_once_and_joins_learn_their_position() {
        let mut rooms = LocalRooms::default();
        assert_eq!(
            rooms.join(member(1), "a", None, &config(), Position::default(), |_| {
                Some(at(4))
            }),
            Ok(true)
        );
        assert_eq!(
            rooms.join(member(1), "a", None, &config(), Position::default(), |_| {
                None
            }),
            Ok(false)
        );
        let mut joined = Vec::new();
        rooms.drain_joined(&mut joined);
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].position, at(4));
        assert!(rooms.deliverable(&sequenced("a", 4)).is_none());
        assert_eq!(rooms.deliverable(&sequenced("a", 5)).unwrap(), [member(1)]);
        assert!(rooms.deliverable(&sequenced("a", 5)).is_none());
    }

    #[test]
    fn a_subscribing_room_drops_messages_until_its_own_answer() {
        let mut rooms = LocalRooms::default();
        rooms
            .join(member(1), "a", None, &config(), Position::default(), |_| {
                None
            })
            .unwrap();
        let mut counts = Vec::new();
        rooms.drain_counts(&mut counts);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].count, 1);
        let subscription = counts[0].subscription;
        assert!(rooms.deliverable(&sequenced("a", 3)).is_none());
        rooms.subscribed("a", subscription.wrapping_add(1), at(3));
        assert!(rooms.deliverable(&sequenced("a", 4)).is_none());
        rooms.subscribed("a", subscription, at(3));
        let mut joined = Vec::new();
        rooms.drain_joined(&mut joined);
        assert_eq!(joined[0].position, at(3));
        assert_eq!(rooms.deliverable(&sequenced("a", 4)).unwrap(), [member(1)]);
    }

    #[test]
    fn leaving_and_closing_clean_both_sides() {
        let mut rooms = LocalRooms::default();
        for key in 0..5 {
            for room in ["a", "b", "c"] {
                rooms
                    .join(
                        member(key),
                        room,
                        None,
                        &config(),
                        Position::default(),
                        |_| Some(at(0)),
                    )
                    .unwrap();
            }
        }
        assert_eq!(
            rooms.join(member(0), "d", None, &config(), Position::default(), |_| {
                Some(at(0))
            }),
            Err(RoomError::TooManyRooms { limit: 3 })
        );
        assert!(rooms.leave(0, "a"));
        assert!(!rooms.leave(0, "a"));
        assert!(!rooms.is_member(0, "a"));
        assert!(rooms.is_member(4, "a"));
        // The member moved into the leaver's place still leaves cleanly.
        assert!(rooms.leave(4, "a"));
        assert_eq!(rooms.members("a").len(), 3);
        assert_eq!(rooms.rooms_of(1).len(), 3);
        for key in 0..5 {
            rooms.leave_all(key);
        }
        let mut counts = Vec::new();
        rooms.drain_counts(&mut counts);
        assert!(counts.iter().all(|count| count.count == 0));
        let mut joined = Vec::new();
        rooms.drain_joined(&mut joined);
        let mut changes = Vec::new();
        rooms.drain_changes(&mut changes);
        assert_eq!(changes.len(), 30, "15 arrivals and 15 departures");
        assert!(rooms.is_empty(), "{rooms:?}");
    }

    #[test]
    fn a_join_and_leave_in_one_turn_report_nothing() {
        let mut rooms = LocalRooms::default();
        rooms
            .join(member(1), "a", None, &config(), Position::default(), |_| {
                None
            })
            .unwrap();
        rooms.leave(1, "a");
        let mut counts = Vec::new();
        rooms.drain_counts(&mut counts);
        assert!(counts.is_empty());
        let mut joined = Vec::new();
        rooms.drain_joined(&mut joined);
        assert!(joined.is_empty());
        let mut changes = Vec::new();
        rooms.drain_changes(&mut changes);
        assert_eq!(
            changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [PresenceKind::Joined, PresenceKind::Left]
        );
        assert_eq!(&*changes[0].member, "0/101");
        assert!(rooms.is_empty());
    }

    #[test]
    fn a_held_member_gets_its_missed_messages_then_the_kept_ones() {
        let mut rooms = LocalRooms::default();
        let live = member(2);
        let held = Member {
            held: true,
            ..member(3)
        };
        rooms
            .join(live, "a", None, &config(), Position::default(), |_| {
                Some(at(4))
            })
            .unwrap();
        rooms
            .join(held, "a", None, &config(), at(2), |_| None)
            .unwrap();
        let mut joined = Vec::new();
        rooms.drain_joined(&mut joined);
        assert_eq!(joined.len(), 2);
        assert!(joined[1].member.held);
        assert_eq!(
            rooms.recovery_step(3, "a", joined[1].position),
            Some(Step::Fetch { after: at(2) })
        );
        // Live messages reach the live member; the held one's are kept.
        assert_eq!(rooms.deliverable(&sequenced("a", 5)).unwrap(), [live, held]);
        assert!(rooms.release(3).is_empty(), "nothing recovered yet");
        let missed = vec![sequenced("a", 3), sequenced("a", 4)];
        let recovery = rooms.recover(3, held.id, "a", at(4), Ok(missed)).unwrap();
        assert_eq!(recovery.replayed, 2);
        let released = rooms.release(3);
        assert_eq!(
            released
                .iter()
                .map(|m| m.position.offset)
                .collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(!rooms.members("a")[1].held);
        rooms.leave_all(2);
        rooms.leave_all(3);
        let mut counts = Vec::new();
        rooms.drain_counts(&mut counts);
        assert!(rooms.is_empty());
    }

    #[test]
    fn closing_while_held_forgets_what_was_kept() {
        let mut rooms = LocalRooms::default();
        let held = Member {
            held: true,
            ..member(1)
        };
        rooms
            .join(held, "a", None, &config(), at(1), |_| Some(at(3)))
            .unwrap();
        rooms.deliverable(&sequenced("a", 4));
        assert!(
            rooms
                .recover(1, member(9).id, "a", at(3), Ok(Vec::new()))
                .is_none()
        );
        rooms.leave_all(1);
        let mut counts = Vec::new();
        rooms.drain_counts(&mut counts);
        let mut joined = Vec::new();
        rooms.drain_joined(&mut joined);
        let mut changes = Vec::new();
        rooms.drain_changes(&mut changes);
        assert!(rooms.is_empty(), "{rooms:?}");
    }
}
