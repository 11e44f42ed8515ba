//! Packets as the datapath holds them.
//!
//! - [`buf`]: [`Packet`], a frame in a buffer with headroom and tailroom, plus
//!   its [`PacketMeta`]. The storage is an enum so that a DPDK mbuf can back a
//!   packet later without copying (see the module docs of [`buf`]).
//! - [`meta`]: [`PacketMeta`], the per-packet metadata (in_port, recirc_id,
//!   conntrack fields, registers, offload flags, parsed L3/L4 offsets).
//! - [`batch`]: [`PacketBatch`], up to [`crate::BATCH_SIZE`] packets, and
//!   [`PacketPool`], the per-thread free list the software ports allocate
//!   from so the steady state allocates nothing.
//! - [`csum`]: the Internet checksum, full and incremental (for header
//!   rewrites).

pub mod batch;
pub mod buf;
pub mod csum;
pub mod meta;
pub mod prefetch;

pub use batch::{PacketBatch, PacketPool};
pub use buf::{Packet, PacketBuf, DEFAULT_BUF_SIZE, DEFAULT_HEADROOM};
pub use meta::{OffloadFlags, PacketMeta, PortNo};
pub use prefetch::prefetch;
