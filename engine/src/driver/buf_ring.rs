//! [`BufRing`]: the receive buffers a shard lends the kernel, as an
//! io_uring provided-buffer ring.
//!
//! The kernel takes a buffer from the ring only when bytes arrive for one
//! of the shard's connections, and reports its id with the completion;
//! the shard decodes the bytes and puts the buffer back at once. So the
//! receive memory of a shard is this ring, whatever the number of
//! connections, and an idle connection holds none of it.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// The ring's entries must start on a page boundary.
const PAGE: usize = 4096;

/// A ring of `count` receive buffers of `size` bytes each, registered
/// with one io_uring instance as a buffer group.
///
/// Memory: `count * size` bytes of buffers (touched only as the kernel
/// fills them) plus 16 bytes per entry.
#[derive(Debug)]
pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    buffers: NonNull<u8>,
    buffers_layout: Layout,
    count: u16,
    size: u32,
    /// Our copy of the tail: entries before it are the kernel's.
    tail: u16,
}

impl BufRing {
    /// Allocates the ring with every buffer in it. `count` is rounded up
    /// to a power of two (the kernel indexes the ring with a mask).
    ///
    /// # Errors
    /// A zero size or count, or more than 32,768 buffers.
    pub(crate) fn new(count: u16, size: u32) -> io::Result<BufRing> {
        let count = count.max(1).checked_next_power_of_two().unwrap_or(0);
        if size == 0 || count == 0 || count > 32_768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffers: 1 to 32,768 buffers of at least one byte",
            ));
        }
        let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "receive buffers too large");
        let entries_layout =
            Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), PAGE)
                .map_err(invalid)?;
        let buffers_layout =
            Layout::from_size_align(usize::from(count) * size as usize, PAGE).map_err(invalid)?;
        // SAFETY: both layouts have a non-zero size (count and size are at
        // least one).
        let (entries, buffers) = unsafe {
            (
                alloc::alloc_zeroed(entries_layout),
                alloc::alloc(buffers_layout),
            )
        };
        let (Some(entries), Some(buffers)) = (
            NonNull::new(entries.cast::<BufRingEntry>()),
            NonNull::new(buffers),
        ) else {
            alloc::handle_alloc_error(entries_layout);
        };
        let mut ring = BufRing {
            entries,
            entries_layout,
            buffers,
            buffers_layout,
            count,
            size,
            tail: 0,
        };
        for id in 0..count {
            ring.push(id);
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring with `submitter`'s io_uring as buffer group
    /// `group`.
    ///
    /// # Errors
    /// The kernel refused it (older than 5.19, or out of memory).
    pub(crate) fn register(&self, submitter: &Submitter<'_>, group: u16) -> io::Result<()> {
        // SAFETY: the entries stay allocated, at this address, until the
        // ring is dropped; its owner unregisters the group (or tears the
        // io_uring instance down) before dropping it.
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                group,
                0,
            )
        }
    }

    /// The first `len` bytes of buffer `id`, which the kernel filled and
    /// reported in a completion: ours until [`BufRing::recycle`].
    pub(crate) fn filled(&mut self, id: u16, len: usize) -> &mut [u8] {
        assert!(
            id < self.count && len <= self.size as usize,
            "the kernel reported a buffer outside the ring"
        );
        // SAFETY: the range lies inside the buffers' allocation (checked
        // above); the kernel wrote it and does not touch buffer `id` again
        // until it is recycled, which needs `&mut self` and so ends this
        // borrow first.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.buffers
                    .as_ptr()
                    .add(usize::from(id) * self.size as usize),
                len,
            )
        }
    }

    /// Gives buffer `id` back to the kernel.
    pub(crate) fn recycle(&mut self, id: u16) {
        self.push(id);
        self.publish();
    }

    /// Writes the entry for buffer `id` at our tail.
    fn push(&mut self, id: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index` is below `count`, so the entry lies inside the
        // entries' allocation; entries at and after the tail are not the
        // kernel's until the tail is published.
        let entry = unsafe { &mut *self.entries.as_ptr().add(index) };
        // SAFETY: as in `filled`: inside the buffers' allocation.
        let addr = unsafe {
            self.buffers
                .as_ptr()
                .add(usize::from(id) * self.size as usize)
        };
        entry.set_addr(addr as u64);
        entry.set_len(self.size);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries written so far visible to the kernel.
    fn publish(&mut self) {
        // SAFETY: the tail field lives in the first entry, which is
        // allocated and initialised; the kernel reads it, so it is
        // written through an atomic with release ordering, after the
        // entries it publishes.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both were allocated in `new` with these layouts; the
        // owner made sure the kernel no longer uses them.
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.buffers.as_ptr(), self.buffers_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffer_starts_in_the_ring() {
        let mut ring = BufRing::new(6, 128).unwrap();
        assert_eq!(ring.count, 8, "rounded up to a power of two");
        assert_eq!(ring.tail, 8);
        ring.filled(7, 128).fill(1);
        ring.recycle(7);
        assert_eq!(ring.tail, 9);
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert!(BufRing::new(4, 0).is_err());
        assert!(BufRing::new(u16::MAX, 16).is_err());
    }
}
