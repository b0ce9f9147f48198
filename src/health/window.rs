//! The rolling window of outcomes: bucketed atomic counters keyed by time slot.
//!
//! Each bucket is one `AtomicU64` holding `[slot tag: 22 bits][successes: 21][failures: 21]`,
//! so an update (including the reset of a stale bucket) is a single compare-and-swap and
//! no count is ever lost to a race between two writers. Counts saturate at 2^21 - 1 per
//! bucket (about two million calls of one model in one time slot).
//!
//! A bucket counts while its tag is one of the last `buckets` slots. Tags are the slot
//! number modulo 2^22: a bucket untouched for exactly a multiple of 2^22 slots would
//! wrongly count again (with the default 3 s slots, that is a gap of 145 days to the
//! slot).

use std::sync::atomic::{AtomicU64, Ordering};

const COUNT_BITS: u32 = 21;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TAG_BITS: u32 = 22;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

fn pack(tag: u64, successes: u64, failures: u64) -> u64 {
    (tag << (2 * COUNT_BITS)) | (successes << COUNT_BITS) | failures
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (2 * COUNT_BITS),
        (word >> COUNT_BITS) & COUNT_MAX,
        word & COUNT_MAX,
    )
}

/// Successes and failures in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) successes: u64,
    pub(crate) failures: u64,
}

impl Totals {
    pub(crate) fn calls(&self) -> u64 {
        self.successes + self.failures
    }

    pub(crate) fn success_rate(&self) -> Option<f64> {
        let calls = self.calls();
        (calls > 0).then(|| self.successes as f64 / calls as f64)
    }
}

/// What one update does to a bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Update {
    Success,
    Failure,
    /// A failure that takes back a success recorded earlier (a stream that died after its
    /// first token): turns one success of the current bucket into a failure, or, when the
    /// current bucket has none, adds a failure.
    SuccessBecameFailure,
}

pub(crate) struct Window {
    buckets: Box<[AtomicU64]>,
    slot_nanos: u64,
}

impl Window {
    pub(crate) fn new(buckets: u32, window_nanos: u64) -> Self {
        let n = u64::from(buckets.max(1));
        Window {
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            slot_nanos: (window_nanos / n).max(1),
        }
    }

    fn slot(&self, now_nanos: u64) -> u64 {
        now_nanos / self.slot_nanos
    }

    /// Records one outcome at `now_nanos` (since the tracker's epoch).
    pub(crate) fn record(&self, now_nanos: u64, update: Update) {
        let slot = self.slot(now_nanos);
        let tag = slot & TAG_MASK;
        let bucket = &self.buckets[(slot % self.buckets.len() as u64) as usize];
        let mut cur = bucket.load(Ordering::Relaxed);
        loop {
            let (t, mut s, mut f) = unpack(cur);
            if t != tag {
                s = 0;
                f = 0;
            }
            match update {
                Update::Success => s = (s + 1).min(COUNT_MAX),
                Update::Failure => f = (f + 1).min(COUNT_MAX),
                Update::SuccessBecameFailure => {
                    s = s.saturating_sub(1);
                    f = (f + 1).min(COUNT_MAX);
                }
            }
            match bucket.compare_exchange_weak(
                cur,
                pack(tag, s, f),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Successes and failures of the last `buckets` slots up to `now_nanos`.
    pub(crate) fn totals(&self, now_nanos: u64) -> Totals {
        let cur = self.slot(now_nanos) & TAG_MASK;
        let n = self.buckets.len() as u64;
        let mut totals = Totals::default();
        for b in self.buckets.iter() {
            let (t, s, f) = unpack(b.load(Ordering::Relaxed));
            if cur.wrapping_sub(t) & TAG_MASK < n {
                totals.successes += s;
                totals.failures += f;
            }
        }
        totals
    }

    /// Forgets every outcome.
    pub(crate) fn clear(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn outcomes_leave_the_window_slot_by_slot() {
        // 30 s in 10 slots of 3 s.
        let w = Window::new(10, 30 * SEC);
        w.record(0, Update::Failure);
        w.record(SEC, Update::Success);
        w.record(4 * SEC, Update::Success);
        assert_eq!(
            w.totals(5 * SEC),
            Totals {
                successes: 2,
                failures: 1
            }
        );
        // Slot 0 (0..3 s) is still in the window at 29.9 s, gone at 30 s.
        assert_eq!(w.totals(30 * SEC - 1).calls(), 3);
        assert_eq!(
            w.totals(30 * SEC),
            Totals {
                successes: 1,
                failures: 0
            }
        );
        assert_eq!(w.totals(33 * SEC).calls(), 0);
        assert_eq!(w.totals(33 * SEC).success_rate(), None);
        // A stale bucket is reset by the next write to its position.
        w.record(30 * SEC, Update::Success);
        assert_eq!(
            w.totals(30 * SEC),
            Totals {
                successes: 2,
                failures: 0
            }
        );
    }

    #[test]
    fn success_became_failure_moves_one_count() {
        let w = Window::new(10, 30 * SEC);
        w.record(0, Update::Success);
        w.record(0, Update::SuccessBecameFailure);
        assert_eq!(
            w.totals(0),
            Totals {
                successes: 0,
                failures: 1
            }
        );
        // Nothing to take back: just a failure.
        w.record(0, Update::SuccessBecameFailure);
        assert_eq!(w.totals(0).failures, 2);
    }

    #[test]
    fn counts_saturate_without_spilling() {
        let w = Window::new(1, SEC);
        let b = &w.buckets[0];
        b.store(pack(0, COUNT_MAX, COUNT_MAX), Ordering::Relaxed);
        w.record(0, Update::Success);
        w.record(0, Update::Failure);
        assert_eq!(unpack(b.load(Ordering::Relaxed)), (0, COUNT_MAX, COUNT_MAX));
    }

    #[test]
    fn clear_forgets_everything() {
        let w = Window::new(4, 4 * SEC);
        for i in 0..4 {
            w.record(i * SEC, Update::Failure);
        }
        assert_eq!(w.totals(3 * SEC).failures, 4);
        w.clear();
        assert_eq!(w.totals(3 * SEC).calls(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The window counts exactly the outcomes of the last `buckets` slots.
        #[test]
        fn totals_match_a_naive_count(
            buckets in 1u32..12,
            slot in 1u64..5_000,
            steps in proptest::collection::vec((0u64..4_000, 0u8..3), 1..200),
        ) {
            let w = Window::new(buckets, slot * u64::from(buckets));
            let mut now = 0u64;
            // (slot, success?) of every outcome, with stream take-backs applied naively.
            let mut log: Vec<(u64, bool)> = Vec::new();
            for (gap, kind) in steps {
                now += gap;
                let s = now / slot;
                match kind {
                    0 => { w.record(now, Update::Success); log.push((s, true)); }
                    1 => { w.record(now, Update::Failure); log.push((s, false)); }
                    _ => {
                        w.record(now, Update::SuccessBecameFailure);
                        if let Some(i) = log.iter().rposition(|&(ls, ok)| ls == s && ok) {
                            log[i].1 = false;
                        } else {
                            log.push((s, false));
                        }
                    }
                }
                let cur = now / slot;
                let live = log.iter().filter(|&&(ls, _)| ls + u64::from(buckets) > cur);
                let (ok, bad) = live.fold((0, 0), |(o, b), &(_, x)| if x { (o + 1, b) } else { (o, b + 1) });
                proptest::prop_assert_eq!(w.totals(now), Totals { successes: ok, failures: bad });
            }
        }
    }
}
