//! [`SendQueue`]: the frames waiting to be written to one connection, in
//! order, left in one vectored write.
//!
//! Two kinds of frames are queued: bytes encoded for this connection alone
//! (echoes, pongs, close frames), appended to one growing buffer, and
//! shared frames (a [`PreparedMessage`](crate::PreparedMessage)'s),
//! queued by reference so that a frame sent to many connections is stored
//! once. A connection that never receives a shared frame never allocates
//! the shared list.
//!
//! The queue itself is a pointer: its body (buffer, shared list, counts)
//! is lent by the shard's [`SendPools`] while frames are queued and given
//! back once they are written, so an idle connection carries 8 bytes for
//! its queue and no allocation, and a busy one allocates nothing in
//! steady state.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use crate::buffer_pool::BufferPool;

/// The most pieces handed to one `writev`; the rest go in the next call.
pub(crate) const MAX_SLICES: usize = 64;

/// A shared-frame list with more capacity than this is freed once the
/// queue empties, so an idle connection does not keep the memory of its
/// largest burst. (The owned buffer always goes back to the shard's pool.)
const RETAINED_CAPACITY: usize = 4 * 1024;

/// Written bytes at the front of the owned buffer are dropped once there
/// are more than this many and they are most of it, so a queue that never
/// quite empties does not grow without bound.
const COMPACT_AFTER: usize = 64 * 1024;

/// A shared frame and where it goes: right after `owned[..at]`.
#[derive(Debug)]
struct SharedFrame {
    at: usize,
    frame: Arc<[u8]>,
}

/// The shared frames queued, each placed between two runs of owned bytes.
#[derive(Debug, Default)]
struct SharedFrames {
    frames: VecDeque<SharedFrame>,
    /// Bytes of `frames[0]` already written.
    sent: usize,
}

/// What the shard lends its connections' queues: send buffers, and the
/// queue bodies themselves.
#[derive(Debug)]
pub(crate) struct SendPools {
    /// Spare send buffers (also lent to decoders for split messages).
    pub(crate) buffers: BufferPool,
    #[expect(
        clippy::vec_box,
        reason = "the boxes themselves are lent to queues and taken back, so that neither allocates"
    )]
    bodies: Vec<Box<Body>>,
}

impl SendPools {
    /// Pools around `buffers`, with [`PREPARED_BODIES`] spare bodies made
    /// up front: the connections a shard flushes in one loop turn each
    /// need one, and how many do varies from turn to turn, so bodies made
    /// on demand would be allocated, now and then, long after start-up
    /// (each a few dozen bytes).
    pub(crate) fn new(buffers: BufferPool) -> SendPools {
        let mut bodies = Vec::with_capacity(MAX_SPARE_BODIES);
        bodies.resize_with(PREPARED_BODIES, Box::default);
        SendPools { buffers, bodies }
    }

    fn take_body(&mut self) -> Box<Body> {
        self.bodies.pop().unwrap_or_default()
    }

    fn put_body(&mut self, body: Box<Body>) {
        if self.bodies.len() < MAX_SPARE_BODIES {
            self.bodies.push(body);
        }
    }
}

/// Spare queue bodies a shard makes when it starts.
const PREPARED_BODIES: usize = 64;

/// Spare queue bodies a shard keeps: one per connection written to in a
/// loop turn of a busy shard, like the send buffers.
const MAX_SPARE_BODIES: usize = BufferPool::DEFAULT_BUFFERS;

/// The unsent frames of one connection, in the order they were queued:
/// nothing but a pointer while it is empty.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    body: Option<Box<Body>>,
}

impl SendQueue {
    /// A queue that starts with `bytes` (the handshake's 101 response).
    pub(crate) fn with_bytes(bytes: Vec<u8>) -> SendQueue {
        SendQueue {
            body: Some(Box::new(Body {
                len: bytes.len(),
                owned: bytes,
                ..Body::default()
            })),
        }
    }

    /// Unsent bytes.
    pub(crate) fn len(&self) -> usize {
        self.body.as_ref().map_or(0, |body| body.len)
    }

    /// Whether everything queued has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body, lent from `pools` if the queue has none.
    fn body(&mut self, pools: &mut SendPools) -> &mut Body {
        self.body.get_or_insert_with(|| pools.take_body())
    }

    /// Gives the body back to `pools` once nothing is queued.
    fn release_if_empty(&mut self, pools: &mut SendPools) {
        if self.body.as_ref().is_some_and(|body| body.len == 0) {
            if let Some(mut body) = self.body.take() {
                body.reset(&mut pools.buffers);
                pools.put_body(body);
            }
        }
    }

    /// Appends frames encoded by `encode` into the owned buffer (one from
    /// `pools` if the queue holds none). If the queue would then hold more
    /// than `limit` bytes, they are taken back and `false` returned.
    pub(crate) fn encode(
        &mut self,
        limit: usize,
        pools: &mut SendPools,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        let queued = self.body(pools).encode(limit, &mut pools.buffers, encode);
        self.release_if_empty(pools);
        queued
    }

    /// Appends frames encoded by `encode` whatever the limit: control
    /// frames the protocol requires (pongs, close frames).
    pub(crate) fn encode_control(
        &mut self,
        pools: &mut SendPools,
        encode: impl FnOnce(&mut Vec<u8>),
    ) {
        self.body(pools).encode_control(&mut pools.buffers, encode);
        self.release_if_empty(pools);
    }

    /// Queues a shared frame by reference, unless the queue would then
    /// hold more than `limit` bytes (then `false`).
    pub(crate) fn push_shared(
        &mut self,
        frame: &Arc<[u8]>,
        limit: usize,
        pools: &mut SendPools,
    ) -> bool {
        let queued = self.body(pools).push_shared(frame, limit);
        self.release_if_empty(pools);
        queued
    }

    /// The unsent bytes when they are one run of owned bytes (no shared
    /// frame queued): the common case, written without building slices.
    pub(crate) fn contiguous(&self) -> Option<&[u8]> {
        match &self.body {
            Some(body) => body.contiguous(),
            None => Some(&[]),
        }
    }

    /// Fills `slices` with the unsent bytes, in order, as far as they go;
    /// returns how many slices were used.
    pub(crate) fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        self.body.as_ref().map_or(0, |body| body.io_slices(slices))
    }

    /// Marks the first `written` unsent bytes as written; once nothing is
    /// left, the buffer and the body go back to `pools`.
    pub(crate) fn advance(&mut self, written: usize, pools: &mut SendPools) {
        if let Some(body) = &mut self.body {
            body.advance(written);
        }
        self.release_if_empty(pools);
    }
}

/// A queue's contents.
#[derive(Debug, Default)]
struct Body {
    /// Frames encoded for this connection; `owned[..sent]` is written.
    owned: Vec<u8>,
    sent: usize,
    /// Boxed and made by the first shared frame: a connection that never
    /// gets one carries a pointer, not the list.
    shared: Option<Box<SharedFrames>>,
    /// Unsent bytes, owned and shared.
    len: usize,
}

impl Body {
    /// Appends frames encoded by `encode` into the owned buffer (one from
    /// `pool` if the queue holds none). If the queue would then hold more
    /// than `limit` bytes, they are taken back and `false` returned.
    fn encode(
        &mut self,
        limit: usize,
        pool: &mut BufferPool,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        self.borrow_buffer(pool);
        let before = self.owned.len();
        encode(&mut self.owned);
        let added = self.owned.len() - before;
        if self.len + added > limit {
            self.owned.truncate(before);
            return false;
        }
        self.len += added;
        true
    }

    /// Appends frames encoded by `encode` whatever the limit: control
    /// frames the protocol requires (pongs, close frames).
    fn encode_control(&mut self, pool: &mut BufferPool, encode: impl FnOnce(&mut Vec<u8>)) {
        self.borrow_buffer(pool);
        let before = self.owned.len();
        encode(&mut self.owned);
        self.len += self.owned.len() - before;
    }

    /// Queues a shared frame by reference, unless the queue would then
    /// hold more than `limit` bytes (then `false`).
    fn push_shared(&mut self, frame: &Arc<[u8]>, limit: usize) -> bool {
        if self.len + frame.len() > limit {
            return false;
        }
        self.len += frame.len();
        let at = self.owned.len();
        self.shared
            .get_or_insert_with(Box::default)
            .frames
            .push_back(SharedFrame {
                at,
                frame: Arc::clone(frame),
            });
        true
    }

    /// The unsent bytes when they are one run of owned bytes (no shared
    /// frame queued): the common case, written without building slices.
    fn contiguous(&self) -> Option<&[u8]> {
        self.shared
            .as_ref()
            .is_none_or(|shared| shared.frames.is_empty())
            .then(|| &self.owned[self.sent..])
    }

    /// Fills `slices` with the unsent bytes, in order, as far as they go;
    /// returns how many slices were used.
    fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut count = 0;
        let mut pos = self.sent;
        let shared = self.shared.as_deref();
        let frames = shared.into_iter().flat_map(|shared| shared.frames.iter());
        for (index, shared_frame) in frames.enumerate() {
            if shared_frame.at > pos {
                slices[count] = IoSlice::new(&self.owned[pos..shared_frame.at]);
                count += 1;
                pos = shared_frame.at;
                if count == MAX_SLICES {
                    return count;
                }
            }
            let start = match shared {
                Some(shared) if index == 0 => shared.sent,
                _ => 0,
            };
            slices[count] = IoSlice::new(&shared_frame.frame[start..]);
            count += 1;
            if count == MAX_SLICES {
                return count;
            }
        }
        if self.owned.len() > pos {
            slices[count] = IoSlice::new(&self.owned[pos..]);
            count += 1;
        }
        count
    }

    /// Marks the first `written` unsent bytes as written.
    fn advance(&mut self, written: usize) {
        debug_assert!(written <= self.len);
        self.len -= written;
        let mut left = written;
        loop {
            let front = self.shared.as_deref_mut().filter(|s| !s.frames.is_empty());
            let owned_end = front
                .as_ref()
                .map_or(self.owned.len(), |shared| shared.frames[0].at);
            let take = left.min(owned_end - self.sent);
            self.sent += take;
            left -= take;
            if self.sent < owned_end {
                break;
            }
            let Some(shared) = front else {
                break;
            };
            let rest = shared.frames[0].frame.len() - shared.sent;
            if left < rest {
                shared.sent += left;
                break;
            }
            left -= rest;
            shared.sent = 0;
            shared.frames.pop_front();
        }
        if self.len > 0 && self.sent > COMPACT_AFTER && self.sent * 2 > self.owned.len() {
            self.compact();
        }
    }

    /// Takes a buffer from `pool` when the queue has none.
    fn borrow_buffer(&mut self, pool: &mut BufferPool) {
        if self.owned.capacity() == 0 {
            self.owned = pool.take();
        }
    }

    /// Empties the queue, giving the owned buffer back to `pool`.
    fn reset(&mut self, pool: &mut BufferPool) {
        pool.put(std::mem::take(&mut self.owned));
        self.sent = 0;
        if let Some(shared) = &mut self.shared {
            shared.sent = 0;
            shared.frames.clear();
            if shared.frames.capacity() * size_of::<SharedFrame>() > RETAINED_CAPACITY {
                shared.frames = VecDeque::new();
            }
        }
    }

    /// Drops the written front of the owned buffer.
    fn compact(&mut self) {
        let sent = self.sent;
        self.owned.drain(..sent);
        for shared_frame in self.shared.iter_mut().flat_map(|s| s.frames.iter_mut()) {
            shared_frame.at -= sent;
        }
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything unsent, as `writev` would see it.
    fn unsent(queue: &SendQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = queue.io_slices(&mut slices);
        slices[..count]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    fn pool() -> SendPools {
        SendPools::new(BufferPool::new(
            BufferPool::DEFAULT_BUFFERS,
            BufferPool::DEFAULT_MAX_CAPACITY,
        ))
    }

    /// The queue's body; panics if it has none.
    fn body(queue: &SendQueue) -> &Body {
        queue
            .body
            .as_deref()
            .expect("a queue with frames has a body")
    }

    fn shared(bytes: &[u8]) -> Arc<[u8]> {
        Arc::from(bytes)
    }

    #[test]
    fn owned_bytes_alone_are_one_contiguous_run() {
        let mut pool = pool();
        let mut queue = SendQueue::with_bytes(b"101 ".to_vec());
        queue.encode(usize::MAX, &mut pool, |out| out.extend_from_slice(b"echo"));
        queue.advance(2, &mut pool);
        assert_eq!(queue.contiguous(), Some(&b"1 echo"[..]));
        queue.push_shared(&shared(b"S"), usize::MAX, &mut pool);
        assert_eq!(queue.contiguous(), None);
    }

    #[test]
    fn owned_and_shared_frames_leave_in_the_order_queued() {
        let mut pool = pool();
        let mut queue = SendQueue::with_bytes(b"101 ".to_vec());
        assert!(queue.push_shared(&shared(b"S1 "), usize::MAX, &mut pool));
        assert!(queue.encode(usize::MAX, &mut pool, |out| out.extend_from_slice(b"o1 ")));
        assert!(queue.push_shared(&shared(b"S2 "), usize::MAX, &mut pool));
        assert!(queue.push_shared(&shared(b"S3 "), usize::MAX, &mut pool));
        queue.encode_control(&mut pool, |out| out.extend_from_slice(b"o2"));
        assert_eq!(unsent(&queue), b"101 S1 o1 S2 S3 o2");
        assert_eq!(queue.len(), 18);
    }

    #[test]
    fn partial_writes_resume_at_any_byte() {
        let mut pool = pool();
        let expected = b"ab0123cdef4567gh".to_vec();
        for step in 1..=expected.len() {
            let mut queue = SendQueue::with_bytes(b"ab".to_vec());
            queue.push_shared(&shared(b"0123"), usize::MAX, &mut pool);
            queue.encode(usize::MAX, &mut pool, |out| out.extend_from_slice(b"cdef"));
            queue.push_shared(&shared(b"4567"), usize::MAX, &mut pool);
            queue.encode(usize::MAX, &mut pool, |out| out.extend_from_slice(b"gh"));
            let mut written = Vec::new();
            while !queue.is_empty() {
                let chunk = unsent(&queue);
                let n = step.min(chunk.len());
                written.extend_from_slice(&chunk[..n]);
                queue.advance(n, &mut pool);
            }
            assert_eq!(written, expected, "writes of {step} bytes");
        }
    }

    #[test]
    fn a_frame_past_the_limit_is_not_queued() {
        let mut pool = pool();
        let mut queue = SendQueue::default();
        assert!(queue.encode(10, &mut pool, |out| out.extend_from_slice(b"12345678")));
        assert!(!queue.encode(10, &mut pool, |out| out.extend_from_slice(b"abc")));
        assert!(!queue.push_shared(&shared(b"abc"), 10, &mut pool));
        assert_eq!(unsent(&queue), b"12345678");
        queue.encode_control(&mut pool, |out| out.extend_from_slice(b"close"));
        assert_eq!(queue.len(), 13);
    }

    #[test]
    fn an_emptied_queue_gives_its_buffer_back_to_the_pool() {
        let mut pool = pool();
        let mut queue = SendQueue::with_bytes(b"HTTP/1.1 101".to_vec());
        queue.advance(12, &mut pool);
        assert!(queue.body.is_none(), "an idle connection holds no body");
        assert_eq!(pool.bodies.len(), PREPARED_BODIES + 1);
        let returned: *const Body = &**pool.bodies.last().unwrap();
        queue.encode(usize::MAX, &mut pool, |out| out.extend_from_slice(b"echo"));
        assert!(
            std::ptr::eq(body(&queue), returned),
            "the pooled body is reused"
        );
        assert!(
            body(&queue).owned.capacity() >= 12,
            "the pooled buffer is reused"
        );
        queue.encode(usize::MAX, &mut pool, |out| out.resize(1 << 20, 7));
        queue.advance(queue.len(), &mut pool);
        assert!(queue.body.is_none());
        assert_eq!(
            pool.bodies[0].owned.capacity(),
            0,
            "a spare body holds no buffer"
        );
    }

    #[test]
    fn a_queue_that_never_empties_drops_its_written_front() {
        let mut pool = pool();
        let mut queue = SendQueue::default();
        for round in 0..100u8 {
            queue.encode(usize::MAX, &mut pool, |out| {
                out.resize(out.len() + 4096, round)
            });
            queue.push_shared(&shared(&[round; 16]), usize::MAX, &mut pool);
            let len = queue.len();
            queue.advance(len - 100, &mut pool);
        }
        assert!(
            body(&queue).owned.len() < 2 * COMPACT_AFTER,
            "{}",
            body(&queue).owned.len()
        );
        assert_eq!(unsent(&queue).len(), 100);
    }

    #[test]
    fn more_pieces_than_one_writev_takes_are_written_in_turns() {
        let mut pool = pool();
        let mut queue = SendQueue::default();
        for i in 0..200u8 {
            queue.push_shared(&shared(&[i]), usize::MAX, &mut pool);
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(queue.io_slices(&mut slices), MAX_SLICES);
        queue.advance(MAX_SLICES, &mut pool);
        assert_eq!(unsent(&queue)[0], MAX_SLICES as u8);
        assert_eq!(queue.len(), 200 - MAX_SLICES);
    }
}
