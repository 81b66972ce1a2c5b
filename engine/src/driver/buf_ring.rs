//! [`BufRing`]: the receive buffers a shard lends the kernel, as an
//! io_uring provided-buffer ring.
//!
//! The kernel takes a buffer from the ring only when bytes arrive for one
//! of the shard's connections, and reports its id with the completion;
//! the shard decodes the bytes and puts the buffer back at once. So the
//! receive memory of a shard is this ring, whatever the number of
//! connections, and an idle connection holds none of it.
//!
//! On Linux 6.12 and later the ring is registered for incremental
//! consumption (`IOU_PBUF_RING_INC`): the kernel fills a buffer piece by
//! piece, one receive after another, and reports with each piece whether
//! it keeps the rest. A few large buffers then carry many small messages:
//! the memory a shard needs follows the bytes in flight, not the number
//! of connections that received something.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// The ring's entries must start on a page boundary.
const PAGE: usize = 4096;

/// `IOU_PBUF_RING_INC`: buffers are consumed incrementally (Linux 6.12).
const INCREMENTAL: u16 = 2;

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
    /// Registered for incremental consumption.
    incremental: bool,
    /// Per buffer, the bytes the kernel has reported so far: where its
    /// next piece starts (always 0 without incremental consumption).
    consumed: Box<[u32]>,
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
            incremental: false,
            consumed: vec![0; usize::from(count)].into_boxed_slice(),
        };
        for id in 0..count {
            ring.push(id);
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring with `submitter`'s io_uring as buffer group
    /// `group`, for incremental consumption if `incremental`.
    ///
    /// # Errors
    /// The kernel refused it (older than 5.19, or older than 6.12 for
    /// incremental consumption, or out of memory).
    pub(crate) fn register(
        &mut self,
        submitter: &Submitter<'_>,
        group: u16,
        incremental: bool,
    ) -> io::Result<()> {
        let flags = if incremental { INCREMENTAL } else { 0 };
        // SAFETY: the entries stay allocated, at this address, until the
        // ring is dropped; its owner unregisters the group (or tears the
        // io_uring instance down) before dropping it.
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                group,
                flags,
            )
        }?;
        self.incremental = incremental;
        Ok(())
    }

    /// The `len` bytes the kernel just reported in buffer `id`: ours
    /// until the buffer is released. `more` is the completion's
    /// `IORING_CQE_F_BUF_MORE`: the kernel keeps filling the rest of the
    /// buffer, so the next piece starts after this one.
    pub(crate) fn filled(&mut self, id: u16, len: usize, more: bool) -> &mut [u8] {
        let index = usize::from(id);
        let start = self
            .consumed
            .get(index)
            .map_or(usize::MAX, |&at| at as usize);
        assert!(
            start
                .checked_add(len)
                .is_some_and(|end| end <= self.size as usize),
            "the kernel reported bytes outside the ring"
        );
        if self.incremental && more {
            self.consumed[index] = (start + len) as u32;
        }
        // SAFETY: the range lies inside buffer `id`, inside the buffers'
        // allocation (checked above). The kernel wrote it and does not
        // touch it again: it fills only what follows, or nothing until
        // the buffer is recycled, which needs `&mut self` and so ends this
        // borrow first.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.buffers
                    .as_ptr()
                    .add(index * self.size as usize + start),
                len,
            )
        }
    }

    /// Gives buffer `id` back to the kernel once it is done with it: at
    /// once without incremental consumption, and with it when the
    /// completion said the kernel keeps no more of it (`more` false).
    pub(crate) fn release(&mut self, id: u16, more: bool) {
        if self.incremental && more {
            return;
        }
        if let Some(consumed) = self.consumed.get_mut(usize::from(id)) {
            *consumed = 0;
            self.push(id);
            self.publish();
        }
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
        ring.filled(7, 128, false).fill(1);
        ring.release(7, false);
        assert_eq!(ring.tail, 9);
    }

    #[test]
    fn incremental_pieces_follow_each_other_until_the_kernel_lets_go() {
        let mut ring = BufRing::new(2, 64).unwrap();
        ring.incremental = true;
        let base = ring.buffers.as_ptr() as usize + 64;
        assert_eq!(ring.filled(1, 10, true).as_ptr() as usize, base);
        ring.release(1, true);
        assert_eq!(ring.tail, 2, "a buffer the kernel keeps is not recycled");
        assert_eq!(ring.filled(1, 20, false).as_ptr() as usize, base + 10);
        ring.release(1, false);
        assert_eq!(ring.tail, 3);
        assert_eq!(ring.filled(1, 64, false).as_ptr() as usize, base);
    }

    #[test]
    #[should_panic(expected = "outside the ring")]
    fn bytes_past_a_buffer_are_refused() {
        let mut ring = BufRing::new(2, 64).unwrap();
        ring.incremental = true;
        ring.filled(0, 60, true);
        ring.filled(0, 10, true);
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert!(BufRing::new(4, 0).is_err());
        assert!(BufRing::new(u16::MAX, 16).is_err());
    }
}
