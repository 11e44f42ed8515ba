//! A cache prefetch hint for batch processing: issue the loads of a whole
//! batch first, so their cache misses overlap instead of stalling one by
//! one (OVS prefetches EMC entries and packet data the same way).

/// Ask the CPU to bring the cache line holding `value` into L1. A hint
/// only: nothing is read, nothing can fault, and on targets without a
/// prefetch instruction it does nothing.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is `unsafe` only because it is a
    // `#[target_feature(enable = "sse")]` function; SSE is part of the
    // x86_64 baseline, and a prefetch never dereferences its argument in a
    // way that can fault or be observed (the pointer comes from a
    // reference anyway).
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
