//! The shape a datagram had on the wire before reassembly, and cutting a
//! (possibly rewritten) datagram back into that shape.
//!
//! A [`FragLayout`] records where each original fragment's payload lay in
//! the datagram's fragmentable part, the fragment identification and, for
//! IPv6, where the fragment header sat. [`FragLayout::fragment_header`]
//! builds the IP header of fragment `i` from the datagram as it is *now*
//! (after NAT or other rewrites), so the fragments that leave carry the
//! rewritten addresses with the original boundaries:
//!
//! - IPv4: the first fragment gets the datagram's header with all options;
//!   later fragments get only the options whose "copied" flag is set
//!   (RFC 791), padded to 4 bytes. Identification, TOS, TTL and DF come
//!   from the datagram; MF and the offset from the layout; the header
//!   checksum is recomputed.
//! - IPv6: the unfragmentable part of the datagram, then a fragment header
//!   (next header = the first header of the fragmentable part, the original
//!   identification), with the preceding next-header byte pointing at it and
//!   the payload length fixed.

use std::ops::Range;

use serde::Serialize;

use super::header::{EXT_DEST_OPTS, EXT_FRAGMENT, EXT_HOP_BY_HOP, EXT_ROUTING};
use crate::key::Family;
use crate::packet::{csum_add, csum_fold};

/// One original fragment: its payload's place in the fragmentable part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Piece {
    pub offset: u32,
    pub len: u32,
}

/// How a datagram was fragmented (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FragLayout {
    pub family: Family,
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    /// IPv4: header length of the reassembled datagram. IPv6: length of
    /// the unfragmentable part (where the fragment header goes back in).
    pub hdr_len: usize,
    /// IPv6: offset of the next-header byte the fragment header hangs off
    /// (6 for the base header). IPv4: 0.
    pub nh_at: usize,
    /// The original fragments, in offset order, contiguous from 0.
    pub pieces: Vec<Piece>,
}

/// Why a datagram cannot be cut along its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefragError {
    /// The datagram's length or headers no longer match the layout.
    Mismatch,
    /// No such fragment.
    NoPiece,
}

impl std::fmt::Display for RefragError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefragError::Mismatch => "datagram no longer matches its fragment layout",
            RefragError::NoPiece => "no such fragment",
        })
    }
}

impl std::error::Error for RefragError {}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[h, l]) => u16::from_be_bytes([h, l]),
        _ => 0,
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(d) = b.get_mut(at..at + 2) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

impl FragLayout {
    /// Number of original fragments.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Bytes of the fragmentable part (the end of the last piece).
    pub fn payload_len(&self) -> usize {
        self.pieces
            .last()
            .map_or(0, |p| p.offset as usize + p.len as usize)
    }

    /// Check that the datagram `l3` still has the shape this layout cuts:
    /// right version, header length, and exactly [`Self::payload_len`]
    /// bytes after the header. Returns the datagram's length.
    pub fn check(&self, l3: &[u8]) -> Result<usize, RefragError> {
        let want = self.hdr_len + self.payload_len();
        let ok = match self.family {
            Family::Ipv4 => {
                l3.len() >= 20
                    && l3[0] >> 4 == 4
                    && (l3[0] & 0x0f) as usize * 4 == self.hdr_len
                    && be16(l3, 2) as usize == want
            }
            Family::Ipv6 => {
                l3.len() >= 40
                    && l3[0] >> 4 == 6
                    && self.hdr_len >= 40
                    && self.nh_at < self.hdr_len
                    && 40 + be16(l3, 4) as usize == want
            }
        };
        if ok && want <= l3.len() && !self.pieces.is_empty() {
            Ok(want)
        } else {
            Err(RefragError::Mismatch)
        }
    }

    /// Write the IP header of fragment `i` of the datagram `l3` into `hdr`
    /// (cleared first) and return where its payload lies in `l3`. The
    /// fragment is `hdr` followed by `l3[range]`.
    pub fn fragment_header(
        &self,
        l3: &[u8],
        i: usize,
        hdr: &mut Vec<u8>,
    ) -> Result<Range<usize>, RefragError> {
        self.check(l3)?;
        let p = *self.pieces.get(i).ok_or(RefragError::NoPiece)?;
        let more = i + 1 < self.pieces.len();
        let start = self.hdr_len + p.offset as usize;
        let range = start..start + p.len as usize;
        hdr.clear();
        match self.family {
            Family::Ipv4 => {
                if p.offset == 0 {
                    hdr.extend_from_slice(&l3[..self.hdr_len]);
                } else {
                    hdr.extend_from_slice(&l3[..20]);
                    copied_options(&l3[20..self.hdr_len], hdr);
                    hdr[0] = 0x40 | (hdr.len() / 4) as u8;
                }
                let total = hdr.len() + p.len as usize;
                put16(hdr, 2, total as u16);
                let ff = (be16(l3, 6) & 0x4000) | (more as u16) << 13 | (p.offset / 8) as u16;
                put16(hdr, 6, ff);
                put16(hdr, 10, 0);
                let c = !csum_fold(csum_add(0, hdr));
                put16(hdr, 10, c);
            }
            Family::Ipv6 => {
                hdr.extend_from_slice(&l3[..self.hdr_len]);
                let next = hdr[self.nh_at];
                hdr[self.nh_at] = EXT_FRAGMENT;
                let fo = (p.offset as u16 & 0xfff8) | more as u16;
                hdr.extend_from_slice(&[next, 0]);
                hdr.extend_from_slice(&fo.to_be_bytes());
                hdr.extend_from_slice(&self.id.to_be_bytes());
                let plen = hdr.len() - 40 + p.len as usize;
                put16(hdr, 4, plen as u16);
            }
        }
        Ok(range)
    }

    /// All fragments of `l3`, each as one buffer (tests and tools; the
    /// datapath writes them into packet buffers itself).
    pub fn fragments(&self, l3: &[u8]) -> Result<Vec<Vec<u8>>, RefragError> {
        let mut hdr = Vec::new();
        (0..self.pieces.len())
            .map(|i| {
                let r = self.fragment_header(l3, i, &mut hdr)?;
                let mut f = hdr.clone();
                f.extend_from_slice(&l3[r]);
                Ok(f)
            })
            .collect()
    }

    /// The layout that cuts the whole (unfragmented) datagram `l3` into
    /// fragments whose payloads start at 0 and at each of `cuts` (byte
    /// offsets into the fragmentable part: increasing, multiples of 8,
    /// inside the payload), with identification `id`. `None` if `l3` is not
    /// a well-formed datagram or a cut is not usable. For building
    /// fragments in tests; a real fragmenter would also choose the cuts.
    pub fn for_datagram(l3: &[u8], id: u32, cuts: &[u32]) -> Option<FragLayout> {
        let (family, hdr_len, nh_at, payload) = match l3.first()? >> 4 {
            4 => {
                let ihl = (l3[0] & 0x0f) as usize * 4;
                let total = be16(l3, 2) as usize;
                if l3.len() < 20 || ihl < 20 || total < ihl || total > l3.len() {
                    return None;
                }
                if be16(l3, 6) & 0x3fff != 0 {
                    return None;
                }
                (Family::Ipv4, ihl, 0, total - ihl)
            }
            6 => {
                let end = 40 + be16(l3, 4) as usize;
                if l3.len() < 40 || end > l3.len() {
                    return None;
                }
                let (hdr_len, nh_at) = unfragmentable_v6(l3, end)?;
                (Family::Ipv6, hdr_len, nh_at, end - hdr_len)
            }
            _ => return None,
        };
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        let mut start = 0u32;
        for &c in cuts.iter().chain(std::iter::once(&(payload as u32))) {
            if c <= start || c as usize > payload || (c as usize != payload && c & 7 != 0) {
                return None;
            }
            pieces.push(Piece {
                offset: start,
                len: c - start,
            });
            start = c;
        }
        Some(FragLayout {
            family,
            id: if family == Family::Ipv4 {
                id & 0xffff
            } else {
                id
            },
            hdr_len,
            nh_at,
            pieces,
        })
    }
}

/// The unfragmentable part of an IPv6 packet (RFC 8200 4.5): hop-by-hop,
/// routing, and destination options followed by a routing header.
/// Returns its length and the offset of its last next-header byte.
fn unfragmentable_v6(l3: &[u8], end: usize) -> Option<(usize, usize)> {
    let mut nh = *l3.get(6)?;
    let (mut off, mut nh_at) = (40, 6);
    for _ in 0..8 {
        let e = l3.get(off..end)?;
        let follows_routing = || {
            let len = (*e.get(1)? as usize + 1) * 8;
            (*e.first()? == EXT_ROUTING && e.len() > len).then_some(())
        };
        let unfrag = match nh {
            EXT_HOP_BY_HOP | EXT_ROUTING => true,
            EXT_DEST_OPTS => follows_routing().is_some(),
            EXT_FRAGMENT => return None,
            _ => false,
        };
        if !unfrag {
            return Some((off, nh_at));
        }
        nh_at = off;
        nh = *e.first()?;
        off += (*e.get(1)? as usize + 1) * 8;
        if off > end {
            return None;
        }
    }
    None
}

/// Append the IPv4 options of `opts` whose copied flag is set, padded with
/// end-of-list to a multiple of 4. A malformed option list stops the copy.
fn copied_options(opts: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    for opt in crate::packet::options(opts) {
        if opt[0] & 0x80 != 0 {
            out.extend_from_slice(opt);
        }
    }
    let n = out.len() - start;
    out.resize(start + n.next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{Builder, Ext};

    fn b4() -> Builder {
        Builder::v4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
    }

    #[test]
    fn v4_cut_into_three() {
        let d = b4().ident(99).udp(1, 2, &[0x5a; 100]);
        let l = FragLayout::for_datagram(&d, 99, &[40, 80]).unwrap();
        assert_eq!(l.payload_len(), 108);
        let f = l.fragments(&d).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f.iter().map(|x| x.len()).collect::<Vec<_>>(), [60, 60, 48]);
        for (x, (off, mf)) in f.iter().zip([(0u16, true), (5, true), (10, false)]) {
            assert_eq!(be16(x, 6), (mf as u16) << 13 | off);
            assert_eq!(be16(x, 4), 99);
            assert_eq!(csum_fold(csum_add(0, &x[..20])), 0xffff, "header checksum");
        }
        assert_eq!(&f[0][20..], &d[20..60]);
        assert_eq!(&f[2][20..], &d[100..]);
    }

    #[test]
    fn v4_later_fragments_keep_only_copied_options() {
        // Record route (7, not copied) and a copied option 0x94 (router alert).
        let opts = [7, 7, 4, 0, 0, 0, 0, 0x94, 4, 0, 0];
        let d = b4().v4_options(&opts).udp(1, 2, &[1; 64]);
        assert_eq!(d[0] & 0xf, 8);
        let l = FragLayout::for_datagram(&d, 1, &[32]).unwrap();
        let f = l.fragments(&d).unwrap();
        assert_eq!(f[0][0] & 0xf, 8, "first fragment keeps every option");
        assert_eq!(f[1][0] & 0xf, 6);
        assert_eq!(&f[1][20..24], &[0x94, 4, 0, 0]);
        assert_eq!(csum_fold(csum_add(0, &f[1][..24])), 0xffff);
    }

    #[test]
    fn v6_fragment_header_goes_after_the_unfragmentable_part() {
        let d = Builder::v6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
        .ext(Ext::HopByHop)
        .ext(Ext::DestOpts)
        .udp(1, 2, &[3; 50]);
        // Destination options not followed by routing are fragmentable.
        let l = FragLayout::for_datagram(&d, 0xabcdef, &[16]).unwrap();
        assert_eq!((l.hdr_len, l.nh_at), (48, 40));
        let f = l.fragments(&d).unwrap();
        assert_eq!(f[0][40], EXT_FRAGMENT);
        assert_eq!(&f[0][48..56], &[60, 0, 0, 1, 0, 0xab, 0xcd, 0xef]);
        assert_eq!(be16(&f[0], 4) as usize, f[0].len() - 40);
        assert_eq!(&f[1][48..52], &[60, 0, 0, 16]);
        assert_eq!(&f[1][56..], &d[48 + 16..]);
    }

    #[test]
    fn mismatch_and_bad_cuts_are_errors() {
        let d = b4().udp(1, 2, &[0; 40]);
        assert!(
            FragLayout::for_datagram(&d, 1, &[12]).is_none(),
            "not a multiple of 8"
        );
        assert!(
            FragLayout::for_datagram(&d, 1, &[48]).is_none(),
            "past the end"
        );
        assert!(
            FragLayout::for_datagram(&d, 1, &[16, 8]).is_none(),
            "not increasing"
        );
        let l = FragLayout::for_datagram(&d, 1, &[16]).unwrap();
        assert_eq!(l.check(&d[..40]), Err(RefragError::Mismatch));
        let mut hdr = Vec::new();
        assert_eq!(
            l.fragment_header(&d, 2, &mut hdr),
            Err(RefragError::NoPiece)
        );
        let longer = b4().udp(1, 2, &[0; 48]);
        assert_eq!(l.check(&longer), Err(RefragError::Mismatch));
    }
}
