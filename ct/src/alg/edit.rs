//! What an ALG asks of a NATed packet beyond the header translation: its
//! announcement rewritten ([`PayloadEdit`]) and its TCP sequence and
//! acknowledgement numbers shifted ([`crate::seqadj`]).
//!
//! Conntrack decides and reports an [`AlgEdit`] in
//! [`crate::CtResult::alg`] (only on `ct` passes with `nat`, for
//! connections whose ALG resized a segment); the datapath, which owns the
//! packet buffer, applies it with [`apply`] after the NAT header rewrite.
//! [`apply`] works in place on the packet's L3 bytes and needs room after
//! them when the announcement grows: the caller extends the frame by
//! [`AlgEdit::growth`] bytes first and cuts it to the returned length after.

use std::fmt;
use std::net::IpAddr;

use super::ftp::{FtpCmd, FtpKind};
use super::ftp_nat::{announcement, Announcement, FtpNatError};
use crate::key::{ipproto, Dir, Family};
use crate::packet::{csum_add, csum_fold, CtPacket, PktFlags};
use crate::seqadj::SeqAdj;

/// An FTP announcement to replace in a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadEdit {
    /// The announcement's text in the packet's L3 bytes (`start..end`).
    pub start: u16,
    pub end: u16,
    /// Form of the text (and EPRT/229 delimiter).
    pub kind: FtpKind,
    pub delim: u8,
    /// What the new text announces.
    pub addr: IpAddr,
    pub port: u16,
}

impl PayloadEdit {
    /// Replace `cmd` (its span relative to the payload at `payload_off`)
    /// by `addr:port`.
    pub fn new(cmd: &FtpCmd, payload_off: usize, addr: IpAddr, port: u16) -> Option<PayloadEdit> {
        Some(PayloadEdit {
            start: u16::try_from(payload_off.checked_add(cmd.span.start)?).ok()?,
            end: u16::try_from(payload_off.checked_add(cmd.span.end)?).ok()?,
            kind: cmd.kind,
            delim: cmd.delim,
            addr,
            port,
        })
    }

    /// The new text.
    pub fn text(&self) -> Result<Announcement, FtpNatError> {
        let cmd = FtpCmd {
            kind: self.kind,
            addr: Some(self.addr),
            port: self.port,
            span: self.start as usize..self.end as usize,
            delim: self.delim,
        };
        announcement(&cmd, self.addr, self.port)
    }

    /// Length change of the packet (new text minus old).
    pub fn delta(&self) -> Result<i32, FtpNatError> {
        if self.start > self.end {
            return Err(FtpNatError::BadSpan);
        }
        Ok(self.text()?.as_bytes().len() as i32 - (self.end - self.start) as i32)
    }
}

/// The ALG part of a packet's NAT (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlgEdit {
    /// Direction the packet travels in its connection.
    pub dir: Dir,
    /// The connection's shifts, this packet's resize (if any) included.
    pub seqadj: SeqAdj,
    /// The announcement to rewrite (the packet that carries it only).
    pub payload: Option<PayloadEdit>,
}

impl AlgEdit {
    /// How many bytes the packet grows by (0 when it shrinks or keeps its
    /// length).
    pub fn growth(&self) -> usize {
        self.payload
            .and_then(|p| p.delta().ok())
            .map_or(0, |d| d.max(0) as usize)
    }
}

/// Why [`apply`] left a packet unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditError {
    /// Not an IPv4/IPv6 TCP packet with consistent lengths.
    NotTcp,
    /// The announcement span is not inside the TCP payload, or its text
    /// cannot be formed.
    BadSpan,
    /// The buffer has no room for the longer text.
    NoRoom { wanted: usize, available: usize },
    /// The grown packet would exceed the IP length field.
    TooLong,
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::NotTcp => write!(f, "not a well-formed TCP packet"),
            EditError::BadSpan => write!(f, "announcement outside the TCP payload"),
            EditError::NoRoom { wanted, available } => {
                write!(
                    f,
                    "no room to grow the packet: {wanted} bytes needed, {available} available"
                )
            }
            EditError::TooLong => write!(f, "rewritten packet exceeds the IP length limit"),
        }
    }
}

impl std::error::Error for EditError {}

/// Apply `edit` to the packet whose L3 bytes are `l3[..len]` (`l3` may be
/// longer: room for growth). Rewrites the announcement, fixes the IPv4
/// total length and header checksum or the IPv6 payload length, recomputes
/// the TCP checksum, then shifts sequence/acknowledgement numbers (checksum
/// updated incrementally). Returns the packet's new L3 length (when the
/// payload is rewritten, bytes after the IP packet, such as Ethernet
/// padding, are dropped). On error nothing was changed.
pub fn apply(l3: &mut [u8], len: usize, edit: &AlgEdit) -> Result<usize, EditError> {
    let len = len.min(l3.len());
    let (family, l4, ip_end) = tcp_span(&l3[..len]).ok_or(EditError::NotTcp)?;
    let thlen = (l3[l4 + 12] >> 4) as usize * 4;
    if thlen < 20 || l4 + thlen > ip_end {
        return Err(EditError::NotTcp);
    }
    let (mut end, mut out_len) = (ip_end, len);
    if let Some(pe) = &edit.payload {
        let text = pe.text().map_err(|_| EditError::BadSpan)?;
        let text = text.as_bytes();
        let (s, e) = (pe.start as usize, pe.end as usize);
        if s < l4 + thlen || s > e || e > ip_end {
            return Err(EditError::BadSpan);
        }
        let new_end = ip_end - (e - s) + text.len();
        if new_end > l3.len() {
            return Err(EditError::NoRoom {
                wanted: new_end - len,
                available: l3.len() - len,
            });
        }
        let ip_len = match family {
            Family::Ipv4 => new_end,
            Family::Ipv6 => new_end - 40,
        };
        let ip_len = u16::try_from(ip_len).map_err(|_| EditError::TooLong)?;
        l3.copy_within(e..ip_end, s + text.len());
        l3[s..s + text.len()].copy_from_slice(text);
        match family {
            Family::Ipv4 => {
                l3[2..4].copy_from_slice(&ip_len.to_be_bytes());
                let ihl = (l3[0] & 0x0f) as usize * 4;
                l3[10..12].copy_from_slice(&[0, 0]);
                let c = !csum_fold(csum_add(0, &l3[..ihl]));
                l3[10..12].copy_from_slice(&c.to_be_bytes());
            }
            Family::Ipv6 => l3[4..6].copy_from_slice(&ip_len.to_be_bytes()),
        }
        tcp_checksum(l3, family, l4, new_end);
        end = new_end;
        out_len = new_end;
    }
    if edit.seqadj.is_active() {
        // The header was checked above: this cannot fail.
        edit.seqadj
            .apply(edit.dir, &mut l3[l4..end])
            .map_err(|_| EditError::NotTcp)?;
    }
    Ok(out_len)
}

/// Family, TCP header offset and IP end of a TCP packet.
fn tcp_span(l3: &[u8]) -> Option<(Family, usize, usize)> {
    let family = match l3.first()? >> 4 {
        4 if *l3.get(9)? == ipproto::TCP => Family::Ipv4,
        6 => Family::Ipv6,
        _ => return None,
    };
    let pkt = CtPacket {
        l3,
        family,
        flags: PktFlags::empty(),
    };
    let span = super::ip_span(&pkt)?;
    (span.start + 20 <= span.end).then_some((family, span.start, span.end))
}

/// Recompute the TCP checksum of the segment `l3[l4..end]`.
fn tcp_checksum(l3: &mut [u8], family: Family, l4: usize, end: usize) {
    l3[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let seg_len = (end - l4) as u64;
    let mut acc = match family {
        Family::Ipv4 => csum_add(0, &l3[12..20]),
        Family::Ipv6 => csum_add(0, &l3[8..40]),
    };
    acc += ipproto::TCP as u64 + seg_len;
    acc = csum_add(acc, &l3[l4..end]);
    let c = !csum_fold(acc);
    l3[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn apply_never_panics_on_any_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            room in 0usize..64,
            start in 0u16..220, span in 0u16..40,
            seq in any::<u32>(), delta in -20i32..20,
            port in any::<u16>(), kind in 0u8..4,
        ) {
            let mut seqadj = SeqAdj::default();
            seqadj.record(Dir::Orig, seq, delta);
            let edit = AlgEdit {
                dir: Dir::Orig,
                seqadj,
                payload: Some(PayloadEdit {
                    start,
                    end: start.saturating_add(span),
                    kind: [FtpKind::Port, FtpKind::Eprt, FtpKind::Pasv, FtpKind::Epsv][kind as usize],
                    delim: b'|',
                    addr: IpAddr::from([192, 0, 2, 1]),
                    port,
                }),
            };
            let mut buf = bytes.clone();
            buf.resize(bytes.len() + room, 0);
            match apply(&mut buf, bytes.len(), &edit) {
                Ok(n) => prop_assert!(n <= buf.len()),
                Err(_) => prop_assert_eq!(&buf[..bytes.len()], &bytes[..], "unchanged on error"),
            }
        }
    }
}
