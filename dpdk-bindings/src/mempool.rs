//! Packet-buffer (pktmbuf) mempools.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use crate::eal::Eal;
use crate::error::{DpdkError, Result};
use crate::ffi;
use crate::mbuf::Mbuf;

/// A pktmbuf pool.
///
/// Pools live for the rest of the process: ports keep allocating from the pool
/// given at rx queue setup and mbufs in flight point back at it, so a pool is
/// never freed. The handle is a cheap `Copy`.
#[derive(Debug, Clone, Copy)]
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
}

// SAFETY: a pktmbuf pool uses DPDK's default multi-producer/multi-consumer ring
// ops, so get/put from any thread are safe, and the pool is never freed.
unsafe impl Send for Mempool {}
// SAFETY: as above; all methods go through thread-safe DPDK calls.
unsafe impl Sync for Mempool {}

/// Default mbuf data room: 2048 bytes of data plus the 128-byte headroom.
pub const DEFAULT_DATA_ROOM: u16 = ffi::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

impl Mempool {
    /// Creates a pktmbuf pool of `n` mbufs with the default data room and a
    /// per-lcore cache of `cache_size`, on the caller's NUMA socket.
    pub fn create(eal: Eal, name: &str, n: u32, cache_size: u32) -> Result<Mempool> {
        Self::create_with(
            eal,
            name,
            n,
            cache_size,
            DEFAULT_DATA_ROOM,
            ffi::SOCKET_ID_ANY,
        )
    }

    /// Creates a pktmbuf pool with an explicit data room and socket
    /// (`ffi::SOCKET_ID_ANY` for any).
    pub fn create_with(
        _eal: Eal,
        name: &str,
        n: u32,
        cache_size: u32,
        data_room_size: u16,
        socket_id: i32,
    ) -> Result<Mempool> {
        let cname = CString::new(name).map_err(|_| {
            DpdkError::new(
                "rte_pktmbuf_pool_create",
                libc::EINVAL,
                "pool name contains a NUL byte",
            )
        })?;
        // SAFETY: the EAL is initialised (we hold an Eal); cname is a valid
        // C string that DPDK copies; the numeric arguments are validated by DPDK.
        let ptr = unsafe {
            ffi::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                cache_size,
                0,
                data_room_size,
                socket_id,
            )
        };
        NonNull::new(ptr).map(|ptr| Mempool { ptr }).ok_or_else(|| {
            DpdkError::from_rte_errno("rte_pktmbuf_pool_create")
                .context(format_args!("pool {name:?}, {n} mbufs"))
        })
    }

    /// Finds an existing pool by name.
    pub fn lookup(_eal: Eal, name: &str) -> Option<Mempool> {
        let cname = CString::new(name).ok()?;
        // SAFETY: cname is a valid C string; the EAL is initialised.
        let ptr = unsafe { ffi::rte_mempool_lookup(cname.as_ptr()) };
        NonNull::new(ptr).map(|ptr| Mempool { ptr })
    }

    /// The pool's name.
    pub fn name(&self) -> String {
        // SAFETY: the pool is alive for the process; `name` is a NUL-terminated
        // array inside the mempool header that never changes after creation.
        let name = unsafe { CStr::from_ptr((*self.ptr.as_ptr()).name.as_ptr()) };
        name.to_string_lossy().into_owned()
    }

    /// Total number of mbufs in the pool.
    pub fn size(&self) -> u32 {
        // SAFETY: the pool is alive; `size` is fixed at creation.
        unsafe { (*self.ptr.as_ptr()).size }
    }

    /// Mbufs currently free (in the pool's ring and lcore caches).
    pub fn avail_count(&self) -> u32 {
        // SAFETY: the pool is alive; the call only reads counters.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs currently allocated.
    pub fn in_use_count(&self) -> u32 {
        // SAFETY: the pool is alive; the call only reads counters.
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Allocates one mbuf (reset, empty, default headroom).
    pub fn alloc(&self) -> Result<Mbuf> {
        // SAFETY: the pool is a live pktmbuf pool (created by
        // rte_pktmbuf_pool_create or found by name); alloc is thread-safe.
        let m = unsafe { ffi::ferrovs_rte_pktmbuf_alloc(self.ptr.as_ptr()) };
        if m.is_null() {
            return Err(DpdkError::from_errno("rte_pktmbuf_alloc", libc::ENOBUFS)
                .context(format_args!("pool {:?} is empty", self.name())));
        }
        // SAFETY: a freshly allocated mbuf is exclusively ours (refcnt 1, direct).
        Ok(unsafe { Mbuf::from_raw(m) }.expect("non-null"))
    }

    /// Allocates `count` mbufs at once, or none.
    pub fn alloc_bulk(&self, count: usize) -> Result<Vec<Mbuf>> {
        let n = u32::try_from(count).map_err(|_| {
            DpdkError::new("rte_pktmbuf_alloc_bulk", libc::EINVAL, "count too large")
        })?;
        let mut out: Vec<Mbuf> = Vec::with_capacity(count);
        // SAFETY: `out` has room for `count` pointers; Mbuf is repr(transparent)
        // over a non-null `*mut rte_mbuf`, so the array layout matches. On
        // success DPDK wrote `count` valid, exclusively owned mbufs.
        let ret = unsafe {
            ffi::ferrovs_rte_pktmbuf_alloc_bulk(
                self.ptr.as_ptr(),
                out.as_mut_ptr().cast::<*mut ffi::rte_mbuf>(),
                n,
            )
        };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_pktmbuf_alloc_bulk", ret)
                .context(format_args!("{count} mbufs from pool {:?}", self.name())));
        }
        // SAFETY: the first `count` elements were initialised above.
        unsafe { out.set_len(count) };
        Ok(out)
    }

    /// The raw pool pointer (for FFI).
    pub fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }
}
