//! [`Packet`]: one frame in a buffer with headroom, plus its metadata.
//!
//! ```text
//!  0          start               start+len          capacity
//!  | headroom |      frame data     |     tailroom     |
//! ```
//!
//! The headroom lets a VLAN push or an encapsulation grow the frame at the
//! front without moving the payload; the tailroom lets a port receive into
//! the buffer directly.
//!
//! # Storage: heap buffers and DPDK mbufs
//!
//! The bytes live in a [`Storage`]. [`Storage::Heap`] is a boxed slice the
//! software ports fill (from a [`super::PacketPool`], so the steady state
//! allocates nothing); `start`/`len` locate the frame in it.
//!
//! With the `dpdk` feature, `Storage::Mbuf` holds an owned single-segment
//! DPDK mbuf (`dpdk_bindings::Mbuf`: its `Drop` returns it to its mempool,
//! handing it to `rte_eth_tx_burst` forgets it). For such a packet the mbuf
//! is the source of truth: the frame is the mbuf's data (`data_off`,
//! `data_len`), and every operation below maps onto the mbuf's own
//! prepend/append/adj/trim, so a VLAN push uses the mbuf's headroom and
//! nothing is copied into another buffer; `start`/`len` are unused. Stages
//! never learn which storage they hold. The DPDK port drops multi-segment
//! mbufs on receive ([`Packet::from_mbuf`] refuses them).
//!
//! # Handle and buffer
//!
//! [`Packet`] is a pointer-sized owning handle to a [`PacketBuf`] (the
//! bookkeeping, metadata and storage), and dereferences to it. Batches,
//! rings and pools move packets by handle, so passing a packet between
//! stages copies 8 bytes, as passing an `rte_mbuf *` would.

use super::meta::{PacketMeta, PortNo};

#[cfg(feature = "dpdk")]
use dpdk_bindings::Mbuf;

/// Default buffer size for software ports: a 1500-byte MTU frame plus two
/// VLAN tags plus headroom, rounded up.
pub const DEFAULT_BUF_SIZE: usize = 2048;

/// Default headroom: room for two VLAN tags and a VXLAN/Geneve outer header
/// stack (DPDK's `RTE_PKTMBUF_HEADROOM` is the same).
pub const DEFAULT_HEADROOM: usize = 128;

/// Where a packet's bytes live.
#[derive(Debug)]
pub enum Storage {
    /// A heap buffer owned by the packet (software ports).
    Heap(Box<[u8]>),
    /// A single-segment DPDK mbuf owned by the packet (DPDK ports); the
    /// mbuf's data offset and length describe the frame.
    #[cfg(feature = "dpdk")]
    Mbuf(Mbuf),
}

impl Storage {
    /// True for a heap buffer.
    #[inline]
    pub fn is_heap(&self) -> bool {
        matches!(self, Storage::Heap(_))
    }

    /// True for a DPDK mbuf.
    #[inline]
    pub fn is_mbuf(&self) -> bool {
        !self.is_heap()
    }

    /// `"heap"` or `"mbuf"` (for logs and tests).
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::Heap(_) => "heap",
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(_) => "mbuf",
        }
    }

    /// The mbuf, for mbuf-backed packets.
    #[cfg(feature = "dpdk")]
    pub fn mbuf(&self) -> Option<&Mbuf> {
        match self {
            Storage::Mbuf(m) => Some(m),
            Storage::Heap(_) => None,
        }
    }
}

/// A frame did not fit in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom {
    /// Bytes asked for.
    pub wanted: usize,
    /// Bytes available (headroom or tailroom, depending on the call).
    pub available: usize,
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "packet buffer has room for {} bytes, {} needed",
            self.available, self.wanted
        )
    }
}

impl std::error::Error for NoRoom {}

/// One packet, owned: a pointer-sized handle to its [`PacketBuf`].
#[derive(Debug)]
pub struct Packet(Box<PacketBuf>);

impl std::ops::Deref for Packet {
    type Target = PacketBuf;

    #[inline(always)]
    fn deref(&self) -> &PacketBuf {
        &self.0
    }
}

impl std::ops::DerefMut for Packet {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut PacketBuf {
        &mut self.0
    }
}

/// A packet's buffer: its bytes, where the frame lies in them, and its
/// metadata.
#[derive(Debug)]
pub struct PacketBuf {
    storage: Storage,
    /// Offset of the first frame byte in a heap storage (unused for mbufs).
    start: u32,
    /// Frame length in a heap storage (unused for mbufs).
    len: u32,
    /// Per-packet metadata.
    pub meta: PacketMeta,
}

impl Packet {
    /// An empty packet in a fresh heap buffer of `buf_size` bytes with
    /// `headroom` bytes reserved in front (clamped to the buffer size).
    pub fn with_capacity(buf_size: usize, headroom: usize) -> Packet {
        let buf_size = buf_size.min(u32::MAX as usize);
        Packet(Box::new(PacketBuf {
            storage: Storage::Heap(vec![0u8; buf_size].into_boxed_slice()),
            start: headroom.min(buf_size) as u32,
            len: 0,
            meta: PacketMeta::default(),
        }))
    }

    /// A packet holding a copy of `frame` with [`DEFAULT_HEADROOM`] in front
    /// (allocates: for tests, tools and the control plane). A frame longer
    /// than a buffer can describe (4 GiB) is cut to what fits.
    pub fn from_bytes(frame: &[u8]) -> Packet {
        let mut p = Packet::with_capacity(
            DEFAULT_HEADROOM.saturating_add(frame.len()),
            DEFAULT_HEADROOM,
        );
        let n = frame.len().min(p.tailroom());
        if let Ok(buf) = p.append(n) {
            buf.copy_from_slice(&frame[..n]);
        }
        p
    }

    /// A packet backed by `mbuf` without copying, with fresh metadata for a
    /// packet received on `in_port`. Multi-segment mbufs are refused (given
    /// back): the datapath sees a frame as one contiguous slice.
    #[cfg(feature = "dpdk")]
    pub fn from_mbuf(mbuf: Mbuf, in_port: PortNo) -> Result<Packet, Mbuf> {
        let mut p = Packet::shell();
        p.fill_with_mbuf(mbuf, in_port)?;
        Ok(p)
    }

    /// A packet handle with an empty heap buffer and nothing in it: what a
    /// [`crate::packet::PacketPool`] keeps to wrap received mbufs without
    /// allocating ([`Packet::fill_with_mbuf`]). An empty boxed slice does
    /// not allocate.
    #[cfg(feature = "dpdk")]
    pub(crate) fn shell() -> Packet {
        Packet(Box::new(PacketBuf {
            storage: Storage::Heap(Box::default()),
            start: 0,
            len: 0,
            meta: PacketMeta::default(),
        }))
    }

    /// Makes this packet's buffer `mbuf` (the old storage is dropped) with
    /// fresh metadata for a packet received on `in_port`: the device's RSS
    /// hash and the checksums it verified good are carried over (a checksum
    /// it found bad or did not check is left for software to verify, which
    /// reports it `+inv`). Multi-segment mbufs are refused (given back).
    #[cfg(feature = "dpdk")]
    #[inline]
    pub(crate) fn fill_with_mbuf(&mut self, mbuf: Mbuf, in_port: PortNo) -> Result<(), Mbuf> {
        if mbuf.nb_segs() != 1 {
            return Err(mbuf);
        }
        self.meta.reset(in_port);
        let flags = mbuf.ol_flags();
        if flags & dpdk_bindings::rx_flags::RSS_HASH != 0 {
            self.meta.rss_hash = mbuf.rss_hash();
        }
        let c = mbuf.rx_checksums();
        self.meta
            .offload
            .set(super::meta::OffloadFlags::IP_CSUM_GOOD, c.ip_good);
        self.meta
            .offload
            .set(super::meta::OffloadFlags::L4_CSUM_GOOD, c.l4_good);
        self.0.storage = Storage::Mbuf(mbuf);
        self.0.start = 0;
        self.0.len = 0;
        Ok(())
    }

    /// Takes an mbuf-backed packet's mbuf out, leaving this packet a shell
    /// (see [`Packet::shell`]); `None` for a heap packet.
    #[cfg(feature = "dpdk")]
    #[inline]
    pub(crate) fn take_mbuf(&mut self) -> Option<Mbuf> {
        if self.storage.is_heap() {
            return None;
        }
        match std::mem::replace(&mut self.0.storage, Storage::Heap(Box::default())) {
            Storage::Mbuf(m) => Some(m),
            Storage::Heap(_) => None,
        }
    }

    /// The mbuf of an mbuf-backed packet (its data is the frame, as the
    /// pipeline left it); a heap packet is given back.
    #[cfg(feature = "dpdk")]
    pub fn into_mbuf(self) -> Result<Mbuf, Packet> {
        if self.storage.is_heap() {
            return Err(self);
        }
        match self.0.storage {
            Storage::Mbuf(m) => Ok(m),
            Storage::Heap(_) => unreachable!("checked above"),
        }
    }
}

/// Empties an mbuf and moves its data offset so that `headroom` bytes
/// (clamped to the buffer) lie in front, using only the mbuf's length
/// operations.
#[cfg(feature = "dpdk")]
fn mbuf_reset(m: &mut Mbuf, headroom: usize) {
    let cur_len = m.data_len();
    if cur_len > 0 {
        let ok = m.trim(cur_len as u16);
        debug_assert!(ok, "single-segment mbuf trims its whole data");
    }
    let want = headroom.min(m.headroom() + m.tailroom());
    let cur = m.headroom();
    if cur > want {
        // Grow into the headroom, then drop the grown bytes from the end:
        // the data offset moves back by the difference.
        let d = (cur - want) as u16;
        let _ = m.prepend(d);
        let ok = m.trim(d);
        debug_assert!(ok);
    } else if cur < want {
        // Grow at the end, then drop the bytes from the front: the data
        // offset moves forward by the difference.
        let d = (want - cur) as u16;
        let _ = m.append(d);
        let ok = m.adj(d);
        debug_assert!(ok);
    }
}

impl PacketBuf {
    /// The frame bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(b) => {
                let (s, l) = (self.start as usize, self.len as usize);
                &b[s..s + l]
            }
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => m.data(),
        }
    }

    /// The frame bytes, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Heap(b) => {
                let (s, l) = (self.start as usize, self.len as usize);
                &mut b[s..s + l]
            }
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => m.data_mut(),
        }
    }

    /// The frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Heap(_) => self.len as usize,
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => m.data_len(),
        }
    }

    /// True if the frame is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the whole buffer.
    #[inline]
    pub fn capacity(&self) -> usize {
        match &self.storage {
            Storage::Heap(b) => b.len(),
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => m.headroom() + m.data_len() + m.tailroom(),
        }
    }

    /// Free bytes in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        match &self.storage {
            Storage::Heap(_) => self.start as usize,
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => m.headroom(),
        }
    }

    /// Free bytes after the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        match &self.storage {
            Storage::Heap(b) => b.len() - self.start as usize - self.len as usize,
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => m.tailroom(),
        }
    }

    /// Empty the frame, put `headroom` bytes in front (clamped to the buffer)
    /// and reset the metadata for a packet received on `in_port`.
    #[inline]
    pub fn reset(&mut self, headroom: usize, in_port: PortNo) {
        match &mut self.storage {
            Storage::Heap(b) => {
                self.start = headroom.min(b.len()) as u32;
                self.len = 0;
            }
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => mbuf_reset(m, headroom),
        }
        self.meta.reset(in_port);
    }

    /// Grow the frame by `n` bytes at the end and return them for writing.
    #[inline]
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        let available = self.tailroom();
        if n > available {
            return Err(NoRoom {
                wanted: n,
                available,
            });
        }
        match &mut self.storage {
            Storage::Heap(b) => {
                let end = self.start as usize + self.len as usize;
                self.len += n as u32;
                Ok(&mut b[end..end + n])
            }
            #[cfg(feature = "dpdk")]
            // n <= tailroom < 64 KiB (an mbuf's buffer length is a u16).
            Storage::Mbuf(m) => m.append(n as u16).ok_or(NoRoom {
                wanted: n,
                available,
            }),
        }
    }

    /// Replace the frame with a copy of `frame` (keeps the headroom).
    pub fn set_frame(&mut self, frame: &[u8]) -> Result<(), NoRoom> {
        self.truncate(0);
        self.append(frame.len())?.copy_from_slice(frame);
        Ok(())
    }

    /// Grow the frame by `n` bytes at the front (out of the headroom) and
    /// return them for writing.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        let available = self.headroom();
        if n > available {
            return Err(NoRoom {
                wanted: n,
                available,
            });
        }
        match &mut self.storage {
            Storage::Heap(b) => {
                self.start -= n as u32;
                self.len += n as u32;
                let s = self.start as usize;
                Ok(&mut b[s..s + n])
            }
            #[cfg(feature = "dpdk")]
            // n <= headroom < 64 KiB.
            Storage::Mbuf(m) => m.prepend(n as u16).ok_or(NoRoom {
                wanted: n,
                available,
            }),
        }
    }

    /// Remove `n` bytes from the front of the frame (they become headroom).
    /// Returns false and changes nothing if the frame is shorter than `n`.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        match &mut self.storage {
            Storage::Heap(_) => {
                self.start += n as u32;
                self.len -= n as u32;
                true
            }
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => m.adj(n as u16),
        }
    }

    /// Shorten the frame to `len` bytes (no effect if it is not longer).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        let cur = self.len();
        if len >= cur {
            return;
        }
        match &mut self.storage {
            Storage::Heap(_) => self.len = len as u32,
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => {
                let ok = m.trim((cur - len) as u16);
                debug_assert!(ok, "single-segment mbuf trims within its data");
            }
        }
    }

    /// Open a gap of `n` bytes at frame offset `ofs` by moving the first
    /// `ofs` bytes into the headroom (a VLAN push at offset 12 moves 12
    /// bytes, not the payload). Returns the gap for writing.
    pub fn insert_gap(&mut self, ofs: usize, n: usize) -> Result<&mut [u8], NoRoom> {
        if ofs > self.len() {
            return Err(NoRoom {
                wanted: ofs,
                available: self.len(),
            });
        }
        self.push_front(n)?;
        let data = self.data_mut();
        data.copy_within(n..n + ofs, 0);
        Ok(&mut data[ofs..ofs + n])
    }

    /// Remove `n` bytes at frame offset `ofs` by moving the first `ofs`
    /// bytes towards the payload (a VLAN pop). Returns false and changes
    /// nothing if the range is outside the frame.
    pub fn remove_range(&mut self, ofs: usize, n: usize) -> bool {
        match ofs.checked_add(n) {
            Some(end) if end <= self.len() => {}
            _ => return false,
        }
        self.data_mut().copy_within(0..ofs, n);
        let pulled = self.pull_front(n);
        debug_assert!(pulled);
        true
    }

    /// The frame bytes and the metadata, borrowed together (extraction reads
    /// one and writes the other).
    #[inline]
    pub fn data_and_meta_mut(&mut self) -> (&[u8], &mut PacketMeta) {
        let data = match &self.storage {
            Storage::Heap(b) => {
                let (s, l) = (self.start as usize, self.len as usize);
                &b[s..s + l]
            }
            #[cfg(feature = "dpdk")]
            Storage::Mbuf(m) => m.data(),
        };
        (data, &mut self.meta)
    }

    /// The storage (for ports that hand the buffer to a device).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_is_a_pointer_sized_handle() {
        assert_eq!(std::mem::size_of::<Packet>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn from_bytes_has_default_headroom_and_exact_frame() {
        let p = Packet::from_bytes(&[1, 2, 3]);
        assert_eq!(p.data(), &[1, 2, 3]);
        assert_eq!(p.headroom(), DEFAULT_HEADROOM);
        assert_eq!(p.tailroom(), 0);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn append_respects_tailroom() {
        let mut p = Packet::with_capacity(16, 4);
        assert_eq!(p.tailroom(), 12);
        p.append(10).unwrap().fill(0xaa);
        assert_eq!(
            p.append(3),
            Err(NoRoom {
                wanted: 3,
                available: 2
            })
        );
        assert_eq!(p.len(), 10);
        assert!(p.data().iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn push_and_pull_front_use_headroom() {
        let mut p = Packet::with_capacity(32, 8);
        p.set_frame(&[5, 6, 7]).unwrap();
        p.push_front(2).unwrap().copy_from_slice(&[3, 4]);
        assert_eq!(p.data(), &[3, 4, 5, 6, 7]);
        assert_eq!(p.headroom(), 6);
        assert!(p.push_front(7).is_err());
        assert_eq!(p.data(), &[3, 4, 5, 6, 7], "failed push changes nothing");
        assert!(p.pull_front(3));
        assert_eq!(p.data(), &[6, 7]);
        assert!(!p.pull_front(3));
        assert_eq!(p.data(), &[6, 7]);
    }

    #[test]
    fn insert_gap_and_remove_range_round_trip_a_vlan_tag() {
        let frame: Vec<u8> = (0u8..20).collect();
        let mut p = Packet::from_bytes(&frame);
        p.insert_gap(12, 4)
            .unwrap()
            .copy_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        assert_eq!(&p.data()[..12], &frame[..12]);
        assert_eq!(&p.data()[12..16], &[0x81, 0x00, 0x00, 0x0a]);
        assert_eq!(&p.data()[16..], &frame[12..]);
        assert_eq!(p.headroom(), DEFAULT_HEADROOM - 4);
        assert!(p.remove_range(12, 4));
        assert_eq!(p.data(), &frame[..]);
        assert_eq!(p.headroom(), DEFAULT_HEADROOM);
        assert!(!p.remove_range(18, 4));
        assert!(!p.remove_range(usize::MAX, 2));
        assert!(p.insert_gap(21, 1).is_err());
    }

    #[test]
    fn truncate_and_reset() {
        let mut p = Packet::from_bytes(&[1, 2, 3, 4]);
        p.truncate(10);
        assert_eq!(p.len(), 4);
        p.truncate(2);
        assert_eq!(p.data(), &[1, 2]);
        p.meta.recirc_id = 5;
        p.reset(16, PortNo(2));
        assert!(p.is_empty());
        assert_eq!(p.headroom(), 16);
        assert_eq!(p.meta.in_port, PortNo(2));
        assert_eq!(p.meta.recirc_id, 0);
        // headroom larger than the buffer is clamped, never panics
        p.reset(10_000, PortNo(2));
        assert_eq!(p.tailroom(), 0);
        assert!(p.append(1).is_err());
    }
}
