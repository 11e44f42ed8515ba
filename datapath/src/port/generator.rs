//! [`GeneratorPort`]: deterministic synthetic traffic for benchmarks and
//! tests.
//!
//! The generator keeps `flows` connection slots and visits them round-robin
//! in a seed-dependent stride order. Each visit emits the slot's next packet:
//!
//! - UDP: a request from the client, then (with `replies`) a response from
//!   the server, and so on.
//! - TCP: a three-way handshake (SYN, SYN/ACK, ACK), then established
//!   segments carrying payload (client to server, alternating with server to
//!   client when `replies` is on), with sequence and acknowledgement numbers
//!   that follow the bytes sent, so a window-checking connection tracker
//!   accepts them. With `conn_packets > 0` a connection is retired after that
//!   many established segments and the slot opens a new connection (a new
//!   client address/port and a new handshake), which sets the mix of
//!   handshakes to established traffic.
//!
//! Connection `c` (slot plus generation times `flows`) has client
//! `10.a.b.c:port` with the address taken from `c >> 14` and the port
//! `1024 + (c & 0x3fff)`, and server `172.16.0.1` port 80 (TCP) or 5001
//! (UDP). Every packet has valid IPv4 and L4 checksums. Frames are written
//! straight into pool buffers; nothing is allocated per packet.
//!
//! With several receive queues, queue `q` serves the slots `i` with
//! `i % n_rxq == q`. Transmitting to a generator port frees the packets and
//! counts them (it doubles as a sink).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{LinkState, Port, PortCounters, PortDropReason, PortStats};
use crate::packet::{csum, OffloadFlags, PacketBatch, PacketPool, PortNo};

/// Transport of the generated flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenProto {
    Udp,
    Tcp,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    /// Concurrent flows (connection slots); at least 1. Each costs about
    /// 20 bytes of generator state (1M flows: 20 MB).
    pub flows: u32,
    /// Frame length in bytes (no FCS) of UDP packets and TCP segments with
    /// payload; raised to the smallest frame that holds the headers. TCP
    /// handshake segments are 60 bytes.
    pub packet_size: usize,
    /// UDP or TCP.
    pub proto: GenProto,
    /// Emit server-to-client packets too.
    pub replies: bool,
    /// TCP: established segments per connection before the slot starts a
    /// new connection; 0 keeps every connection forever.
    pub conn_packets: u32,
    /// Seed of the visiting order and the TCP initial sequence numbers.
    pub seed: u64,
    /// Stop (link down) after this many packets in total.
    pub limit: Option<u64>,
    /// Receive queues.
    pub n_rxq: usize,
    /// Mark received packets' IP and L4 checksums as verified, as a NIC
    /// with receive checksum offload does (the generator writes valid
    /// checksums, so the claim is true); off makes conntrack verify them
    /// in software.
    pub csum_offload: bool,
    /// UDP only: requests go to this address (a virtual IP that a
    /// destination NAT in front of the server maps to it) while replies
    /// still come from the server, as the switch sees traffic it DNATs.
    pub request_dst: Option<[u8; 4]>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            flows: 1000,
            packet_size: 64,
            proto: GenProto::Udp,
            replies: false,
            conn_packets: 0,
            seed: 1,
            limit: None,
            n_rxq: 1,
            csum_offload: true,
            request_dst: None,
        }
    }
}

/// Client and server MAC addresses of generated frames.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Server MAC.
pub const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
/// Server IPv4 address (172.16.0.1).
pub const SERVER_IP: [u8; 4] = [172, 16, 0, 1];
/// Server port of TCP flows.
pub const TCP_SERVER_PORT: u16 = 80;
/// Server port of UDP flows.
pub const UDP_SERVER_PORT: u16 = 5001;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const TCP_LEN: usize = 20;
const MIN_FRAME: usize = 60;

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// One end of a generated flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
    pub port: u16,
}

/// Client endpoint of connection `c`.
pub fn client_of(c: u64) -> Endpoint {
    let host = ((c >> 14) & 0x00ff_ffff) as u32;
    let ip = (0x0a00_0000 | host).to_be_bytes();
    Endpoint {
        mac: CLIENT_MAC,
        ip,
        port: 1024 + (c & 0x3fff) as u16,
    }
}

fn server(proto: GenProto) -> Endpoint {
    Endpoint {
        mac: SERVER_MAC,
        ip: SERVER_IP,
        port: match proto {
            GenProto::Tcp => TCP_SERVER_PORT,
            GenProto::Udp => UDP_SERVER_PORT,
        },
    }
}

/// Write Ethernet + IPv4 headers for a datagram of `l4_len` bytes.
#[inline]
fn write_eth_ipv4(
    h: &mut [u8; ETH_LEN + IPV4_LEN],
    src: &Endpoint,
    dst: &Endpoint,
    proto: u8,
    l4_len: usize,
) {
    h[0..6].copy_from_slice(&dst.mac);
    h[6..12].copy_from_slice(&src.mac);
    h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    h[14] = 0x45;
    h[15] = 0;
    h[16..18].copy_from_slice(&((IPV4_LEN + l4_len) as u16).to_be_bytes());
    h[18..20].copy_from_slice(&[0, 0]);
    h[20..22].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    h[22] = 64;
    h[23] = proto;
    h[24..26].copy_from_slice(&[0, 0]);
    h[26..30].copy_from_slice(&src.ip);
    h[30..34].copy_from_slice(&dst.ip);
    let c = csum::checksum(&h[14..34]);
    h[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Write a UDP/IPv4 frame filling all of `frame` (the payload is a fixed
/// pattern). A frame shorter than the 42 bytes of headers is left alone.
pub fn write_udp4(frame: &mut [u8], src: &Endpoint, dst: &Endpoint) {
    const HDRS: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
    let l4_len = frame.len().saturating_sub(ETH_LEN + IPV4_LEN);
    let Some((h, payload)) = frame.split_first_chunk_mut::<HDRS>() else {
        return;
    };
    payload.fill(0x5a);
    let (l3, udp) = h.split_at_mut(ETH_LEN + IPV4_LEN);
    if let Ok(l3) = <&mut [u8; ETH_LEN + IPV4_LEN]>::try_from(l3) {
        write_eth_ipv4(l3, src, dst, 17, l4_len);
    }
    udp[0..2].copy_from_slice(&src.port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port.to_be_bytes());
    udp[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let sum = csum::sum(
        csum::pseudo_header_v4(src.ip, dst.ip, 17, l4_len as u16),
        udp,
    );
    let c = csum::fold(csum::sum(sum, payload));
    let c = if c == 0 { 0xffff } else { c };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
}

/// Write a TCP/IPv4 frame: headers, then `payload` bytes of pattern, then
/// zero padding up to the end of `frame` (outside the IP datagram). A frame
/// too short for the headers and payload is left alone.
pub fn write_tcp4(
    frame: &mut [u8],
    src: &Endpoint,
    dst: &Endpoint,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
) {
    const HDRS: usize = ETH_LEN + IPV4_LEN + TCP_LEN;
    let l4_len = TCP_LEN + payload;
    let Some((h, rest)) = frame.split_first_chunk_mut::<HDRS>() else {
        return;
    };
    if rest.len() < payload {
        return;
    }
    let (data, pad) = rest.split_at_mut(payload);
    data.fill(0xa5);
    pad.fill(0);
    let (l3, seg) = h.split_at_mut(ETH_LEN + IPV4_LEN);
    if let Ok(l3) = <&mut [u8; ETH_LEN + IPV4_LEN]>::try_from(l3) {
        write_eth_ipv4(l3, src, dst, 6, l4_len);
    }
    seg[0..2].copy_from_slice(&src.port.to_be_bytes());
    seg[2..4].copy_from_slice(&dst.port.to_be_bytes());
    seg[4..8].copy_from_slice(&seq.to_be_bytes());
    seg[8..12].copy_from_slice(&ack.to_be_bytes());
    seg[12] = (TCP_LEN as u8 / 4) << 4;
    seg[13] = flags;
    seg[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    seg[16..20].fill(0);
    let sum = csum::sum(
        csum::pseudo_header_v4(src.ip, dst.ip, 6, l4_len as u16),
        seg,
    );
    let c = csum::fold(csum::sum(sum, data));
    seg[16..18].copy_from_slice(&c.to_be_bytes());
}

/// A UDP/IPv4 frame of `size` bytes (allocates: for tests and benches).
pub fn udp4_frame(size: usize, src: &Endpoint, dst: &Endpoint) -> Vec<u8> {
    let mut f = vec![0u8; size.max(ETH_LEN + IPV4_LEN + UDP_LEN)];
    write_udp4(&mut f, src, dst);
    f
}

/// A TCP/IPv4 frame of `size` bytes with as much payload as fits (allocates).
pub fn tcp4_frame(
    size: usize,
    src: &Endpoint,
    dst: &Endpoint,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let size = size.max(ETH_LEN + IPV4_LEN + TCP_LEN);
    let mut f = vec![0u8; size];
    write_tcp4(
        &mut f,
        src,
        dst,
        seq,
        ack,
        flags,
        size - ETH_LEN - IPV4_LEN - TCP_LEN,
    );
    f
}

/// SplitMix64 step: a fixed, well-mixed function of `x`.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Per-slot connection state.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Packets emitted by the current connection.
    stage: u32,
    /// Connections this slot has opened before the current one.
    generation: u32,
    /// Next client and server sequence numbers.
    client_seq: u32,
    server_seq: u32,
}

struct GenQueue {
    /// Slot numbers served by this queue, in visiting order.
    order: Vec<u32>,
    slots: Vec<Slot>,
    next: usize,
}

/// The traffic generator port.
pub struct GeneratorPort {
    name: String,
    port_no: PortNo,
    cfg: GeneratorConfig,
    queues: Box<[Mutex<GenQueue>]>,
    produced: AtomicU64,
    counters: PortCounters,
    /// UDP frames with the client's address and port left zero, one per
    /// direction (request, reply), with their checksum sums without them.
    udp_templates: [UdpTemplate; 2],
}

/// A UDP frame minus the client endpoint, so that a packet costs a copy,
/// three stores and two checksum folds instead of two full checksums.
struct UdpTemplate {
    frame: Vec<u8>,
    /// Offsets of the client's IPv4 address and UDP port in the frame.
    ip_at: usize,
    port_at: usize,
    /// Ones'-complement sums of the IPv4 header and of the UDP pseudo
    /// header + datagram with the client's address and port zero.
    ip_sum: u64,
    udp_sum: u64,
}

impl UdpTemplate {
    /// `request_dst`: address requests are sent to instead of the server's.
    fn new(size: usize, reply: bool, request_dst: Option<[u8; 4]>) -> UdpTemplate {
        let zero = Endpoint {
            mac: CLIENT_MAC,
            ip: [0; 4],
            port: 0,
        };
        let mut srv = server(GenProto::Udp);
        if let (false, Some(ip)) = (reply, request_dst) {
            srv.ip = ip;
        }
        let mut frame = vec![0u8; size];
        let (ip_at, port_at) = if reply {
            write_udp4(&mut frame, &srv, &zero);
            (ETH_LEN + 16, ETH_LEN + IPV4_LEN + 2)
        } else {
            write_udp4(&mut frame, &zero, &srv);
            (ETH_LEN + 12, ETH_LEN + IPV4_LEN)
        };
        let l4_len = size - ETH_LEN - IPV4_LEN;
        let mut hdr = [0u8; IPV4_LEN];
        hdr.copy_from_slice(&frame[ETH_LEN..ETH_LEN + IPV4_LEN]);
        hdr[10..12].fill(0);
        let ip_sum = csum::sum(0, &hdr);
        let mut dgram = frame[ETH_LEN + IPV4_LEN..].to_vec();
        dgram[6..8].fill(0);
        let (s, d) = if reply {
            (srv.ip, [0; 4])
        } else {
            ([0; 4], srv.ip)
        };
        let udp_sum = csum::sum(csum::pseudo_header_v4(s, d, 17, l4_len as u16), &dgram);
        UdpTemplate {
            frame,
            ip_at,
            port_at,
            ip_sum,
            udp_sum,
        }
    }

    /// Write the frame for `client` into `out` (exactly the template's size).
    #[inline]
    fn write(&self, out: &mut [u8], client: &Endpoint) {
        out.copy_from_slice(&self.frame);
        out[self.ip_at..self.ip_at + 4].copy_from_slice(&client.ip);
        out[self.port_at..self.port_at + 2].copy_from_slice(&client.port.to_be_bytes());
        let ip = u64::from(u32::from_be_bytes(client.ip));
        let ip_words = (ip >> 16) + (ip & 0xffff);
        let ip_c = csum::fold(self.ip_sum + ip_words);
        out[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&ip_c.to_be_bytes());
        let c = csum::fold(self.udp_sum + ip_words + u64::from(client.port));
        let c = if c == 0 { 0xffff } else { c };
        out[ETH_LEN + IPV4_LEN + 6..ETH_LEN + IPV4_LEN + 8].copy_from_slice(&c.to_be_bytes());
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl GeneratorPort {
    /// A generator with `cfg` (sizes are clamped to what a frame needs).
    pub fn new(
        name: impl Into<String>,
        port_no: PortNo,
        mut cfg: GeneratorConfig,
    ) -> GeneratorPort {
        cfg.flows = cfg.flows.max(1);
        cfg.n_rxq = cfg.n_rxq.max(1);
        let min = match cfg.proto {
            GenProto::Udp => ETH_LEN + IPV4_LEN + UDP_LEN,
            GenProto::Tcp => ETH_LEN + IPV4_LEN + TCP_LEN,
        };
        cfg.packet_size = cfg.packet_size.clamp(min.max(MIN_FRAME), 9000);
        // Visit slots in a stride order: stride coprime with the flow count
        // so every slot is visited once per round.
        let n = u64::from(cfg.flows);
        let mut stride = (mix64(cfg.seed) % n) | 1;
        while n > 1 && gcd(stride, n) != 1 {
            stride += 2;
        }
        let start = mix64(cfg.seed ^ 0x5eed) % n;
        let mut order: Vec<Vec<u32>> = vec![Vec::new(); cfg.n_rxq];
        for k in 0..n {
            let slot = ((start + k * stride) % n) as u32;
            order[slot as usize % cfg.n_rxq].push(slot);
        }
        let queues = order
            .into_iter()
            .map(|order| {
                Mutex::new(GenQueue {
                    order,
                    slots: Vec::new(),
                    next: 0,
                })
            })
            .collect();
        let size = cfg.packet_size;
        let request_dst = cfg.request_dst;
        GeneratorPort {
            name: name.into(),
            port_no,
            cfg,
            queues,
            produced: AtomicU64::new(0),
            counters: PortCounters::default(),
            udp_templates: [
                UdpTemplate::new(size, false, request_dst),
                UdpTemplate::new(size, true, None),
            ],
        }
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    fn isn(&self, c: u64, server: bool) -> u32 {
        mix64(self.cfg.seed ^ c ^ if server { 1 << 63 } else { 0 }) as u32
    }

    /// Write the next packet of `slot` into `frame` (which has room for
    /// `packet_size` bytes); returns the frame length.
    fn emit(&self, slot_no: u32, slot: &mut Slot, frame: &mut [u8]) -> usize {
        let flows = u64::from(self.cfg.flows);
        let c = u64::from(slot_no) + u64::from(slot.generation) * flows;
        let client = client_of(c);
        let srv = server(self.cfg.proto);
        let size = self.cfg.packet_size;
        let stage = slot.stage;
        slot.stage += 1;
        match self.cfg.proto {
            GenProto::Udp => {
                let reply = self.cfg.replies && stage % 2 == 1;
                self.udp_templates[reply as usize].write(&mut frame[..size], &client);
                size
            }
            GenProto::Tcp => {
                use tcp_flags::*;
                let payload = size - ETH_LEN - IPV4_LEN - TCP_LEN;
                match stage {
                    0 => {
                        let isn = self.isn(c, false);
                        slot.client_seq = isn.wrapping_add(1);
                        write_tcp4(&mut frame[..MIN_FRAME], &client, &srv, isn, 0, SYN, 0);
                        MIN_FRAME
                    }
                    1 => {
                        let isn = self.isn(c, true);
                        slot.server_seq = isn.wrapping_add(1);
                        write_tcp4(
                            &mut frame[..MIN_FRAME],
                            &srv,
                            &client,
                            isn,
                            slot.client_seq,
                            SYN | ACK,
                            0,
                        );
                        MIN_FRAME
                    }
                    2 => {
                        write_tcp4(
                            &mut frame[..MIN_FRAME],
                            &client,
                            &srv,
                            slot.client_seq,
                            slot.server_seq,
                            ACK,
                            0,
                        );
                        MIN_FRAME
                    }
                    _ => {
                        let est = stage - 3;
                        let reply = self.cfg.replies && est % 2 == 1;
                        let (from, to, seq, ack) = if reply {
                            (&srv, &client, slot.server_seq, slot.client_seq)
                        } else {
                            (&client, &srv, slot.client_seq, slot.server_seq)
                        };
                        write_tcp4(&mut frame[..size], from, to, seq, ack, ACK | PSH, payload);
                        if reply {
                            slot.server_seq = slot.server_seq.wrapping_add(payload as u32);
                        } else {
                            slot.client_seq = slot.client_seq.wrapping_add(payload as u32);
                        }
                        if self.cfg.conn_packets != 0 && est + 1 >= self.cfg.conn_packets {
                            slot.stage = 0;
                            slot.generation += 1;
                        }
                        size
                    }
                }
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.cfg
            .limit
            .is_some_and(|l| self.produced.load(Ordering::Relaxed) >= l)
    }
}

impl Port for GeneratorPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn port_no(&self) -> PortNo {
        self.port_no
    }

    fn n_rxq(&self) -> usize {
        self.cfg.n_rxq
    }

    fn rx_burst(&self, rxq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        let Some(q) = self.queues.get(rxq) else {
            return 0;
        };
        let mut want = batch.remaining() as u64;
        if let Some(limit) = self.cfg.limit {
            let before = self.produced.fetch_add(want, Ordering::Relaxed);
            let granted = limit.saturating_sub(before).min(want);
            if granted < want {
                self.produced.fetch_sub(want - granted, Ordering::Relaxed);
            }
            want = granted;
        }
        if want == 0 {
            return 0;
        }
        let Ok(mut q) = q.lock() else {
            return 0;
        };
        let q = &mut *q;
        if q.order.is_empty() {
            return 0;
        }
        if q.slots.is_empty() {
            // Slot state is made on first use, so an unused queue costs
            // nothing; indexed by position in `order`.
            q.slots = vec![Slot::default(); q.order.len()];
        }
        let (mut n, mut bytes) = (0u64, 0u64);
        for _ in 0..want {
            let mut p = pool.alloc(self.port_no);
            let Ok(buf) = p.append(self.cfg.packet_size) else {
                // The pool's buffers are too small for the configured size.
                pool.free(p);
                self.counters.drop(PortDropReason::TooLarge, 1);
                break;
            };
            let i = q.next;
            q.next = if i + 1 == q.order.len() { 0 } else { i + 1 };
            let len = self.emit(q.order[i], &mut q.slots[i], buf);
            p.truncate(len);
            if self.cfg.csum_offload {
                p.meta.offload = OffloadFlags::IP_CSUM_GOOD | OffloadFlags::L4_CSUM_GOOD;
            }
            bytes += len as u64;
            n += 1;
            // Cannot fail: `want` is at most the batch's remaining room.
            let _ = batch.push(p);
        }
        if self.cfg.limit.is_some() && n < want {
            self.produced.fetch_sub(want - n, Ordering::Relaxed);
        }
        self.counters.rx(n, bytes);
        n as usize
    }

    fn tx_burst(&self, _txq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        let n = batch.len();
        let bytes: usize = batch.iter().map(|p| p.len()).sum();
        batch.free_into(pool);
        self.counters.tx(n as u64, bytes as u64);
        n
    }

    fn stats(&self) -> PortStats {
        self.counters.snapshot()
    }

    fn link_state(&self) -> LinkState {
        if self.exhausted() {
            LinkState::Down
        } else {
            LinkState::Up
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn udp_templates_write_what_write_udp4_writes() {
        for (size, vip) in [
            (60, None),
            (64, None),
            (200, None),
            (1500, None),
            (64, Some([198, 51, 100, 10])),
        ] {
            for reply in [false, true] {
                let t = UdpTemplate::new(size, reply, vip);
                for c in [0u64, 1, 77, 1 << 20, 5_000_000, u64::from(u32::MAX)] {
                    let client = client_of(c);
                    let mut srv = server(GenProto::Udp);
                    if let (false, Some(ip)) = (reply, vip) {
                        srv.ip = ip;
                    }
                    let mut want = vec![0u8; size];
                    if reply {
                        write_udp4(&mut want, &srv, &client);
                    } else {
                        write_udp4(&mut want, &client, &srv);
                    }
                    let mut got = vec![0u8; size];
                    t.write(&mut got, &client);
                    assert_eq!(got, want, "size {size} reply {reply} client {c}");
                }
            }
        }
    }

    use super::*;
    use crate::flow::{extract, FlowKey};
    use crate::packet::PacketMeta;
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket, UdpPacket};
    use std::collections::HashSet;

    /// Every generated frame: IPv4 header checksum and L4 checksum verify
    /// with smoltcp, and the key extracts cleanly.
    fn check_frame(f: &[u8]) -> FlowKey {
        let ip = Ipv4Packet::new_checked(&f[14..]).expect("ipv4");
        assert!(ip.verify_checksum(), "ip checksum");
        let (src, dst) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        let l4 = &f[14 + 20..14 + usize::from(ip.total_len())];
        match u8::from(ip.next_header()) {
            6 => assert!(TcpPacket::new_checked(l4)
                .unwrap()
                .verify_checksum(&src, &dst)),
            17 => assert!(UdpPacket::new_checked(l4)
                .unwrap()
                .verify_checksum(&src, &dst)),
            p => panic!("proto {p}"),
        }
        let mut meta = PacketMeta::new(PortNo(1));
        let mut key = FlowKey::ZERO;
        extract(f, &mut meta, &mut key).expect("extracts");
        key
    }

    fn take(g: &GeneratorPort, rxq: usize, n: usize, pool: &mut PacketPool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut b = PacketBatch::new();
        while out.len() < n {
            if g.rx_burst(rxq, &mut b, pool) == 0 {
                break;
            }
            for p in b.drain() {
                assert_eq!(p.meta.in_port, g.port_no());
                out.push(p.data().to_vec());
                pool.free(p);
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn udp_flows_are_valid_distinct_and_round_robin() {
        let cfg = GeneratorConfig {
            flows: 100,
            packet_size: 64,
            ..Default::default()
        };
        let g = GeneratorPort::new("gen", PortNo(1), cfg);
        let mut pool = PacketPool::default();
        let frames = take(&g, 0, 300, &mut pool);
        assert_eq!(frames.len(), 300);
        let mut tuples = HashSet::new();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.len(), 64);
            let k = check_frame(f);
            assert_eq!(k.nw_proto(), 17);
            assert_eq!(k.tp_dst(), UDP_SERVER_PORT);
            assert_eq!(k.nw_dst(), u32::from_be_bytes(SERVER_IP));
            if i < 100 {
                assert!(
                    tuples.insert((k.nw_src(), k.tp_src())),
                    "each flow once per round"
                );
            } else {
                assert_eq!(f, &frames[i - 100], "round {} repeats round 0", i / 100);
            }
        }
        assert_eq!(tuples.len(), 100);
        assert_eq!(g.stats().rx_packets, 320, "whole bursts were produced");
    }

    #[test]
    fn same_config_same_bytes_different_seed_different_order() {
        let cfg = GeneratorConfig {
            flows: 50,
            proto: GenProto::Tcp,
            replies: true,
            seed: 9,
            ..Default::default()
        };
        let mut pool = PacketPool::default();
        let a = take(
            &GeneratorPort::new("a", PortNo(1), cfg.clone()),
            0,
            500,
            &mut pool,
        );
        let b = take(
            &GeneratorPort::new("b", PortNo(1), cfg.clone()),
            0,
            500,
            &mut pool,
        );
        assert_eq!(a, b);
        let c = take(
            &GeneratorPort::new("c", PortNo(1), GeneratorConfig { seed: 10, ..cfg }),
            0,
            500,
            &mut pool,
        );
        assert_ne!(a, c);
    }

    #[test]
    fn tcp_handshake_then_established_with_consistent_sequence_numbers() {
        let cfg = GeneratorConfig {
            flows: 1,
            proto: GenProto::Tcp,
            replies: true,
            packet_size: 100,
            ..Default::default()
        };
        let g = GeneratorPort::new("gen", PortNo(1), cfg);
        let mut pool = PacketPool::default();
        let frames = take(&g, 0, 7, &mut pool);
        let segs: Vec<(FlowKey, u32, u32, usize)> = frames
            .iter()
            .map(|f| {
                let k = check_frame(f);
                let t = TcpPacket::new_checked(&f[34..]).unwrap();
                let payload = t
                    .payload()
                    .len()
                    .min(usize::from(Ipv4Packet::new_checked(&f[14..]).unwrap().total_len()) - 40);
                (k, t.seq_number().0 as u32, t.ack_number().0 as u32, payload)
            })
            .collect();
        let flags: Vec<u16> = segs.iter().map(|s| s.0.tcp_flags()).collect();
        assert_eq!(flags, vec![0x02, 0x12, 0x10, 0x18, 0x18, 0x18, 0x18]);
        let (syn, synack, ack) = (&segs[0], &segs[1], &segs[2]);
        assert_eq!(synack.2, syn.1.wrapping_add(1), "SYN/ACK acks the SYN");
        assert_eq!(ack.1, syn.1.wrapping_add(1));
        assert_eq!(ack.2, synack.1.wrapping_add(1));
        assert_eq!(frames[0].len(), 60);
        // the server answers from the server address
        assert_eq!(synack.0.nw_src(), u32::from_be_bytes(SERVER_IP));
        assert_eq!(synack.0.tp_src(), TCP_SERVER_PORT);
        // established: client data, server data, ... each seq advances by payload
        let payload = 100 - 54;
        assert_eq!(segs[3].3, payload);
        assert_eq!(segs[3].1, ack.1);
        assert_eq!(segs[4].1, ack.2, "server's first data byte");
        assert_eq!(
            segs[4].2,
            segs[3].1.wrapping_add(payload as u32),
            "acks client data"
        );
        assert_eq!(segs[5].1, segs[3].1.wrapping_add(payload as u32));
        assert_eq!(segs[6].1, segs[4].1.wrapping_add(payload as u32));
        assert_eq!(segs[5].0.nw_src(), segs[0].0.nw_src(), "client again");
    }

    #[test]
    fn conn_packets_recycles_slots_into_new_connections() {
        let cfg = GeneratorConfig {
            flows: 4,
            proto: GenProto::Tcp,
            conn_packets: 2,
            ..Default::default()
        };
        let g = GeneratorPort::new("gen", PortNo(1), cfg);
        let mut pool = PacketPool::default();
        // per connection: SYN, SYN/ACK, ACK, 2 data = 5 packets; 4 slots
        let frames = take(&g, 0, 40, &mut pool);
        let keys: Vec<FlowKey> = frames.iter().map(|f| check_frame(f)).collect();
        let syns: Vec<&FlowKey> = keys.iter().filter(|k| k.tcp_flags() == 0x02).collect();
        assert_eq!(syns.len(), 8, "each slot opened two connections");
        let clients: HashSet<(u32, u16)> = syns.iter().map(|k| (k.nw_src(), k.tp_src())).collect();
        assert_eq!(
            clients.len(),
            8,
            "every connection has its own client tuple"
        );
    }

    #[test]
    fn limit_stops_the_port() {
        let cfg = GeneratorConfig {
            flows: 3,
            limit: Some(50),
            ..Default::default()
        };
        let g = GeneratorPort::new("gen", PortNo(1), cfg);
        let mut pool = PacketPool::default();
        assert_eq!(take(&g, 0, 1000, &mut pool).len(), 50);
        assert_eq!(g.link_state(), LinkState::Down);
        assert_eq!(g.stats().rx_packets, 50);
    }

    #[test]
    fn queues_partition_the_flows() {
        let cfg = GeneratorConfig {
            flows: 10,
            n_rxq: 3,
            ..Default::default()
        };
        let g = GeneratorPort::new("gen", PortNo(1), cfg);
        assert_eq!(g.n_rxq(), 3);
        let mut pool = PacketPool::default();
        let mut seen: Vec<HashSet<u16>> = Vec::new();
        for q in 0..3 {
            let ports: HashSet<u16> = take(&g, q, 40, &mut pool)
                .iter()
                .map(|f| check_frame(f).tp_src())
                .collect();
            seen.push(ports);
        }
        assert_eq!(seen.iter().map(HashSet::len).sum::<usize>(), 10);
        assert!(seen[0].is_disjoint(&seen[1]) && seen[1].is_disjoint(&seen[2]));
        let mut b = PacketBatch::new();
        assert_eq!(g.rx_burst(3, &mut b, &mut pool), 0);
    }

    #[test]
    fn steady_state_allocates_nothing() {
        let g = GeneratorPort::new(
            "gen",
            PortNo(1),
            GeneratorConfig {
                flows: 1000,
                ..Default::default()
            },
        );
        let mut pool = PacketPool::new(2048, 128, 64);
        let mut b = PacketBatch::new();
        for _ in 0..1000 {
            assert_eq!(g.rx_burst(0, &mut b, &mut pool), 32);
            b.free_into(&mut pool);
        }
        assert_eq!(pool.stats().heap_allocs, 0);
    }

    #[test]
    fn writers_leave_too_short_frames_alone() {
        let c = client_of(0);
        let s = server(GenProto::Udp);
        for len in 0..42 {
            let mut f = vec![7u8; len];
            write_udp4(&mut f, &c, &s);
            assert!(f.iter().all(|&b| b == 7), "len {len}");
        }
        let mut f = vec![7u8; 60];
        write_tcp4(&mut f, &c, &s, 1, 2, tcp_flags::ACK, 7);
        assert!(f.iter().all(|&b| b == 7), "payload does not fit");
        write_tcp4(&mut f, &c, &s, 1, 2, tcp_flags::ACK, 6);
        check_frame(&f);
    }

    #[test]
    fn small_buffers_produce_nothing_rather_than_panic() {
        let g = GeneratorPort::new(
            "gen",
            PortNo(1),
            GeneratorConfig {
                packet_size: 1500,
                ..Default::default()
            },
        );
        let mut pool = PacketPool::new(256, 128, 64);
        let mut b = PacketBatch::new();
        assert_eq!(g.rx_burst(0, &mut b, &mut pool), 0);
        assert!(b.is_empty());
        assert_eq!(
            g.stats().drops(PortDropReason::TooLarge),
            1,
            "counted, not silent"
        );
    }
}
