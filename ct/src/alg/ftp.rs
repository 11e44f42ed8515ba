//! FTP control-channel parsing: the commands and replies that announce a
//! data connection.
//!
//! | Text                                   | Sent by | Mode    | Data connection            |
//! |----------------------------------------|---------|---------|----------------------------|
//! | `PORT h1,h2,h3,h4,p1,p2`               | client  | active  | server → h1.h2.h3.h4:p     |
//! | `EPRT <d>1<d>a.b.c.d<d>port<d>` (IPv6: `<d>2<d>`) | client | active | server → addr:port |
//! | `227 ... (h1,h2,h3,h4,p1,p2)`          | server  | passive | client → h1.h2.h3.h4:p     |
//! | `229 ... (<d><d><d>port<d>)`           | server  | passive | client → server:port       |
//!
//! (RFC 959 and RFC 2428; `p = p1 * 256 + p2`.) Command words are matched
//! case-insensitively. A line is only parsed when the segment holds all of
//! it, up to its `\n`: a command split across two TCP segments is not
//! recognised (nf_conntrack_ftp does not reassemble either; real clients
//! send a command in one segment). Only the first announcing line of a
//! segment is used, as in Linux. Nothing here panics or allocates,
//! whatever the bytes.
//!
//! For a `227` reply the numbers are taken after the first `(`, or, with no
//! parenthesis, from the first digit after the code (some servers omit
//! them). Ports must be non-zero; PORT and 227 numbers must each be at most
//! 255 and are followed by something other than a digit or comma.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// Which announcement a line carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FtpKind {
    /// Client `PORT` (active, IPv4).
    Port,
    /// Client `EPRT` (active, IPv4 or IPv6).
    Eprt,
    /// Server `227` reply to `PASV` (passive, IPv4).
    Pasv,
    /// Server `229` reply to `EPSV` (passive, port only).
    Epsv,
}

impl FtpKind {
    /// Whether the client sends it (the control connection's original
    /// direction).
    pub fn from_client(self) -> bool {
        matches!(self, FtpKind::Port | FtpKind::Eprt)
    }
}

/// One announcement found in a control-connection segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FtpCmd {
    pub kind: FtpKind,
    /// The announced address; None for `229`, which names only a port (the
    /// address is the server's own).
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// Bytes of the TCP payload holding the address and port, which NAT
    /// rewrites ([`super::ftp_nat`]): for PORT/227 the `h1,...,p2` text, for
    /// EPRT/229 everything from the first delimiter to the last one
    /// inclusive.
    pub span: Range<usize>,
    /// The EPRT/229 delimiter (0 for PORT/227).
    pub delim: u8,
}

/// The first announcement in `payload` of a packet travelling client →
/// server (`from_client`) or server → client.
pub fn find(payload: &[u8], from_client: bool) -> Option<FtpCmd> {
    let mut start = 0;
    while start < payload.len() {
        let rest = payload.get(start..)?;
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let mut line = rest.get(..nl)?;
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        let found = if from_client {
            parse_client_line(line)
        } else {
            parse_server_line(line)
        };
        if let Some(mut c) = found {
            c.span = c.span.start + start..c.span.end + start;
            return Some(c);
        }
        start += nl + 1;
    }
    None
}

/// A client line: `PORT` or `EPRT` (span relative to the line).
pub fn parse_client_line(line: &[u8]) -> Option<FtpCmd> {
    let word = line.get(..5)?;
    if word.eq_ignore_ascii_case(b"PORT ") {
        let at = skip_spaces(line, 5);
        let (addr, port, len) = parse_h_p(line.get(at..)?)?;
        Some(FtpCmd {
            kind: FtpKind::Port,
            addr: Some(IpAddr::V4(addr)),
            port,
            span: at..at + len,
            delim: 0,
        })
    } else if word.eq_ignore_ascii_case(b"EPRT ") {
        let at = skip_spaces(line, 5);
        let (addr, port, len, delim) = parse_eprt(line.get(at..)?)?;
        Some(FtpCmd {
            kind: FtpKind::Eprt,
            addr: Some(addr),
            port,
            span: at..at + len,
            delim,
        })
    } else {
        None
    }
}

/// A server line: a `227` or `229` reply (span relative to the line).
pub fn parse_server_line(line: &[u8]) -> Option<FtpCmd> {
    let code = line.get(..4)?;
    if code == b"227 " {
        let text = line.get(4..)?;
        let at = 4 + match text.iter().position(|&b| b == b'(') {
            Some(p) => p + 1,
            None => text.iter().position(u8::is_ascii_digit)?,
        };
        let (addr, port, len) = parse_h_p(line.get(at..)?)?;
        Some(FtpCmd {
            kind: FtpKind::Pasv,
            addr: Some(IpAddr::V4(addr)),
            port,
            span: at..at + len,
            delim: 0,
        })
    } else if code == b"229 " {
        let at = 4 + line.get(4..)?.iter().position(|&b| b == b'(')? + 1;
        let (port, len, delim) = parse_epsv(line.get(at..)?)?;
        Some(FtpCmd {
            kind: FtpKind::Epsv,
            addr: None,
            port,
            span: at..at + len,
            delim,
        })
    } else {
        None
    }
}

fn skip_spaces(b: &[u8], mut at: usize) -> usize {
    while b.get(at) == Some(&b' ') {
        at += 1;
    }
    at
}

/// A decimal number of at most `max_digits` digits at the start of `b`:
/// (value, digits).
fn number(b: &[u8], max_digits: usize) -> Option<(u32, usize)> {
    let mut v = 0u32;
    let mut n = 0;
    for &c in b.iter().take(max_digits + 1) {
        if !c.is_ascii_digit() {
            break;
        }
        if n == max_digits {
            return None; // too many digits
        }
        v = v * 10 + (c - b'0') as u32;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// `h1,h2,h3,h4,p1,p2` at the start of `b`: (address, port, length).
fn parse_h_p(b: &[u8]) -> Option<(Ipv4Addr, u16, usize)> {
    let mut vals = [0u8; 6];
    let mut at = 0;
    for (i, v) in vals.iter_mut().enumerate() {
        if i > 0 {
            if b.get(at) != Some(&b',') {
                return None;
            }
            at += 1;
        }
        let (n, len) = number(b.get(at..)?, 3)?;
        *v = u8::try_from(n).ok()?;
        at += len;
    }
    if matches!(b.get(at), Some(c) if c.is_ascii_digit() || *c == b',') {
        return None;
    }
    let port = u16::from_be_bytes([vals[4], vals[5]]);
    if port == 0 {
        return None;
    }
    Some((Ipv4Addr::new(vals[0], vals[1], vals[2], vals[3]), port, at))
}

/// Whether `d` may delimit EPRT/EPSV fields: RFC 2428 allows ASCII 33..=126;
/// we also refuse characters that occur inside the fields.
fn valid_delim(d: u8) -> bool {
    (33..=126).contains(&d) && !d.is_ascii_alphanumeric() && d != b'.' && d != b':'
}

/// A port field: 1..=65535, 1 to 5 digits, and nothing else.
fn port_field(f: &[u8]) -> Option<u16> {
    let (v, n) = number(f, 5)?;
    if n != f.len() {
        return None;
    }
    u16::try_from(v).ok().filter(|&p| p != 0)
}

/// `<d>af<d>addr<d>port<d>` at the start of `b`: (address, port, length,
/// delimiter).
fn parse_eprt(b: &[u8]) -> Option<(IpAddr, u16, usize, u8)> {
    let d = *b.first()?;
    if !valid_delim(d) {
        return None;
    }
    let mut fields = [0..0, 0..0, 0..0];
    let mut at = 1;
    for f in fields.iter_mut() {
        let len = b.get(at..)?.iter().position(|&c| c == d)?;
        *f = at..at + len;
        at += len + 1;
    }
    let [af, addr, port] = fields;
    let text = std::str::from_utf8(b.get(addr)?).ok()?;
    let addr = match b.get(af)? {
        b"1" => IpAddr::V4(text.parse::<Ipv4Addr>().ok()?),
        b"2" => IpAddr::V6(text.parse::<Ipv6Addr>().ok()?),
        _ => return None,
    };
    let port = port_field(b.get(port)?)?;
    Some((addr, port, at, d))
}

/// `<d><d><d>port<d>` at the start of `b`: (port, length, delimiter).
fn parse_epsv(b: &[u8]) -> Option<(u16, usize, u8)> {
    let d = *b.first()?;
    if !valid_delim(d) || b.get(1) != Some(&d) || b.get(2) != Some(&d) {
        return None;
    }
    let len = b.get(3..)?.iter().position(|&c| c == d)?;
    let port = port_field(b.get(3..3 + len)?)?;
    Some((port, 3 + len + 1, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn port_command() {
        let p = b"PORT 10,0,0,1,19,137\r\n";
        let c = find(p, true).unwrap();
        assert_eq!(c.kind, FtpKind::Port);
        assert_eq!(c.addr, v4("10.0.0.1"));
        assert_eq!(c.port, 19 * 256 + 137);
        assert_eq!(&p[c.span], b"10,0,0,1,19,137");
        // Case-insensitive command word; not in the other direction.
        assert!(find(b"port 10,0,0,1,0,21\r\n", true).is_some());
        assert!(find(p, false).is_none());
    }

    #[test]
    fn port_rejects() {
        for bad in [
            &b"PORT 10,0,0,1,19\r\n"[..],
            b"PORT 10,0,0,256,19,137\r\n",
            b"PORT 10,0,0,1,0,0\r\n",
            b"PORT 10,0,0,1,19,137,5\r\n",
            b"PORT 10,0,0,1,19,1370\r\n",
            b"PORT 10,,0,1,19,137\r\n",
            b"PORT 10,0,0,1,19,137", // no end of line
            b"PORTS 10,0,0,1,19,137\r\n",
            b"PORT\r\n",
        ] {
            assert_eq!(find(bad, true), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn later_line_in_segment() {
        let p = b"TYPE I\r\nPORT 192,168,1,2,4,1\r\n";
        let c = find(p, true).unwrap();
        assert_eq!(c.addr, v4("192.168.1.2"));
        assert_eq!(c.port, 1025);
        assert_eq!(&p[c.span], b"192,168,1,2,4,1");
    }

    #[test]
    fn split_line_is_not_parsed() {
        // The second segment starts mid-command: no line of it announces.
        assert_eq!(find(b"NOOP\r\nPORT 10,0,0", true), None);
        assert_eq!(find(b",1,19,137\r\n", true), None);
    }

    #[test]
    fn eprt_v4_and_v6() {
        let p = b"EPRT |1|132.235.1.2|6275|\r\n";
        let c = find(p, true).unwrap();
        assert_eq!(
            (c.kind, c.addr, c.port),
            (FtpKind::Eprt, v4("132.235.1.2"), 6275)
        );
        assert_eq!(&p[c.span.clone()], b"|1|132.235.1.2|6275|");
        assert_eq!(c.delim, b'|');
        let p = b"eprt !2!fd00::1:2!5282!\r\n";
        let c = find(p, true).unwrap();
        assert_eq!(c.addr, Some("fd00::1:2".parse().unwrap()));
        assert_eq!(c.port, 5282);
        assert_eq!(&p[c.span], b"!2!fd00::1:2!5282!");
        for bad in [
            &b"EPRT |1|fd00::1|5282|\r\n"[..],
            b"EPRT |2|10.0.0.1|5282|\r\n",
            b"EPRT |3|10.0.0.1|5282|\r\n",
            b"EPRT |1|10.0.0.1|70000|\r\n",
            b"EPRT |1|10.0.0.1|0|\r\n",
            b"EPRT |1|10.0.0.1|5282\r\n",
            b"EPRT 1|1|10.0.0.1|5282|\r\n",
            b"EPRT |1|10.0.0.1|+5282|\r\n",
        ] {
            assert_eq!(find(bad, true), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn pasv_reply() {
        let p = b"227 Entering Passive Mode (10,0,0,2,195,80).\r\n";
        let c = find(p, false).unwrap();
        assert_eq!(
            (c.kind, c.addr, c.port),
            (FtpKind::Pasv, v4("10.0.0.2"), 50000)
        );
        assert_eq!(&p[c.span], b"10,0,0,2,195,80");
        let p = b"227 Entering Passive Mode 10,0,0,2,195,80\r\n";
        assert_eq!(find(p, false).unwrap().port, 50000);
        assert_eq!(find(p, true), None, "a reply is not a client command");
        assert_eq!(find(b"227 Entering Passive Mode ()\r\n", false), None);
        assert_eq!(find(b"227-Entering (10,0,0,2,195,80)\r\n", false), None);
    }

    #[test]
    fn epsv_reply() {
        let p = b"229 Entering Extended Passive Mode (|||6446|)\r\n";
        let c = find(p, false).unwrap();
        assert_eq!((c.kind, c.addr, c.port), (FtpKind::Epsv, None, 6446));
        assert_eq!(&p[c.span], b"|||6446|");
        assert_eq!(find(b"229 x (||6446|)\r\n", false), None);
        assert_eq!(find(b"229 x (|||6446)\r\n", false), None);
        assert_eq!(find(b"229 x (|!|6446|)\r\n", false), None);
        assert_eq!(find(b"229 x (aaa6446a)\r\n", false), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for dir in [true, false] {
                if let Some(c) = find(&bytes, dir) {
                    prop_assert!(c.span.start <= c.span.end && c.span.end <= bytes.len());
                    prop_assert!(c.port != 0);
                }
            }
        }

        #[test]
        fn near_miss_text_never_panics(
            head in prop_oneof![Just("PORT "), Just("EPRT "), Just("227 ("), Just("229 ("), Just("eprt ")],
            body in "[0-9,|!.:a-f ()]{0,60}",
            tail in prop_oneof![Just("\r\n"), Just("\n"), Just("")],
        ) {
            let line = format!("{head}{body}{tail}");
            for dir in [true, false] {
                if let Some(c) = find(line.as_bytes(), dir) {
                    prop_assert!(c.span.end <= line.len());
                }
            }
        }

        #[test]
        fn any_port_command_round_trips(a in any::<[u8; 4]>(), port in 1u16..) {
            let line = format!("PORT {},{},{},{},{},{}\r\n", a[0], a[1], a[2], a[3], port >> 8, port & 255);
            let c = find(line.as_bytes(), true).unwrap();
            prop_assert_eq!(c.addr, Some(IpAddr::V4(Ipv4Addr::from(a))));
            prop_assert_eq!(c.port, port);
        }
    }
}
