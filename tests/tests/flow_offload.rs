//! Flow offload (`PipelineConfig::flow_offload`): the same TCP
//! conversations through a switch with the fast path and one without give
//! the same bytes on the same ports; the fast path keeps conntrack's
//! counters moving and shows `[OFFLOAD]`; a FIN, a flow-mod and a
//! conntrack flush hand connections back to the classic path.

use std::net::Ipv4Addr;

use ct::packet::tcp_flags::{ACK, FIN, PSH, SYN};
use datapath::pipeline::PipelineConfig;
use ferrovs_tests::{frame, Builder, Harness, Tcp, FIREWALL};

/// Inside (port 1) is source-NATed to 10.0.0.100; replies from outside
/// (port 2) are un-NATed by `ct(nat)` in table 0.
const SNAT: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(nat,zone=1,table=1)
table=0,priority=10,ip,in_port=2,actions=ct(nat,zone=1,table=2)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1,nat(src=10.0.0.100:5000-5001)),output:2
table=1,priority=10,ct_state=+trk+est-inv,ip,actions=mod_dl_dst:02:00:00:00:00:aa,output:2
table=2,priority=10,ct_state=+trk+est+dnat-inv,ip,actions=output:1
";

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const NAT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn harness(flows: &str, offload: bool) -> Harness {
    Harness::with_config(
        &[1, 2, 3],
        flows,
        PipelineConfig {
            flow_offload: offload,
            ..Default::default()
        },
    )
}

/// TCP source port of an IPv4 frame (no options).
fn sport(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[34], f[35]])
}

/// One TCP conversation driven packet by packet: each side's next
/// sequence number is tracked so every segment is in window.
struct Conv {
    cport: u16,
    /// The port the server sees (after SNAT, read from the SYN's output).
    seen_port: u16,
    client_addr: Ipv4Addr,
    cseq: u32,
    sseq: u32,
}

impl Conv {
    fn new(cport: u16) -> Conv {
        Conv {
            cport,
            seen_port: cport,
            client_addr: CLIENT,
            cseq: 1000,
            sseq: 50_000,
        }
    }

    /// Client -> server segment with `payload`.
    fn c2s(&mut self, h: &mut Harness, flags: u8, payload: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let seg = Tcp::new(self.cport, 80)
            .seq(self.cseq)
            .ack(if flags & ACK != 0 { self.sseq } else { 0 })
            .flags(flags)
            .payload(payload);
        self.cseq = self.cseq.wrapping_add(payload.len() as u32);
        if flags & (SYN | FIN) != 0 {
            self.cseq = self.cseq.wrapping_add(1);
        }
        let l3 = Builder::v4(CLIENT, SERVER).tcp(&seg);
        h.inject(1, &frame(1, 2, &l3))
    }

    /// Server -> client segment (to the address the server saw).
    fn s2c(&mut self, h: &mut Harness, flags: u8, payload: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let seg = Tcp::new(80, self.seen_port)
            .seq(self.sseq)
            .ack(self.cseq)
            .flags(flags)
            .payload(payload);
        self.sseq = self.sseq.wrapping_add(payload.len() as u32);
        if flags & (SYN | FIN) != 0 {
            self.sseq = self.sseq.wrapping_add(1);
        }
        let l3 = Builder::v4(SERVER, self.client_addr).tcp(&seg);
        h.inject(2, &frame(2, 1, &l3))
    }

    /// Three-way handshake; returns what came out.
    fn open(&mut self, h: &mut Harness, nat: bool) -> Vec<Vec<(u32, Vec<u8>)>> {
        let syn = self.c2s(h, SYN, b"");
        assert_eq!(Harness::ports_of(&syn), vec![2], "SYN forwarded");
        if nat {
            self.seen_port = sport(&syn[0].1);
            self.client_addr = NAT_IP;
        }
        let synack = self.s2c(h, SYN | ACK, b"");
        let ack = self.c2s(h, ACK, b"");
        vec![syn, synack, ack]
    }
}

/// The connection's packet counters by direction and whether it shows
/// `[OFFLOAD]`, after a revalidation (the fast path accounts its packets
/// to conntrack then, or at once when the offload epoch moved).
fn conn_counters(h: &mut Harness) -> (u64, u64, bool) {
    let now = h.sw.clock.now_ms();
    h.pipeline.revalidate(now);
    let d = h.sw.ct.dump(&Default::default(), h.sw.clock.now_ns());
    assert_eq!(d.len(), 1, "one connection");
    let c = &d[0];
    let offloaded = c.to_string().ends_with(" [OFFLOAD]");
    (c.counters[0].packets, c.counters[1].packets, offloaded)
}

/// The same conversation through both switches: identical output, the
/// fast path used, ct counters right, and a FIN hands it back.
#[test]
fn offloaded_nat_traffic_is_forwarded_identically_and_handed_back_on_fin() {
    let mut classic = harness(SNAT, false);
    let mut fast = harness(SNAT, true);
    let (mut a, mut b) = (Conv::new(40_000), Conv::new(40_000));
    assert_eq!(a.open(&mut classic, true), b.open(&mut fast, true));
    assert_eq!(a.seen_port, b.seen_port);

    let mut last = conn_counters(&mut fast);
    for round in 0..20 {
        let data = vec![b'a' + (round % 26) as u8; 100 + round];
        let x = a.c2s(&mut classic, ACK | PSH, &data);
        let y = b.c2s(&mut fast, ACK | PSH, &data);
        assert_eq!(Harness::ports_of(&y), vec![2], "round {round}");
        assert_eq!(x, y, "client->server round {round}");
        let x = a.s2c(&mut classic, ACK, b"ok");
        let y = b.s2c(&mut fast, ACK, b"ok");
        assert_eq!(Harness::ports_of(&y), vec![1], "round {round}");
        assert_eq!(x, y, "server->client round {round}");
        // Conntrack's counters keep moving however the packets went.
        let now = conn_counters(&mut fast);
        assert_eq!((now.0, now.1), (last.0 + 1, last.1 + 1), "round {round}");
        last = now;
    }
    let c = fast.pipeline.counters;
    // Both directions were learnt from one classic packet each: the
    // client's from the handshake's last ACK (the connection is then
    // established and assured), the server's from its first data
    // segment; the rest (20 + 19) took the fast path.
    assert_eq!(c.offload_installs, 2);
    assert_eq!(c.offload_hits, 39);
    assert_eq!(classic.pipeline.counters.offload_hits, 0);
    assert!(last.2, "dump-conntrack shows [OFFLOAD]");
    assert!(!conn_counters(&mut classic).2);
    assert_eq!(fast.pipeline.offload_count(), 2);
    // Both sides' counters agree.
    let cl = conn_counters(&mut classic);
    assert_eq!((cl.0, cl.1), (last.0, last.1));

    // One more exchange on the fast path, not yet accounted to conntrack
    // (no revalidation since): the FIN below acknowledges the server's
    // data, so the hand-back must account it first or conntrack would
    // find the FIN acknowledging unsent data (+inv, dropped).
    assert_eq!(
        a.c2s(&mut classic, ACK, b"more"),
        b.c2s(&mut fast, ACK, b"more")
    );
    assert_eq!(
        a.s2c(&mut classic, ACK, b"data"),
        b.s2c(&mut fast, ACK, b"data")
    );
    assert_eq!(fast.pipeline.counters.offload_hits, 41);

    // A FIN takes the classic path and tears the connection's fast path
    // down; the reply direction follows on its next packet.
    let x = a.c2s(&mut classic, FIN | ACK, b"");
    let y = b.c2s(&mut fast, FIN | ACK, b"");
    assert_eq!(x, y);
    assert_eq!(Harness::ports_of(&y), vec![2]);
    assert!(!conn_counters(&mut fast).2, "[OFFLOAD] gone after FIN");
    let hits = fast.pipeline.counters.offload_hits;
    let x = a.s2c(&mut classic, ACK, b"bye");
    let y = b.s2c(&mut fast, ACK, b"bye");
    assert_eq!(x, y, "accepted by the classic path after hand-back");
    assert_eq!(Harness::ports_of(&y), vec![1]);
    let x = a.s2c(&mut classic, FIN | ACK, b"");
    let y = b.s2c(&mut fast, FIN | ACK, b"");
    assert_eq!(x, y);
    let x = a.c2s(&mut classic, ACK, b"");
    let y = b.c2s(&mut fast, ACK, b"");
    assert_eq!(x, y);
    let c = fast.pipeline.counters;
    assert_eq!(c.offload_hits, hits, "nothing offloaded after the FIN");
    assert_eq!(c.offload_handbacks, 2);
    assert_eq!(fast.pipeline.offload_count(), 0);
    let d = fast.dump_conntrack();
    assert!(d[0].contains("TIME_WAIT"), "{d:?}");
    assert_eq!(conn_counters(&mut fast), conn_counters(&mut classic));
}

/// A flow-mod moves the switch's generation: the fast path is emptied and
/// the next packet follows the new rules, then is offloaded again with
/// the new actions.
#[test]
fn flow_mod_hands_back_and_new_actions_are_offloaded() {
    let mut h = harness(FIREWALL, true);
    let mut c = Conv::new(41_000);
    c.open(&mut h, false);
    for _ in 0..3 {
        assert_eq!(Harness::ports_of(&c.c2s(&mut h, ACK, b"x")), vec![2]);
    }
    // Learnt from the handshake's last ACK: all three took the fast path.
    assert_eq!(h.pipeline.counters.offload_hits, 3);
    assert_eq!(h.pipeline.offload_count(), 1);
    // The rule's counters include the fast path's packets.
    let flows = h.dump_flows();
    let est = flows
        .lines()
        .find(|l| l.contains("table=1") && l.contains("+est"))
        .expect("est rule");
    assert!(est.contains("n_packets=4,"), "{est}");

    h.ofctl(
        "mod-flows",
        "table=1,ct_state=+trk+est-inv,ip,actions=output:3",
    );
    assert_eq!(Harness::ports_of(&c.c2s(&mut h, ACK, b"y")), vec![3]);
    let k = h.pipeline.counters;
    assert_eq!(k.offload_handbacks, 1);
    assert_eq!(
        k.offload_hits, 3,
        "the first packet after the mod was classic"
    );
    assert_eq!(k.offload_installs, 2, "re-learnt with the new output");
    assert_eq!(Harness::ports_of(&c.c2s(&mut h, ACK, b"z")), vec![3]);
    assert_eq!(h.pipeline.counters.offload_hits, 4);
}

/// Flushing conntrack hands the flow back: the next packet finds no
/// connection (the firewall drops it as new from the wrong side or
/// re-creates it), and nothing is forwarded by a stale entry.
#[test]
fn ct_flush_hands_back() {
    let mut h = harness(FIREWALL, true);
    let mut c = Conv::new(42_000);
    c.open(&mut h, false);
    c.c2s(&mut h, ACK, b"1");
    c.s2c(&mut h, ACK, b"2");
    assert_eq!(h.pipeline.offload_count(), 2);
    let hits = h.pipeline.counters.offload_hits;
    h.sw.ct.flush(&Default::default(), h.sw.clock.now_ns());
    // Server -> client: no connection any more, so table 2 (+est only)
    // drops it; a stale fast-path entry would have forwarded it.
    assert!(c.s2c(&mut h, ACK, b"3").is_empty());
    let k = h.pipeline.counters;
    assert_eq!(k.offload_hits, hits);
    assert_eq!(k.offload_handbacks, 1);
    assert_eq!(h.pipeline.offload_count(), 1);
}
