//! `cargo +nightly fuzz run ct_packet_parse`: feed arbitrary bytes to
//! `ct::packet::parse` as both address families under every flag
//! combination. It must never panic, and what it returns must be coherent.
#![no_main]

use ct::packet::{parse, CtPacket, L4Info, PktFlags};
use ct::{Family, Zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let zone = Zone(7);
    for family in [Family::Ipv4, Family::Ipv6] {
        for bits in 0..=PktFlags::all().bits() {
            let flags = PktFlags::from_bits_truncate(bits);
            let info = parse(
                &CtPacket {
                    l3: data,
                    family,
                    flags,
                },
                zone,
            );
            assert_eq!(info.key.zone, zone);
            assert_eq!(info.key.family, family);
            if let L4Info::IcmpError { inner } = info.l4 {
                assert_eq!(inner.zone, zone);
                assert_eq!(inner.family, family);
            }
            if flags.contains(PktFlags::L4_CSUM_GOOD) {
                assert!(!info.l4_csum_checked);
            }
        }
    }
});
