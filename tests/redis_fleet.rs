//! Model health shared across replicas through a real `redis-server` (feature `redis`).
//!
//! Each test starts its own `redis-server` on a free loopback port with persistence off
//! and kills it when done (a Drop guard). Without `redis-server` on the PATH the tests
//! are skipped with a message, except in CI (`CI` set), where they fail: there they must
//! run (`.ci/run` installs the package).
//!
//! Times here are wall-clock (Redis is a real server): every wait polls its condition
//! with a bounded deadline; nothing sleeps for a guessed duration.
#![cfg(all(feature = "redis", feature = "mock"))]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::health::{
    BreakerState, HealthConfig, HealthStore, HealthTracker, RedisHealthStore, RedisStoreConfig,
    SharedEvent, TripReason,
};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer};

const P: &str = "anthropic/claude-sonnet-4.5";
const Q: &str = "openai/gpt-4o";
const BACKUP: &str = "google/gemini-2.5-flash";
const BODY: &str =
    r#"{"model":"anthropic/claude-sonnet-4.5","messages":[{"role":"user","content":"hi"}]}"#;

// ---------------------------------------------------------------------------------------
// A real redis-server, started and killed by the test.
// ---------------------------------------------------------------------------------------

struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// A server on a free port, or `None` (skip) when `redis-server` is missing outside CI.
    fn start() -> Option<RedisServer> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            if std::env::var_os("CI").is_some() {
                panic!("redis-server is not installed, and CI must run the Redis tests: apt-get install -y redis-server");
            }
            eprintln!("skipping: redis-server is not installed (apt-get install -y redis-server, then run `cargo test --all-features --test redis_fleet`)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer { child: None, port };
        server.spawn();
        Some(server)
    }

    // Waits for a real process outside the runtime, bounded by a wall-clock deadline: the one
    // place where std's clock and a blocking sleep are right.
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the server by its own pid (SIGKILL: no goodbye to the clients).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Replicas: a stack each, with its own tracker and store, over one upstream.
// ---------------------------------------------------------------------------------------

struct Replica {
    tracker: HealthTracker,
    store: RedisHealthStore,
    svc: OpenRouter<MockOpenRouter>,
}

fn store_config(redis: &RedisServer, prefix: &str) -> RedisStoreConfig {
    RedisStoreConfig::new(redis.url())
        .prefix(prefix)
        .reconcile(Duration::from_millis(100))
        .max_reconnect_delay(Duration::from_millis(100))
        .probe_hold(Duration::from_secs(5))
}

fn health(cooldown: Duration) -> HealthConfig {
    HealthConfig::default()
        .consecutive_failures(2)
        .cooldown(cooldown)
        .jitter(0.0)
}

async fn replica(
    redis: &RedisServer,
    prefix: &str,
    health: HealthConfig,
    mock: &MockOpenRouter,
) -> Replica {
    let store = RedisHealthStore::connect(store_config(redis, prefix))
        .await
        .unwrap();
    let tracker = HealthTracker::with_store(health, store.clone().into_store());
    let layer = OpenRouterLayer::builder()
        .chain([P, Q, BACKUP])
        .max_retries(0)
        .health_tracker(tracker.clone())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    Replica {
        tracker,
        store,
        svc,
    }
}

async fn fleet(
    n: usize,
    redis: &RedisServer,
    cooldown: Duration,
    mock: &MockOpenRouter,
) -> Vec<Replica> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(replica(redis, "fleet:", health(cooldown), mock).await);
    }
    out
}

async fn send(r: &Replica) -> ServedBy {
    let req = http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(BODY.to_owned())
        .unwrap();
    let resp = r
        .svc
        .clone()
        .oneshot(req)
        .await
        .expect("the request succeeds");
    assert_eq!(resp.status(), http::StatusCode::OK);
    resp.extensions().get::<ServedBy>().cloned().unwrap()
}

/// Polls `cond` every 5 ms until it holds; panics after `within`.
async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn state(t: &HealthTracker, model: &str) -> Option<BreakerState> {
    t.snapshot()
        .into_iter()
        .find(|h| &*h.model == model)
        .map(|h| h.state)
}

/// Trips `model` on `r`: two failures in a row (the next model serves both requests).
async fn trip(r: &Replica, mock: &MockOpenRouter, model: &str) {
    mock.model(model).respond(Reply::status(503));
    for _ in 0..2 {
        assert_ne!(&*send(r).await.model, model);
    }
    assert!(!r.tracker.is_available(model));
}

// ---------------------------------------------------------------------------------------
// The scenarios.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_on_one_replica_reaches_the_others_within_200ms() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockOpenRouter::new();
    let fleet = fleet(3, &redis, Duration::from_secs(60), &mock).await;
    let (a, b, c) = (&fleet[0], &fleet[1], &fleet[2]);
    for r in &fleet {
        assert!(r.store.status().connected);
    }

    trip(a, &mock, P).await;
    let tripped_at = Instant::now();
    eventually(Duration::from_millis(200), "B and C see the trip", || {
        !b.tracker.is_available(P) && !c.tracker.is_available(P)
    })
    .await;
    eprintln!("trip reached B and C after {:?}", tripped_at.elapsed());
    assert_eq!(mock.calls(P), 2);
    for r in [b, c] {
        for _ in 0..5 {
            let served = send(r).await;
            assert_eq!(&*served.model, Q);
            // P is skipped without an upstream call.
            assert!(
                served
                    .attempts
                    .iter()
                    .all(|a| a.kind() == tower_openrouter::ErrorKind::ModelCoolingDown),
                "{:?}",
                served.attempts
            );
        }
        let h = r.tracker.snapshot();
        assert_eq!((h[0].state, h[0].trips), (BreakerState::Open, 1));
    }
    assert_eq!(
        mock.calls(P),
        2,
        "B and C made no call to the tripped model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_cooldown_exactly_one_probe_fleet_wide_closes_all_three() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockOpenRouter::new();
    let cooldown = Duration::from_millis(400);
    let fleet = fleet(3, &redis, cooldown, &mock).await;
    trip(&fleet[0], &mock, P).await;
    eventually(Duration::from_secs(2), "the fleet sees the trip", || {
        fleet.iter().all(|r| !r.tracker.is_available(P))
    })
    .await;
    // The model is back; the probe is slow, so every caller checks while it is in flight.
    mock.model(P)
        .respond(Reply::delay(Duration::from_millis(300), Reply::ok()));
    mock.reset();
    eventually(Duration::from_secs(3), "one replica may probe", || {
        fleet.iter().any(|r| r.tracker.is_available(P))
    })
    .await;
    let holders = fleet.iter().filter(|r| r.tracker.is_available(P)).count();
    assert_eq!(holders, 1, "one replica holds the fleet's probe slot");

    let calls = fleet.iter().flat_map(|r| (0..30).map(move |_| send(r)));
    let served = futures_util::future::join_all(calls).await;
    assert_eq!(served.len(), 90);
    assert_eq!(mock.calls(P), 1, "exactly one probe upstream, fleet-wide");
    assert_eq!(served.iter().filter(|s| &*s.model == P).count(), 1);
    eventually(Duration::from_secs(2), "the probe closed all three", || {
        fleet
            .iter()
            .all(|r| state(&r.tracker, P) == Some(BreakerState::Closed))
    })
    .await;
    for r in &fleet {
        assert_eq!(&*send(r).await.model, P);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_after_the_trip_learns_it_before_its_first_call() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockOpenRouter::new();
    let a = replica(&redis, "late:", health(Duration::from_secs(60)), &mock).await;
    trip(&a, &mock, P).await;
    let mut conn = redis.client().await;
    let key = format!("late:trip:{P}");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let exists: bool = redis::AsyncCommands::exists(&mut conn, &key).await.unwrap();
        if exists {
            break;
        }
        assert!(Instant::now() < deadline, "the trip never reached Redis");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // No pub/sub message reaches a replica that was not there: it reads the trips in force.
    let late = replica(&redis, "late:", health(Duration::from_secs(60)), &mock).await;
    let served = send(&late).await;
    assert_eq!(&*served.model, Q);
    assert_eq!(
        mock.calls(P),
        2,
        "the late replica never called the tripped model"
    );
    let h = late.tracker.snapshot();
    assert_eq!((h[0].state, h[0].trips), (BreakerState::Open, 1));
    let left = late.tracker.cooldown_until(P).unwrap() - Instant::now();
    assert!(left > Duration::from_secs(58), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_costs_nothing_and_sharing_resumes_when_it_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mock = MockOpenRouter::new();
    let fleet = fleet(2, &redis, Duration::from_secs(60), &mock).await;
    let (a, b) = (&fleet[0], &fleet[1]);

    redis.kill();
    eventually(Duration::from_secs(2), "both stores notice", || {
        !a.store.status().connected && !b.store.status().connected
    })
    .await;
    // Every request succeeds through local health, quickly; A trips P on its own.
    let started = Instant::now();
    trip(a, &mock, P).await;
    assert!(
        b.tracker.is_available(P),
        "nothing is shared while Redis is down"
    );
    mock.model(P).respond(Reply::ok());
    for r in [a, b] {
        for _ in 0..10 {
            send(r).await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "requests waited for Redis: {:?}",
        started.elapsed()
    );
    assert_eq!(state(&b.tracker, P), Some(BreakerState::Closed));

    redis.spawn();
    eventually(Duration::from_secs(5), "both stores reconnect", || {
        a.store.status().connected && b.store.status().connected
    })
    .await;
    // A wrote back the trip it held; B reads it.
    eventually(
        Duration::from_secs(2),
        "B learns A's trip from the outage",
        || !b.tracker.is_available(P),
    )
    .await;
    // And a new trip propagates as before.
    trip(b, &mock, Q).await;
    eventually(Duration::from_millis(500), "A sees B's new trip", || {
        !a.tracker.is_available(Q)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_cooldown_written_later_never_shortens_the_fleets() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockOpenRouter::new();
    let a = replica(&redis, "merge:", health(Duration::from_secs(60)), &mock).await;
    let b = replica(&redis, "merge:", health(Duration::from_secs(1)), &mock).await;
    let c = replica(&redis, "merge:", health(Duration::from_secs(60)), &mock).await;
    trip(&a, &mock, P).await;
    eventually(Duration::from_secs(2), "B sees A's trip", || {
        !b.tracker.is_available(P)
    })
    .await;
    // B writes its own 1 s cooldown of the same model, after A's 60 s.
    b.store.publish(SharedEvent::Tripped {
        model: P.into(),
        until: SystemTime::now() + Duration::from_secs(1),
        trips: 1,
        reason: TripReason::ConsecutiveFailures,
    });
    let mut conn = redis.client().await;
    let key = format!("merge:trip:{P}");
    // The write is async: wait until B's queue is empty by writing a marker trip after it.
    b.store.publish(SharedEvent::Tripped {
        model: "marker/m".into(),
        until: SystemTime::now() + Duration::from_secs(30),
        trips: 1,
        reason: TripReason::RetryAfter,
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while !redis::AsyncCommands::exists::<_, bool>(&mut conn, "merge:trip:marker/m")
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "B's writes never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 58_000, "the fleet's cooldown is {pttl} ms");
    for r in [&a, &b, &c] {
        let left = r.tracker.cooldown_until(P).unwrap() - Instant::now();
        assert!(left > Duration::from_secs(58), "{left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_under_the_prefix_is_ignored() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockOpenRouter::new();
    let mut conn = redis.client().await;
    let set = |k: &str, v: &str| redis::cmd("SET").arg(k).arg(v).to_owned();
    for (k, v) in [
        ("odd:trip:a/b", "not json"),
        ("odd:trip:c/d", r#"{"v":1,"until_ms":"soon"}"#),
        (
            "odd:trip:",
            r#"{"v":1,"replica":"x","until_ms":99999999999999,"trips":1,"reason":"failure_ratio"}"#,
        ),
        ("odd:something-else", "x"),
    ] {
        let _: () = set(k, v).query_async(&mut conn).await.unwrap();
    }
    let until = tower_openrouter_now_ms() + 60_000;
    let good = format!(
        r#"{{"v":1,"replica":"other","until_ms":{until},"trips":4,"reason":"failure_ratio"}}"#
    );
    let _: () = set(&format!("odd:trip:{P}"), &good)
        .query_async(&mut conn)
        .await
        .unwrap();
    let r = replica(&redis, "odd:", health(Duration::from_secs(60)), &mock).await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg("odd:events")
        .arg("{\"kind\":\"trip\",\"model\":42}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!r.tracker.is_available(P), "the good trip was applied");
    assert_eq!(r.tracker.snapshot()[0].trips, 4);
    assert!(r.tracker.is_available("a/b") && r.tracker.is_available("c/d"));
    // Still connected and sharing after the garbage.
    trip(&r, &mock, Q).await;
    let key = format!("odd:trip:{Q}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !redis::AsyncCommands::exists::<_, bool>(&mut conn, &key)
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the trip never reached Redis");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = replica(&redis, "odd:", health(Duration::from_secs(60)), &mock).await;
    assert!(!other.tracker.is_available(Q));
    assert!(r.store.status().connected);
}

fn tower_openrouter_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_file_turns_sharing_on() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let json = |url: &str| {
        format!(
            r#"{{"default_chain": ["{P}", "{Q}"], "settings": {{"consecutive_failures": 2}},
                "health": {{"shared": {{"redis_url": "{url}", "prefix": "json:", "reconcile_ms": 100}}}}}}"#
        )
    };
    let a = OpenRouterLayer::from_json(&json(&redis.url())).unwrap();
    let store = a.health().store().expect("sharing is on").clone();
    let status = store.status();
    assert_eq!(
        (status.backend, status.target.as_deref()),
        ("redis", Some(&*redis.url()))
    );
    // A replica made from the builder shares with it.
    let mock = MockOpenRouter::new();
    let b = replica(&redis, "json:", health(Duration::from_secs(60)), &mock).await;
    eventually(Duration::from_secs(2), "the file's store connects", || {
        store.status().connected
    })
    .await;
    trip(&b, &mock, P).await;
    eventually(
        Duration::from_secs(1),
        "the file's replica sees the trip",
        || !a.health().is_available(P),
    )
    .await;

    // Bad settings: typed errors naming the key, the password never shown.
    let err = OpenRouterLayer::from_json(&json("http://:hunter2@h")).unwrap_err();
    assert_eq!(err.field(), "health.shared.redis_url");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let config = tower_openrouter::Config::from_json(&json("redis://:hunter2@h:1/0")).unwrap();
    let debug = format!("{config:?}");
    assert!(
        debug.contains("redis://***@h:1/0") && !debug.contains("hunter2"),
        "{debug}"
    );
    let err = OpenRouterLayer::from_json(
        &json(&redis.url()).replace(r#""reconcile_ms": 100"#, r#""reconcile_ms": 0"#),
    )
    .unwrap_err();
    assert_eq!(err.field(), "health.shared.reconcile_ms");
    let err =
        OpenRouterLayer::from_json(&json(&redis.url()).replace("prefix", "prefx")).unwrap_err();
    assert!(err.field().starts_with("health"), "{err}");
}
