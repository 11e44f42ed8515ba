//! Application-level gateways (ALGs): helpers that read a connection's
//! payload to learn which connections it is about to open, and register
//! those as expectations ([`crate::expect`]).
//!
//! A connection gets a helper when the `ct` action that commits it names
//! one (`ct(commit,alg=ftp)`, [`crate::CtParams::helper`]). From then on,
//! every accepted packet of that connection, on every `ct` pass, goes
//! through [`inspect`]: announcing the same thing twice (a second `ct`
//! pass, a retransmission) refreshes the same expectation. Helpers:
//!
//! - `ftp` ([`ftp`]): PORT/EPRT from the client (active mode) expect the
//!   server's data connection, from the server's address and any source
//!   port, to the announced client address and port; 227/229 replies from
//!   the server (passive mode) expect the client's data connection to the
//!   announced server address and port. The announced address must be the
//!   sender's own (Linux's default, `loose=0`): an FTP client cannot open a
//!   hole towards a third host (the "FTP bounce"). An EPRT of the other
//!   address family than the control connection is ignored.
//! - `tftp` ([`tftp`]): a read/write request expects the server's answer
//!   from any port.
//!
//! Expectation policy, as Linux's helpers: one pending expectation per
//! master (a newer announcement evicts the older), valid for 300 s.
//!
//! The connection created from an expectation is related: its first packet
//! is `+trk+new+rel`, and all its later packets in either direction carry
//! `+rel` too (`+est+rel`, `+est+rel+rpl`), as in OVS (the kernel datapath
//! reports `+rel` for every packet of a connection that has a master; the
//! userspace one for every packet of an ALG-related connection). It
//! records its master's tuple (`ConnExt::master`) and has no helper of its
//! own, so an FTP data stream is never parsed for commands. Deleting the
//! master deletes its pending expectations, not its related connections.
//!
//! # NAT
//!
//! A helper connection that is NATed (committed with `alg=ftp,nat(...)`)
//! is handled as Linux's `nf_nat_ftp` + `nf_nat_follow_master` (and OVS
//! userspace conntrack's ALG NAT) do it:
//!
//! 1. [`inspect`] still reads the packet as it reached `ct` (before NAT):
//!    the sender-address check is in the untranslated space. The
//!    expectation, though, describes the data connection's first packet as
//!    it will reach `ct`, and carries the mapping back
//!    ([`crate::expect::ExpectNat`]):
//!    - the sender is hidden by NAT (PORT/EPRT from an SNATed client,
//!      227/229 from a DNATed server): the announcement must name the
//!      translated address; the expectation is for that address and the
//!      announced port (or the next of [`PORT_TRIES`] ports, when another
//!      master expects it already), and maps the data connection's
//!      destination back to the real address and port (DNAT);
//!    - the receiver is hidden (PASV to an SNATed client, PORT to a
//!      DNATed server): nothing to rewrite; the expectation is for the
//!      receiver's real address and maps the data connection's source to
//!      the address the sender knows it by (SNAT, port kept when free).
//!
//!    TFTP follows the same rule for its answer.
//! 2. The related connection gets that translation when it is committed
//!    with `nat` — bare `nat` is enough, as in OVS (`ct(commit,nat)` on
//!    `+rel+new`); a `ct` without `nat` commits it untranslated.
//! 3. On a `ct` pass with `nat`, the packet carrying a rewritten
//!    announcement gets [`edit::AlgEdit`] in [`crate::CtResult::alg`]: the
//!    datapath rewrites the text ([`edit::apply`]: the packet grows or
//!    shrinks, IP length and checksums are fixed), and the length change
//!    is recorded in the connection's [`crate::seqadj::SeqAdj`] (in the
//!    boxed `ConnExt`, so `Conn` does not grow).
//! 4. Every later packet of the connection, both directions, on `ct`
//!    passes with `nat`, carries the shifts too: seq in the resized
//!    direction, ack/SACK in the other, applied after the NAT header
//!    rewrite.
//! 5. The TCP window tracker sees each sender's own numbering but
//!    acknowledgements of the other side's shifted stream: it maps acks
//!    back through the shift first (as Linux's `tcp_in_window` subtracts
//!    the seqadj offset), so a long session after a resized PORT stays
//!    valid.
//!
//! Differences from Linux, on purpose or for now: the data connection's
//! port is not checked against existing connections (only against other
//! pending expectations); an announcement split across segments is not
//! seen at all (as before NAT); a retransmitted announcement is rewritten
//! again but shifts nothing twice ([`crate::seqadj`]).

pub mod edit;
pub mod ftp;
pub mod ftp_nat;
pub mod tftp;

use std::ops::Range;

use crate::conn::{Conn, ConnStatus};
use crate::expect::{ExpectError, ExpectKey, ExpectNat, ExpectTable, Expectation};
use crate::key::{ipproto, ConnKey, Dir, Family};
use crate::nat::{self, NatKind};
use crate::packet::{self, CtPacket, L4Info, PacketInfo};
use edit::PayloadEdit;

/// How many expectations a helper may have pending per master, and for how
/// long each is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectPolicy {
    pub max_per_master: usize,
    pub timeout_s: u32,
}

/// A known helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Helper {
    Ftp,
    Tftp,
}

impl Helper {
    /// The helper called `name` (`alg=` in a `ct` action).
    pub fn from_name(name: &str) -> Option<Helper> {
        match name {
            "ftp" => Some(Helper::Ftp),
            "tftp" => Some(Helper::Tftp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Helper::Ftp => "ftp",
            Helper::Tftp => "tftp",
        }
    }

    /// Linux's `nf_conntrack_ftp` / `nf_conntrack_tftp` policies.
    pub fn policy(self) -> ExpectPolicy {
        ExpectPolicy {
            max_per_master: 1,
            timeout_s: 300,
        }
    }
}

/// Why a packet's announcement created no expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// The announced address is not the sender's (or of the other family).
    ForeignAddress,
    /// The table refused it.
    Refused(ExpectError),
}

/// What [`inspect`] did with one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlgOutcome {
    /// Nothing announced (or not a helper this build knows).
    Nothing,
    /// An expectation was registered (or refreshed).
    Expected {
        expectation: Expectation,
        /// The FTP announcement (None for TFTP).
        ftp: Option<ftp::FtpCmd>,
        /// Where the L4 payload starts in `CtPacket::l3` (the FTP span is
        /// relative to it).
        payload_off: usize,
        /// NATed control connection: the announcement to write instead
        /// (the translated address and the port the expectation holds).
        rewrite: Option<PayloadEdit>,
    },
    /// An announcement was found but not honoured.
    Ignored(Ignored),
}

/// Run the connection's helper on one accepted packet travelling in `dir`.
pub fn inspect(
    helper: &str,
    conn: &Conn,
    dir: Dir,
    pkt: &CtPacket<'_>,
    info: &PacketInfo,
    now_s: u32,
    table: &ExpectTable,
) -> AlgOutcome {
    match Helper::from_name(helper) {
        Some(Helper::Ftp) => inspect_ftp(conn, dir, pkt, info, now_s, table),
        Some(Helper::Tftp) => inspect_tftp(conn, dir, pkt, info, now_s, table),
        None => AlgOutcome::Nothing,
    }
}

fn inspect_ftp(
    conn: &Conn,
    dir: Dir,
    pkt: &CtPacket<'_>,
    info: &PacketInfo,
    now_s: u32,
    table: &ExpectTable,
) -> AlgOutcome {
    let Some((off, payload)) = l4_payload(pkt, info) else {
        return AlgOutcome::Nothing;
    };
    if payload.is_empty() || info.key.proto != ipproto::TCP {
        return AlgOutcome::Nothing;
    }
    let Some(cmd) = ftp::find(payload, dir == Dir::Orig) else {
        return AlgOutcome::Nothing;
    };
    // The packet as it is: sender and receiver of the announcement.
    let k = &info.key;
    let dst = match cmd.addr {
        None => k.src,
        Some(a) => match (a, k.family) {
            (std::net::IpAddr::V4(v4), Family::Ipv4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                b
            }
            (std::net::IpAddr::V6(v6), Family::Ipv6) => v6.octets(),
            _ => return AlgOutcome::Ignored(Ignored::ForeignAddress),
        },
    };
    if dst != k.src {
        return AlgOutcome::Ignored(Ignored::ForeignAddress);
    }
    // The packet as NAT delivers it (`t`, the same as `k` without NAT):
    // the data connection comes from the receiver's real address `t.dst`.
    let t = if conn
        .status
        .intersects(ConnStatus::SRC_NAT | ConnStatus::DST_NAT)
    {
        nat::target(&conn.key, &conn.reply_key(), dir)
    } else {
        *k
    };
    let key = ExpectKey {
        zone: conn.key.zone,
        family: k.family,
        proto: ipproto::TCP,
        src: t.dst,
        dst,
        dst_port: cmd.port,
    };
    if t.src != k.src {
        // The sender is hidden by NAT: the announcement must name its
        // translated address, and the data connection to that address is
        // mapped back to the real one. The port stays when no other
        // master expects it already, else the next free one is taken (as
        // Linux's FTP NAT helper does).
        let nat = ExpectNat {
            kind: NatKind::Dst,
            addr: k.src,
            port: Some(cmd.port),
        };
        let mut last = AlgOutcome::Nothing;
        for step in 0..PORT_TRIES {
            let port = cmd.port.wrapping_add(step);
            if port == 0 {
                continue;
            }
            let key = ExpectKey {
                dst: t.src,
                dst_port: port,
                ..key
            };
            let Some(rewrite) = PayloadEdit::new(&cmd, off, t.src_ip(), port) else {
                return AlgOutcome::Nothing;
            };
            last = register(
                Helper::Ftp,
                key,
                Some(nat),
                conn,
                now_s,
                table,
                Some(cmd.clone()),
                off,
                Some(rewrite),
            );
            if !matches!(
                last,
                AlgOutcome::Ignored(Ignored::Refused(ExpectError::Clash { .. }))
            ) {
                break;
            }
        }
        return last;
    }
    // The receiver is hidden by NAT: its data connection must look as if
    // it came from the address the sender knows it by.
    let nat = (t.dst != k.dst).then_some(ExpectNat {
        kind: NatKind::Src,
        addr: k.dst,
        port: None,
    });
    register(
        Helper::Ftp,
        key,
        nat,
        conn,
        now_s,
        table,
        Some(cmd),
        off,
        None,
    )
}

/// Ports tried for a translated FTP announcement (its own, then the next
/// ones) before giving up.
pub const PORT_TRIES: u16 = 16;

fn inspect_tftp(
    conn: &Conn,
    dir: Dir,
    pkt: &CtPacket<'_>,
    info: &PacketInfo,
    now_s: u32,
    table: &ExpectTable,
) -> AlgOutcome {
    if dir != Dir::Orig || info.key.proto != ipproto::UDP {
        return AlgOutcome::Nothing;
    }
    let Some((off, payload)) = l4_payload(pkt, info) else {
        return AlgOutcome::Nothing;
    };
    if !tftp::is_request(payload) {
        return AlgOutcome::Nothing;
    }
    // The answer travels like the reply direction, from any server port.
    let reply = conn.reply_key();
    let key = ExpectKey {
        zone: conn.key.zone,
        family: reply.family,
        proto: ipproto::UDP,
        src: reply.src,
        dst: reply.dst,
        dst_port: reply.dst_port,
    };
    register(
        Helper::Tftp,
        key,
        follow_reply(conn),
        conn,
        now_s,
        table,
        None,
        off,
        None,
    )
}

/// The mapping a connection expected "like the reply direction" (TFTP's
/// answer) needs under the master's NAT: SNAT hid the client, so the
/// answer's destination goes back to it; DNAT hid the server, so the
/// answer's source becomes the address the client asked.
fn follow_reply(conn: &Conn) -> Option<ExpectNat> {
    let k: &ConnKey = &conn.key;
    if conn.status.contains(ConnStatus::SRC_NAT) {
        Some(ExpectNat {
            kind: NatKind::Dst,
            addr: k.src,
            port: Some(k.src_port),
        })
    } else if conn.status.contains(ConnStatus::DST_NAT) {
        Some(ExpectNat {
            kind: NatKind::Src,
            addr: k.dst,
            port: None,
        })
    } else {
        None
    }
}

#[allow(clippy::too_many_arguments)]
fn register(
    helper: Helper,
    key: ExpectKey,
    nat: Option<ExpectNat>,
    conn: &Conn,
    now_s: u32,
    table: &ExpectTable,
    ftp: Option<ftp::FtpCmd>,
    payload_off: usize,
    rewrite: Option<PayloadEdit>,
) -> AlgOutcome {
    let policy = helper.policy();
    let e = Expectation {
        key,
        master: conn.key,
        helper: helper.name(),
        expire: now_s.saturating_add(policy.timeout_s),
        nat,
    };
    match table.add(e.clone(), policy.max_per_master) {
        Ok(_) => AlgOutcome::Expected {
            expectation: e,
            ftp,
            payload_off,
            rewrite,
        },
        Err(err) => AlgOutcome::Ignored(Ignored::Refused(err)),
    }
}

/// The L4 payload of a parsed, valid TCP or UDP packet: its offset in
/// `pkt.l3` and its bytes (TCP: after the header and options; UDP: after
/// the 8-byte header, up to the UDP length). None for other protocols or
/// inconsistent bytes.
pub fn l4_payload<'a>(pkt: &CtPacket<'a>, info: &PacketInfo) -> Option<(usize, &'a [u8])> {
    let l3 = pkt.l3;
    let ip = ip_span(pkt)?;
    match info.l4 {
        L4Info::Tcp(seg) => {
            let start = ip.end.checked_sub(seg.payload_len as usize)?;
            Some((start, l3.get(start..ip.end)?))
        }
        L4Info::Plain if info.key.proto == ipproto::UDP => {
            let h = l3.get(ip.start..)?.first_chunk::<8>()?;
            let ulen = u16::from_be_bytes([h[4], h[5]]) as usize;
            let start = ip.start + 8;
            let end = ip.start.checked_add(ulen)?.min(ip.end);
            Some((start, l3.get(start..end)?))
        }
        _ => None,
    }
}

/// Offset of the L4 header and end of the IP payload in `pkt.l3`.
pub(crate) fn ip_span(pkt: &CtPacket<'_>) -> Option<Range<usize>> {
    let l3 = pkt.l3;
    match pkt.family {
        Family::Ipv4 => {
            let h = l3.first_chunk::<20>()?;
            let ihl = (h[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            (ihl <= total && total <= l3.len()).then_some(ihl..total)
        }
        Family::Ipv6 => {
            let h = l3.first_chunk::<40>()?;
            let end = 40 + u16::from_be_bytes([h[4], h[5]]) as usize;
            if end > l3.len() {
                return None;
            }
            let off = match h[6] {
                ipproto::TCP | ipproto::UDP => 40,
                nh => packet::walk_v6(l3, end, nh).ok()?.off,
            };
            (off <= end).then_some(off..end)
        }
    }
}

#[cfg(test)]
mod tests;
