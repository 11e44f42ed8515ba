//! ferrovs userspace datapath.
//!
//! The packet path of the switch, built for poll-mode threads that move
//! batches of up to [`BATCH_SIZE`] packets through every stage.
//!
//! Map of the crate:
//! - [`packet`]: the packet buffer with headroom ([`packet::Packet`]), its
//!   per-packet metadata ([`packet::PacketMeta`]), the fixed-capacity
//!   [`packet::PacketBatch`], the recycling [`packet::PacketPool`], and the
//!   Internet checksum ([`packet::csum`]).
//! - [`flow`]: flow-key extraction ([`flow::extract()`]) into the compact
//!   [`flow::FlowKey`], with a counter per malformation reason, and the
//!   key hash used by the exact-match cache.
//! - [`port`]: the [`port::Port`] trait and the software ports (rings, pcap
//!   replay/record, traffic generator, null sink, AF_PACKET).
//! - [`stats`]: counters shared by ports and stages.
//! - [`bench_result`]: the JSON-lines record every bench binary writes with
//!   `--json-out`, read back by `bench-report` (markdown table + SVG plot).
//! - [`switch`], [`pipeline`], [`pmd`]: the shared switch state, the
//!   per-thread packet pipeline (read it top to bottom: extract, classify,
//!   group, execute, recirculate, flush) and the poll-mode threads.
//! - [`cache`]: the exact-match and megaflow caches; [`upcall`]: the slow
//!   path (ofproto translation, key/mask conversion, recirculation ids);
//!   [`program`]: the ops a megaflow runs; [`action`]: header rewrites with
//!   incremental checksums and VLAN push/pop; [`output`]: output batching;
//!   [`defrag`]: IP fragment reassembly before conntrack and sending the
//!   original fragments at output.
//! - [`config`]: the daemon's JSON configuration; [`daemon`]: the running
//!   switch the control plane reaches; [`control`]: the control socket and
//!   its commands (`ferrovs-ctl`); [`metrics`]: the Prometheus endpoint.
//!
//! Binaries: `ferrovsd --config FILE` (the daemon), `ferrovs-ctl COMMAND
//! ...` (its control client; `ferrovs-ctl help`), `ferrovs-demo` (the
//! stateful-firewall demo), `pipeline-bench`, `extract-bench` and
//! `bench-report`.
//!
//! One pass of a poll loop, with software ports:
//!
//! ```
//! use datapath::flow::{extract_batch, ExtractStats, FlowKey};
//! use datapath::packet::{PacketBatch, PacketPool, PortNo};
//! use datapath::port::generator::{GeneratorConfig, GeneratorPort};
//! use datapath::port::{NullPort, Port};
//!
//! let gen = GeneratorPort::new("gen", PortNo(1), GeneratorConfig { flows: 1000, ..Default::default() });
//! let sink = NullPort::new("null", PortNo(2));
//! let mut pool = PacketPool::default(); // per thread
//! let mut batch = PacketBatch::new(); // up to 32 packets
//! let mut keys = [FlowKey::ZERO; datapath::BATCH_SIZE];
//! let mut stats = ExtractStats::default();
//! assert_eq!(gen.rx_burst(0, &mut batch, &mut pool), 32);
//! extract_batch(&mut batch, &mut keys, &mut stats);
//! assert_eq!(keys[0].nw_proto(), 17);
//! assert_eq!(batch.as_slice()[0].meta.l4_offset(), Some(34));
//! assert_eq!(sink.tx_burst(0, &mut batch, &mut pool), 32);
//! assert_eq!(stats.malformed_total(), 0);
//! ```
//!
//! Unsafe code is confined to `packet/` (the prefetch hint) and
//! `port/afpacket.rs`; every block
//! carries a `// SAFETY:` comment (clippy's `undocumented_unsafe_blocks` is
//! denied for the crate, and `unsafe_code` is denied everywhere else).
#![deny(unsafe_code)]

pub mod action;
pub mod bench_result;
pub mod cache;
pub mod config;
pub mod control;
pub mod daemon;
pub mod defrag;
pub mod fastpath;
pub mod flow;
pub mod hw_offload;
pub mod metrics;
pub mod output;
#[allow(unsafe_code)] // the prefetch hint
pub mod packet;
pub mod pipeline;
pub mod pmd;
pub mod port;
pub mod program;
pub mod stats;
pub mod switch;
pub mod upcall;

pub use flow::{extract, ExtractStats, FlowKey, Malformed};
pub use packet::{OffloadFlags, Packet, PacketBatch, PacketMeta, PacketPool, PortNo};
pub use port::{LinkState, Port, PortDropReason, PortStats};

/// The most packets a batch carries through one stage (OVS's
/// `NETDEV_MAX_BURST`).
pub const BATCH_SIZE: usize = 32;
