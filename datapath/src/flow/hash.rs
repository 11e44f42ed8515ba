//! The hash of a [`FlowKey`] used to index the exact-match cache.
//!
//! The key's words are taken in pairs; each pair, XORed with its own secret
//! constant (and the caller's basis), is multiplied as a 64x64->128-bit
//! product whose halves are folded together, and the thirteen folded products
//! are summed. The products do not depend on each other, so they run in
//! parallel; a final avalanche spreads every bit over the result. Not
//! cryptographic: the caches that use it bound their probe length, so a
//! poor distribution costs hit rate, never correctness.
//!
//! Cost: about 8 ns per key on the development machine (`extract-bench`'s
//! "with key hash" column). A cache may instead start from the NIC's RSS
//! hash ([`crate::PacketMeta::rss_hash`]) when the port provides one,
//! mixed with the recirculation id, as OVS's exact-match cache does; any
//! function of the key is correct, since cache entries compare whole keys.

use super::key::{FlowKey, FLOW_WORDS};

/// One secret per key word (random odd constants, fixed so hashes are
/// stable across runs).
const SECRETS: [u64; FLOW_WORDS] = [
    0x90e9079313ded041,
    0xf4ccfb30e6d2a3bd,
    0xcfc7d7df8d8f4473,
    0x63b512325954db6d,
    0x191034e1b22ea03b,
    0x3e5e5d9d52c58fa5,
    0x283ad0369efd11ed,
    0x72189e0c471455e9,
    0xb7d9d7a1c7e6f269,
    0xbc3e821497deaea1,
    0xf5516ac14b667195,
    0x246f395242dbcf5d,
    0xcdbf4d2685ee5323,
    0xfe35e41fd5b2d9ed,
    0xa9044c4f63f0f8b1,
    0x4af0d811151e3615,
    0x27e350c2297516bf,
    0x5bb16ff2a035fc97,
    0x487b8034b3715d11,
    0x40628752037ed6e5,
    0x9e6c63d0676a9a99,
    0xd9c4eb7b26b44c2b,
    0x2f5d1a6f82a4e3b7,
    0x6c2f94d1b3e8a5c3,
    0xe7a1c4b2d9f06e5d,
    0x13b8f6a4c2d7e91f,
];

/// The 128-bit product of `a` and `b`, high half XOR low half.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Final avalanche (every input bit affects every output bit).
#[inline(always)]
fn avalanche(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Hash of `key` mixed with `basis` (e.g. a per-cache random basis).
#[inline]
pub fn flow_hash(key: &FlowKey, basis: u64) -> u32 {
    let w = key.words();
    let mut acc = basis;
    let mut i = 0;
    while i + 1 < FLOW_WORDS {
        acc = acc.wrapping_add(folded_multiply(
            w[i] ^ SECRETS[i] ^ basis,
            w[i + 1] ^ SECRETS[i + 1],
        ));
        i += 2;
    }
    let h = avalanche(acc);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn equal_keys_hash_equal_and_basis_matters() {
        let mut k = FlowKey::ZERO;
        k.set_nw_src(0x0a000001);
        let k2 = k;
        assert_eq!(flow_hash(&k, 0), flow_hash(&k2, 0));
        assert_ne!(flow_hash(&k, 0), flow_hash(&k, 1));
    }

    #[test]
    fn every_single_bit_change_changes_the_hash() {
        let mut typical = FlowKey::ZERO;
        typical.set_dl_type(0x0800);
        typical.set_nw_src(0x0a00_0001);
        typical.set_nw_dst(0xac10_0001);
        typical.set_nw_proto(6);
        typical.set_tp_src(40000);
        typical.set_tp_dst(80);
        for base in [FlowKey::ZERO, typical] {
            let h0 = flow_hash(&base, 7);
            for w in 0..FLOW_WORDS {
                for bit in 0..64 {
                    let mut k = base;
                    k.words_mut()[w] ^= 1 << bit;
                    assert_ne!(flow_hash(&k, 7), h0, "word {w} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn swapping_two_words_changes_the_hash() {
        // Position matters: the same values in other words hash apart.
        let mut a = FlowKey::ZERO;
        a.set_nw_src(0x0a00_0001);
        a.set_nw_dst(0x0a00_0002);
        let mut b = FlowKey::ZERO;
        b.set_nw_src(0x0a00_0002);
        b.set_nw_dst(0x0a00_0001);
        assert_ne!(flow_hash(&a, 0), flow_hash(&b, 0));
        let mut c = FlowKey::ZERO;
        c.set_tp_src(80);
        let mut d = FlowKey::ZERO;
        d.set_tp_dst(80);
        assert_ne!(flow_hash(&c, 0), flow_hash(&d, 0));
    }

    #[test]
    fn five_tuples_spread_over_buckets() {
        // 64k flows differing only in source port and address into 4096
        // buckets: expect 16 per bucket; allow no bucket above 48 and few
        // full 32-bit collisions.
        let mut buckets = vec![0u32; 4096];
        let mut seen = HashSet::new();
        for i in 0..65536u32 {
            let mut k = FlowKey::ZERO;
            k.set_dl_type(0x0800);
            k.set_nw_proto(17);
            k.set_nw_src(0x0a00_0000 | (i >> 8));
            k.set_tp_src(1024 + (i & 0xff) as u16);
            k.set_tp_dst(53);
            let h = flow_hash(&k, 0);
            buckets[(h & 4095) as usize] += 1;
            seen.insert(h);
        }
        let max = *buckets.iter().max().unwrap();
        assert!(max <= 48, "worst bucket {max}");
        assert!(seen.len() >= 65530, "{} distinct hashes", seen.len());
    }
}
