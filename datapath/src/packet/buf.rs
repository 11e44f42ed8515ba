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
//! # Storage, and how a DPDK mbuf will back a packet
//!
//! The bytes live in a [`Storage`]. Today the only variant is
//! [`Storage::Heap`], a boxed slice the software ports fill (from a
//! [`super::PacketPool`], so the steady state allocates nothing). The DPDK
//! port (issue 5) adds a `Storage::Mbuf(Mbuf)` variant: `Mbuf` owns a
//! `NonNull<rte_mbuf>` (its `Drop` returns it to the mempool, handing it to
//! `rte_eth_tx_burst` forgets it), the storage slice is the mbuf's data room
//! (`buf_addr .. buf_addr + buf_len`), and `start`/`len` are loaded from the
//! mbuf's `data_off`/`data_len` on receive and written back before transmit.
//! Every accessor below goes through [`Storage::bytes`]/[`Storage::bytes_mut`],
//! so stages never learn which storage they hold and nothing is copied.
//! Multi-segment mbufs are linearised (or dropped) by that port on receive.
//!
//! # Handle and buffer
//!
//! [`Packet`] is a pointer-sized owning handle to a [`PacketBuf`] (the
//! bookkeeping, metadata and storage), and dereferences to it. Batches,
//! rings and pools move packets by handle, so passing a packet between
//! stages copies 8 bytes, as passing an `rte_mbuf *` would.

use super::meta::{PacketMeta, PortNo};

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
}

impl Storage {
    /// The whole buffer, headroom and tailroom included.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Heap(b) => b,
        }
    }

    /// The whole buffer, mutably.
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Heap(b) => b,
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
    /// Offset of the first frame byte in the storage.
    start: u32,
    /// Frame length.
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
}

impl PacketBuf {
    /// The frame bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let (s, l) = (self.start as usize, self.len as usize);
        &self.storage.bytes()[s..s + l]
    }

    /// The frame bytes, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (s, l) = (self.start as usize, self.len as usize);
        &mut self.storage.bytes_mut()[s..s + l]
    }

    /// The frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True if the frame is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of the whole buffer.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.storage.bytes().len()
    }

    /// Free bytes in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start as usize
    }

    /// Free bytes after the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.capacity() - self.start as usize - self.len as usize
    }

    /// Empty the frame, put `headroom` bytes in front (clamped to the buffer)
    /// and reset the metadata for a packet received on `in_port`.
    #[inline]
    pub fn reset(&mut self, headroom: usize, in_port: PortNo) {
        self.start = headroom.min(self.capacity()) as u32;
        self.len = 0;
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
        let end = self.start as usize + self.len as usize;
        self.len += n as u32;
        Ok(&mut self.storage.bytes_mut()[end..end + n])
    }

    /// Replace the frame with a copy of `frame` (keeps the headroom).
    pub fn set_frame(&mut self, frame: &[u8]) -> Result<(), NoRoom> {
        self.len = 0;
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
        self.start -= n as u32;
        self.len += n as u32;
        let s = self.start as usize;
        Ok(&mut self.storage.bytes_mut()[s..s + n])
    }

    /// Remove `n` bytes from the front of the frame (they become headroom).
    /// Returns false and changes nothing if the frame is shorter than `n`.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.start += n as u32;
        self.len -= n as u32;
        true
    }

    /// Shorten the frame to `len` bytes (no effect if it is not longer).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.len = len as u32;
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
        let s = self.start as usize;
        let buf = self.storage.bytes_mut();
        buf.copy_within(s + n..s + n + ofs, s);
        Ok(&mut buf[s + ofs..s + ofs + n])
    }

    /// Remove `n` bytes at frame offset `ofs` by moving the first `ofs`
    /// bytes towards the payload (a VLAN pop). Returns false and changes
    /// nothing if the range is outside the frame.
    pub fn remove_range(&mut self, ofs: usize, n: usize) -> bool {
        match ofs.checked_add(n) {
            Some(end) if end <= self.len() => {}
            _ => return false,
        }
        let s = self.start as usize;
        self.storage.bytes_mut().copy_within(s..s + ofs, s + n);
        self.start += n as u32;
        self.len -= n as u32;
        true
    }

    /// The frame bytes and the metadata, borrowed together (extraction reads
    /// one and writes the other).
    #[inline]
    pub fn data_and_meta_mut(&mut self) -> (&[u8], &mut PacketMeta) {
        let (s, l) = (self.start as usize, self.len as usize);
        (&self.storage.bytes()[s..s + l], &mut self.meta)
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
