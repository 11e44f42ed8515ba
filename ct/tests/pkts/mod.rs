//! Test packet constructors over `ct::build`, with the argument order the
//! conntrack tests read best in.
#![allow(dead_code)]

use ct::build::{self, Builder, Tcp};

fn b(src: &str, dst: &str) -> Builder {
    Builder::ip(
        src.parse().expect("src address"),
        dst.parse().expect("dst address"),
    )
}

/// UDP with a real checksum and 18 bytes of payload.
pub fn udp4(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    b(src, dst).udp(sport, dport, &[0x5a; 18])
}
pub fn udp4_csum(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    udp4(src, dst, sport, dport)
}
pub fn udp6(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    b(src, dst).udp(sport, dport, &[0x5a; 18])
}

/// TCP segment with `payload` zero bytes.
#[allow(clippy::too_many_arguments)]
pub fn tcp4(
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    payload: usize,
) -> Vec<u8> {
    b(src, dst).tcp(
        &Tcp::new(sport, dport)
            .seq(seq)
            .ack(ack)
            .flags(flags)
            .win(win)
            .payload(&vec![0; payload]),
    )
}

pub fn icmp4_echo(src: &str, dst: &str, id: u16, request: bool) -> Vec<u8> {
    if request {
        b(src, dst).echo_request(id, 1, b"ping")
    } else {
        b(src, dst).echo_reply(id, 1, b"ping")
    }
}
pub fn icmp6_echo(src: &str, dst: &str, id: u16, request: bool) -> Vec<u8> {
    icmp4_echo(src, dst, id, request)
}

/// ICMP/ICMPv6 error quoting `orig`.
pub fn icmp4_error(src: &str, dst: &str, ty: u8, code: u8, orig: &[u8]) -> Vec<u8> {
    b(src, dst).icmp_error(ty, code, orig)
}
pub fn icmp6_error(src: &str, dst: &str, ty: u8, code: u8, orig: &[u8]) -> Vec<u8> {
    icmp4_error(src, dst, ty, code, orig)
}

/// Ethernet frame around L3 bytes.
pub fn ether(l3: &[u8]) -> Vec<u8> {
    build::ethernet(l3)
}

/// UDP with `len` bytes of patterned payload (for fragmenting).
pub fn udp_big(src: &str, dst: &str, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    b(src, dst).udp(sport, dport, &payload)
}

/// ICMPv6 echo request/reply with `len` bytes of payload.
pub fn icmp6_echo_big(src: &str, dst: &str, id: u16, request: bool, len: usize) -> Vec<u8> {
    let payload = vec![0x61; len];
    if request {
        b(src, dst).echo_request(id, 1, &payload)
    } else {
        b(src, dst).echo_reply(id, 1, &payload)
    }
}
