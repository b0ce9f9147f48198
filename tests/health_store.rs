//! The shared-store seam of the health tracker, with an in-process store: what a tracker
//! publishes, what it applies from other replicas, and the fleet's probe slot.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tower_openrouter::health::{
    Admission, BreakerState, HealthConfig, HealthSink, HealthStore, HealthTracker, SharedEvent,
    StoreStatus, TripReason,
};
use tower_openrouter::{Error, ErrorKind};

const M: &str = "openai/gpt-4o";

/// Records what was published; forwards it to the other attached trackers when `relay`.
#[derive(Default)]
struct Recording {
    published: Mutex<Vec<SharedEvent>>,
    sinks: Mutex<Vec<HealthSink>>,
    coordinates: bool,
    relay: bool,
}

impl HealthStore for Recording {
    fn attach(&self, sink: HealthSink) {
        self.sinks.lock().unwrap().push(sink);
    }
    fn publish(&self, event: SharedEvent) {
        self.published.lock().unwrap().push(event.clone());
        if self.relay {
            for s in self.sinks.lock().unwrap().iter() {
                s.apply(&event);
            }
        }
    }
    fn coordinates_probes(&self) -> bool {
        self.coordinates
    }
    fn status(&self) -> StoreStatus {
        StoreStatus::new("recording", true)
    }
}

impl Recording {
    fn sink(&self, i: usize) -> HealthSink {
        self.sinks.lock().unwrap()[i].clone()
    }
    fn events(&self) -> Vec<SharedEvent> {
        self.published.lock().unwrap().clone()
    }
}

fn config() -> HealthConfig {
    HealthConfig::default()
        .consecutive_failures(2)
        .cooldown(Duration::from_secs(10))
        .jitter(0.0)
}

fn fail(t: &HealthTracker) {
    t.record(M, Err(&Error::new(ErrorKind::ProviderError)));
}

fn in_secs(s: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn a_trip_is_published_once_with_its_wall_clock_end_trips_and_reason() {
    let store = Arc::new(Recording::default());
    let t = HealthTracker::with_store(config(), store.clone());
    let before = SystemTime::now();
    fail(&t);
    assert!(store.events().is_empty(), "one failure is no trip");
    fail(&t);
    let events = store.events();
    assert_eq!(events.len(), 1);
    let SharedEvent::Tripped {
        model,
        until,
        trips,
        reason,
    } = &events[0]
    else {
        panic!("not a trip: {events:?}")
    };
    assert_eq!(&**model, M);
    assert_eq!(*trips, 1);
    assert_eq!(*reason, TripReason::ConsecutiveFailures);
    let left = until.duration_since(before).unwrap();
    assert!(
        left >= Duration::from_millis(9_990) && left < Duration::from_secs(11),
        "{left:?}"
    );
    // Failures while open publish nothing more.
    fail(&t);
    assert_eq!(store.events().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_probe_success_publishes_the_recovery_of_that_cooldown() {
    let store = Arc::new(Recording::default());
    let t = HealthTracker::with_store(config(), store.clone());
    fail(&t);
    fail(&t);
    tokio::time::advance(Duration::from_secs(10)).await;
    // The store does not coordinate: the local probe goes ahead.
    assert_eq!(t.check(M), Admission::Probe);
    t.record(M, Ok(()));
    let events = store.events();
    assert_eq!(events.len(), 2);
    assert!(
        matches!(&events[1], SharedEvent::Recovered { until, .. } if *until == events[0].until())
    );
}

#[tokio::test(start_paused = true)]
async fn another_replicas_trip_cools_a_model_never_called_here() {
    let store = Arc::new(Recording::default());
    let t = HealthTracker::with_store(config(), store.clone());
    assert!(store.sink(0).apply(&SharedEvent::Tripped {
        model: M.into(),
        until: in_secs(60),
        trips: 3,
        reason: TripReason::FailureRatio,
    }));
    let Admission::CoolingDown { until } = t.check(M) else {
        panic!("not cooling")
    };
    let left = until - tokio::time::Instant::now();
    assert!(
        left > Duration::from_secs(59) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    let h = &t.snapshot()[0];
    assert_eq!((h.state, h.trips), (BreakerState::Open, 3));
    // Applying is not publishing: nothing echoes back.
    assert!(store.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn merges_never_shorten_a_cooldown() {
    let store = Arc::new(Recording::default());
    let t = HealthTracker::with_store(config(), store.clone());
    let sink = store.sink(0);
    let trip = |s: u64, trips: u32| SharedEvent::Tripped {
        model: M.into(),
        until: in_secs(s),
        trips,
        reason: TripReason::ConsecutiveFailures,
    };
    assert!(sink.apply(&trip(60, 1)));
    assert!(!sink.apply(&trip(1, 5)), "a shorter trip changes nothing");
    let until = t.cooldown_until(M).unwrap();
    assert!(until - tokio::time::Instant::now() > Duration::from_secs(59));
    assert_eq!(t.snapshot()[0].trips, 1);
    // A trip already over is ignored, also for a model not seen yet.
    assert!(!sink.apply(&SharedEvent::Tripped {
        model: "x/y".into(),
        until: SystemTime::now() - Duration::from_secs(1),
        trips: 1,
        reason: TripReason::RetryAfter,
    }));
    assert!(t.is_available("x/y"));
    // A local trip during a longer shared cooldown keeps the longer one.
    fail(&t);
    fail(&t);
    assert!(t.cooldown_until(M).unwrap() - tokio::time::Instant::now() > Duration::from_secs(59));
}

#[tokio::test(start_paused = true)]
async fn a_recovery_closes_unless_the_model_tripped_again_since() {
    let store = Arc::new(Recording::default());
    let t = HealthTracker::with_store(config(), store.clone());
    let sink = store.sink(0);
    let old = in_secs(30);
    sink.apply(&SharedEvent::Tripped {
        model: M.into(),
        until: old,
        trips: 1,
        reason: TripReason::ConsecutiveFailures,
    });
    let newer = old + Duration::from_secs(30);
    sink.apply(&SharedEvent::Tripped {
        model: M.into(),
        until: newer,
        trips: 2,
        reason: TripReason::ProbeFailed,
    });
    assert!(!sink.apply(&SharedEvent::Recovered {
        model: M.into(),
        until: old
    }));
    assert!(!t.is_available(M));
    assert!(sink.apply(&SharedEvent::Recovered {
        model: M.into(),
        until: newer
    }));
    assert!(t.is_available(M));
    let h = &t.snapshot()[0];
    assert_eq!((h.state, h.consecutive_failures), (BreakerState::Closed, 0));
}

#[tokio::test(start_paused = true)]
async fn a_coordinating_store_admits_the_probe_only_with_the_slot() {
    let store = Arc::new(Recording {
        coordinates: true,
        ..Recording::default()
    });
    let t = HealthTracker::with_store(config(), store.clone());
    fail(&t);
    fail(&t);
    let until = store.events()[0].until();
    tokio::time::advance(Duration::from_secs(10)).await;
    // Over, but the fleet's slot is not ours: skip, without a probe.
    assert!(matches!(t.check(M), Admission::CoolingDown { .. }));
    assert!(!t.is_available(M));
    // A grant for an older cooldown does not count.
    store
        .sink(0)
        .grant_probe(M, until - Duration::from_millis(1));
    assert!(matches!(t.check(M), Admission::CoolingDown { .. }));
    store.sink(0).grant_probe(M, until);
    assert!(t.is_available(M));
    assert_eq!(t.check(M), Admission::Probe);
    assert!(matches!(t.check(M), Admission::CoolingDown { .. }));
}

#[tokio::test(start_paused = true)]
async fn two_trackers_on_one_store_share_a_trip_and_the_recovery() {
    let store = Arc::new(Recording {
        relay: true,
        ..Recording::default()
    });
    let a = HealthTracker::with_store(config(), store.clone());
    let b = HealthTracker::with_store(config(), store.clone());
    fail(&a);
    fail(&a);
    assert!(!b.is_available(M));
    let active = store.sink(1).active_trips();
    assert_eq!(active.len(), 1);
    assert!(
        matches!(&active[0], SharedEvent::Tripped { trips: 1, reason: TripReason::ConsecutiveFailures, until, .. } if *until == store.events()[0].until())
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(a.check(M), Admission::Probe);
    a.record(M, Ok(()));
    assert_eq!(b.snapshot()[0].state, BreakerState::Closed);
    assert!(store.sink(1).active_trips().is_empty());
}

#[test]
fn a_sink_of_a_dropped_tracker_does_nothing() {
    let store = Arc::new(Recording::default());
    let t = HealthTracker::with_store(config(), store.clone());
    let sink = store.sink(0);
    assert!(sink.is_attached());
    drop(t);
    assert!(!sink.is_attached());
    assert!(!sink.apply(&SharedEvent::Recovered {
        model: M.into(),
        until: SystemTime::now()
    }));
    assert!(sink.active_trips().is_empty());
}
