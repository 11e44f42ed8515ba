//! Counters shared by the datapath's stages and ports.
//!
//! Ports keep [`AtomicCounter`]s that the thread polling the port bumps once
//! per batch (relaxed ordering: the numbers are for display, not for
//! synchronisation) and that the control plane reads at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter written by one thread at a time and
/// read by any.
#[derive(Debug, Default)]
pub struct AtomicCounter(AtomicU64);

impl AtomicCounter {
    /// A counter at zero.
    pub const fn new() -> Self {
        AtomicCounter(AtomicU64::new(0))
    }

    /// Add `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        if n != 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_adds_across_threads() {
        let c = std::sync::Arc::new(AtomicCounter::new());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(2);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(c.get(), 8000);
    }
}
