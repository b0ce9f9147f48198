//! The shared-state seam: what a [`HealthTracker`](super::HealthTracker) shares with the
//! other replicas of a fleet, through a [`HealthStore`].
//!
//! A fleet of replicas calling OpenRouter on one key sees the same model outages. Without
//! sharing, each replica pays its own failures before it trips and sends its own probe
//! per cooldown. With a store, a replica's trip reaches the others, one probe per
//! cooldown goes upstream fleet-wide, and its success closes the breaker everywhere.
//!
//! What is shared, as [`SharedEvent`]s: a model's **trip** (cooldown end as wall-clock
//! time, trips in a row, [`TripReason`]), its **recovery** (a probe succeeded), and the
//! **probe slot** ([`HealthSink::grant_probe`]). Merges never shorten a cooldown: a trip
//! that ends before the one a replica knows is ignored, whichever replica wrote first.
//!
//! What is not shared: the rolling window of outcomes and the consecutive-failure count.
//! They are per replica on purpose: they change on every request, so sharing them would
//! put the store on the hot path, and a replica's own view of a model (its network, its
//! region) is what its trip decisions should rest on. The first replica to trip tells
//! the rest.
//!
//! The tracker never waits for the store: [`HealthStore::publish`] must return at once
//! (queue the event), and everything a store learns comes back through the
//! [`HealthSink`] from the store's own tasks. Checking a model stays an atomic load.
//!
//! # Example: a store of your own
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use tower_openrouter::health::{
//!     HealthConfig, HealthSink, HealthStore, HealthTracker, SharedEvent, StoreStatus,
//! };
//!
//! /// Two trackers in one process, wired directly (a real store talks to Redis, etcd, ...).
//! #[derive(Default)]
//! struct Loopback {
//!     peers: Mutex<Vec<HealthSink>>,
//! }
//!
//! impl HealthStore for Loopback {
//!     fn attach(&self, sink: HealthSink) {
//!         self.peers.lock().unwrap().push(sink);
//!     }
//!     fn publish(&self, event: SharedEvent) {
//!         for peer in self.peers.lock().unwrap().iter() {
//!             peer.apply(&event);
//!         }
//!     }
//!     fn coordinates_probes(&self) -> bool {
//!         false // each replica probes on its own
//!     }
//!     fn status(&self) -> StoreStatus {
//!         StoreStatus::new("loopback", true)
//!     }
//! }
//!
//! let store = Arc::new(Loopback::default());
//! let config = HealthConfig::default().consecutive_failures(1);
//! let a = HealthTracker::with_store(config.clone(), store.clone());
//! let b = HealthTracker::with_store(config, store.clone());
//!
//! let err = tower_openrouter::Error::new(tower_openrouter::ErrorKind::ProviderError);
//! a.record("openai/gpt-4o", Err(&err));
//! assert!(!a.is_available("openai/gpt-4o"));
//! assert!(!b.is_available("openai/gpt-4o")); // b never called it
//! assert_eq!(b.snapshot()[0].trips, 1);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::breaker::TripReason;
use super::tracker::Inner;

/// A fact about one model's health that replicas share.
///
/// Times are wall-clock ([`SystemTime`]): replicas do not share a monotonic clock. A
/// store should keep them at millisecond precision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharedEvent {
    /// The model cools down until `until`.
    Tripped {
        /// The model id.
        model: Arc<str>,
        /// When the cooldown ends.
        until: SystemTime,
        /// Trips in a row (what the cooldown was multiplied by).
        trips: u32,
        /// Why.
        reason: TripReason,
    },
    /// A probe after the cooldown ending at `until` succeeded: the model is back.
    Recovered {
        /// The model id.
        model: Arc<str>,
        /// The end of the cooldown it recovered from.
        until: SystemTime,
    },
}

impl SharedEvent {
    /// The model the event is about.
    pub fn model(&self) -> &Arc<str> {
        match self {
            SharedEvent::Tripped { model, .. } | SharedEvent::Recovered { model, .. } => model,
        }
    }

    /// The cooldown end the event is about.
    pub fn until(&self) -> SystemTime {
        match self {
            SharedEvent::Tripped { until, .. } | SharedEvent::Recovered { until, .. } => *until,
        }
    }
}

/// Whether a store shares health now, for status pages (the gateway's `/health`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStatus {
    /// The backend (`"redis"`, ...).
    pub backend: &'static str,
    /// Whether the store reaches its backend now. While it does not, the replica runs on
    /// its local health alone.
    pub connected: bool,
    /// Where it points, without credentials (e.g. `redis://cache:6379/0`).
    pub target: Option<String>,
}

impl StoreStatus {
    /// A status of `backend`.
    pub fn new(backend: &'static str, connected: bool) -> Self {
        StoreStatus {
            backend,
            connected,
            target: None,
        }
    }

    /// With the (credential-free) address of the backend.
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
}

/// Where a [`HealthTracker`](super::HealthTracker)'s shared facts go and come from.
///
/// Implementations must never block: [`publish`](Self::publish) is called while a request
/// records its outcome (on trips and recoveries only, never on an ordinary success), and
/// [`coordinates_probes`](Self::coordinates_probes) while a request checks a model whose
/// cooldown is over. Do the I/O on your own task and apply what you learn through the
/// [`HealthSink`] given to [`attach`](Self::attach).
pub trait HealthStore: Send + Sync + 'static {
    /// Called once by [`HealthTracker::with_store`](super::HealthTracker::with_store). The
    /// sink holds the tracker weakly: once the tracker is dropped, applying does nothing
    /// and [`HealthSink::is_attached`] turns false.
    fn attach(&self, sink: HealthSink);

    /// A fact this replica learned: share it. Must return at once.
    fn publish(&self, event: SharedEvent);

    /// Whether the store hands out the probe slot now. While `true`, the tracker admits a
    /// model's probe only once [`HealthSink::grant_probe`] gave this replica the slot for
    /// the current cooldown (others skip the model until the probe's outcome arrives).
    /// While `false` (e.g. the backend is unreachable), every replica probes on its own.
    fn coordinates_probes(&self) -> bool;

    /// Whether the store shares health now, for status pages.
    fn status(&self) -> StoreStatus;
}

/// A tracker, as its [`HealthStore`] sees it: apply facts from other replicas, grant the
/// probe slot, list the trips in force. Cheap to clone; holds the tracker weakly.
#[derive(Clone)]
pub struct HealthSink {
    pub(super) inner: Weak<Inner>,
}

impl fmt::Debug for HealthSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthSink")
            .field("attached", &self.is_attached())
            .finish()
    }
}

impl HealthSink {
    /// Applies a fact from another replica. A trip cools the model until `until` unless it
    /// already cools down at least that long (a cooldown is never shortened); its trips in
    /// a row become at least `trips`. A recovery closes the breaker unless the model
    /// tripped again since (a cooldown ending after `until`). Past trips, and models
    /// beyond the tracker's `max_models`, are ignored. Returns whether anything changed.
    pub fn apply(&self, event: &SharedEvent) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        match event {
            SharedEvent::Tripped {
                model,
                until,
                trips,
                reason,
            } => inner.apply_trip(model, wall_ms(*until), *trips, *reason),
            SharedEvent::Recovered { model, until } => inner.apply_recovery(model, wall_ms(*until)),
        }
    }

    /// Gives this replica the fleet's probe slot of `model` for the cooldown ending at
    /// `until`: once it is over, this replica's next request probes (see
    /// [`HealthStore::coordinates_probes`]). A grant for an older cooldown than the one the
    /// tracker knows does nothing.
    pub fn grant_probe(&self, model: &str, until: SystemTime) {
        if let Some(inner) = self.inner.upgrade() {
            inner.grant_probe(model, wall_ms(until));
        }
    }

    /// The trips in force on this replica (cooldowns not over yet), e.g. to write them
    /// back to a store that lost them.
    pub fn active_trips(&self) -> Vec<SharedEvent> {
        match self.inner.upgrade() {
            Some(inner) => inner.active_trips(),
            None => Vec::new(),
        }
    }

    /// Whether the tracker still exists.
    pub fn is_attached(&self) -> bool {
        self.inner.strong_count() > 0
    }
}

/// Per-model state of the seam, beside the breaker: the cooldown end the fleet knows
/// (wall-clock ms, the max of every trip seen) and the cooldown this replica holds the
/// probe slot for. Two atomics; untouched without a store.
#[derive(Debug, Default)]
pub(crate) struct SharedSlot {
    until_ms: AtomicU64,
    granted_ms: AtomicU64,
    /// The reason of the latest trip ([`TripReason::index`]).
    reason: AtomicU8,
}

impl SharedSlot {
    /// The cooldown end known (0: none).
    pub(crate) fn until_ms(&self) -> u64 {
        self.until_ms.load(Ordering::Acquire)
    }

    /// Raises the known cooldown end to `ms`; returns whether it rose.
    pub(crate) fn raise(&self, ms: u64) -> bool {
        self.until_ms.fetch_max(ms, Ordering::AcqRel) < ms
    }

    pub(crate) fn grant(&self, ms: u64) {
        self.granted_ms.fetch_max(ms, Ordering::AcqRel);
    }

    pub(crate) fn set_reason(&self, reason: TripReason) {
        self.reason.store(reason.index(), Ordering::Relaxed);
    }

    pub(crate) fn reason(&self) -> TripReason {
        TripReason::from_index(self.reason.load(Ordering::Relaxed))
    }

    /// Whether this replica holds the probe slot of the current cooldown.
    pub(crate) fn granted(&self) -> bool {
        self.granted_ms.load(Ordering::Acquire) >= self.until_ms()
    }
}

/// `url` without credentials: `redis://user:secret@host/0` -> `redis://***@host/0`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return "<not a URL>".to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The wall-clock time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_wall_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    wall_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_only_rises() {
        let s = SharedSlot::default();
        assert!(s.raise(10));
        assert!(!s.raise(5));
        assert_eq!(s.until_ms(), 10);
        assert!(!s.granted());
        s.grant(9);
        assert!(!s.granted(), "a grant for an older cooldown");
        s.grant(10);
        assert!(s.granted());
        s.raise(20);
        assert!(!s.granted(), "a new cooldown needs a new grant");
    }

    #[test]
    fn wall_ms_round_trips() {
        assert_eq!(wall_ms(from_wall_ms(1_700_000_000_123)), 1_700_000_000_123);
        assert_eq!(wall_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
