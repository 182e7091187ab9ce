//! The provided-buffer ring of the io_uring driver: the receive memory every connection of a
//! shard shares, lent to the kernel one buffer at a time.

use std::alloc::Layout;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// Buffer group id of the shard's provided-buffer ring; one ring per io_uring instance.
pub(super) const BUF_GROUP: u16 = 0;

/// The provided-buffer ring: `entries` descriptors the kernel picks from, and the memory they
/// point at. A buffer id belongs to the kernel from the moment it is published in the ring
/// until a completion names it, then to the driver until [`BufRing::recycle`].
pub(super) struct BufRing {
    /// INVARIANT: page-aligned allocation of `entries` descriptors made with `ring_layout`,
    /// registered with the kernel as group [`BUF_GROUP`] from `new` until `unregister`.
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// INVARIANT: allocation of `entries * buf_size` bytes made with `data_layout`, never
    /// moved; buffer `id` is `data[id * buf_size..][..buf_size]`.
    data: NonNull<u8>,
    data_layout: Layout,
    entries: u16,
    buf_size: u32,
    /// Our copy of the ring tail; the kernel reads the published one.
    tail: u16,
    /// Whether the kernel still knows the ring (until [`BufRing::unregister`]).
    registered: bool,
}

impl BufRing {
    pub(super) fn new(ring: &IoUring, entries: u16, buf_size: u32) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 || buf_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recv_buffers must be a power of two up to 32768 and recv_buffer_size non-zero",
            ));
        }
        let ring_layout =
            Layout::from_size_align(size_of::<BufRingEntry>() * entries as usize, 4096)
                .map_err(io::Error::other)?;
        let data_layout = Layout::from_size_align(entries as usize * buf_size as usize, 4096)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, buf_size >= 1).
        let ring_ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(ring_layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: as above. Zeroed so untouched pages stay out of RSS until the kernel fills them.
        let Some(data) = NonNull::new(unsafe { std::alloc::alloc_zeroed(data_layout) }) else {
            // SAFETY: allocated just above with this layout.
            unsafe { std::alloc::dealloc(ring_ptr.as_ptr(), ring_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut buf_ring = Self {
            ring: ring_ptr.cast(),
            ring_layout,
            data,
            data_layout,
            entries,
            buf_size,
            tail: 0,
            registered: false,
        };
        // SAFETY: the ring memory is valid, page-aligned and lives until `Drop`, which the driver
        // runs only after `unregister` succeeded and the kernel finished every op that could
        // hold a buffer.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buf_ring.ring.as_ptr() as u64,
                entries,
                BUF_GROUP,
                0,
            )?;
        }
        buf_ring.registered = true;
        for id in 0..entries {
            buf_ring.push(id);
        }
        buf_ring.publish();
        Ok(buf_ring)
    }

    /// Writes descriptor `id` at our tail without publishing it.
    fn push(&mut self, id: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `index < entries`, inside the ring allocation; the slot at our tail is not one
        // the kernel may read, because the published tail does not include it yet. Only addr,
        // len and bid are written: the `resv` field of entry 0 is the shared tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        // SAFETY: `id < entries`, so the offset stays inside the data allocation.
        let addr = unsafe {
            self.data
                .as_ptr()
                .add(usize::from(id) * self.buf_size as usize)
        };
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed descriptor visible to the kernel.
    fn publish(&mut self) {
        // SAFETY: the ring base is the first entry of a valid, initialised ring, so `tail`
        // returns the address of the shared tail field, a u16 aligned for atomic access that
        // the kernel reads concurrently (hence the atomic store with Release ordering).
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Withdraws the ring from the kernel: from the moment this returns, no receive can pick a
    /// buffer from it (one that tries completes with ENOBUFS), so the memory may be freed once
    /// no op holds a buffer it picked before.
    pub(super) fn unregister(&mut self, ring: &IoUring) -> io::Result<()> {
        if self.registered {
            ring.submitter().unregister_buf_ring(BUF_GROUP)?;
            self.registered = false;
        }
        Ok(())
    }

    /// Gives buffer `id` back to the kernel.
    pub(super) fn recycle(&mut self, id: u16) {
        if id < self.entries {
            self.push(id);
            self.publish();
        }
    }

    /// The first `len` bytes of buffer `id`, which a completion handed to us.
    pub(super) fn slice(&mut self, id: u16, len: u32) -> &mut [u8] {
        if id >= self.entries {
            return &mut [];
        }
        let len = len.min(self.buf_size) as usize;
        // SAFETY: `id < entries`; the kernel named this buffer in a completion and does not
        // touch it again until `recycle` publishes it, and `&mut self` keeps the slice unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.data
                    .as_ptr()
                    .add(usize::from(id) * self.buf_size as usize),
                len,
            )
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both allocations were made in `new` with these layouts and are freed once.
        unsafe {
            std::alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            std::alloc::dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}
