//! The lookup path allocates nothing: a counting allocator watches 10,000
//! classifier lookups through a `Reader` (the way a poll-mode thread uses it).
//!
//! The library itself forbids unsafe code; this test binary needs one
//! `unsafe impl` to install a global allocator that delegates to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ofproto::classifier::Published;
use ofproto::fields::{Field, FlowKey, FlowMask};
use ofproto::{Classifier, Match};

struct Counting;

thread_local! {
    /// Count only this test thread's allocations (the harness's own threads
    /// may allocate meanwhile). A const-initialized `Cell` needs no allocation.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; the counter has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded verbatim, see above.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded verbatim, see above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn lookups_do_not_allocate() {
    let mut c: Classifier<u32> = Classifier::new();
    for i in 0..1000u32 {
        let mut m = Match::default();
        m.set_exact(Field::DL_TYPE, 0x0800);
        let prefix = 8 + (i % 8) * 3;
        m.set(
            Field::NW_SRC,
            (i as u128) << 8,
            ((u32::MAX << (32 - prefix)) as u128) & 0xffff_ffff,
        );
        if i % 2 == 0 {
            m.set_exact(Field::TP_DST, (i % 100) as u128);
            m.set_exact(Field::NW_PROTO, 6);
        }
        c.insert(&m, (i % 97) as u16, i as u64, Arc::new(i));
    }
    let published = Published::new(c);
    let mut reader = published.reader();
    let keys: Vec<FlowKey> = (0..64u32)
        .map(|i| {
            let mut k = FlowKey::default();
            k.set(Field::DL_TYPE, 0x0800);
            k.set(Field::NW_PROTO, 6);
            k.set(Field::NW_SRC, ((i * 37) << 8) as u128);
            k.set(Field::TP_DST, (i % 100) as u128);
            k
        })
        .collect();
    let mut hits = 0u64;
    COUNTING.with(|c| c.set(true));
    for n in 0..10_000usize {
        let snap = reader.get();
        let mut wc = FlowMask::default();
        if snap.lookup(&keys[n % keys.len()], &mut wc).is_some() {
            hits += 1;
        }
    }
    COUNTING.with(|c| c.set(false));
    assert!(hits > 0, "the workload must actually hit rules");
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations on the lookup path"
    );
}
