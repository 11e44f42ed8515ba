//! Golden traces: small captures in `tests/golden/` with the `ct_state`
//! each packet must get, written by hand in the scenarios below (not taken
//! from ferrovs's own output).
//!
//! The test regenerates each capture from its scenario and checks the
//! committed file is byte-identical (set `FERROVS_REGEN_GOLDEN=1` to rewrite
//! them after changing a scenario), then replays the committed capture
//! through conntrack (zone 0, commit, capture timestamps as the clock) and
//! compares every packet's state with the `.expected` file. `scripts/test.sh`
//! also runs the `ct-replay` binary over the same files.

mod pkts;

use std::path::PathBuf;

use ct::frag::{FragConfig, FragLayout, Outcome, Reassembler};
use ct::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use ct::{CtPacket, CtParams, CtResult, Family, PktFlags, Tracker};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use pkts::*;

struct Scenario {
    name: &'static str,
    /// (L3 packet, expected state names joined by `|`, seconds since start)
    packets: Vec<(Vec<u8>, &'static str, u32)>,
}

fn scenarios() -> Vec<Scenario> {
    let (a, b) = ("192.168.1.10", "192.168.1.20");
    let mut v = Vec::new();
    v.push(Scenario {
        name: "udp_request_reply",
        packets: vec![
            (udp4(a, b, 5353, 53), "new|trk", 0),
            (udp4(a, b, 5353, 53), "new|trk", 0),
            (udp4(b, a, 53, 5353), "est|rpl|trk", 0),
            (udp4(a, b, 5353, 53), "est|trk", 1),
            (udp4(b, a, 53, 5354), "new|trk", 1),
        ],
    });
    v.push(Scenario {
        name: "tcp_handshake_data_close",
        packets: vec![
            (tcp4(a, b, 40000, 80, 1000, 0, SYN, 29200, 0), "new|trk", 0),
            (
                tcp4(b, a, 80, 40000, 9000, 1001, SYN | ACK, 28960, 0),
                "est|rpl|trk",
                0,
            ),
            (
                tcp4(a, b, 40000, 80, 1001, 9001, ACK, 29200, 0),
                "est|trk",
                0,
            ),
            (
                tcp4(a, b, 40000, 80, 1001, 9001, ACK | PSH, 29200, 100),
                "est|trk",
                0,
            ),
            (
                tcp4(b, a, 80, 40000, 9001, 1101, ACK | PSH, 28960, 500),
                "est|rpl|trk",
                0,
            ),
            (
                tcp4(a, b, 40000, 80, 1101, 9501, ACK | FIN, 29200, 0),
                "est|trk",
                1,
            ),
            (
                tcp4(b, a, 80, 40000, 9501, 1102, ACK | FIN, 28960, 0),
                "est|rpl|trk",
                1,
            ),
            (
                tcp4(a, b, 40000, 80, 1102, 9502, ACK, 29200, 0),
                "est|trk",
                1,
            ),
            // TIME_WAIT: a new SYN on the same tuple reopens.
            (
                tcp4(a, b, 40000, 80, 500000, 0, SYN, 29200, 0),
                "new|trk",
                2,
            ),
        ],
    });
    v.push(Scenario {
        name: "tcp_invalid",
        packets: vec![
            (tcp4(a, b, 40001, 80, 1000, 5, ACK, 29200, 0), "inv|trk", 0),
            (
                tcp4(a, b, 40001, 80, 1000, 0, SYN | FIN, 29200, 0),
                "inv|trk",
                0,
            ),
            (
                tcp4(a, b, 40001, 80, 1000, 0, SYN | ACK, 29200, 0),
                "inv|trk",
                0,
            ),
            (tcp4(a, b, 40001, 80, 1000, 0, 0, 29200, 0), "inv|trk", 0),
            (tcp4(a, b, 40001, 80, 1000, 0, SYN, 29200, 0), "new|trk", 0),
            (
                tcp4(b, a, 80, 40001, 7000, 1001, SYN | ACK, 28960, 0),
                "est|rpl|trk",
                0,
            ),
            (
                tcp4(a, b, 40001, 80, 1001, 7001, ACK, 29200, 0),
                "est|trk",
                0,
            ),
            // Injected segment far outside the window, and a blind RST.
            (
                tcp4(
                    b,
                    a,
                    80,
                    40001,
                    7001 + 1_000_000_000,
                    1001,
                    ACK | PSH,
                    28960,
                    20,
                ),
                "inv|trk",
                0,
            ),
            (
                tcp4(b, a, 80, 40001, 7001 + 3_000_000, 0, RST, 0, 0),
                "inv|trk",
                0,
            ),
            // The real connection continues, then a valid RST closes it.
            (
                tcp4(b, a, 80, 40001, 7001, 1001, ACK | PSH, 28960, 20),
                "est|rpl|trk",
                0,
            ),
            (
                tcp4(a, b, 40001, 80, 1001, 7021, RST | ACK, 0, 0),
                "est|trk",
                0,
            ),
        ],
    });
    let req = icmp4_echo(a, b, 0x1234, true);
    let u = udp4(a, "192.168.1.30", 6000, 161);
    v.push(Scenario {
        name: "icmp_echo_and_errors",
        packets: vec![
            (icmp4_echo(b, a, 0x1234, false), "inv|trk", 0),
            (req.clone(), "new|trk", 0),
            (icmp4_echo(b, a, 0x1234, false), "est|rpl|trk", 0),
            (req, "est|trk", 1),
            (u.clone(), "new|trk", 1),
            (icmp4_error("192.168.1.30", a, 3, 3, &u), "rel|rpl|trk", 1),
            (
                icmp4_error("192.168.1.30", a, 3, 3, &udp4(a, "192.168.1.31", 6000, 161)),
                "inv|trk",
                1,
            ),
        ],
    });
    let p6 = udp6("fd00::10", "fd00::20", 4000, 4001);
    v.push(Scenario {
        name: "ipv6_udp_and_icmpv6",
        packets: vec![
            (p6.clone(), "new|trk", 0),
            (udp6("fd00::20", "fd00::10", 4001, 4000), "est|rpl|trk", 0),
            (
                icmp6_error("fd00::20", "fd00::10", 1, 4, &p6),
                "rel|rpl|trk",
                0,
            ),
            (icmp6_echo("fd00::10", "fd00::20", 9, true), "new|trk", 0),
            (
                icmp6_echo("fd00::20", "fd00::10", 9, false),
                "est|rpl|trk",
                0,
            ),
        ],
    });
    {
        // A 3000-byte UDP datagram in three fragments sent out of order, its
        // unfragmented reply, then an overlapping fragment pair (refused:
        // the fragment reaches conntrack as it is, +inv) and an IPv6 ping
        // in two fragments with its reply.
        let big = frag_layout_cut(&udp_big(a, b, 6000, 6001, 3000), 0x77, &[1480, 2960]);
        let (c6, d6) = ("2001:db8::1", "2001:db8::2");
        let ping6 = frag_layout_cut(&icmp6_echo_big(c6, d6, 9, true, 2000), 0x5150, &[1232]);
        let over1 = frag_layout_cut(&udp_big(a, b, 6100, 6101, 64), 0x99, &[40]);
        let mut over2 = over1[1].clone();
        // Second piece moved to offset 32 (overlaps the first's 40 bytes).
        over2[6] = 0;
        over2[7] = 4; // offset 4 * 8 = 32, MF clear
        fix_ipv4_checksum(&mut over2);
        v.push(Scenario {
            name: "fragments",
            packets: vec![
                (big[2].clone(), "held", 0),
                (big[0].clone(), "held", 0),
                (big[1].clone(), "new|trk", 0),
                (udp4(b, a, 6001, 6000), "est|rpl|trk", 0),
                (over1[0].clone(), "held", 1),
                (over2, "inv|trk", 1),
                (ping6[0].clone(), "held", 2),
                (ping6[1].clone(), "new|trk", 2),
                (icmp6_echo_big(d6, c6, 9, false, 8), "est|rpl|trk", 2),
            ],
        });
    }
    v.push(Scenario {
        name: "udp_timeout",
        packets: vec![
            (udp4(a, b, 7000, 7001), "new|trk", 0),
            // udp_first is 30 s: the reply after 40 s finds nothing.
            (udp4(b, a, 7001, 7000), "new|trk", 40),
            (udp4(a, b, 7000, 7001), "est|rpl|trk", 41),
        ],
    });
    v
}

const START: u64 = 1_700_000_000;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn pcap_bytes(s: &Scenario) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).expect("pcap header");
    for (i, (l3, _, secs)) in s.packets.iter().enumerate() {
        let frame = ether(l3);
        let ts = std::time::Duration::from_secs(START + *secs as u64)
            + std::time::Duration::from_micros(i as u64);
        w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))
            .expect("write");
    }
    w.into_writer()
}

fn expected_text(s: &Scenario) -> String {
    s.packets
        .iter()
        .enumerate()
        .map(|(i, (_, e, _))| format!("{}: {e}\n", i + 1))
        .collect()
}

/// The fragments of `l3` cut at `cuts` (payload offsets) with id `id`.
fn frag_layout_cut(l3: &[u8], id: u32, cuts: &[u32]) -> Vec<Vec<u8>> {
    FragLayout::for_datagram(l3, id, cuts)
        .expect("cuttable datagram")
        .fragments(l3)
        .expect("fragments")
}

fn fix_ipv4_checksum(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let ihl = (p[0] & 0x0f) as usize * 4;
    let mut sum = 0u32;
    for w in p[..ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Replays a capture as the datapath sees it: fragments reassembled first
/// (a held fragment prints `held`, the one completing its datagram gets the
/// datagram's state; a refused one goes to conntrack as it is).
fn replay(pcap: &[u8]) -> String {
    let mut defrag = Reassembler::new(FragConfig::default());
    let t = Tracker::default();
    let params = CtParams {
        commit: true,
        ..Default::default()
    };
    let mut r = PcapReader::new(pcap).expect("pcap");
    let mut out = String::new();
    let mut n = 0;
    while let Some(p) = r.next_packet() {
        let p = p.expect("packet");
        n += 1;
        let l3 = &p.data[14..];
        let family = if u16::from_be_bytes([p.data[12], p.data[13]]) == 0x86dd {
            Family::Ipv6
        } else {
            Family::Ipv4
        };
        let pkt = CtPacket {
            l3,
            family,
            flags: PktFlags::empty(),
        };
        let now = p.timestamp.as_nanos() as u64;
        let whole = match defrag.push(params.zone, &pkt, now) {
            Outcome::Held => {
                out.push_str(&format!("{n}: held\n"));
                continue;
            }
            Outcome::Complete(r) => Some(r.datagram),
            Outcome::Pass | Outcome::Rejected(_) => None,
        };
        let pkt = CtPacket {
            l3: whole.as_deref().unwrap_or(l3),
            ..pkt
        };
        let mut res = [CtResult::default()];
        t.execute(&[pkt], &params, now, &mut res);
        out.push_str(&format!("{n}: {}\n", res[0].state.pipe_names()));
    }
    out
}

#[test]
fn golden_traces() {
    let regen = std::env::var("FERROVS_REGEN_GOLDEN").is_ok_and(|v| v == "1");
    for s in scenarios() {
        let pcap_path = dir().join(format!("{}.pcap", s.name));
        let exp_path = dir().join(format!("{}.expected", s.name));
        let pcap = pcap_bytes(&s);
        let expected = expected_text(&s);
        if regen {
            std::fs::write(&pcap_path, &pcap).unwrap();
            std::fs::write(&exp_path, &expected).unwrap();
        }
        let committed = std::fs::read(&pcap_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (FERROVS_REGEN_GOLDEN=1 writes it)",
                pcap_path.display()
            )
        });
        assert!(
            committed == pcap,
            "{}: committed capture differs from its scenario",
            s.name
        );
        let committed_exp = std::fs::read_to_string(&exp_path).unwrap();
        assert_eq!(
            committed_exp, expected,
            "{}: .expected differs from its scenario",
            s.name
        );
        assert_eq!(
            replay(&committed),
            expected,
            "{}: conntrack disagrees with the golden trace",
            s.name
        );
    }
}
