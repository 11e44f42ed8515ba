//! FTP and TFTP helpers through the whole switch: OVS-style flows commit
//! the control connection with `alg=ftp` / `alg=tftp`, and the data
//! connection is admitted only because it is `+rel`.
//!
//! Port 1 is the inside (client 10.0.0.1), port 2 the outside (server
//! 192.0.2.9). The inside may open FTP control and TFTP connections only;
//! anything else new, from either side, passes only when related.

use ct::packet::tcp_flags::{ACK, PSH, SYN};
use ferrovs_tests::{frame, Builder, Harness, Tcp};

const CLIENT: &str = "10.0.0.1";
const SERVER: &str = "192.0.2.9";

fn alg_firewall(ftp_alg: &str, tftp_alg: &str) -> String {
    format!(
        "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=20,tcp,tp_dst=21,ct_state=+trk+new-inv,actions=ct(commit,zone=1{ftp_alg}),output:2
table=1,priority=20,udp,tp_dst=69,ct_state=+trk+new-inv,actions=ct(commit,zone=1{tftp_alg}),output:2
table=1,priority=15,ip,ct_state=+trk+rel-inv,actions=ct(commit,zone=1),output:2
table=1,priority=10,ip,ct_state=+trk+est-inv,actions=output:2
table=2,priority=15,ip,ct_state=+trk+rel-inv,actions=ct(commit,zone=1),output:1
table=2,priority=10,ip,ct_state=+trk+est-inv,actions=output:1
"
    )
}

fn with_alg() -> String {
    alg_firewall(",alg=ftp", ",alg=tftp")
}

fn without_alg() -> String {
    alg_firewall("", "")
}

fn c2s() -> Builder {
    Builder::v4(CLIENT.parse().unwrap(), SERVER.parse().unwrap())
}

/// The FTP control connection, with valid sequence numbers.
struct Control {
    cseq: u32,
    sseq: u32,
}

const CPORT: u16 = 40000;

impl Control {
    fn open(h: &mut Harness) -> Control {
        let syn = c2s().tcp(&Tcp::new(CPORT, 21).flags(SYN).seq(100).win(64000));
        assert_eq!(Harness::ports_of(&h.inject(1, &frame(1, 2, &syn))), vec![2]);
        let synack = c2s().reversed().tcp(
            &Tcp::new(21, CPORT)
                .flags(SYN | ACK)
                .seq(5000)
                .ack(101)
                .win(64000),
        );
        assert_eq!(
            Harness::ports_of(&h.inject(2, &frame(2, 1, &synack))),
            vec![1]
        );
        let ack = c2s().tcp(&Tcp::new(CPORT, 21).flags(ACK).seq(101).ack(5001).win(64000));
        assert_eq!(Harness::ports_of(&h.inject(1, &frame(1, 2, &ack))), vec![2]);
        Control {
            cseq: 101,
            sseq: 5001,
        }
    }

    fn client_says(&mut self, h: &mut Harness, text: &[u8]) {
        let p = c2s().tcp(
            &Tcp::new(CPORT, 21)
                .flags(ACK | PSH)
                .seq(self.cseq)
                .ack(self.sseq)
                .win(64000)
                .payload(text),
        );
        self.cseq += text.len() as u32;
        let f = frame(1, 2, &p);
        let out = h.inject(1, &f);
        assert_eq!(Harness::ports_of(&out), vec![2]);
        assert_eq!(out[0].1, f, "control payload forwarded unchanged");
    }

    fn server_says(&mut self, h: &mut Harness, text: &[u8]) {
        let p = c2s().reversed().tcp(
            &Tcp::new(21, CPORT)
                .flags(ACK | PSH)
                .seq(self.sseq)
                .ack(self.cseq)
                .win(64000)
                .payload(text),
        );
        self.sseq += text.len() as u32;
        assert_eq!(Harness::ports_of(&h.inject(2, &frame(2, 1, &p))), vec![1]);
    }
}

/// Open a TCP data connection from `from_port` (1 or 2) and push one data
/// segment each way; returns the ports each of the four packets left by
/// (empty = dropped).
fn data_connection(h: &mut Harness, from_port: u32, sport: u16, dport: u16) -> Vec<Vec<u32>> {
    let (b, to_port) = if from_port == 1 {
        (c2s(), 2)
    } else {
        (c2s().reversed(), 1)
    };
    let a = Tcp::new(sport, dport).win(64000);
    let z = Tcp::new(dport, sport).win(64000);
    let pkts = [
        (from_port, b.tcp(&a.clone().flags(SYN).seq(10))),
        (
            to_port,
            b.reversed()
                .tcp(&z.clone().flags(SYN | ACK).seq(900).ack(11)),
        ),
        (from_port, b.tcp(&a.clone().flags(ACK).seq(11).ack(901))),
        (
            to_port,
            b.reversed()
                .tcp(&z.flags(ACK | PSH).seq(901).ack(11).payload(b"file data")),
        ),
    ];
    pkts.iter()
        .map(|(port, l3)| {
            let other = if *port == 1 { 2 } else { 1 };
            Harness::ports_of(&h.inject(*port, &frame(*port, other, l3)))
        })
        .collect()
}

#[test]
fn active_ftp_data_connection_is_admitted_because_related() {
    let mut h = Harness::new(&[1, 2], &with_alg());
    let mut ctl = Control::open(&mut h);
    ctl.client_says(&mut h, b"PORT 10,0,0,1,19,137\r\n");
    ctl.server_says(&mut h, b"200 PORT command successful.\r\n");
    ctl.client_says(&mut h, b"RETR file\r\n");
    // The server connects back from port 20 to 10.0.0.1:5001.
    assert_eq!(
        data_connection(&mut h, 2, 20, 5001),
        vec![vec![1], vec![2], vec![1], vec![2]]
    );
    let ct = h.dump_conntrack();
    let data = ct
        .iter()
        .find(|l| l.contains("dport=5001"))
        .unwrap_or_else(|| panic!("{ct:?}"));
    assert!(
        data.contains("master=(src=10.0.0.1,dst=192.0.2.9,sport=40000,dport=21)"),
        "{data}"
    );
    assert!(
        ct.iter()
            .any(|l| l.contains("dport=21") && l.contains("helper=ftp")),
        "{ct:?}"
    );
    // A further connection to the same port, not announced: dropped.
    assert_eq!(data_connection(&mut h, 2, 20, 5002)[0], Vec::<u32>::new());
}

#[test]
fn active_ftp_without_the_helper_is_blocked() {
    let mut h = Harness::new(&[1, 2], &without_alg());
    let mut ctl = Control::open(&mut h);
    ctl.client_says(&mut h, b"PORT 10,0,0,1,19,137\r\n");
    assert_eq!(
        data_connection(&mut h, 2, 20, 5001)[0],
        Vec::<u32>::new(),
        "SYN from the server dropped"
    );
}

#[test]
fn passive_ftp_data_connection_is_admitted_because_related() {
    let mut h = Harness::new(&[1, 2], &with_alg());
    let mut ctl = Control::open(&mut h);
    // Before the server announces: the inside may not open port 50000.
    assert_eq!(
        data_connection(&mut h, 1, 45000, 50000)[0],
        Vec::<u32>::new()
    );
    ctl.client_says(&mut h, b"PASV\r\n");
    ctl.server_says(&mut h, b"227 Entering Passive Mode (192,0,2,9,195,80).\r\n");
    assert_eq!(
        data_connection(&mut h, 1, 45001, 50000),
        vec![vec![2], vec![1], vec![2], vec![1]]
    );
    // EPSV in the same session.
    ctl.client_says(&mut h, b"EPSV\r\n");
    ctl.server_says(&mut h, b"229 Entering Extended Passive Mode (|||6446|)\r\n");
    assert_eq!(data_connection(&mut h, 1, 45002, 6446)[0], vec![2]);
}

#[test]
fn passive_ftp_without_the_helper_is_blocked() {
    let mut h = Harness::new(&[1, 2], &without_alg());
    let mut ctl = Control::open(&mut h);
    ctl.client_says(&mut h, b"PASV\r\n");
    ctl.server_says(&mut h, b"227 Entering Passive Mode (192,0,2,9,195,80).\r\n");
    assert_eq!(
        data_connection(&mut h, 1, 45001, 50000)[0],
        Vec::<u32>::new()
    );
}

#[test]
fn tftp_reply_from_a_new_port_is_admitted_because_related() {
    for (flows, admitted) in [(with_alg(), true), (without_alg(), false)] {
        let mut h = Harness::new(&[1, 2], &flows);
        let rrq = c2s().udp(3333, 69, b"\x00\x01file.bin\x00octet\x00");
        assert_eq!(Harness::ports_of(&h.inject(1, &frame(1, 2, &rrq))), vec![2]);
        let data = c2s().reversed().udp(49152, 3333, b"\x00\x03\x00\x01hello");
        let out = Harness::ports_of(&h.inject(2, &frame(2, 1, &data)));
        let ack = c2s().udp(3333, 49152, b"\x00\x04\x00\x01");
        let back = Harness::ports_of(&h.inject(1, &frame(1, 2, &ack)));
        if admitted {
            assert_eq!((out, back), (vec![1], vec![2]));
        } else {
            assert_eq!(
                out,
                Vec::<u32>::new(),
                "no helper: the reply is new, dropped"
            );
        }
    }
}

#[test]
fn expectations_are_scoped_to_the_zone_of_the_master() {
    // Same flows, but the outside looks up zone 2: the expectation (zone 1)
    // does not match there.
    let flows = with_alg().replace(
        "table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)",
        "table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=2)",
    );
    let mut h = Harness::new(&[1, 2], &flows);
    let rrq = c2s().udp(3333, 69, b"\x00\x01file.bin\x00octet\x00");
    h.inject(1, &frame(1, 2, &rrq));
    assert_eq!(h.sw.ct.expectations.len(), 1);
    let data = c2s().reversed().udp(49152, 3333, b"\x00\x03\x00\x01hello");
    assert!(h.inject(2, &frame(2, 1, &data)).is_empty());
    assert_eq!(h.sw.ct.expectations.len(), 1, "still pending");
}
