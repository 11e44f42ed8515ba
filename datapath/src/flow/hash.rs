//! The hash of a [`FlowKey`] used to index the exact-match cache.
//!
//! Four independent multiply–rotate lanes run over the key's words (so the
//! multiplies overlap in the pipeline instead of forming one long chain),
//! then a final avalanche mixes the lanes. Not cryptographic: the caches
//! that use it bound their probe length, so a poor distribution costs hit
//! rate, never correctness.

use super::key::{FlowKey, FLOW_WORDS};

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xc2b2_ae3d_27d4_eb4f;
const K2: u64 = 0x1656_67b1_9e37_79f9;
const K3: u64 = 0xd6e8_feb8_6659_fd93;

#[inline(always)]
fn lane(h: u64, w: u64, k: u64) -> u64 {
    (h ^ w).wrapping_mul(k).rotate_left(29)
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
    let (mut a, mut b, mut c, mut d) = (basis ^ K0, basis ^ K1, basis ^ K2, basis ^ K3);
    let mut i = 0;
    while i + 4 <= FLOW_WORDS {
        a = lane(a, w[i], K0);
        b = lane(b, w[i + 1], K1);
        c = lane(c, w[i + 2], K2);
        d = lane(d, w[i + 3], K3);
        i += 4;
    }
    while i < FLOW_WORDS {
        a = lane(a, w[i], K0);
        i += 1;
    }
    let h = a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(47);
    let h = avalanche(h);
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
        let base = FlowKey::ZERO;
        let h0 = flow_hash(&base, 7);
        for w in 0..FLOW_WORDS {
            for bit in 0..64 {
                let mut k = base;
                k.words_mut()[w] ^= 1 << bit;
                assert_ne!(flow_hash(&k, 7), h0, "word {w} bit {bit}");
            }
        }
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
