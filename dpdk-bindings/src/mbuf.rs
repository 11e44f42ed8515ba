//! An owned packet buffer.

use std::ptr::NonNull;

use crate::ffi;

/// Receive offload flags of `rte_mbuf_core.h` (C macros bindgen does not
/// translate): the two-bit checksum fields and the RSS-hash flag.
pub mod rx_flags {
    pub const RSS_HASH: u64 = 1 << 1;
    pub const IP_CKSUM_MASK: u64 = (1 << 4) | (1 << 7);
    pub const IP_CKSUM_BAD: u64 = 1 << 4;
    pub const IP_CKSUM_GOOD: u64 = 1 << 7;
    pub const L4_CKSUM_MASK: u64 = (1 << 3) | (1 << 8);
    pub const L4_CKSUM_BAD: u64 = 1 << 3;
    pub const L4_CKSUM_GOOD: u64 = 1 << 8;
}

/// Receive checksum verdicts of one mbuf: both false means the device did
/// not check (unknown), or says the checksum in the packet is not to be
/// trusted either way (`*_CKSUM_NONE`); software must verify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxChecksums {
    pub ip_good: bool,
    pub ip_bad: bool,
    pub l4_good: bool,
    pub l4_bad: bool,
}

/// One owned `rte_mbuf` (a packet, possibly multi-segment). Dropping it frees
/// it back to its pool; [`Mbuf::into_raw`] hands ownership to C (e.g. tx).
///
/// `repr(transparent)` over a non-null pointer, so a `[Mbuf]` is a valid
/// `struct rte_mbuf *[]` for the burst calls (no copying).
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf {
    ptr: NonNull<ffi::rte_mbuf>,
}

// SAFETY: an Mbuf is exclusively owned; freeing it from another thread is
// fine (its pool is thread-safe), and no thread-local state is attached.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be null or a valid mbuf that the caller owns exclusively and
    /// gives up: nobody else frees it, and its first segment's data is not
    /// shared (a direct mbuf with refcnt 1, as allocated or received).
    pub unsafe fn from_raw(ptr: *mut ffi::rte_mbuf) -> Option<Mbuf> {
        NonNull::new(ptr).map(|ptr| Mbuf { ptr })
    }

    /// Gives up ownership (nothing is freed); the caller must free or transmit it.
    pub fn into_raw(self) -> *mut ffi::rte_mbuf {
        let ptr = self.ptr.as_ptr();
        std::mem::forget(self);
        ptr
    }

    /// The raw pointer (still owned by this Mbuf).
    pub fn as_ptr(&self) -> *mut ffi::rte_mbuf {
        self.ptr.as_ptr()
    }

    /// Total packet length over all segments.
    #[inline]
    pub fn len(&self) -> usize {
        // SAFETY: self.ptr is a valid mbuf we own; pkt_len is a plain field
        // (bindgen checks the struct layout against the C header).
        unsafe { (*self.ptr.as_ptr()).pkt_len as usize }
    }

    /// True for a zero-length packet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Data length of the first segment (the part [`Mbuf::data`] covers).
    #[inline]
    pub fn data_len(&self) -> usize {
        // SAFETY: as in len(): a plain field of a valid mbuf we own.
        unsafe { (*self.ptr.as_ptr()).data_len as usize }
    }

    /// Number of segments.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        // SAFETY: as in len(): a plain field of a valid mbuf we own.
        unsafe { (*self.ptr.as_ptr()).nb_segs }
    }

    /// Free bytes before the data in the first segment.
    pub fn headroom(&self) -> usize {
        // SAFETY: self.ptr is a valid mbuf we own.
        unsafe { ffi::ferrovs_rte_pktmbuf_headroom(self.ptr.as_ptr()) as usize }
    }

    /// Free bytes after the data in the last segment.
    pub fn tailroom(&self) -> usize {
        // SAFETY: self.ptr is a valid mbuf we own.
        unsafe { ffi::ferrovs_rte_pktmbuf_tailroom(self.ptr.as_ptr()) as usize }
    }

    /// The first segment's data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: buf_addr + data_off (what rte_pktmbuf_mtod computes) points
        // at data_len initialised bytes inside the mbuf's buffer (never null
        // for a pool mbuf); we own the mbuf, and the borrow of self keeps it
        // alive and unmodified for the slice's lifetime.
        unsafe {
            let m = &*self.ptr.as_ptr();
            let p = m.buf_addr.cast::<u8>().add(m.data_off as usize);
            std::slice::from_raw_parts(p, m.data_len as usize)
        }
    }

    /// The first segment's data, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); the data is not shared (from_raw's contract)
        // and the unique borrow of self makes the slice the only access.
        unsafe {
            let m = &*self.ptr.as_ptr();
            let p = m.buf_addr.cast::<u8>().add(m.data_off as usize);
            std::slice::from_raw_parts_mut(p, m.data_len as usize)
        }
    }

    /// Grows the packet by `len` bytes at the end (of the last segment) and
    /// returns the new bytes (uninitialised contents are whatever the buffer
    /// held, zeroed is not guaranteed). `None` if the tailroom is too small.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: self.ptr is a valid mbuf we own; append only moves lengths.
        let p = unsafe { ffi::ferrovs_rte_pktmbuf_append(self.ptr.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: DPDK returned a pointer to `len` bytes inside the buffer,
        // now part of the packet. The bytes are plain u8 (any value valid, the
        // buffer was allocated by DPDK); we hold the only reference.
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len as usize) })
    }

    /// Appends a copy of `bytes`; false (and no change) if there is no room.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        let Ok(len) = u16::try_from(bytes.len()) else {
            return false;
        };
        match self.append(len) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Grows the packet by `len` bytes at the front (into the headroom) and
    /// returns them. `None` if the headroom is too small.
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: self.ptr is a valid mbuf we own.
        let p = unsafe { ffi::ferrovs_rte_pktmbuf_prepend(self.ptr.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: as in append(): `len` bytes inside the buffer, now the start
        // of the packet, only referenced through this borrow.
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len as usize) })
    }

    /// Removes `len` bytes from the front of the packet (first segment).
    /// False (and no change) if the first segment is shorter.
    #[must_use]
    pub fn adj(&mut self, len: u16) -> bool {
        // SAFETY: self.ptr is a valid mbuf we own.
        !unsafe { ffi::ferrovs_rte_pktmbuf_adj(self.ptr.as_ptr(), len) }.is_null()
    }

    /// Removes `len` bytes from the end of the packet (last segment).
    /// False (and no change) if the last segment is shorter.
    #[must_use]
    pub fn trim(&mut self, len: u16) -> bool {
        // SAFETY: self.ptr is a valid mbuf we own.
        unsafe { ffi::ferrovs_rte_pktmbuf_trim(self.ptr.as_ptr(), len) == 0 }
    }

    /// Input port id set by the receiving PMD.
    pub fn port(&self) -> u16 {
        // SAFETY: self.ptr is a valid mbuf we own.
        unsafe { ffi::ferrovs_rte_mbuf_port(self.ptr.as_ptr()) }
    }

    /// RSS hash set by the NIC (valid when the RSS-hash offload flag is set).
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: self.ptr is a valid mbuf we own.
        unsafe { ffi::ferrovs_rte_mbuf_rss_hash(self.ptr.as_ptr()) }
    }

    /// Offload flags (`RTE_MBUF_F_*`, see [`rx_flags`]).
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        // SAFETY: as in len(): a plain field of a valid mbuf we own.
        unsafe { (*self.ptr.as_ptr()).ol_flags }
    }

    /// What the receiving device verified of the checksums.
    #[inline]
    pub fn rx_checksums(&self) -> RxChecksums {
        let f = self.ol_flags();
        RxChecksums {
            ip_good: f & rx_flags::IP_CKSUM_MASK == rx_flags::IP_CKSUM_GOOD,
            ip_bad: f & rx_flags::IP_CKSUM_MASK == rx_flags::IP_CKSUM_BAD,
            l4_good: f & rx_flags::L4_CKSUM_MASK == rx_flags::L4_CKSUM_GOOD,
            l4_bad: f & rx_flags::L4_CKSUM_MASK == rx_flags::L4_CKSUM_BAD,
        }
    }

    /// The data of every segment, in order (one slice for a single-segment
    /// mbuf); their lengths add up to [`Mbuf::len`] for a well-formed chain.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            next: self.ptr.as_ptr(),
            left: self.nb_segs(),
            _owner: std::marker::PhantomData,
        }
    }

    /// Prefetches the start of the packet data into cache.
    pub fn prefetch_data(&self) {
        // SAFETY: prefetch never faults; mtod is a pointer into our buffer.
        unsafe { ffi::ferrovs_rte_prefetch0(ffi::ferrovs_rte_pktmbuf_mtod(self.ptr.as_ptr())) }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf exclusively and never use it again.
        unsafe { ffi::ferrovs_rte_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

/// Iterator over an mbuf chain's segment data ([`Mbuf::segments`]).
pub struct Segments<'a> {
    next: *mut ffi::rte_mbuf,
    /// Segments still to visit (`nb_segs` bounds the walk even if a chain's
    /// `next` pointers were inconsistent).
    left: u16,
    _owner: std::marker::PhantomData<&'a Mbuf>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 || self.next.is_null() {
            return None;
        }
        self.left -= 1;
        // SAFETY: `next` is the owned head mbuf or a segment chained to it
        // (the chain belongs to the head, which the borrow keeps alive and
        // unmodified); buf_addr + data_off points at data_len bytes of that
        // segment's buffer, as in Mbuf::data.
        unsafe {
            let m = &*self.next;
            self.next = m.next;
            let p = m.buf_addr.cast::<u8>().add(m.data_off as usize);
            Some(std::slice::from_raw_parts(p, m.data_len as usize))
        }
    }
}
