//! FTP through NAT, end to end in conntrack: the announcement rewritten in
//! the payload (the length changes), checksums and IP length fixed, the
//! TCP sequence shift applied to every later control segment and accounted
//! for by the window tracker, and the data connection related and
//! translated back to the announcer's real address.
//!
//! Every packet is fed to `Tracker::execute` and then edited as the
//! datapath does: the NAT header rewrite, then the ALG edit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ct::alg::edit::{self, AlgEdit};
use ct::build::{Builder, Tcp};
use ct::nat::rewrite::{rewrite_packet, rewrite_related};
use ct::nat::{NatAction, NatEdit, NatKind, NatSpec};
use ct::packet::tcp_flags::{ACK, PSH, SYN};
use ct::{CtPacket, CtParams, CtResult, CtState, Family, PktFlags, Tracker, TrackerConfig, Zone};

const S: u64 = 1_000_000_000;
const T0: u64 = 1000 * S;

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn st(s: &str) -> CtState {
    s.split('|')
        .fold(CtState::empty(), |a, n| a | CtState::by_name(n).unwrap())
}

fn tracker() -> Tracker {
    Tracker::new(TrackerConfig {
        seed: Some(7),
        shards: 4,
        ..Default::default()
    })
}

fn family(l3: &[u8]) -> Family {
    if l3[0] >> 4 == 6 {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

/// `ct` on one packet, then the datapath's edits: NAT header rewrite, then
/// the ALG edit (growing the buffer first, cutting it after).
fn ct_and_edit(t: &Tracker, l3: &mut Vec<u8>, p: &CtParams) -> CtResult {
    let mut out = [CtResult::default()];
    t.execute(
        &[CtPacket {
            l3,
            family: family(l3),
            flags: PktFlags::empty(),
        }],
        p,
        T0,
        &mut out,
    );
    let r = out[0];
    match r.nat {
        Some(NatEdit::Packet(k)) => rewrite_packet(l3, &k).unwrap(),
        Some(NatEdit::Related(k)) => rewrite_related(l3, &k).unwrap(),
        Some(NatEdit::Drop) | None => {}
    }
    if let Some(a) = &r.alg {
        apply_alg(l3, a);
    }
    r
}

fn apply_alg(l3: &mut Vec<u8>, a: &AlgEdit) {
    let len = l3.len();
    l3.resize(len + a.growth(), 0);
    let n = edit::apply(l3, len, a).unwrap();
    l3.truncate(n);
}

fn start(helper: bool, spec: NatSpec) -> CtParams {
    CtParams {
        zone: Zone(1),
        commit: true,
        helper: helper.then_some("ftp"),
        nat: Some(NatAction { spec: Some(spec) }),
        ..Default::default()
    }
}

/// `ct(zone=1,nat)`: established traffic.
fn bare() -> CtParams {
    CtParams {
        zone: Zone(1),
        nat: Some(NatAction::default()),
        ..Default::default()
    }
}

/// `ct(commit,zone=1,nat)`: a related connection's first packet.
fn commit_bare() -> CtParams {
    CtParams {
        commit: true,
        ..bare()
    }
}

fn nat_to(kind: NatKind, a: IpAddr) -> NatSpec {
    NatSpec::new(kind, a, a).unwrap()
}

/// Sum of 16-bit big-endian words, folded (independent of the crate's
/// checksum code).
fn ones_sum(mut acc: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// The TCP segment of an IPv4 or IPv6 (no extension header) packet,
/// after checking the IP length field and every checksum from scratch.
fn checked_tcp(l3: &[u8]) -> &[u8] {
    let (l4, pseudo) = if l3[0] >> 4 == 4 {
        let ihl = (l3[0] & 0x0f) as usize * 4;
        assert_eq!(
            u16::from_be_bytes([l3[2], l3[3]]) as usize,
            l3.len(),
            "IPv4 total length"
        );
        assert_eq!(ones_sum(0, &l3[..ihl]), 0xffff, "IPv4 header checksum");
        (ihl, ones_sum(0, &l3[12..20]))
    } else {
        assert_eq!(
            u16::from_be_bytes([l3[4], l3[5]]) as usize + 40,
            l3.len(),
            "IPv6 payload length"
        );
        (40, ones_sum(0, &l3[8..40]))
    };
    let seg = &l3[l4..];
    let sum = ones_sum(pseudo + 6 + seg.len() as u32, seg);
    assert_eq!(sum, 0xffff, "TCP checksum");
    seg
}

fn seq_of(l3: &[u8]) -> u32 {
    let t = checked_tcp(l3);
    u32::from_be_bytes([t[4], t[5], t[6], t[7]])
}
fn ack_of(l3: &[u8]) -> u32 {
    let t = checked_tcp(l3);
    u32::from_be_bytes([t[8], t[9], t[10], t[11]])
}
fn payload_of(l3: &[u8]) -> &[u8] {
    let t = checked_tcp(l3);
    &t[(t[12] >> 4) as usize * 4..]
}
fn addrs_ports(l3: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let t = checked_tcp(l3);
    let (s, d): (IpAddr, IpAddr) = if l3[0] >> 4 == 4 {
        (
            Ipv4Addr::from(<[u8; 4]>::try_from(&l3[12..16]).unwrap()).into(),
            Ipv4Addr::from(<[u8; 4]>::try_from(&l3[16..20]).unwrap()).into(),
        )
    } else {
        (
            Ipv6Addr::from(<[u8; 16]>::try_from(&l3[8..24]).unwrap()).into(),
            Ipv6Addr::from(<[u8; 16]>::try_from(&l3[24..40]).unwrap()).into(),
        )
    };
    (
        s,
        u16::from_be_bytes([t[0], t[1]]),
        d,
        u16::from_be_bytes([t[2], t[3]]),
    )
}

/// One TCP conversation as both ends number it (their own bytes), with
/// the addresses each end uses.
struct Talk {
    /// The client's view: client -> server packets are built with it.
    c2s: Builder,
    /// The server's view: server -> client packets.
    s2c: Builder,
    cport: u16,
    sport: u16,
    cseq: u32,
    sseq: u32,
    /// What each end has received (its acknowledgement number).
    c_rcv: u32,
    s_rcv: u32,
}

impl Talk {
    fn seg(&self, from_client: bool, flags: u8, payload: &[u8]) -> Vec<u8> {
        if from_client {
            self.c2s.tcp(
                &Tcp::new(self.cport, self.sport)
                    .seq(self.cseq)
                    .ack(self.c_rcv)
                    .flags(flags)
                    .payload(payload),
            )
        } else {
            self.s2c.tcp(
                &Tcp::new(self.sport, self.cport)
                    .seq(self.sseq)
                    .ack(self.s_rcv)
                    .flags(flags)
                    .payload(payload),
            )
        }
    }

    /// A data segment through conntrack and NAT; the receiver takes what
    /// arrived (its ack moves by the delivered length). Returns the packet
    /// as delivered and the result.
    fn say(&mut self, t: &Tracker, from_client: bool, text: &[u8]) -> (Vec<u8>, CtResult) {
        let mut p = self.seg(from_client, ACK | PSH, text);
        let r = ct_and_edit(t, &mut p, &bare());
        assert!(!r.state.contains(CtState::INV), "{text:?}: {:?}", r.state);
        let got = payload_of(&p).len() as u32;
        if from_client {
            self.cseq = self.cseq.wrapping_add(text.len() as u32);
            self.s_rcv = seq_of(&p).wrapping_add(got);
        } else {
            self.sseq = self.sseq.wrapping_add(text.len() as u32);
            self.c_rcv = seq_of(&p).wrapping_add(got);
        }
        (p, r)
    }
}

/// Handshake of a control connection through `first` (commit with NAT and
/// the helper) and `bare()` after.
fn handshake(t: &Tracker, talk: &mut Talk, first: &CtParams) {
    let mut syn = talk.seg(true, SYN, b"");
    // ct(zone=1,nat) first: +new, nothing kept.
    assert_eq!(
        ct_and_edit(t, &mut syn.clone(), &bare()).state,
        st("trk|new")
    );
    ct_and_edit(t, &mut syn, first);
    talk.cseq = talk.cseq.wrapping_add(1);
    talk.s_rcv = seq_of(&syn).wrapping_add(1);
    let mut sa = talk.seg(false, SYN | ACK, b"");
    let r = ct_and_edit(t, &mut sa, &bare());
    assert!(r.state.contains(st("trk|est|rpl")), "{:?}", r.state);
    talk.sseq = talk.sseq.wrapping_add(1);
    talk.c_rcv = seq_of(&sa).wrapping_add(1);
    let mut a = talk.seg(true, ACK, b"");
    assert!(ct_and_edit(t, &mut a, &bare())
        .state
        .contains(st("trk|est")));
}

#[test]
fn active_ftp_through_snat_rewrites_port_and_shifts_sequence_numbers() {
    let t = tracker();
    let (client, server, public) = (v4("10.0.0.5"), v4("203.0.113.7"), v4("192.0.2.100"));
    let mut talk = Talk {
        c2s: Builder::v4(client, server),
        // The server only ever sees the public address.
        s2c: Builder::v4(server, public),
        cport: 40000,
        sport: 21,
        cseq: 1000,
        sseq: 5000,
        c_rcv: 0,
        s_rcv: 0,
    };
    handshake(
        &t,
        &mut talk,
        &start(true, nat_to(NatKind::Src, public.into())),
    );
    let (p, r) = talk.say(&t, false, b"220 welcome\r\n");
    assert!(r.alg.is_none(), "no announcement, no shift yet");
    assert_eq!(addrs_ports(&p).2, IpAddr::from(client));

    // PORT 10,0,0,5,19,137 (port 5001): 15 characters become 18.
    let port_seq = talk.cseq;
    let (p, r) = talk.say(&t, true, b"PORT 10,0,0,5,19,137\r\n");
    assert!(r.alg.is_some_and(|a| a.payload.is_some()));
    assert_eq!(payload_of(&p), b"PORT 192,0,2,100,19,137\r\n");
    assert_eq!(seq_of(&p), port_seq, "the resized segment keeps its seq");
    assert_eq!(
        addrs_ports(&p),
        (public.into(), 40000, server.into(), 21),
        "and is SNATed"
    );
    assert_eq!(talk.s_rcv, port_seq + 25);

    // The server acknowledges 25 bytes; the client must see 22.
    let (p, r) = talk.say(&t, false, b"200 PORT command successful\r\n");
    assert!(r.state.contains(st("trk|est|rpl")));
    assert_eq!(ack_of(&p), port_seq + 22, "ack mapped back for the client");

    // The data connection: server port 20 to the public address and the
    // announced port, related, DNATed back to the client.
    let data_syn =
        |sport: u16| Builder::v4(server, public).tcp(&Tcp::new(sport, 5001).seq(9000).flags(SYN));
    let mut d = data_syn(20);
    assert_eq!(
        ct_and_edit(&t, &mut d.clone(), &bare()).state,
        st("trk|new|rel")
    );
    let r = ct_and_edit(&t, &mut d, &commit_bare());
    assert_eq!(r.state, st("trk|new|rel|dnat"));
    assert_eq!(addrs_ports(&d), (server.into(), 20, client.into(), 5001));
    let mut dsa =
        Builder::v4(client, server).tcp(&Tcp::new(5001, 20).seq(300).ack(9001).flags(SYN | ACK));
    let r = ct_and_edit(&t, &mut dsa, &bare());
    assert_eq!(r.state, st("trk|est|rel|rpl|snat"));
    assert_eq!(addrs_ports(&dsa), (public.into(), 5001, server.into(), 20));
    assert!(r.alg.is_none(), "the data connection is not adjusted");
    // The expectation was one-shot.
    let mut again = data_syn(21);
    assert_eq!(
        ct_and_edit(&t, &mut again, &bare()).state,
        st("trk|new"),
        "a second data connection is not related"
    );

    // A long control session after the resize: every client segment moves
    // by 3, every server ack moves back, none is invalid.
    for i in 0..300u32 {
        let before = talk.cseq;
        let (p, _) = talk.say(&t, true, format!("NOOP {i}\r\n").as_bytes());
        assert_eq!(seq_of(&p), before + 3);
        let (p, _) = talk.say(&t, false, b"200 NOOP ok\r\n");
        assert_eq!(ack_of(&p), talk.cseq, "client sees its own numbering");
    }
    // A retransmission of the PORT segment (old seq, same text) is
    // rewritten the same way and not shifted again.
    let saved = (talk.cseq, talk.c_rcv);
    talk.cseq = port_seq;
    let mut re = talk.seg(true, ACK | PSH, b"PORT 10,0,0,5,19,137\r\n");
    let r = ct_and_edit(&t, &mut re, &bare());
    assert!(!r.state.contains(CtState::INV));
    assert_eq!(payload_of(&re), b"PORT 192,0,2,100,19,137\r\n");
    assert_eq!(seq_of(&re), port_seq);
    (talk.cseq, talk.c_rcv) = saved;
    let (p, _) = talk.say(&t, true, b"QUIT\r\n");
    assert_eq!(
        seq_of(&p),
        saved.0 + 3,
        "offset unchanged by the retransmission"
    );
}

#[test]
fn passive_ftp_through_dnat_rewrites_227_and_shifts_the_server_stream() {
    let t = tracker();
    let (client, vip, server) = (v4("198.51.100.7"), v4("192.0.2.100"), v4("10.1.0.9"));
    let mut talk = Talk {
        c2s: Builder::v4(client, vip),
        s2c: Builder::v4(server, client),
        cport: 50123,
        sport: 21,
        cseq: 70_000,
        sseq: u32::MAX - 40, // the server's numbers wrap during the session
        c_rcv: 0,
        s_rcv: 0,
    };
    handshake(
        &t,
        &mut talk,
        &start(true, nat_to(NatKind::Dst, server.into())),
    );
    talk.say(&t, false, b"220 hi\r\n");
    talk.say(&t, true, b"PASV\r\n");
    let pasv_seq = talk.sseq;
    // 10,1,0,9,195,80 (port 50000) becomes 192,0,2,100,195,80: +3.
    let (p, r) = talk.say(
        &t,
        false,
        b"227 Entering Passive Mode (10,1,0,9,195,80).\r\n",
    );
    assert!(r.state.contains(st("trk|est|rpl")));
    assert_eq!(
        payload_of(&p),
        b"227 Entering Passive Mode (192,0,2,100,195,80).\r\n"
    );
    assert_eq!(seq_of(&p), pasv_seq);
    assert_eq!(addrs_ports(&p), (vip.into(), 21, client.into(), 50123));

    // The client's ack covers 3 more bytes than the server sent.
    let (p, _) = talk.say(&t, true, b"LIST\r\n");
    assert_eq!(ack_of(&p), talk.sseq, "server sees its own numbering");
    let before = talk.sseq;
    let (p, _) = talk.say(&t, false, b"150 here it comes\r\n");
    assert_eq!(seq_of(&p), before.wrapping_add(3));

    // The client's data connection to the public address and the
    // announced port: related, DNATed to the server's real port.
    let mut d = Builder::v4(client, vip).tcp(&Tcp::new(50124, 50000).seq(1).flags(SYN));
    assert_eq!(
        ct_and_edit(&t, &mut d.clone(), &bare()).state,
        st("trk|new|rel")
    );
    let r = ct_and_edit(&t, &mut d, &commit_bare());
    assert_eq!(r.state, st("trk|new|rel|dnat"));
    assert_eq!(
        addrs_ports(&d),
        (client.into(), 50124, server.into(), 50000)
    );
    let mut back =
        Builder::v4(server, client).tcp(&Tcp::new(50000, 50124).seq(77).ack(2).flags(SYN | ACK));
    let r = ct_and_edit(&t, &mut back, &bare());
    assert_eq!(r.state, st("trk|est|rel|rpl|snat"));
    assert_eq!(
        addrs_ports(&back),
        (vip.into(), 50000, client.into(), 50124)
    );

    for _ in 0..200 {
        talk.say(&t, true, b"NOOP\r\n");
        let before = talk.sseq;
        let (p, _) = talk.say(&t, false, b"200 ok\r\n");
        assert_eq!(seq_of(&p), before.wrapping_add(3));
    }
}

#[test]
fn passive_ftp_from_a_snat_client_needs_no_rewrite_but_the_data_connection_follows() {
    // The client is behind SNAT and the server names its own (public)
    // address: nothing to rewrite, but the client's data connection must
    // leave from the public address too.
    let t = tracker();
    let (client, server, public) = (v4("10.0.0.5"), v4("203.0.113.7"), v4("192.0.2.100"));
    let mut talk = Talk {
        c2s: Builder::v4(client, server),
        s2c: Builder::v4(server, public),
        cport: 40001,
        sport: 21,
        cseq: 1,
        sseq: 1,
        c_rcv: 0,
        s_rcv: 0,
    };
    handshake(
        &t,
        &mut talk,
        &start(true, nat_to(NatKind::Src, public.into())),
    );
    talk.say(&t, true, b"PASV\r\n");
    let (p, r) = talk.say(&t, false, b"227 ok (203,0,113,7,100,0)\r\n");
    assert!(r.alg.is_none());
    assert_eq!(payload_of(&p), b"227 ok (203,0,113,7,100,0)\r\n");
    let mut d = Builder::v4(client, server).tcp(&Tcp::new(40002, 25600).seq(1).flags(SYN));
    let r = ct_and_edit(&t, &mut d, &commit_bare());
    assert_eq!(r.state, st("trk|new|rel|snat"));
    assert_eq!(
        addrs_ports(&d),
        (public.into(), 40002, server.into(), 25600)
    );
}

#[test]
fn eprt_through_ipv6_snat_shrinks_and_grows() {
    let t = tracker();
    let (client, server, public) = (
        v6("fd00:1234:5678:9abc::5"),
        v6("2001:db8::21"),
        v6("2001:db8:1::1"),
    );
    let mut talk = Talk {
        c2s: Builder::v6(client, server),
        s2c: Builder::v6(server, public),
        cport: 40000,
        sport: 21,
        cseq: 1,
        sseq: 1,
        c_rcv: 0,
        s_rcv: 0,
    };
    handshake(
        &t,
        &mut talk,
        &start(true, nat_to(NatKind::Src, public.into())),
    );
    let at = talk.cseq;
    let (p, _) = talk.say(&t, true, b"EPRT |2|fd00:1234:5678:9abc::5|6000|\r\n");
    assert_eq!(payload_of(&p), b"EPRT |2|2001:db8:1::1|6000|\r\n");
    // 9 bytes shorter (a 22-character address became 13).
    let (p, _) = talk.say(&t, false, b"200 ok\r\n");
    assert_eq!(ack_of(&p), talk.cseq);
    let (p, _) = talk.say(&t, true, b"LIST\r\n");
    assert_eq!(seq_of(&p), at + 38 - 9);
    let mut d = Builder::v6(server, public).tcp(&Tcp::new(20, 6000).seq(1).flags(SYN));
    let r = ct_and_edit(&t, &mut d, &commit_bare());
    assert_eq!(r.state, st("trk|new|rel|dnat"));
    assert_eq!(addrs_ports(&d), (server.into(), 20, client.into(), 6000));
}

#[test]
fn without_nat_nothing_is_rewritten_or_shifted() {
    let t = tracker();
    let (client, server) = (v4("10.0.0.5"), v4("10.0.0.6"));
    let mut talk = Talk {
        c2s: Builder::v4(client, server),
        s2c: Builder::v4(server, client),
        cport: 40000,
        sport: 21,
        cseq: 1,
        sseq: 1,
        c_rcv: 0,
        s_rcv: 0,
    };
    let p = CtParams {
        zone: Zone(1),
        commit: true,
        helper: Some("ftp"),
        nat: Some(NatAction::default()),
        ..Default::default()
    };
    handshake(&t, &mut talk, &p);
    let (p, r) = talk.say(&t, true, b"PORT 10,0,0,5,19,137\r\n");
    assert!(r.alg.is_none() && r.nat.is_none());
    assert_eq!(payload_of(&p), b"PORT 10,0,0,5,19,137\r\n");
    let mut d = Builder::v4(server, client).tcp(&Tcp::new(20, 5001).seq(1).flags(SYN));
    let r = ct_and_edit(&t, &mut d, &commit_bare());
    assert_eq!(r.state, st("trk|new|rel"));
    assert_eq!(addrs_ports(&d), (server.into(), 20, client.into(), 5001));
}

/// The UDP ports of an IPv4 packet and its addresses.
fn udp_tuple(l3: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let a = |o: usize| IpAddr::from(Ipv4Addr::new(l3[o], l3[o + 1], l3[o + 2], l3[o + 3]));
    let p = |o: usize| u16::from_be_bytes([l3[20 + o], l3[21 + o]]);
    (a(12), p(0), a(16), p(2))
}

#[test]
fn tftp_through_snat_answer_is_related_and_translated_back() {
    let t = tracker();
    let (client, server, public) = (v4("10.0.0.5"), v4("203.0.113.7"), v4("192.0.2.100"));
    let mut rrq = Builder::v4(client, server).udp(3000, 69, b"\x00\x01file\x00octet\x00");
    let p = CtParams {
        helper: Some("tftp"),
        ..start(false, nat_to(NatKind::Src, public.into()))
    };
    let r = ct_and_edit(&t, &mut rrq, &p);
    assert_eq!(r.state, st("trk|new|snat"));
    assert_eq!(udp_tuple(&rrq), (public.into(), 3000, server.into(), 69));
    // The answer comes from a new server port to the public address.
    let mut data = Builder::v4(server, public).udp(4000, 3000, b"\x00\x03\x00\x01x");
    assert_eq!(
        ct_and_edit(&t, &mut data.clone(), &bare()).state,
        st("trk|new|rel")
    );
    let r = ct_and_edit(&t, &mut data, &commit_bare());
    assert_eq!(r.state, st("trk|new|rel|dnat"));
    assert_eq!(udp_tuple(&data), (server.into(), 4000, client.into(), 3000));
    assert!(r.alg.is_none());
}
