//! The helpers through `Tracker::execute`: control sessions with valid TCP
//! sequence numbers (window checks on), expectations, related data
//! connections.

use std::net::IpAddr;

use crate::build::{Builder, Tcp};
use crate::expect::ExpectKey;
use crate::flush::FlushFilter;
use crate::key::{ipproto, ConnKey, Zone};
use crate::packet::tcp_flags::{ACK, PSH, SYN};
use crate::{CtPacket, CtParams, CtResult, CtState, PktFlags, Tracker};

const S: u64 = 1_000_000_000;
const T0: u64 = 1000 * S;

fn st(s: &str) -> CtState {
    s.split('|').fold(CtState::empty(), |acc, n| {
        acc | CtState::by_name(n).unwrap_or_else(|| panic!("bad state {n}"))
    })
}

fn exec(t: &Tracker, l3: &[u8], p: &CtParams, now: u64) -> CtResult {
    let family = if l3[0] >> 4 == 6 {
        crate::Family::Ipv6
    } else {
        crate::Family::Ipv4
    };
    let mut out = [CtResult::default()];
    t.execute(
        &[CtPacket {
            l3,
            family,
            flags: PktFlags::empty(),
        }],
        p,
        now,
        &mut out,
    );
    out[0]
}

fn params(zone: u16, commit: bool, helper: Option<&'static str>) -> CtParams {
    CtParams {
        zone: Zone(zone),
        commit,
        helper,
        ..Default::default()
    }
}

/// One FTP (or other TCP) control connection driven packet by packet.
struct Ctl<'t> {
    t: &'t Tracker,
    c2s: Builder,
    s2c: Builder,
    cport: u16,
    sport: u16,
    cseq: u32,
    sseq: u32,
    zone: u16,
    now: u64,
}

impl<'t> Ctl<'t> {
    /// Handshake, the SYN committed with `helper`, later packets through an
    /// uncommitted `ct` (the helper stays on the connection).
    fn open(
        t: &'t Tracker,
        client: &str,
        server: &str,
        zone: u16,
        helper: Option<&'static str>,
    ) -> Ctl<'t> {
        let c: IpAddr = client.parse().unwrap();
        let s: IpAddr = server.parse().unwrap();
        let mut x = Ctl {
            t,
            c2s: Builder::ip(c, s),
            s2c: Builder::ip(s, c),
            cport: 40000,
            sport: 21,
            cseq: 1000,
            sseq: 7000,
            zone,
            now: T0,
        };
        let syn = x
            .c2s
            .tcp(&Tcp::new(x.cport, x.sport).seq(x.cseq).flags(SYN));
        assert_eq!(
            exec(t, &syn, &params(zone, true, helper), x.now).state,
            st("new|trk")
        );
        let synack = x.s2c.tcp(
            &Tcp::new(x.sport, x.cport)
                .seq(x.sseq)
                .ack(x.cseq + 1)
                .flags(SYN | ACK),
        );
        assert_eq!(exec(t, &synack, &x.p(), x.now).state, st("est|rpl|trk"));
        x.cseq += 1;
        x.sseq += 1;
        let ack = x.c2s.tcp(
            &Tcp::new(x.cport, x.sport)
                .seq(x.cseq)
                .ack(x.sseq)
                .flags(ACK),
        );
        assert_eq!(exec(t, &ack, &x.p(), x.now).state, st("est|trk"));
        x
    }

    fn p(&self) -> CtParams {
        params(self.zone, false, None)
    }

    fn client_says(&mut self, text: &[u8]) -> CtResult {
        let pkt = self.c2s.tcp(
            &Tcp::new(self.cport, self.sport)
                .seq(self.cseq)
                .ack(self.sseq)
                .flags(ACK | PSH)
                .payload(text),
        );
        self.cseq += text.len() as u32;
        exec(self.t, &pkt, &self.p(), self.now)
    }

    fn server_says(&mut self, text: &[u8]) -> CtResult {
        let pkt = self.s2c.tcp(
            &Tcp::new(self.sport, self.cport)
                .seq(self.sseq)
                .ack(self.cseq)
                .flags(ACK | PSH)
                .payload(text),
        );
        self.sseq += text.len() as u32;
        exec(self.t, &pkt, &self.p(), self.now)
    }

    fn master(&self) -> ConnKey {
        let (c, s) = (self.c2s_addrs().0, self.c2s_addrs().1);
        match (c, s) {
            (IpAddr::V4(c), IpAddr::V4(s)) => {
                ConnKey::v4(Zone(self.zone), c, s, ipproto::TCP, self.cport, self.sport)
            }
            (IpAddr::V6(c), IpAddr::V6(s)) => {
                ConnKey::v6(Zone(self.zone), c, s, ipproto::TCP, self.cport, self.sport)
            }
            _ => unreachable!(),
        }
    }

    fn c2s_addrs(&self) -> (IpAddr, IpAddr) {
        let p = self.c2s.udp(1, 2, b"");
        let info = crate::packet::parse(
            &CtPacket {
                l3: &p,
                family: self.c2s.family(),
                flags: PktFlags::empty(),
            },
            Zone(0),
        );
        (info.key.src_ip(), info.key.dst_ip())
    }
}

/// A data connection's SYN `from → to:dport` (source port `sport`) then its
/// SYN-ACK; returns the two states, committing both in `zone`.
fn data_conn(
    t: &Tracker,
    from: &str,
    to: &str,
    sport: u16,
    dport: u16,
    zone: u16,
    now: u64,
) -> (CtState, CtState) {
    let b = Builder::ip(from.parse().unwrap(), to.parse().unwrap());
    let syn = b.tcp(&Tcp::new(sport, dport).seq(50).flags(SYN));
    let s1 = exec(t, &syn, &params(zone, true, None), now).state;
    let synack = b
        .reversed()
        .tcp(&Tcp::new(dport, sport).seq(90).ack(51).flags(SYN | ACK));
    let s2 = exec(t, &synack, &params(zone, true, None), now).state;
    (s1, s2)
}

#[test]
fn active_ftp_port_makes_the_data_connection_related() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
    assert!(t.expectations.is_empty());
    assert_eq!(
        ctl.client_says(b"PORT 10,0,0,1,19,137\r\n").state,
        st("est|trk")
    );
    assert_eq!(t.expectations.len(), 1);
    let e = &t.expectations.list()[0];
    assert_eq!(e.master, ctl.master());
    assert_eq!(e.helper, "ftp");
    assert_eq!(e.expire, (T0 / S) as u32 + 300);
    assert_eq!(
        e.key.to_string(),
        "zone=1 proto=6 src=10.0.0.2 dst=10.0.0.1 sport=0 dport=5001"
    );
    ctl.server_says(b"200 PORT command successful\r\n");

    // The server connects from port 20: +new+rel, then +est+rel+rpl.
    let (s1, s2) = data_conn(&t, "10.0.0.2", "10.0.0.1", 20, 5001, 1, T0);
    assert_eq!(s1, st("new|rel|trk"));
    assert_eq!(s2, st("est|rel|rpl|trk"));
    assert!(t.expectations.is_empty(), "consumed by the commit");
    let data = t
        .dump(&FlushFilter::default(), T0)
        .into_iter()
        .find(|c| c.orig.dst_port == 5001)
        .unwrap();
    assert_eq!(data.master, Some(ctl.master()));
    assert_eq!(data.helper, None, "the data connection is not parsed");
    let text = data.to_string();
    assert!(
        text.contains(",master=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=21)"),
        "{text}"
    );
    let ctl_snap = t
        .dump(&FlushFilter::default(), T0)
        .into_iter()
        .find(|c| c.orig.dst_port == 21)
        .unwrap();
    assert!(ctl_snap.to_string().ends_with(",helper=ftp"), "{ctl_snap}");

    // A second data connection to the same port is not related any more.
    let (s1, _) = data_conn(&t, "10.0.0.2", "10.0.0.1", 21000, 5001, 1, T0);
    assert_eq!(s1, st("new|trk"));
}

#[test]
fn without_the_helper_nothing_is_expected() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, None);
    ctl.client_says(b"PORT 10,0,0,1,19,137\r\n");
    assert!(t.expectations.is_empty());
    let (s1, _) = data_conn(&t, "10.0.0.2", "10.0.0.1", 20, 5001, 1, T0);
    assert_eq!(s1, st("new|trk"));
}

#[test]
fn passive_pasv_and_epsv() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 0, Some("ftp"));
    ctl.client_says(b"PASV\r\n");
    assert!(t.expectations.is_empty(), "PASV itself announces nothing");
    ctl.server_says(b"227 Entering Passive Mode (10,0,0,2,195,80).\r\n");
    let (s1, s2) = data_conn(&t, "10.0.0.1", "10.0.0.2", 45000, 50000, 0, T0);
    assert_eq!((s1, s2), (st("new|rel|trk"), st("est|rel|rpl|trk")));

    ctl.client_says(b"EPSV\r\n");
    ctl.server_says(b"229 Entering Extended Passive Mode (|||6446|)\r\n");
    let (s1, _) = data_conn(&t, "10.0.0.1", "10.0.0.2", 45001, 6446, 0, T0);
    assert_eq!(s1, st("new|rel|trk"));
}

#[test]
fn ipv6_eprt_and_epsv() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "fd00::1", "fd00::2", 3, Some("ftp"));
    ctl.client_says(b"EPRT |2|fd00::1|6275|\r\n");
    let (s1, s2) = data_conn(&t, "fd00::2", "fd00::1", 20, 6275, 3, T0);
    assert_eq!((s1, s2), (st("new|rel|trk"), st("est|rel|rpl|trk")));
    ctl.server_says(b"229 Extended Passive (|||6446|)\r\n");
    let (s1, _) = data_conn(&t, "fd00::1", "fd00::2", 50123, 6446, 3, T0);
    assert_eq!(s1, st("new|rel|trk"));
    // IPv4 EPRT on an IPv6 control connection: ignored.
    ctl.client_says(b"EPRT |1|10.0.0.1|6276|\r\n");
    assert!(t.expectations.is_empty());
}

#[test]
fn foreign_address_is_not_expected() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 0, Some("ftp"));
    // FTP bounce: the client names a third host.
    ctl.client_says(b"PORT 10,0,0,99,19,137\r\n");
    ctl.server_says(b"227 Entering Passive Mode (10,0,0,77,195,80).\r\n");
    assert!(t.expectations.is_empty());
}

#[test]
fn expectations_are_zone_scoped() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
    ctl.client_says(b"PORT 10,0,0,1,19,137\r\n");
    let (s1, _) = data_conn(&t, "10.0.0.2", "10.0.0.1", 20, 5001, 2, T0);
    assert_eq!(s1, st("new|trk"), "other zone");
    assert_eq!(t.expectations.len(), 1);
    let (s1, _) = data_conn(&t, "10.0.0.2", "10.0.0.1", 20, 5001, 1, T0);
    assert_eq!(s1, st("new|rel|trk"));
}

#[test]
fn uncommitted_peek_keeps_the_expectation() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
    ctl.client_says(b"PORT 10,0,0,1,19,137\r\n");
    let syn = Builder::ip("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap())
        .tcp(&Tcp::new(20, 5001).seq(1).flags(SYN));
    assert_eq!(
        exec(&t, &syn, &params(1, false, None), T0).state,
        st("new|rel|trk")
    );
    assert_eq!(t.expectations.len(), 1);
    assert_eq!(
        exec(&t, &syn, &params(1, true, None), T0).state,
        st("new|rel|trk")
    );
    assert!(t.expectations.is_empty());
}

#[test]
fn one_pending_expectation_per_master() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
    ctl.client_says(b"PORT 10,0,0,1,19,137\r\n");
    ctl.client_says(b"PORT 10,0,0,1,19,138\r\n");
    assert_eq!(t.expectations.len(), 1);
    assert_eq!(t.expectations.list()[0].key.dst_port, 5002);
    let (s1, _) = data_conn(&t, "10.0.0.2", "10.0.0.1", 20, 5001, 1, T0);
    assert_eq!(s1, st("new|trk"), "the older one was evicted");
    // A second control connection has its own.
    let mut other = Ctl::open(&t, "10.0.0.3", "10.0.0.2", 1, Some("ftp"));
    other.client_says(b"PORT 10,0,0,3,19,137\r\n");
    assert_eq!(t.expectations.len(), 2);
    // The same announcement again (a second ct pass, a retransmission)
    // refreshes rather than adds.
    other.cseq -= 22;
    other.client_says(b"PORT 10,0,0,3,19,137\r\n");
    assert_eq!(t.expectations.len(), 2);
}

#[test]
fn expectations_time_out() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
    ctl.client_says(b"PORT 10,0,0,1,19,137\r\n");
    let late = T0 + 301 * S;
    let (s1, _) = data_conn(&t, "10.0.0.2", "10.0.0.1", 20, 5001, 1, late);
    assert_eq!(s1, st("new|trk"), "expired");
    ctl.client_says(b"PORT 10,0,0,1,19,139\r\n");
    assert_eq!(t.expectations.len(), 1);
    t.sweep(T0 + 299 * S, 1 << 20);
    assert_eq!(t.expectations.len(), 1, "not yet");
    t.sweep(T0 + 301 * S, 1 << 20);
    assert!(t.expectations.is_empty(), "the sweep drops it");
}

#[test]
fn deleting_the_master_drops_its_expectations() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
    ctl.client_says(b"PORT 10,0,0,1,19,137\r\n");
    assert_eq!(t.expectations.len(), 1);
    t.flush(&FlushFilter::default(), T0);
    assert!(t.expectations.is_empty());
}

#[test]
fn data_stream_text_is_not_parsed() {
    let t = Tracker::default();
    let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
    ctl.server_says(b"227 Entering Passive Mode (10,0,0,2,195,80).\r\n");
    let (s1, _) = data_conn(&t, "10.0.0.1", "10.0.0.2", 45000, 50000, 1, T0);
    assert_eq!(s1, st("new|rel|trk"));
    let ack = Builder::ip("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        .tcp(&Tcp::new(45000, 50000).seq(51).ack(91).flags(ACK));
    assert_eq!(
        exec(&t, &ack, &params(1, false, None), T0).state,
        st("est|rel|trk")
    );
    // The file being transferred contains an announcement.
    let seg = Builder::ip("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()).tcp(
        &Tcp::new(50000, 45000)
            .seq(91)
            .ack(51)
            .flags(ACK | PSH)
            .payload(b"227 Entering Passive Mode (10,0,0,2,1,1).\r\n"),
    );
    assert_eq!(
        exec(&t, &seg, &params(1, false, None), T0).state,
        st("est|rel|rpl|trk")
    );
    assert!(t.expectations.is_empty());
}

#[test]
fn tftp_request_expects_the_reply_from_a_new_port() {
    let t = Tracker::default();
    let c = Builder::ip("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let rrq = c.udp(3333, 69, b"\x00\x01file.bin\x00octet\x00");
    assert_eq!(
        exec(&t, &rrq, &params(4, true, Some("tftp")), T0).state,
        st("new|trk")
    );
    assert_eq!(t.expectations.len(), 1);
    assert_eq!(
        t.expectations.list()[0].key,
        ExpectKey::of(&ConnKey::v4(
            Zone(4),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            ipproto::UDP,
            0,
            3333
        ))
    );
    let data = c.reversed().udp(49152, 3333, b"\x00\x03\x00\x01hello");
    assert_eq!(
        exec(&t, &data, &params(4, true, None), T0).state,
        st("new|rel|trk")
    );
    let ack = c.udp(3333, 49152, b"\x00\x04\x00\x01");
    assert_eq!(
        exec(&t, &ack, &params(4, false, None), T0).state,
        st("est|rel|rpl|trk")
    );
    // Only requests announce; an uncommitted request creates nothing.
    let t2 = Tracker::default();
    exec(&t2, &rrq, &params(4, false, Some("tftp")), T0);
    exec(
        &t2,
        &c.udp(3334, 69, b"\x00\x05\x00\x00err\x00"),
        &params(4, true, Some("tftp")),
        T0,
    );
    assert!(t2.expectations.is_empty());
}

#[test]
fn tftp_ipv6() {
    let t = Tracker::default();
    let c = Builder::ip("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    let wrq = c.udp(3333, 69, b"\x00\x02up.bin\x00octet\x00");
    exec(&t, &wrq, &params(0, true, Some("tftp")), T0);
    let ack = c.reversed().udp(50000, 3333, b"\x00\x04\x00\x00");
    assert_eq!(
        exec(&t, &ack, &params(0, true, None), T0).state,
        st("new|rel|trk")
    );
}

#[test]
fn inspect_reports_the_announcement_for_nat() {
    let t = Tracker::default();
    let ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
    let text = b"PORT 10,0,0,1,19,137\r\n";
    let pkt = ctl.c2s.tcp(
        &Tcp::new(ctl.cport, ctl.sport)
            .seq(ctl.cseq)
            .ack(ctl.sseq)
            .flags(ACK | PSH)
            .payload(text),
    );
    let cp = CtPacket {
        l3: &pkt,
        family: crate::Family::Ipv4,
        flags: PktFlags::empty(),
    };
    let info = crate::packet::parse(&cp, Zone(1));
    let conn = {
        let h = t.hash(&info.key);
        let shard = t.lock_shard(h.shard);
        let (slot, _) = shard.lookup(&info.key, h.hash).unwrap();
        shard.get(slot).unwrap().clone()
    };
    match super::inspect(
        "ftp",
        &conn,
        crate::Dir::Orig,
        &cp,
        &info,
        1000,
        &t.expectations,
    ) {
        super::AlgOutcome::Expected {
            ftp: Some(cmd),
            payload_off,
            ..
        } => {
            assert_eq!(payload_off, 40);
            assert_eq!(&pkt[payload_off..][cmd.span], b"10,0,0,1,19,137");
        }
        other => panic!("{other:?}"),
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Arbitrary control-channel bytes, either way, never panic and
        /// never expect a connection towards anyone but the sender.
        #[test]
        fn garbage_on_the_control_channel(
            segs in proptest::collection::vec(
                (any::<bool>(), prop_oneof![
                    proptest::collection::vec(any::<u8>(), 1..120),
                    "(PORT|EPRT|227|229|port) [0-9,|().:a-f]{0,40}\r\n".prop_map(String::into_bytes),
                ]),
                1..8,
            ),
        ) {
            let t = Tracker::default();
            let mut ctl = Ctl::open(&t, "10.0.0.1", "10.0.0.2", 1, Some("ftp"));
            for (from_client, bytes) in &segs {
                let r = if *from_client { ctl.client_says(bytes) } else { ctl.server_says(bytes) };
                prop_assert!(r.state.contains(CtState::EST), "{:?}", r.state);
                prop_assert!(t.expectations.len() <= 1, "one per master");
                for e in t.expectations.list() {
                    let (c, s) = (ctl.c2s_addrs().0, ctl.c2s_addrs().1);
                    let dst = crate::expect::ip_of(e.key.family, &e.key.dst);
                    let src = crate::expect::ip_of(e.key.family, &e.key.src);
                    prop_assert!((dst, src) == (c, s) || (dst, src) == (s, c), "{e:?}");
                    prop_assert!(e.key.dst_port != 0);
                }
            }
        }
    }
}
