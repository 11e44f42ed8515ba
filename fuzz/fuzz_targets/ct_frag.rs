//! `cargo +nightly fuzz run ct_frag`: feed arbitrary packets (the input
//! split on length prefixes) to a small `ct::frag::Reassembler`. It must
//! never panic, stay within its bounds, and every datagram it completes must
//! cut back into fragments along its own layout.
#![no_main]

use ct::frag::{FragConfig, Outcome, Reassembler};
use ct::packet::{CtPacket, PktFlags};
use ct::{Family, Zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = FragConfig {
        max_bytes: 8192,
        max_datagrams: 8,
        max_datagrams_per_zone: 4,
        max_fragments: 8,
        ..Default::default()
    };
    let mut r = Reassembler::new(cfg);
    let mut rest = data;
    let mut now = 0u64;
    while let [len, meta, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (pkt, next) = tail.split_at(n);
        rest = next;
        now += u64::from(meta >> 4) * 1_000_000_000;
        let family = if meta & 1 == 0 {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        let flags = PktFlags::from_bits_truncate(meta >> 1 & 0x3);
        let out = r.push(
            Zone(u16::from(meta >> 3 & 1)),
            &CtPacket {
                l3: pkt,
                family,
                flags,
            },
            now,
        );
        if let Outcome::Complete(c) = out {
            let len = c
                .layout
                .check(&c.datagram)
                .expect("layout fits its datagram");
            assert_eq!(len, c.datagram.len());
            c.layout.fragments(&c.datagram).expect("cuts");
        }
        assert!(r.bytes() <= 8192);
        assert!(r.datagrams() <= 8);
    }
});
