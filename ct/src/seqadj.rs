//! TCP sequence-number adjustment after an ALG resized a segment.
//!
//! When NAT rewrites an FTP announcement to a text of another length
//! ([`crate::alg::ftp_nat`]), the sender's byte stream as the receiver sees
//! it is longer or shorter than as the sender wrote it. From then on, every
//! segment the sender sends must have its sequence number shifted by the
//! accumulated delta, and every segment the receiver sends back must have
//! its acknowledgement number (and SACK block edges) shifted the other way,
//! for the rest of the connection.
//!
//! Retransmissions: a direction keeps two offsets, the one in force before
//! the most recent resize and the one after, and the sequence number at
//! which that resize happened. A segment starting at or before that point
//! (a retransmission of the resized segment, or older data) gets the older
//! offset; a segment after it gets the newer one. Resizing the same
//! segment again (the ALG sees the retransmission and rewrites it the same
//! way) does not count twice. This is the model of Linux's
//! `nf_ct_seqadj_set` / `nf_ct_seq_adjust`: like Linux, only the latest
//! resize point is remembered, so a retransmission of data before an
//! earlier resize is shifted by the older offset only (rare: it needs two
//! resized segments in flight at once).
//!
//! Sequence numbers compare modulo 2^32 (RFC 1982 style), so the state
//! survives wraparound.

use std::fmt;

use crate::key::Dir;

/// `a` is later than `b` in sequence space.
#[inline]
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The shift of one direction's sequence numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqShift {
    /// Original (sender's) sequence number of the most recently resized
    /// segment.
    pub pos: u32,
    /// Offset for segments at or before `pos`.
    pub before: i32,
    /// Offset for segments after `pos`.
    pub after: i32,
}

impl SeqShift {
    /// Offset for a sender-side sequence number.
    #[inline]
    fn for_seq(&self, seq: u32) -> i32 {
        if after(seq, self.pos) {
            self.after
        } else {
            self.before
        }
    }

    /// Offset for a receiver-side (already shifted) sequence number, such
    /// as an acknowledgement or SACK edge.
    #[inline]
    fn for_shifted(&self, v: u32) -> i32 {
        if after(v.wrapping_sub(self.before as u32), self.pos) {
            self.after
        } else {
            self.before
        }
    }
}

/// Sequence adjustment state of one connection (both directions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqAdj {
    /// Indexed by [`Dir::index`]: the shift of the sequence numbers that
    /// direction's sender emits.
    pub shift: [SeqShift; 2],
}

/// A TCP header too short for what it claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncatedTcp;

impl fmt::Display for TruncatedTcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TCP header truncated")
    }
}

impl std::error::Error for TruncatedTcp {}

impl SeqAdj {
    /// Whether any segment was resized (else there is nothing to adjust).
    pub fn is_active(&self) -> bool {
        self.shift != [SeqShift::default(); 2]
    }

    /// Record that the segment of `dir` whose original sequence number is
    /// `seq` had its payload resized by `delta` bytes. Returns whether the
    /// state changed: a resize at or before the latest recorded position
    /// (a retransmission) is not recorded again, nor is a zero delta.
    pub fn record(&mut self, dir: Dir, seq: u32, delta: i32) -> bool {
        if delta == 0 {
            return false;
        }
        let s = &mut self.shift[dir.index()];
        if s.before == s.after || after(seq, s.pos) {
            s.pos = seq;
            s.before = s.after;
            s.after = s.after.wrapping_add(delta);
            true
        } else {
            false
        }
    }

    /// The sequence number to send for a segment of `dir` the sender
    /// numbered `seq`.
    #[inline]
    pub fn seq(&self, dir: Dir, seq: u32) -> u32 {
        seq.wrapping_add(self.shift[dir.index()].for_seq(seq) as u32)
    }

    /// The acknowledgement number to send for a segment of `dir` carrying
    /// `ack` (it acknowledges the other direction's shifted stream).
    #[inline]
    pub fn ack(&self, dir: Dir, ack: u32) -> u32 {
        let other = &self.shift[dir.other().index()];
        ack.wrapping_sub(other.for_shifted(ack) as u32)
    }

    /// Adjust a TCP header in place (`tcp` starts at the TCP header):
    /// sequence number, acknowledgement number when ACK is set, and SACK
    /// block edges; the checksum is updated incrementally (RFC 1624), so it
    /// stays valid if it was. Callers that leave the checksum to the NIC
    /// (partial checksum) must recompute instead. Returns whether anything
    /// changed.
    pub fn apply(&self, dir: Dir, tcp: &mut [u8]) -> Result<bool, TruncatedTcp> {
        if tcp.len() < 20 {
            return Err(TruncatedTcp);
        }
        let hlen = (tcp[12] >> 4) as usize * 4;
        if hlen < 20 || hlen > tcp.len() {
            return Err(TruncatedTcp);
        }
        let mut csum = u16::from_be_bytes([tcp[16], tcp[17]]);
        let mut changed = false;
        let mut put = |tcp: &mut [u8], at: usize, new: u32, csum: &mut u16| {
            let old = read32(tcp, at);
            if old != new {
                tcp[at..at + 4].copy_from_slice(&new.to_be_bytes());
                *csum = csum_replace4(*csum, old, new);
                changed = true;
            }
        };
        let seq = read32(tcp, 4);
        put(tcp, 4, self.seq(dir, seq), &mut csum);
        if tcp[13] & crate::packet::tcp_flags::ACK != 0 {
            let ack = read32(tcp, 8);
            put(tcp, 8, self.ack(dir, ack), &mut csum);
        }
        // SACK blocks (option 5): edges are acknowledgement-space numbers.
        let mut at = 20;
        while at < hlen {
            match tcp[at] {
                0 => break,
                1 => at += 1,
                kind => {
                    let Some(&len) = tcp.get(at + 1).filter(|_| at + 1 < hlen) else {
                        break;
                    };
                    let len = len as usize;
                    if len < 2 || at + len > hlen {
                        break;
                    }
                    if kind == 5 && len >= 10 && (len - 2).is_multiple_of(8) {
                        let mut e = at + 2;
                        while e + 4 <= at + len {
                            let v = read32(tcp, e);
                            put(tcp, e, self.ack(dir, v), &mut csum);
                            e += 4;
                        }
                    }
                    at += len;
                }
            }
        }
        tcp[16..18].copy_from_slice(&csum.to_be_bytes());
        Ok(changed)
    }
}

#[inline]
fn read32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Incremental one's-complement checksum update for a 32-bit field
/// changing from `old` to `new` (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
pub fn csum_replace4(csum: u16, old: u32, new: u32) -> u16 {
    let mut sum = (!csum) as u32;
    for (o, n) in [(old >> 16, new >> 16), (old & 0xffff, new & 0xffff)] {
        sum += (!(o as u16)) as u32 + n;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{Builder, Tcp};
    use crate::packet::tcp_flags::{ACK, PSH};
    use crate::packet::{self, CtPacket, PktFlags};
    use crate::{Family, Zone};
    use proptest::prelude::*;

    const O: Dir = Dir::Orig;
    const R: Dir = Dir::Reply;

    #[test]
    fn shifts_later_segments_and_acks() {
        let mut a = SeqAdj::default();
        assert!(!a.is_active());
        // Client segment at seq 1000 (19 bytes) grew by 10.
        assert!(a.record(O, 1000, 10));
        assert!(a.is_active());
        assert_eq!(a.seq(O, 1000), 1000, "the resized segment keeps its seq");
        assert_eq!(a.seq(O, 1019), 1029, "later data moves");
        assert_eq!(a.seq(R, 5000), 5000, "other direction untouched");
        // The server acks the 29 bytes it got: the client must see 1019.
        assert_eq!(a.ack(R, 1029), 1019);
        // An ack of data before the resized segment is not shifted.
        assert_eq!(a.ack(R, 1000), 1000);
        assert_eq!(a.ack(O, 5000), 5000);
    }

    #[test]
    fn retransmission_is_not_counted_twice() {
        let mut a = SeqAdj::default();
        a.record(O, 1000, 10);
        assert!(!a.record(O, 1000, 10), "retransmitted PORT rewritten again");
        assert!(!a.record(O, 900, 10), "older data");
        assert_eq!(a.seq(O, 1000), 1000);
        assert_eq!(a.seq(O, 1019), 1029);
        // A second resize later: both offsets kept for its retransmission.
        assert!(a.record(O, 1100, -3));
        assert_eq!(
            a.seq(O, 1100),
            1110,
            "retransmission of the 2nd resized segment"
        );
        assert_eq!(a.seq(O, 1150), 1157);
        assert_eq!(a.ack(R, 1110), 1100);
        assert_eq!(a.ack(R, 1157), 1150);
    }

    #[test]
    fn wraps_around() {
        let mut a = SeqAdj::default();
        a.record(O, u32::MAX - 5, 4);
        assert_eq!(a.seq(O, 10), 14);
        assert_eq!(a.seq(O, u32::MAX - 5), u32::MAX - 5);
        assert_eq!(a.ack(R, 14), 10);
        let mut b = SeqAdj::default();
        // A 20-byte segment at 7 shrank to 18: the next one (27) moves to 25.
        b.record(R, 7, -2);
        assert_eq!(b.seq(R, 27), 25);
        assert_eq!(b.ack(O, 25), 27);
        assert_eq!(b.ack(O, 7), 7);
    }

    fn ack_seg(seq: u32, ack: u32, payload: &[u8], sack: Option<(u32, u32)>) -> Vec<u8> {
        let b = Builder::v4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut p = b.tcp(
            &Tcp::new(4000, 21)
                .seq(seq)
                .ack(ack)
                .flags(ACK | PSH)
                .payload(payload),
        );
        if let Some((l, r)) = sack {
            // Rebuild with a SACK option by hand: NOP NOP SACK(10).
            let mut opt = vec![1, 1, 5, 10];
            opt.extend_from_slice(&l.to_be_bytes());
            opt.extend_from_slice(&r.to_be_bytes());
            p = with_options(&p, &opt);
        }
        p
    }

    /// Insert TCP options into an IPv4/TCP packet and fix lengths and
    /// checksums (via the parser-independent checksum of the builder).
    fn with_options(p: &[u8], opt: &[u8]) -> Vec<u8> {
        let mut v = p[..40].to_vec();
        v.extend_from_slice(opt);
        v.extend_from_slice(&p[40..]);
        let total = v.len() as u16;
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v[32] = (((20 + opt.len()) / 4) as u8) << 4;
        v[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum(0, &v[..20]));
        v[10..12].copy_from_slice(&c.to_be_bytes());
        v[36..38].copy_from_slice(&[0, 0]);
        let l4len = v.len() - 20;
        let mut s = sum(0, &v[12..20]);
        s += 6 + l4len as u64;
        s = sum(s, &v[20..]);
        let c = !fold(s);
        v[36..38].copy_from_slice(&c.to_be_bytes());
        v
    }

    fn sum(mut acc: u64, b: &[u8]) -> u64 {
        for c in b.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
        }
        acc
    }
    fn fold(mut s: u64) -> u16 {
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn csum_valid(p: &[u8]) -> bool {
        let info = packet::parse(
            &CtPacket {
                l3: p,
                family: Family::Ipv4,
                flags: PktFlags::empty(),
            },
            Zone(0),
        );
        info.invalid.is_none()
    }

    #[test]
    fn apply_rewrites_header_and_keeps_checksum_valid() {
        let mut a = SeqAdj::default();
        a.record(R, 7000, 10); // server's segment at 7000 grew by 10
        a.record(O, 1000, -2);
        let mut p = ack_seg(1050, 7100, b"hello", Some((7050, 7110)));
        assert!(csum_valid(&p));
        assert!(a.apply(O, &mut p[20..]).unwrap());
        assert!(csum_valid(&p), "incremental checksum update");
        assert_eq!(read32(&p[20..], 4), 1048);
        assert_eq!(read32(&p[20..], 8), 7090);
        // SACK edges: 7050 is after the resize (7050-0 > 7000) -> 7040.
        assert_eq!(read32(&p[20..], 20 + 4), 7040);
        assert_eq!(read32(&p[20..], 20 + 8), 7100);
        // Nothing to do: unchanged, still valid.
        let mut q = ack_seg(10, 20, b"x", None);
        assert!(!SeqAdj::default().apply(O, &mut q[20..]).unwrap());
        assert!(csum_valid(&q));
        assert_eq!(a.apply(O, &mut q[20..30]), Err(TruncatedTcp));
    }

    proptest! {
        #[test]
        fn seq_then_ack_round_trips(
            pos in any::<u32>(), delta in -40i32..40, off in 41u32..100_000,
        ) {
            // Data the client sends after the resized segment, acked by the
            // server in shifted space, maps back to the client's numbers.
            // "After" means past the resized segment's original end, which
            // is more than |delta| beyond its start (a segment cannot shrink
            // by more than its payload, and a rewritten one keeps some).
            let mut a = SeqAdj::default();
            a.record(O, pos, delta);
            let seq = pos.wrapping_add(off);
            let shifted = a.seq(O, seq);
            prop_assert_eq!(a.ack(R, shifted), seq);
        }

        #[test]
        fn apply_never_panics_and_keeps_checksums(
            seq in any::<u32>(), ack in any::<u32>(), d in -30i32..30,
            l in any::<u32>(), r in any::<u32>(), garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut a = SeqAdj::default();
            a.record(R, ack.wrapping_sub(5), d);
            a.record(O, seq.wrapping_sub(5), -d);
            let mut p = ack_seg(seq, ack, b"payload", Some((l, r)));
            a.apply(O, &mut p[20..]).unwrap();
            prop_assert!(csum_valid(&p));
            let mut g = garbage.clone();
            let _ = a.apply(O, &mut g);
        }
    }
}
