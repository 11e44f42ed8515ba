//! One EAL per test process, shared by all tests of the binary.
#![allow(dead_code)]

use std::sync::OnceLock;

use dpdk_bindings::Eal;

/// EAL arguments for tests: no hugepages, no PCI, a private file prefix, and
/// the virtual devices the tests use.
pub fn test_eal_args(vdevs: &[&str]) -> Vec<String> {
    dpdk_bindings::eal::vdev_only_args(&format!("ferrovs-test-{}", std::process::id()), vdevs)
}

/// Virtual devices every test binary gets.
pub const VDEVS: &[&str] = &[
    "net_ring0",
    "net_ring1",
    "net_ring2",
    "net_null0",
    "net_null1",
];

/// The process-wide EAL, initialised on first use.
pub fn eal() -> Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    *EAL.get_or_init(|| Eal::init(test_eal_args(VDEVS)).expect("EAL init for tests"))
}

/// A test frame: Ethernet header + `payload_len` bytes with `seq` written in.
pub fn frame(seq: u32, payload_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + payload_len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    if payload_len >= 4 {
        f[14..18].copy_from_slice(&seq.to_be_bytes());
    }
    f
}
