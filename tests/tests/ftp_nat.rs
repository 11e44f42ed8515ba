//! FTP through NAT across the whole switch, with OVS-style flows: the
//! control connection committed with `alg=ftp` and a NAT rule, the data
//! connection admitted because it is `+rel` and committed with a bare
//! `nat`, which gives it the translation that follows its master.
//!
//! Every frame that leaves the switch is compared byte for byte with the
//! frame the receiving host should get (built independently with the
//! translated addresses, rewritten text and shifted sequence numbers), and
//! its checksums are recomputed from scratch by smoltcp.

use std::net::IpAddr;

use ct::packet::tcp_flags::{ACK, PSH, SYN};
use ferrovs_tests::{frame, Builder, Harness, Tcp};

/// Port 1: inside clients 10.0.0.0/24, source-NATed to 192.0.2.100 on
/// port 2 (outside).
const SNAT: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(nat,zone=1,table=1)
table=0,priority=10,ip,in_port=2,actions=ct(nat,zone=1,table=2)
table=1,priority=20,tcp,tp_dst=21,ct_state=+trk+new-inv,actions=ct(commit,zone=1,alg=ftp,nat(src=192.0.2.100)),output:2
table=1,priority=15,ip,ct_state=+trk+rel+new-inv,actions=ct(commit,zone=1,nat),output:2
table=1,priority=10,ip,ct_state=+trk+est-inv,actions=output:2
table=2,priority=15,ip,ct_state=+trk+rel+new-inv,actions=ct(commit,zone=1,nat),output:1
table=2,priority=10,ip,ct_state=+trk+est-inv,actions=output:1
";

/// Port 2: outside clients reach the FTP server 10.1.0.9 (port 1) at the
/// public address 192.0.2.100.
const DNAT: &str = "\
table=0,priority=10,ip,in_port=2,actions=ct(nat,zone=1,table=1)
table=0,priority=10,ip,in_port=1,actions=ct(nat,zone=1,table=2)
table=1,priority=20,tcp,nw_dst=192.0.2.100,tp_dst=21,ct_state=+trk+new-inv,actions=ct(commit,zone=1,alg=ftp,nat(dst=10.1.0.9)),output:1
table=1,priority=15,ip,ct_state=+trk+rel+new-inv,actions=ct(commit,zone=1,nat),output:1
table=1,priority=10,ip,ct_state=+trk+est-inv,actions=output:1
table=2,priority=10,ip,ct_state=+trk+est-inv,actions=output:2
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn b(src: &str, dst: &str) -> Builder {
    Builder::ip(ip(src), ip(dst))
}

/// Every checksum of an IPv4/TCP Ethernet frame, recomputed by smoltcp.
fn checksums_valid(f: &[u8]) -> bool {
    use smoltcp::wire::*;
    let eth = EthernetFrame::new_checked(f).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let (s, d) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    ip.verify_checksum()
        && TcpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(&s, &d)
}

/// One end of a TCP conversation as it is on its own wire.
struct End {
    port: u32,
    /// Its own address and port, and its peer's as it sees them.
    me: (&'static str, u16),
    peer: (&'static str, u16),
    /// Next sequence number it sends; what it acknowledges.
    seq: u32,
    ack: u32,
}

impl End {
    fn seg(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        b(self.me.0, self.peer.0).tcp(
            &Tcp::new(self.me.1, self.peer.1)
                .seq(self.seq)
                .ack(self.ack)
                .flags(flags)
                .win(64000)
                .payload(payload),
        )
    }
}

/// Send a segment from `from` and check that `to` receives exactly `want`
/// (a segment built in `to`'s view with `seq`/`ack` as `to` must see
/// them); updates both ends.
#[allow(clippy::too_many_arguments)]
fn carry(
    h: &mut Harness,
    from: &mut End,
    to: &mut End,
    flags: u8,
    text: &[u8],
    want_text: &[u8],
    want_seq: u32,
    want_ack: u32,
) {
    let sent = from.seg(flags, text);
    let out = h.inject(from.port, &frame(from.port, to.port, &sent));
    assert_eq!(Harness::ports_of(&out), vec![to.port], "{text:?}");
    let want = b(to.peer.0, to.me.0).tcp(
        &Tcp::new(to.peer.1, to.me.1)
            .seq(want_seq)
            .ack(want_ack)
            .flags(flags)
            .win(64000)
            .payload(want_text),
    );
    assert!(checksums_valid(&out[0].1));
    assert_eq!(
        out[0].1,
        frame(from.port, to.port, &want),
        "{:?} as delivered",
        String::from_utf8_lossy(text)
    );
    let consumed = text.len() as u32 + u32::from(flags & SYN != 0);
    from.seq = from.seq.wrapping_add(consumed);
    to.ack = want_seq
        .wrapping_add(want_text.len() as u32)
        .wrapping_add(u32::from(flags & SYN != 0));
}

/// Three-way handshake between `c` (opening) and `s`, delivered unchanged
/// in numbering.
fn handshake(h: &mut Harness, c: &mut End, s: &mut End) {
    let (cs, ss) = (c.seq, s.seq);
    carry(h, c, s, SYN, b"", b"", cs, 0);
    carry(h, s, c, SYN | ACK, b"", b"", ss, cs + 1);
    carry(h, c, s, ACK, b"", b"", cs + 1, ss + 1);
}

#[test]
fn active_ftp_through_snat() {
    let mut h = Harness::new(&[1, 2], SNAT);
    let mut c = End {
        port: 1,
        me: ("10.0.0.5", 40000),
        peer: ("203.0.113.7", 21),
        seq: 1000,
        ack: 0,
    };
    let mut s = End {
        port: 2,
        me: ("203.0.113.7", 21),
        peer: ("192.0.2.100", 40000),
        seq: 5000,
        ack: 0,
    };
    handshake(&mut h, &mut c, &mut s);
    let (cs, ss) = (c.seq, s.seq);
    carry(
        &mut h,
        &mut s,
        &mut c,
        ACK | PSH,
        b"220 hi\r\n",
        b"220 hi\r\n",
        ss,
        cs,
    );
    let ss = s.seq;
    // PORT grows by 3 on the way out.
    carry(
        &mut h,
        &mut c,
        &mut s,
        ACK | PSH,
        b"PORT 10,0,0,5,19,137\r\n",
        b"PORT 192,0,2,100,19,137\r\n",
        cs,
        ss,
    );
    assert_eq!(s.ack, cs + 25);
    // The server acknowledges 25 bytes, the client sees 22.
    carry(
        &mut h,
        &mut s,
        &mut c,
        ACK | PSH,
        b"200 ok\r\n",
        b"200 ok\r\n",
        ss,
        cs + 22,
    );

    // The server's data connection to 192.0.2.100:5001 reaches the client.
    let mut sd = End {
        port: 2,
        me: ("203.0.113.7", 20),
        peer: ("192.0.2.100", 5001),
        seq: 9000,
        ack: 0,
    };
    let mut cd = End {
        port: 1,
        me: ("10.0.0.5", 5001),
        peer: ("203.0.113.7", 20),
        seq: 300,
        ack: 0,
    };
    handshake(&mut h, &mut sd, &mut cd);
    let (a, z) = (sd.seq, cd.seq);
    carry(&mut h, &mut sd, &mut cd, ACK | PSH, b"file", b"file", a, z);
    let conns = h.dump_conntrack();
    assert!(
        conns
            .iter()
            .any(|l| l.contains("dport=5001") && l.contains("10.0.0.5")),
        "{conns:#?}"
    );

    // A long control session afterwards: client data moves by 3, server
    // acks move back by 3, nothing is dropped as invalid.
    for i in 0..200 {
        let (cs, ss) = (c.seq, s.seq);
        let cmd = format!("NOOP {i}\r\n");
        carry(
            &mut h,
            &mut c,
            &mut s,
            ACK | PSH,
            cmd.as_bytes(),
            cmd.as_bytes(),
            cs + 3,
            ss,
        );
        let cs = c.seq;
        carry(
            &mut h,
            &mut s,
            &mut c,
            ACK | PSH,
            b"200 ok\r\n",
            b"200 ok\r\n",
            ss,
            cs,
        );
    }
    // Without the ALG edit an unexpected data connection is not admitted.
    let stray = b("203.0.113.7", "192.0.2.100").tcp(&Tcp::new(20, 5002).seq(1).flags(SYN));
    assert!(h.inject(2, &frame(2, 1, &stray)).is_empty());
}

#[test]
fn passive_ftp_through_dnat() {
    let mut h = Harness::new(&[1, 2], DNAT);
    let mut c = End {
        port: 2,
        me: ("198.51.100.7", 50123),
        peer: ("192.0.2.100", 21),
        seq: 70_000,
        ack: 0,
    };
    let mut s = End {
        port: 1,
        me: ("10.1.0.9", 21),
        peer: ("198.51.100.7", 50123),
        seq: 8000,
        ack: 0,
    };
    handshake(&mut h, &mut c, &mut s);
    let (cs, ss) = (c.seq, s.seq);
    carry(
        &mut h,
        &mut c,
        &mut s,
        ACK | PSH,
        b"PASV\r\n",
        b"PASV\r\n",
        cs,
        ss,
    );
    let cs = c.seq;
    carry(
        &mut h,
        &mut s,
        &mut c,
        ACK | PSH,
        b"227 Entering Passive Mode (10,1,0,9,195,80).\r\n",
        b"227 Entering Passive Mode (192,0,2,100,195,80).\r\n",
        ss,
        cs,
    );
    // The client's ack covers 3 bytes the server never sent.
    let n = b"227 Entering Passive Mode (10,1,0,9,195,80).\r\n".len() as u32;
    carry(
        &mut h,
        &mut c,
        &mut s,
        ACK | PSH,
        b"LIST\r\n",
        b"LIST\r\n",
        cs,
        ss + n,
    );
    let cs = c.seq;
    carry(
        &mut h,
        &mut s,
        &mut c,
        ACK | PSH,
        b"150 ok\r\n",
        b"150 ok\r\n",
        ss + n + 3,
        cs,
    );

    // The client's data connection to 192.0.2.100:50000 reaches the server.
    let mut cd = End {
        port: 2,
        me: ("198.51.100.7", 50124),
        peer: ("192.0.2.100", 50000),
        seq: 1,
        ack: 0,
    };
    let mut sd = End {
        port: 1,
        me: ("10.1.0.9", 50000),
        peer: ("198.51.100.7", 50124),
        seq: 77,
        ack: 0,
    };
    handshake(&mut h, &mut cd, &mut sd);
    let (a, z) = (sd.seq, cd.seq);
    carry(&mut h, &mut sd, &mut cd, ACK | PSH, b"data", b"data", a, z);
}
