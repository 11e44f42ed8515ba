//! ferrovs connection tracker.
//!
//! A zone-scoped connection tracker with Open vSwitch `ct` action semantics
//! and nf_conntrack protocol tracking, built for poll-mode threads: the
//! per-packet path takes one shard lock per run of packets, allocates
//! nothing and never reads a clock (the caller passes `now`).
//!
//! Map of the crate:
//! - [`key`]: `ConnKey` (zone + 5-tuple), `Zone`, `Dir`
//! - [`packet`]: L3/L4 parsing of a packet into `PacketInfo`
//! - [`proto`]: per-protocol trackers (TCP state machine and windows, UDP,
//!   ICMP, other)
//! - [`conn`]: the connection record; [`table`]: shards, index and slab;
//!   [`expiry`]: the timing wheel; [`tracker`]: the `ct` action (`execute`)
//! - [`timeout`]: timeout policies; [`zone`]: per-zone limits and settings
//! - [`pressure`]: near-full table: shrunken embryonic timeouts, reaping,
//!   early-drop order
//! - [`frag`]: IPv4/IPv6 fragment reassembly before conntrack
//! - [`nat`]: NAT bindings (allocation) and header rewriting
//! - [`flush`], [`dump`]: control-plane passes in bounded slices
//! - [`events`]: lifecycle hooks; [`expect`]: expectations (related conns);
//!   [`alg`]: FTP/TFTP helpers that create them; [`seqadj`]: TCP sequence
//!   shifts after an ALG resized a segment under NAT
//! - [`build`]: packet builders for tests, benches and golden traces;
//!   [`flood`]: the SYN-flood scenario of `tests/flood.rs` and `ct-flood`
#![forbid(unsafe_code)]

pub mod alg;
pub mod build;
pub mod conn;
pub mod dump;
pub mod events;
pub mod expect;
pub mod expiry;
pub mod flood;
pub mod flush;
pub mod frag;
pub mod index;
pub mod key;
pub mod nat;
pub mod offload;
pub mod packet;
pub mod pressure;
pub mod proto;
pub mod seqadj;
pub mod slab;
pub mod state;
pub mod table;
pub mod timeout;
pub mod tracker;
pub mod zone;

pub use key::{ConnKey, Dir, Family, Zone};
pub use offload::OffloadHandle;
pub use packet::{CtPacket, PacketInfo, PktFlags};
pub use state::CtState;
pub use timeout::{PolicyId, TimeoutAttr, TimeoutPolicy};
pub use tracker::{CtParams, CtResult, Tracker, TrackerConfig};
