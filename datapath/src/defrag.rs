//! Fragment reassembly in front of conntrack, and sending the original
//! fragments back out.
//!
//! Conntrack needs whole datagrams. The `ct` op therefore first hands the
//! IP fragments of its group (flow extraction flagged them in `nw_frag`) to
//! the switch's [`ct::frag::Reassembler`]:
//!
//! - a fragment that does not complete its datagram is **held**: the
//!   reassembler copies it and the packet leaves the batch (counted as
//!   `frag_held`, not as a drop); every later op of the program skips its
//!   empty slot;
//! - the fragment that completes a datagram is replaced, in its slot, by
//!   **one packet carrying the whole datagram**: the L2 header and metadata
//!   of that (last-arriving) fragment, the IP header of the fragment at
//!   offset 0, all the payload. Its flow key is extracted again, so
//!   conntrack, the rest of the program, later tables and recirculation see
//!   an ordinary packet with its L4 ports. [`PacketMeta::frag_layout`]
//!   refers to the datagram's [`FragLayout`] (the original boundaries) in
//!   this thread's side table;
//! - a fragment the reassembler rejects (overlap, tiny fragment, limits,
//!   ...; counted there by reason) stays in the batch unchanged: conntrack
//!   reports it `+inv` and the flow tables decide (a firewall drops it). The
//!   datagram it poisoned is discarded by the reassembler. The packet is
//!   marked ([`OffloadFlags::FRAG_REJECTED`]) so that a later `ct` op (after
//!   recirculation) does not offer it again, where it would start a new
//!   datagram;
//! - a packet marked `notrack` is left alone, as conntrack leaves it.
//!
//! At output, a packet with a layout is cut again along the original
//! boundaries ([`Defrag::send`]): each fragment gets the packet's L2
//! header as it is now (VLAN pushes included) and an IP header built from
//! the datagram's possibly rewritten header (IPv4 checksum recomputed,
//! IPv6 fragment header re-inserted; see [`FragLayout`]). Fragments leave
//! in offset order, whatever order they arrived in. A copy sent to the
//! controller is the whole datagram.
//!
//! # Sharing and cost
//!
//! One reassembler per switch, behind a mutex: fragments of one datagram
//! may arrive on different poll-mode threads (a NIC hashing on L4 ports
//! cannot hash later fragments, which carry none, like their first), and a
//! shared reassembler completes them wherever the last one lands. The lock
//! is taken once per `ct` group that holds a fragment; a group without one
//! pays a test of `nw_frag` per packet and nothing else. The side table of
//! layouts is per thread and emptied at the start of every batch: a
//! reassembled packet never outlives the batch that made it (it is output,
//! recirculated to completion or freed within it).
//!
//! Reassembled datagrams live in heap buffers sized to them (allocated on
//! this rare path); a frame longer than flow extraction reads (65534
//! bytes, L2 header included) is dropped and counted (`frag_too_long`).

use ct::frag::{FragLayout, Outcome};
use ct::Zone;

use crate::flow::key::FRAG_ANY;
use crate::flow::{extract, FlowKey};
use crate::output::TxPorts;
use crate::packet::meta::NO_OFFSET;
use crate::packet::{OffloadFlags, Packet, PacketPool, DEFAULT_HEADROOM};
use crate::pipeline::PipelineCounters;
use crate::switch::Switch;
use crate::BATCH_SIZE;

#[allow(unused_imports)] // doc links
use crate::packet::PacketMeta;

/// The fragment stage of one pipeline: its side table of layouts and a
/// scratch buffer for fragment headers.
#[derive(Default)]
pub struct Defrag {
    layouts: Vec<FragLayout>,
    hdr: Vec<u8>,
}

/// Whether any packet of `group` is an IP fragment (one test per packet).
#[inline]
pub fn any_fragment(group: &[u8], keys: &[FlowKey]) -> bool {
    group.iter().any(|&i| {
        keys.get(i as usize)
            .is_some_and(|k| k.nw_frag() & FRAG_ANY != 0)
    })
}

impl Defrag {
    /// A new batch starts: no packet refers to the old layouts any more.
    #[inline]
    pub fn begin_batch(&mut self) {
        self.layouts.clear();
    }

    /// Layouts recorded in this batch.
    pub fn layouts(&self) -> usize {
        self.layouts.len()
    }

    /// Run the fragments of `group` (in conntrack zone `zone`) through the
    /// switch's reassembler; see the module docs for what happens to each.
    /// Writes the indices of the packets still in the pass into `kept` and
    /// returns how many.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    pub fn gather(
        &mut self,
        sw: &Switch,
        zone: Zone,
        pkts: &mut [Option<Packet>],
        keys: &mut [FlowKey],
        group: &[u8],
        now_ns: u64,
        pool: &mut PacketPool,
        counters: &mut PipelineCounters,
        kept: &mut [u8; BATCH_SIZE],
    ) -> usize {
        let mut reassembler = sw.defrag.lock();
        let mut m = 0;
        for &i in group {
            let iu = i as usize;
            let (Some(p), Some(key)) = (pkts.get(iu).and_then(|p| p.as_ref()), keys.get(iu)) else {
                continue;
            };
            let is_frag = key.nw_frag() & FRAG_ANY != 0;
            let skip = p
                .meta
                .offload
                .intersects(OffloadFlags::NOTRACK | OffloadFlags::FRAG_REJECTED);
            let l3_ofs = p.meta.l3_offset().filter(|&o| o <= p.len());
            let (true, false, Some(l3_ofs)) = (is_frag, skip, l3_ofs) else {
                kept[m] = i;
                m += 1;
                continue;
            };
            let family = if key.dl_type() == 0x86dd {
                ct::Family::Ipv6
            } else {
                ct::Family::Ipv4
            };
            let mut flags = ct::PktFlags::empty();
            flags.set(
                ct::PktFlags::IP_CSUM_GOOD,
                p.meta.offload.contains(OffloadFlags::IP_CSUM_GOOD),
            );
            let pkt = ct::CtPacket {
                l3: &p.data()[l3_ofs..],
                family,
                flags,
            };
            match reassembler.push(zone, &pkt, now_ns) {
                Outcome::Pass => {
                    kept[m] = i;
                    m += 1;
                }
                Outcome::Rejected(_) => {
                    counters.frag_rejected += 1;
                    if let Some(p) = pkts[iu].as_mut() {
                        p.meta.offload.insert(OffloadFlags::FRAG_REJECTED);
                    }
                    kept[m] = i;
                    m += 1;
                }
                Outcome::Held => {
                    counters.frag_held += 1;
                    if let Some(p) = pkts[iu].take() {
                        pool.free(p);
                    }
                }
                Outcome::Complete(r) => {
                    let Some(old) = pkts[iu].take() else { continue };
                    let frame_len = l3_ofs + r.datagram.len();
                    if frame_len >= NO_OFFSET as usize
                        || self.layouts.len() >= u16::MAX as usize - 1
                    {
                        counters.frag_too_long += 1;
                        pool.free(old);
                        continue;
                    }
                    let mut p =
                        Packet::with_capacity(DEFAULT_HEADROOM + frame_len, DEFAULT_HEADROOM);
                    if let Ok(buf) = p.append(frame_len) {
                        buf[..l3_ofs].copy_from_slice(&old.data()[..l3_ofs]);
                        buf[l3_ofs..].copy_from_slice(&r.datagram);
                    }
                    p.meta = old.meta;
                    pool.free(old);
                    self.layouts.push(r.layout);
                    p.meta.frag_layout = self.layouts.len() as u16;
                    // The IPv4 checksum was recomputed; the L4 checksum
                    // (over the whole datagram) was not checked yet.
                    p.meta.offload.insert(OffloadFlags::IP_CSUM_GOOD);
                    p.meta.offload.remove(OffloadFlags::L4_CSUM_GOOD);
                    let (data, meta) = p.data_and_meta_mut();
                    let _ = extract(data, meta, &mut keys[iu]);
                    pkts[iu] = Some(p);
                    counters.frag_reassembled += 1;
                    kept[m] = i;
                    m += 1;
                }
            }
        }
        m
    }

    /// Send the reassembled packet `p` (its `frag_layout` is set) to output
    /// slot `slot` as its original fragments. A packet whose datagram no
    /// longer matches its layout (or whose layout is unknown) is dropped
    /// and counted in `frag_send_errors`.
    #[cold]
    pub fn send(
        &mut self,
        p: Packet,
        slot: usize,
        tx: &mut TxPorts,
        pool: &mut PacketPool,
        counters: &mut PipelineCounters,
    ) {
        let layout = (p.meta.frag_layout as usize)
            .checked_sub(1)
            .and_then(|i| self.layouts.get(i));
        let l3_ofs = p.meta.l3_offset().filter(|&o| o <= p.len());
        let (Some(layout), Some(l3_ofs)) = (layout, l3_ofs) else {
            counters.frag_send_errors += 1;
            pool.free(p);
            return;
        };
        let (l2, l3) = p.data().split_at(l3_ofs);
        if layout.check(l3).is_err() {
            counters.frag_send_errors += 1;
            pool.free(p);
            return;
        }
        for i in 0..layout.len() {
            let Ok(range) = layout.fragment_header(l3, i, &mut self.hdr) else {
                counters.frag_send_errors += 1;
                break;
            };
            let len = l2.len() + self.hdr.len() + range.len();
            let mut f = pool.alloc(p.meta.in_port);
            if f.tailroom() < len {
                pool.free(f);
                f = Packet::with_capacity(DEFAULT_HEADROOM + len, DEFAULT_HEADROOM);
            }
            let Ok(buf) = f.append(len) else {
                counters.frag_send_errors += 1;
                pool.free(f);
                break;
            };
            let (a, rest) = buf.split_at_mut(l2.len());
            let (b, c) = rest.split_at_mut(self.hdr.len());
            a.copy_from_slice(l2);
            b.copy_from_slice(&self.hdr);
            c.copy_from_slice(&l3[range]);
            f.meta = p.meta;
            f.meta.frag_layout = 0;
            tx.push(slot, f, pool);
            counters.frag_sent += 1;
        }
        pool.free(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{PacketBatch, PortNo};
    use crate::port::ring::RingPort;
    use crate::port::Port;
    use ct::build::{ethernet_with, Builder};
    use std::sync::Arc;

    fn setup() -> (TxPorts, RingPort, PacketPool) {
        let (ours, theirs) = RingPort::pair(("p2", PortNo(2)), ("peer2", PortNo(2)), 1, 64);
        let ports: Vec<Arc<dyn Port>> = vec![Arc::new(ours)];
        (TxPorts::new(&ports, 0), theirs, PacketPool::default())
    }

    fn received(peer: &RingPort, pool: &mut PacketPool) -> Vec<Vec<u8>> {
        let mut b = PacketBatch::new();
        peer.rx_burst(0, &mut b, pool);
        b.drain().map(|p| p.data().to_vec()).collect()
    }

    #[test]
    fn send_cuts_along_the_layout_and_refuses_a_changed_datagram() {
        let (mut tx, peer, mut pool) = setup();
        let mut c = PipelineCounters::default();
        let mut d = Defrag::default();
        let l3 = Builder::v4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            .udp(1, 2, &[9; 3000]);
        let layout = FragLayout::for_datagram(&l3, 0x1234, &[1480, 2960]).unwrap();
        let want = layout.fragments(&l3).unwrap();
        d.layouts.push(layout);
        let frame = ethernet_with([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], &l3);
        let mut p = Packet::from_bytes(&frame);
        p.meta.l3_ofs = 14;
        p.meta.frag_layout = 1;
        d.send(p, 0, &mut tx, &mut pool, &mut c);
        tx.flush(&mut pool);
        let got = received(&peer, &mut pool);
        assert_eq!(got.len(), 3);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(&g[..14], &frame[..14]);
            assert_eq!(&g[14..], &w[..]);
        }
        assert_eq!((c.frag_sent, c.frag_send_errors), (3, 0));

        // A datagram that changed length no longer fits its layout: dropped.
        let mut p = Packet::from_bytes(&frame[..frame.len() - 8]);
        p.meta.l3_ofs = 14;
        p.meta.frag_layout = 1;
        d.send(p, 0, &mut tx, &mut pool, &mut c);
        // An index with no layout (a stale one) likewise.
        let mut p = Packet::from_bytes(&frame);
        p.meta.l3_ofs = 14;
        p.meta.frag_layout = 2;
        d.send(p, 0, &mut tx, &mut pool, &mut c);
        tx.flush(&mut pool);
        assert!(received(&peer, &mut pool).is_empty());
        assert_eq!((c.frag_sent, c.frag_send_errors), (3, 2));
        d.begin_batch();
        assert_eq!(d.layouts(), 0);
    }
}
