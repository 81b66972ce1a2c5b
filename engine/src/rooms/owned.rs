//! [`OwnedRooms`]: the rooms a shard owns. It numbers their messages,
//! keeps their history, and knows how many members each shard has.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{Loss, Position, Publication, RoomsConfig, Sequenced};
use crate::handler::ShardId;

/// One owned room.
#[derive(Debug)]
struct OwnedRoom {
    /// The last message's position (offset 0 before the first).
    position: Position,
    /// Members on each shard, by shard index.
    members: Box<[u32]>,
    /// Members that asked for presence notifications, on each shard.
    watchers: Box<[u32]>,
    /// The last messages, oldest first, with when they were sequenced.
    history: VecDeque<(Instant, Arc<Sequenced>)>,
}

impl OwnedRoom {
    fn is_unused(&self) -> bool {
        self.history.is_empty() && self.members.iter().all(|&count| count == 0)
    }
}

/// The rooms one shard owns.
#[derive(Debug)]
pub(crate) struct OwnedRooms {
    rooms: HashMap<Arc<str>, OwnedRoom>,
    shards: usize,
    /// Drawn from the clock at start, so epochs differ across restarts.
    epoch_seed: u64,
    epochs_drawn: u64,
}

impl OwnedRooms {
    /// No rooms yet, on a server of `shards` shards.
    pub(crate) fn new(shards: usize) -> OwnedRooms {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        OwnedRooms {
            rooms: HashMap::new(),
            shards,
            epoch_seed: nanos,
            epochs_drawn: 0,
        }
    }

    /// The room's position, starting its stream (a new epoch) if it had
    /// none.
    pub(crate) fn position(&mut self, room: &Arc<str>) -> Position {
        self.room(room).position
    }

    /// Numbers `publication` with its room's next offset and keeps it in
    /// the history; returns it with every shard's member count, to reach
    /// the shards with members.
    pub(crate) fn sequence(
        &mut self,
        publication: Publication,
        now: Instant,
        config: &RoomsConfig,
    ) -> (Arc<Sequenced>, &[u32]) {
        let room = self.room(&publication.room);
        room.position.offset += 1;
        let sequenced = Arc::new(Sequenced::new(publication, room.position));
        if config.history_size > 0 {
            if room.history.len() == config.history_size {
                room.history.pop_front();
            }
            room.history.push_back((now, Arc::clone(&sequenced)));
        }
        (sequenced, &room.members)
    }

    /// Records that `shard` has `count` members of `room`, `watchers` of
    /// them watching its presence. Returns the room's position when this
    /// starts the shard's subscription (its count rose from 0): the
    /// shard's members receive what follows it.
    pub(crate) fn count(
        &mut self,
        room: &Arc<str>,
        shard: ShardId,
        count: u32,
        watchers: u32,
    ) -> Option<Position> {
        if count == 0 && !self.rooms.contains_key(room) {
            return None;
        }
        let entry = self.room(room);
        entry.watchers[shard.index()] = watchers;
        let before = std::mem::replace(&mut entry.members[shard.index()], count);
        let position = entry.position;
        if entry.is_unused() {
            self.rooms.remove(room);
        }
        (before == 0 && count > 0).then_some(position)
    }

    /// The room's members over every shard, as last reported.
    pub(crate) fn size(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |entry| {
            entry.members.iter().map(|&count| count as usize).sum()
        })
    }

    /// The room's members over every shard and the shards with presence
    /// watchers, if it has any.
    pub(crate) fn watched(&self, room: &str) -> Option<(u32, impl Iterator<Item = ShardId> + '_)> {
        let entry = self.rooms.get(room)?;
        if entry.watchers.iter().all(|&count| count == 0) {
            return None;
        }
        let members = entry.members.iter().sum();
        let shards = entry
            .watchers
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, _)| ShardId(index));
        Some((members, shards))
    }

    /// Drops history older than the configured age, and forgets rooms
    /// with neither members nor history: their next message starts a new
    /// epoch.
    pub(crate) fn expire(&mut self, now: Instant, config: &RoomsConfig) {
        if let Some(ttl) = config.history_ttl {
            for room in self.rooms.values_mut() {
                while room
                    .history
                    .front()
                    .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= ttl)
                {
                    room.history.pop_front();
                }
            }
        }
        self.rooms.retain(|_, room| !room.is_unused());
    }

    /// The messages of `room` after `after` up to `upto`, oldest first,
    /// from its history: what a member that rejoined at `upto` missed
    /// since its client saw `after`.
    ///
    /// # Errors
    /// [`Loss::EpochChanged`] when the room's stream is not `after`'s;
    /// [`Loss::GapTooLarge`] when the history no longer reaches back to
    /// the message after `after`.
    pub(crate) fn history_between(
        &self,
        room: &str,
        after: Position,
        upto: Position,
    ) -> Result<Vec<Arc<Sequenced>>, Loss> {
        let entry = self.rooms.get(room).ok_or(Loss::GapTooLarge)?;
        if entry.position.epoch != after.epoch {
            return Err(Loss::EpochChanged);
        }
        let oldest = entry
            .history
            .front()
            .map_or(entry.position.offset + 1, |(_, m)| m.position.offset);
        if after.offset + 1 < oldest {
            return Err(Loss::GapTooLarge);
        }
        Ok(entry
            .history
            .iter()
            .map(|(_, m)| m)
            .filter(|m| m.position.offset > after.offset && m.position.offset <= upto.offset)
            .map(Arc::clone)
            .collect())
    }

    /// How many rooms this shard owns.
    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    fn room(&mut self, room: &Arc<str>) -> &mut OwnedRoom {
        if !self.rooms.contains_key(room) {
            let epoch = self.draw_epoch();
            self.rooms.insert(
                Arc::clone(room),
                OwnedRoom {
                    position: Position { offset: 0, epoch },
                    members: vec![0; self.shards].into_boxed_slice(),
                    watchers: vec![0; self.shards].into_boxed_slice(),
                    history: VecDeque::new(),
                },
            );
        }
        self.rooms.get_mut(room).expect("inserted above")
    }

    /// A fresh epoch, never 0: SplitMix64 over the seed and a counter.
    fn draw_epoch(&mut self) -> u64 {
        self.epochs_drawn += 1;
        let mut z = self
            .epoch_seed
            .wrapping_add(self.epochs_drawn.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::PreparedMessage;

    fn config(history_size: usize) -> RoomsConfig {
        RoomsConfig {
            history_size,
            history_ttl: Some(Duration::from_secs(60)),
            max_rooms_per_connection: 8,
            max_room_name: 64,
            batch_deliveries: false,
        }
    }

    fn publication(room: &str) -> Publication {
        Publication {
            room: room.into(),
            message: PreparedMessage::text("m"),
            except: None,
            receipt: None,
            publisher: None,
        }
    }

    #[test]
    fn offsets_are_consecutive_within_an_epoch_and_epochs_differ() {
        let mut rooms = OwnedRooms::new(2);
        let now = Instant::now();
        let first = rooms.sequence(publication("a"), now, &config(4)).0;
        let second = rooms.sequence(publication("a"), now, &config(4)).0;
        let other = rooms.sequence(publication("b"), now, &config(4)).0;
        assert_eq!(first.position.offset, 1);
        assert_eq!(second.position.offset, 2);
        assert_eq!(first.position.epoch, second.position.epoch);
        assert_ne!(first.position.epoch, 0);
        assert_ne!(other.position.epoch, first.position.epoch);
        assert_eq!(rooms.position(&"a".into()).offset, 2);
    }

    #[test]
    fn a_subscription_starts_when_a_count_rises_from_zero() {
        let mut rooms = OwnedRooms::new(3);
        let room: Arc<str> = "a".into();
        assert_eq!(rooms.count(&room, ShardId(1), 0, 0), None);
        assert_eq!(rooms.len(), 0);
        let start = rooms.count(&room, ShardId(1), 2, 0).unwrap();
        assert_eq!(start.offset, 0);
        assert_eq!(rooms.count(&room, ShardId(1), 5, 1), None);
        assert_eq!(rooms.count(&room, ShardId(2), 1, 0).unwrap(), start);
        let (_, members) = rooms.sequence(publication("a"), Instant::now(), &config(0));
        assert_eq!(members, [0, 5, 1]);
        assert_eq!(rooms.size("a"), 6);
        let (count, watching) = rooms.watched("a").unwrap();
        assert_eq!((count, watching.collect::<Vec<_>>()), (6, vec![ShardId(1)]));
        rooms.count(&room, ShardId(1), 0, 0);
        rooms.count(&room, ShardId(2), 0, 0);
        // No member and no history: forgotten.
        assert_eq!(rooms.len(), 0);
        assert_eq!(rooms.size("a"), 0);
    }

    #[test]
    fn history_is_bounded_by_count_and_age() {
        let mut rooms = OwnedRooms::new(1);
        let start = Instant::now();
        let config = config(3);
        let epoch = rooms.position(&"a".into()).epoch;
        for step in 0..5 {
            rooms.sequence(
                publication("a"),
                start + Duration::from_secs(step * 20),
                &config,
            );
        }
        let at = |offset| Position { offset, epoch };
        let kept = rooms.history_between("a", at(2), at(5)).unwrap();
        assert_eq!(
            kept.iter().map(|m| m.position.offset).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let kept = rooms.history_between("a", at(2), at(4)).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(
            rooms.history_between("a", at(1), at(5)).unwrap_err(),
            Loss::GapTooLarge
        );
        let other = Position {
            offset: 4,
            epoch: epoch + 1,
        };
        assert_eq!(
            rooms.history_between("a", other, at(5)).unwrap_err(),
            Loss::EpochChanged
        );
        rooms.expire(start + Duration::from_secs(100), &config);
        assert_eq!(rooms.history_between("a", at(4), at(5)).unwrap().len(), 1);
        assert_eq!(
            rooms.history_between("a", at(2), at(5)).unwrap_err(),
            Loss::GapTooLarge
        );
        rooms.expire(start + Duration::from_secs(200), &config);
        assert_eq!(rooms.len(), 0);
    }
}
