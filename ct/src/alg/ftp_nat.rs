//! FTP under NAT: rewriting the address and port a control segment
//! announces.
//!
//! When the control connection is NATed, the PORT/EPRT/227/229 text names
//! an address the other side cannot reach; NAT replaces it with the
//! translated address and port (which NAT also arranges to map back onto
//! the original when the data connection arrives). The new text may be
//! longer or shorter than the old (`10,0,0,1,4,1` vs
//! `192,168,100,200,195,80`): the segment's length changes by the returned
//! delta, and every later sequence number of that direction (and
//! acknowledgement of the other) must be shifted by it for the rest of the
//! connection ([`crate::seqadj`]).
//!
//! These functions are pure: they produce the new text and the delta; the
//! caller resizes the packet, fixes IP length and checksums, and records
//! the delta. Nothing allocates except [`rewrite_payload`]'s output vector.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;

use super::ftp::{FtpCmd, FtpKind};

/// Longest announcement text: `|2|` + 39-character IPv6 + `|65535|`.
pub const MAX_TEXT: usize = 64;

/// Replacement text for an announcement.
#[derive(Clone, Copy)]
pub struct Announcement {
    buf: [u8; MAX_TEXT],
    len: usize,
}

impl Announcement {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Debug for Announcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Why an announcement cannot be rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FtpNatError {
    /// PORT and 227 carry IPv4 only; this NAT maps to IPv6.
    FamilyMismatch { kind: FtpKind },
    /// The span does not lie within the payload.
    BadSpan,
}

impl fmt::Display for FtpNatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FtpNatError::FamilyMismatch { kind } => {
                write!(f, "{kind:?} cannot announce an IPv6 address")
            }
            FtpNatError::BadSpan => write!(f, "announcement span outside the payload"),
        }
    }
}

impl std::error::Error for FtpNatError {}

/// The text announcing `addr:port` in the form of `cmd` (same kind, same
/// delimiter). For a 229 reply only the port is used.
pub fn announcement(cmd: &FtpCmd, addr: IpAddr, port: u16) -> Result<Announcement, FtpNatError> {
    let mut a = Announcement {
        buf: [0; MAX_TEXT],
        len: 0,
    };
    let mut w: &mut [u8] = &mut a.buf;
    let d = cmd.delim as char;
    // Writes into a 64-byte buffer that always has room for the longest
    // text; an error would mean a bug in MAX_TEXT, reported as BadSpan
    // rather than a panic.
    let r = match (cmd.kind, addr) {
        (FtpKind::Port | FtpKind::Pasv, IpAddr::V4(v4)) => {
            let o = v4.octets();
            write!(
                w,
                "{},{},{},{},{},{}",
                o[0],
                o[1],
                o[2],
                o[3],
                port >> 8,
                port & 0xff
            )
        }
        (FtpKind::Port | FtpKind::Pasv, IpAddr::V6(_)) => {
            return Err(FtpNatError::FamilyMismatch { kind: cmd.kind })
        }
        (FtpKind::Eprt, IpAddr::V4(v4)) => write!(w, "{d}1{d}{v4}{d}{port}{d}"),
        (FtpKind::Eprt, IpAddr::V6(v6)) => write!(w, "{d}2{d}{v6}{d}{port}{d}"),
        (FtpKind::Epsv, _) => write!(w, "{d}{d}{d}{port}{d}"),
    };
    if r.is_err() {
        return Err(FtpNatError::BadSpan);
    }
    a.len = MAX_TEXT - w.len();
    Ok(a)
}

/// Length change of the payload when `cmd`'s text becomes `new`.
pub fn delta(cmd: &FtpCmd, new: &Announcement) -> i32 {
    new.len as i32 - (cmd.span.end - cmd.span.start) as i32
}

/// `payload` with `cmd`'s announcement replaced by `addr:port`, written to
/// `out` (cleared first); returns the length delta.
pub fn rewrite_payload(
    payload: &[u8],
    cmd: &FtpCmd,
    addr: IpAddr,
    port: u16,
    out: &mut Vec<u8>,
) -> Result<i32, FtpNatError> {
    let (Some(head), Some(tail)) = (payload.get(..cmd.span.start), payload.get(cmd.span.end..))
    else {
        return Err(FtpNatError::BadSpan);
    };
    if cmd.span.start > cmd.span.end {
        return Err(FtpNatError::BadSpan);
    }
    let new = announcement(cmd, addr, port)?;
    out.clear();
    out.extend_from_slice(head);
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(tail);
    Ok(delta(cmd, &new))
}

#[cfg(test)]
mod tests {
    use super::super::ftp::find;
    use super::*;
    use proptest::prelude::*;

    fn rw(p: &[u8], client: bool, addr: &str, port: u16) -> (Vec<u8>, i32) {
        let c = find(p, client).unwrap();
        let mut out = Vec::new();
        let d = rewrite_payload(p, &c, addr.parse().unwrap(), port, &mut out).unwrap();
        assert_eq!(out.len() as i64, p.len() as i64 + d as i64);
        (out, d)
    }

    #[test]
    fn port_grows_and_shrinks() {
        let (out, d) = rw(b"PORT 10,0,0,1,4,1\r\n", true, "192.168.100.200", 50000);
        assert_eq!(out, b"PORT 192,168,100,200,195,80\r\n");
        assert_eq!(d, 10);
        let (out, d) = rw(&out, true, "10.0.0.1", 1025);
        assert_eq!(out, b"PORT 10,0,0,1,4,1\r\n");
        assert_eq!(d, -10);
    }

    #[test]
    fn pasv_keeps_the_surrounding_text() {
        let (out, d) = rw(
            b"227 Entering Passive Mode (10,0,0,2,195,80).\r\n",
            false,
            "172.16.0.9",
            2121,
        );
        assert_eq!(out, b"227 Entering Passive Mode (172,16,0,9,8,73).\r\n");
        assert_eq!(d, 0);
    }

    #[test]
    fn eprt_and_epsv() {
        let (out, d) = rw(b"EPRT !1!10.0.0.1!6275!\r\n", true, "fd00::99", 6276);
        assert_eq!(out, b"EPRT !2!fd00::99!6276!\r\n");
        assert_eq!(d, 0);
        let (out, d) = rw(
            b"229 Entering Extended Passive Mode (|||6446|)\r\n",
            false,
            "10.9.9.9",
            40000,
        );
        assert_eq!(out, b"229 Entering Extended Passive Mode (|||40000|)\r\n");
        assert_eq!(d, 1);
    }

    #[test]
    fn port_cannot_carry_ipv6() {
        let p = b"PORT 10,0,0,1,4,1\r\n";
        let c = find(p, true).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            rewrite_payload(p, &c, "fd00::1".parse().unwrap(), 1, &mut out),
            Err(FtpNatError::FamilyMismatch {
                kind: FtpKind::Port
            })
        );
        let mut bad = c.clone();
        bad.span = 3..100;
        assert_eq!(
            rewrite_payload(p, &bad, "10.0.0.1".parse().unwrap(), 1, &mut out),
            Err(FtpNatError::BadSpan)
        );
    }

    proptest! {
        #[test]
        fn rewritten_text_parses_back(
            v6 in any::<bool>(),
            a4 in any::<[u8; 4]>(),
            a6 in any::<[u8; 16]>(),
            port in 1u16..,
            kind in 0..4u8,
        ) {
            let (p, client): (&[u8], bool) = match kind {
                0 => (b"PORT 10,0,0,1,4,1\r\n", true),
                1 => (b"EPRT |1|10.0.0.1|1025|\r\n", true),
                2 => (b"227 ok (10,0,0,1,4,1)\r\n", false),
                _ => (b"229 ok (|||1025|)\r\n", false),
            };
            let c = find(p, client).unwrap();
            let addr: IpAddr = if v6 && kind == 1 { a6.into() } else { a4.into() };
            let mut out = Vec::new();
            let d = rewrite_payload(p, &c, addr, port, &mut out).unwrap();
            prop_assert_eq!(out.len() as i64, p.len() as i64 + d as i64);
            let back = find(&out, client).unwrap();
            prop_assert_eq!(back.port, port);
            prop_assert_eq!(back.kind, c.kind);
            if c.kind != FtpKind::Epsv {
                prop_assert_eq!(back.addr, Some(addr));
            }
        }
    }
}
