//! [`BufferPool`]: a shard's spare send buffers, lent to connections
//! while they have frames queued.
//!
//! A connection's send buffer goes back to the pool as soon as it has been
//! written out, so an idle connection holds no buffer at all, and the next
//! message on any connection of the shard reuses one instead of
//! allocating: in steady state, sending costs no allocation.

/// Spare buffers, bounded in number and in the size of each.
#[derive(Debug)]
pub(crate) struct BufferPool {
    spare: Vec<Vec<u8>>,
    /// The most buffers kept.
    max_buffers: usize,
    /// Buffers that grew past this are freed, not kept.
    max_capacity: usize,
}

impl BufferPool {
    /// Buffers kept by default: enough for every connection written to in
    /// one loop turn of a busy shard.
    pub(crate) const DEFAULT_BUFFERS: usize = 256;
    /// Largest buffer kept by default: 256 KiB, so the pool holds 64 MiB
    /// at most.
    pub(crate) const DEFAULT_MAX_CAPACITY: usize = 256 * 1024;

    /// An empty pool that keeps up to `max_buffers` buffers of at most
    /// `max_capacity` bytes each. Its list has room for all of them from
    /// the start, so giving a buffer back never allocates.
    pub(crate) fn new(max_buffers: usize, max_capacity: usize) -> BufferPool {
        BufferPool {
            spare: Vec::with_capacity(max_buffers),
            max_buffers,
            max_capacity,
        }
    }

    /// Fills the pool with `count` buffers of `capacity` bytes, made now
    /// rather than on demand: how many connections hold a buffer at once
    /// varies from one loop turn to the next, and each new high would
    /// otherwise allocate, now and then, long after start-up. The memory
    /// is address space until a buffer is first written.
    pub(crate) fn prepare(&mut self, count: usize, capacity: usize) {
        let count = count.min(self.max_buffers.saturating_sub(self.spare.len()));
        let capacity = capacity.min(self.max_capacity);
        self.spare
            .extend((0..count).map(|_| Vec::with_capacity(capacity)));
    }

    /// A buffer with no contents: a spare one, or a new empty `Vec` (which
    /// allocates only when written to).
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Takes a buffer back, emptied; too large a buffer, or one past the
    /// count, is freed instead.
    pub(crate) fn put(&mut self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if capacity == 0 || capacity > self.max_capacity || self.spare.len() >= self.max_buffers {
            return;
        }
        buffer.clear();
        self.spare.push(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_lent_again_without_allocating() {
        let mut pool = BufferPool::new(2, 1024);
        let mut buffer = pool.take();
        buffer.extend_from_slice(b"frame");
        let address = buffer.as_ptr();
        pool.put(buffer);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), address);
    }

    #[test]
    fn prepared_buffers_are_lent_before_any_is_allocated() {
        let mut pool = BufferPool::new(4, 1024);
        pool.prepare(8, 4096);
        assert_eq!(pool.spare.len(), 4, "no more than the pool keeps");
        assert!(
            pool.spare
                .iter()
                .all(|b| b.capacity() >= 1024 && b.is_empty())
        );
    }

    #[test]
    fn the_pool_keeps_neither_large_buffers_nor_more_than_its_count() {
        let mut pool = BufferPool::new(2, 1024);
        pool.put(Vec::with_capacity(4096));
        assert!(pool.spare.is_empty());
        for _ in 0..3 {
            pool.put(Vec::with_capacity(64));
        }
        assert_eq!(pool.spare.len(), 2);
        pool.put(Vec::new());
        assert_eq!(pool.spare.len(), 2);
    }
}
