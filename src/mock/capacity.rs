//! A model's capacity in the stand-in: 429 with `Retry-After` above N requests in flight
//! or above R requests per second (see [`ModelScript::max_in_flight`](super::ModelScript::max_in_flight)).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The capacity settings and counters of one model.
pub(crate) struct Capacity {
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) max_per_second: Option<u32>,
    pub(crate) retry_after: u64,
    /// How long a capacity 429 takes.
    pub(crate) reject_delay: Duration,
    in_flight: Arc<AtomicU32>,
    /// The start of the current one-second slot and the requests admitted in it.
    second: Option<(Instant, u32)>,
    pub(crate) rejected: u64,
    pub(crate) peak_in_flight: u32,
}

/// One admitted request in flight; dropped when its response (body included) is done.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            max_in_flight: None,
            max_per_second: None,
            retry_after: 1,
            reject_delay: Duration::ZERO,
            in_flight: Arc::default(),
            second: None,
            rejected: 0,
            peak_in_flight: 0,
        }
    }
}

impl Capacity {
    /// Admits one request (`Some` guard) or rejects it (`None`: answer 429).
    pub(crate) fn admit(&mut self, now: Instant) -> Option<InFlight> {
        let n = self.in_flight.load(Ordering::Acquire);
        if self.max_in_flight.is_some_and(|max| n >= max) {
            self.rejected += 1;
            return None;
        }
        if let Some(max) = self.max_per_second {
            let slot = match self.second {
                Some((start, count)) if now < start + Duration::from_secs(1) => (start, count),
                _ => (now, 0),
            };
            if slot.1 >= max {
                self.second = Some(slot);
                self.rejected += 1;
                return None;
            }
            self.second = Some((slot.0, slot.1 + 1));
        }
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_in_flight = self.peak_in_flight.max(n);
        Some(InFlight(self.in_flight.clone()))
    }
}
