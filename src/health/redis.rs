//! [`RedisHealthStore`]: model health shared across a fleet of replicas through Redis
//! (feature `redis`).
//!
//! Redis is never on a request's path. A replica's trips and recoveries go into a
//! bounded queue (full: the event is dropped, with a WARN) that one background task
//! writes to Redis; what other replicas share arrives by pub/sub and is applied to the
//! local tracker, and a periodic reconciliation (every second by default) reads the trips
//! in force, for messages missed while disconnected and for a replica that starts late.
//!
//! # In Redis (all keys under the prefix, default `tower-openrouter:`)
//!
//! * `{prefix}trip:{model}`: the trip in force, JSON `{"v":1,"until_ms","trips","reason",
//!   "replica"}`, expiring at its cooldown end (`SET ... PXAT`). A Lua script writes it
//!   only when its end is later than the one stored: a cooldown is never shortened,
//!   whichever replica writes first.
//! * `{prefix}probe:{until_ms}:{model}`: the fleet's probe slot of one cooldown
//!   (`SET NX PXAT end + probe_hold`); its holder probes, the others skip the model until
//!   the outcome arrives (or the slot expires: a replica that died mid-probe). After a
//!   successful probe it holds `recovered`.
//! * channel `{prefix}events`: trips and recoveries, JSON, to every replica at once.
//!
//! Data under the prefix that is not ours (another program's keys, a bad value) is
//! ignored with a WARN, never a panic.
//!
//! # Faults
//!
//! While Redis is unreachable or slower than the command timeout, the replica runs on
//! its local health alone (every replica probes for itself); one WARN says so when the
//! connection is lost, it reconnects with backoff, and when Redis is back it writes the
//! trips it holds and reads the fleet's again. The URL may carry a password
//! (`redis://:secret@host/0`, `rediss://` for TLS); it is never logged or shown.
//!
//! # Example
//!
//! ```no_run
//! use tower_openrouter::health::{HealthConfig, HealthTracker, RedisHealthStore, RedisStoreConfig};
//!
//! # async fn run() -> Result<(), tower_openrouter::ConfigError> {
//! let store = RedisHealthStore::connect(
//!     RedisStoreConfig::new("redis://:secret@cache.internal:6379/0").prefix("chat-api:"),
//! )
//! .await?;
//! let tracker = HealthTracker::with_store(HealthConfig::default(), store.into_store());
//! # let _ = tracker; Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncCommands, Client, Script};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::store::{
    from_wall_ms, now_ms, redact_url as redact, wall_ms, HealthSink, HealthStore, SharedEvent,
    StoreStatus, TripReason,
};
use crate::config::ConfigError;

/// Settings of a [`RedisHealthStore`].
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `url` | required | `redis://[user][:password@]host[:port][/db]` or `rediss://` (TLS) |
/// | [`prefix`](Self::prefix) | `tower-openrouter:` | namespace of every key and the channel |
/// | [`reconcile`](Self::reconcile) | 1 s | how often the trips in force are read back |
/// | [`probe_hold`](Self::probe_hold) | 10 s | how long a probe slot outlives its cooldown |
/// | [`command_timeout`](Self::command_timeout) | 500 ms | a slower Redis counts as lost |
/// | [`max_reconnect_delay`](Self::max_reconnect_delay) | 2 s | backoff cap between reconnects |
/// | [`queue`](Self::queue) | 1024 | events waiting to be written, at most |
#[derive(Clone)]
pub struct RedisStoreConfig {
    url: String,
    prefix: String,
    reconcile: Duration,
    probe_hold: Duration,
    command_timeout: Duration,
    max_reconnect_delay: Duration,
    queue: usize,
}

impl fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("reconcile", &self.reconcile)
            .field("probe_hold", &self.probe_hold)
            .field("command_timeout", &self.command_timeout)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("queue", &self.queue)
            .finish()
    }
}

impl RedisStoreConfig {
    /// Settings for the Redis at `url`, with the defaults of the table above.
    pub fn new(url: impl Into<String>) -> Self {
        RedisStoreConfig {
            url: url.into(),
            prefix: "tower-openrouter:".to_owned(),
            reconcile: Duration::from_secs(1),
            probe_hold: Duration::from_secs(10),
            command_timeout: Duration::from_millis(500),
            max_reconnect_delay: Duration::from_secs(2),
            queue: 1024,
        }
    }

    /// The namespace of every key and of the channel (replicas that share health use the
    /// same prefix; other fleets on the same Redis use another).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How often the trips in force are read back from Redis. Default 1 s.
    pub fn reconcile(mut self, every: Duration) -> Self {
        self.reconcile = every;
        self
    }

    /// How long the fleet's probe slot of a cooldown lasts after the cooldown ends: if its
    /// holder reports no outcome by then (it died), another replica probes. Default 10 s.
    pub fn probe_hold(mut self, hold: Duration) -> Self {
        self.probe_hold = hold;
        self
    }

    /// A Redis command (or connecting) slower than this counts as Redis lost. Default
    /// 500 ms.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Longest wait between reconnect attempts (the backoff starts at 50 ms and doubles).
    /// Default 2 s.
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// Events (trips, recoveries) waiting to be written, at most; further ones are dropped
    /// while Redis is slow (the reconciliation after it catches up repairs the rest).
    /// Default 1024.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// The URL without its credentials, as logs and status pages show it.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad setting (`redis_url`, `prefix`, `reconcile_ms`, ...);
    /// the URL in its message is redacted.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client().map(|_| ())
    }

    fn client(&self) -> Result<Client, ConfigError> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err(ConfigError::new(
                "redis_url",
                format!(
                    "redis_url must start with redis:// or rediss://, got {}",
                    redact(&self.url)
                ),
            ));
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::zero("prefix"));
        }
        for (field, d) in [
            ("reconcile_ms", self.reconcile),
            ("probe_hold", self.probe_hold),
            ("command_timeout", self.command_timeout),
            ("max_reconnect_delay", self.max_reconnect_delay),
        ] {
            if d.is_zero() {
                return Err(ConfigError::zero(field));
            }
        }
        if self.queue == 0 {
            return Err(ConfigError::zero("queue"));
        }
        Client::open(self.url.as_str()).map_err(|e| {
            ConfigError::new(
                "redis_url",
                format!(
                    "redis_url {} is not a valid Redis URL: {:?}",
                    redact(&self.url),
                    e.kind()
                ),
            )
        })
    }
}

/// A [`HealthStore`] on Redis: see the [module docs](self). Cheap to clone; attach it to
/// one tracker ([`HealthTracker::with_store`](super::HealthTracker::with_store)).
#[derive(Clone)]
pub struct RedisHealthStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisHealthStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHealthStore")
            .field("target", &self.shared.target)
            .field("connected", &self.shared.connected.load(Ordering::Relaxed))
            .finish()
    }
}

/// What the store's handle and its task share.
struct Shared {
    target: String,
    replica: String,
    connected: AtomicBool,
    jobs: mpsc::Sender<SharedEvent>,
    dropped: AtomicU64,
    sink: Mutex<SinkState>,
}

/// The tracker's sink, or what the task learned before the tracker was attached.
#[derive(Default)]
struct SinkState {
    sink: Option<HealthSink>,
    stash: Vec<Apply>,
}

enum Apply {
    Event(SharedEvent),
    Grant(Arc<str>, u64),
}

impl RedisHealthStore {
    /// Connects to Redis and reads the trips in force before returning (within the
    /// command timeout), so a tracker made with this store knows them before its first
    /// request. Redis being unreachable is no error: the store keeps trying in the
    /// background (one WARN) and the replica runs on local health meanwhile.
    ///
    /// # Errors
    ///
    /// Bad settings only ([`RedisStoreConfig::validate`]).
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, ConfigError> {
        let timeout = config.command_timeout.saturating_mul(4);
        let (store, mut ready) = Self::start(config)?;
        let _ = tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await;
        Ok(store)
    }

    /// Like [`connect`](Self::connect), without waiting: the trips in force arrive in the
    /// background. Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// Bad settings, or no Tokio runtime to run the store's task on.
    pub fn spawn(config: RedisStoreConfig) -> Result<Self, ConfigError> {
        Self::start(config).map(|(store, _)| store)
    }

    /// This store as the tracker takes it.
    pub fn into_store(self) -> Arc<dyn HealthStore> {
        Arc::new(self)
    }

    /// Events dropped because the queue was full (Redis slow or lost).
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn start(config: RedisStoreConfig) -> Result<(Self, watch::Receiver<bool>), ConfigError> {
        let client = config.client()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new(
                "redis_url",
                "sharing health through Redis needs a Tokio runtime: build the stack inside one",
            )
        })?;
        if config.url.starts_with("rediss://") {
            // redis-rs's rustls needs a process-wide provider; keep one already installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let (jobs, rx) = mpsc::channel(config.queue);
        let shared = Arc::new(Shared {
            target: redact(&config.url),
            replica: replica_id(),
            connected: AtomicBool::new(false),
            jobs,
            dropped: AtomicU64::new(0),
            sink: Mutex::new(SinkState::default()),
        });
        let (ready_tx, ready) = watch::channel(false);
        let task = Task::new(config, client, shared.clone(), rx, ready_tx);
        runtime.spawn(task.run());
        Ok((RedisHealthStore { shared }, ready))
    }
}

impl HealthStore for RedisHealthStore {
    fn attach(&self, sink: HealthSink) {
        let stash = {
            let mut s = self.shared.sink.lock().unwrap_or_else(|p| p.into_inner());
            if s.sink.is_some() {
                tracing::warn!(target: "tower_openrouter::health", "a RedisHealthStore was attached to a second tracker: only the last one is updated");
            }
            s.sink = Some(sink.clone());
            std::mem::take(&mut s.stash)
        };
        for a in stash {
            apply_to(&sink, a);
        }
    }

    fn publish(&self, event: SharedEvent) {
        if !self.shared.connected.load(Ordering::Relaxed) {
            // Lost: what is in force is written back when Redis returns.
            return;
        }
        if self.shared.jobs.try_send(event).is_err()
            && self.shared.dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!(target: "tower_openrouter::health", redis = %self.shared.target, "Redis is slower than this replica's trips: dropping health events (counted in dropped_events)");
        }
    }

    fn coordinates_probes(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    fn status(&self) -> StoreStatus {
        StoreStatus::new("redis", self.coordinates_probes()).with_target(self.shared.target.clone())
    }
}

fn apply_to(sink: &HealthSink, a: Apply) {
    match a {
        Apply::Event(e) => {
            sink.apply(&e);
        }
        Apply::Grant(model, until) => sink.grant_probe(&model, from_wall_ms(until)),
    }
}

impl Shared {
    fn apply(&self, a: Apply) {
        let sink = {
            let mut s = self.sink.lock().unwrap_or_else(|p| p.into_inner());
            match &s.sink {
                Some(sink) => sink.clone(),
                None => {
                    s.stash.push(a);
                    return;
                }
            }
        };
        apply_to(&sink, a);
    }

    fn active_trips(&self) -> Vec<SharedEvent> {
        let s = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        s.sink
            .as_ref()
            .map(|s| s.active_trips())
            .unwrap_or_default()
    }
}

/// A random id per store, so a replica ignores its own messages.
fn replica_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

// ---------------------------------------------------------------------------------------
// The wire format.
// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Message {
    Trip {
        v: u32,
        replica: String,
        model: String,
        until_ms: u64,
        trips: u32,
        reason: String,
    },
    Recovered {
        v: u32,
        replica: String,
        model: String,
        until_ms: u64,
    },
}

/// The value of a trip key.
#[derive(Serialize, Deserialize)]
struct TripValue {
    v: u32,
    replica: String,
    until_ms: u64,
    trips: u32,
    reason: String,
}

impl TripValue {
    fn event(self, model: &str) -> Option<SharedEvent> {
        Some(SharedEvent::Tripped {
            model: model.into(),
            until: from_wall_ms(self.until_ms),
            trips: self.trips,
            reason: TripReason::from_name(&self.reason)?,
        })
    }
}

impl Message {
    fn event(self) -> Option<(String, SharedEvent)> {
        match self {
            Message::Trip {
                replica,
                model,
                until_ms,
                trips,
                reason,
                ..
            } => {
                let reason = TripReason::from_name(&reason)?;
                Some((
                    replica,
                    SharedEvent::Tripped {
                        model: model.into(),
                        until: from_wall_ms(until_ms),
                        trips,
                        reason,
                    },
                ))
            }
            Message::Recovered {
                replica,
                model,
                until_ms,
                ..
            } => Some((
                replica,
                SharedEvent::Recovered {
                    model: model.into(),
                    until: from_wall_ms(until_ms),
                },
            )),
        }
    }
}

/// Writes a trip unless the stored one ends later; publishes it when written. Returns
/// the trip in force (the stored one when it was longer).
const TRIP_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, t = pcall(cjson.decode, cur)
  if ok and type(t) == 'table' and tonumber(t.until_ms) and tonumber(t.until_ms) >= tonumber(ARGV[1]) then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return ARGV[2]
"#;

/// A recovery: unless a later trip is stored, drop the trip, mark the probe slot
/// `recovered` and publish. Returns 1 when published.
const RECOVER_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, t = pcall(cjson.decode, cur)
  if ok and type(t) == 'table' and tonumber(t.until_ms) and tonumber(t.until_ms) > tonumber(ARGV[1]) then
    return 0
  end
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], 'recovered', 'PX', ARGV[3])
redis.call('PUBLISH', KEYS[3], ARGV[2])
return 1
"#;

// ---------------------------------------------------------------------------------------
// The background task: connect, serve, lose, reconnect.
// ---------------------------------------------------------------------------------------

struct Task {
    config: RedisStoreConfig,
    client: Client,
    shared: Arc<Shared>,
    jobs: mpsc::Receiver<SharedEvent>,
    ready: watch::Sender<bool>,
    trip_script: Script,
    recover_script: Script,
    channel: String,
    /// Cooldowns whose probe outcome is not known yet: model -> cooldown end (ms), and
    /// whether this replica holds the slot.
    pending: HashMap<Arc<str>, (u64, bool)>,
    warned_keys: HashSet<Vec<u8>>,
    last_bad_message: Option<Instant>,
}

/// Why a connection ended.
type Lost = String;

impl Task {
    fn new(
        config: RedisStoreConfig,
        client: Client,
        shared: Arc<Shared>,
        jobs: mpsc::Receiver<SharedEvent>,
        ready: watch::Sender<bool>,
    ) -> Self {
        let channel = format!("{}events", config.prefix);
        Task {
            config,
            client,
            shared,
            jobs,
            ready,
            trip_script: Script::new(TRIP_SCRIPT),
            recover_script: Script::new(RECOVER_SCRIPT),
            channel,
            pending: HashMap::new(),
            warned_keys: HashSet::new(),
            last_bad_message: None,
        }
    }

    async fn run(mut self) {
        let min_delay = Duration::from_millis(50);
        let mut delay = min_delay;
        let mut ever_connected = false;
        let mut warned = false;
        loop {
            if self
                .shared
                .sink
                .lock()
                .is_ok_and(|s| s.sink.as_ref().is_some_and(|sink| !sink.is_attached()))
            {
                return; // the tracker is gone
            }
            let lost = match self.connect().await {
                Ok((conn, stream)) => {
                    if warned {
                        tracing::info!(target: "tower_openrouter::health", redis = %self.shared.target, "Redis is back: sharing model health again");
                    }
                    warned = false;
                    ever_connected = true;
                    delay = min_delay;
                    self.serve(conn, stream).await
                }
                Err(e) => e,
            };
            self.shared.connected.store(false, Ordering::Relaxed);
            let _ = self.ready.send(true); // connect() waits no longer
            if !warned {
                let what = if ever_connected {
                    "lost"
                } else {
                    "cannot reach"
                };
                tracing::warn!(target: "tower_openrouter::health", redis = %self.shared.target, error = %lost, "{what} Redis: model health is local to this replica until it is back (reconnecting)");
                warned = true;
            }
            self.drain_until(Instant::now() + delay).await;
            delay = (delay * 2).min(self.config.max_reconnect_delay);
        }
    }

    /// Waits, discarding events: while lost, what is in force is written back on return.
    async fn drain_until(&mut self, at: Instant) {
        let sleep = tokio::time::sleep_until(at);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                job = self.jobs.recv() => if job.is_none() { sleep.as_mut().await; return },
            }
        }
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, Lost> {
        match tokio::time::timeout(self.config.command_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!(
                "no answer within {:?}",
                self.config.command_timeout
            )),
        }
    }

    async fn connect(
        &mut self,
    ) -> Result<(MultiplexedConnection, ::redis::aio::PubSubStream), Lost> {
        let mut pubsub = self.timed(self.client.get_async_pubsub()).await?;
        self.timed(pubsub.subscribe(&self.channel)).await?;
        let mut conn = self
            .timed(self.client.get_multiplexed_async_connection())
            .await?;
        // Write back what this replica holds (Redis may have restarted empty), then read
        // the fleet's.
        for trip in self.shared.active_trips() {
            self.write_trip(&mut conn, trip).await?;
        }
        self.reconcile(&mut conn).await?;
        self.shared.connected.store(true, Ordering::Relaxed);
        let _ = self.ready.send(true);
        Ok((conn, pubsub.into_on_message()))
    }

    async fn serve(
        &mut self,
        mut conn: MultiplexedConnection,
        mut stream: ::redis::aio::PubSubStream,
    ) -> Lost {
        let mut tick = tokio::time::interval(self.config.reconcile);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        loop {
            let step = tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.on_message(&mut conn, msg.get_payload_bytes()).await,
                    None => Err("the pub/sub connection closed".to_owned()),
                },
                job = self.jobs.recv() => match job {
                    Some(event) => self.on_local(&mut conn, event).await,
                    None => Err("the store was dropped".to_owned()),
                },
                _ = tick.tick() => self.reconcile(&mut conn).await,
            };
            if let Err(lost) = step {
                return lost;
            }
        }
    }

    async fn on_local(
        &mut self,
        conn: &mut MultiplexedConnection,
        event: SharedEvent,
    ) -> Result<(), Lost> {
        match event {
            SharedEvent::Recovered { model, until } => {
                self.write_recovery(conn, &model, wall_ms(until)).await
            }
            trip => self.write_trip(conn, trip).await,
        }
    }

    fn trip_key(&self, model: &str) -> String {
        format!("{}trip:{model}", self.config.prefix)
    }

    fn probe_key(&self, model: &str, until_ms: u64) -> String {
        format!("{}probe:{until_ms}:{model}", self.config.prefix)
    }

    /// Max-merges a trip into Redis (publishing it when it is the longer one), applies
    /// the fleet's trip when it is longer than ours, and claims the probe slot.
    async fn write_trip(
        &mut self,
        conn: &mut MultiplexedConnection,
        trip: SharedEvent,
    ) -> Result<(), Lost> {
        let SharedEvent::Tripped {
            model,
            until,
            trips,
            reason,
        } = trip
        else {
            return Ok(());
        };
        let until_ms = wall_ms(until);
        if until_ms <= now_ms() {
            return Ok(());
        }
        let value = TripValue {
            v: 1,
            replica: self.shared.replica.clone(),
            until_ms,
            trips,
            reason: reason.as_str().to_owned(),
        };
        let message = Message::Trip {
            v: 1,
            replica: self.shared.replica.clone(),
            model: model.to_string(),
            until_ms,
            trips,
            reason: reason.as_str().to_owned(),
        };
        let (value, message) = (json(&value), json(&message));
        let mut invocation = self.trip_script.key(self.trip_key(&model));
        invocation
            .key(&self.channel)
            .arg(until_ms)
            .arg(value)
            .arg(message);
        let stored: Vec<u8> = self.timed(invocation.invoke_async(conn)).await?;
        let in_force = match serde_json::from_slice::<TripValue>(&stored)
            .ok()
            .and_then(|v| v.event(&model))
        {
            Some(e) => e,
            None => {
                self.warn_key(self.trip_key(&model).into_bytes(), "not a trip of ours");
                return Ok(());
            }
        };
        let fleet_until = wall_ms(in_force.until());
        if fleet_until > until_ms {
            self.shared.apply(Apply::Event(in_force));
        }
        self.claim(conn, &model, fleet_until).await
    }

    async fn write_recovery(
        &mut self,
        conn: &mut MultiplexedConnection,
        model: &Arc<str>,
        until_ms: u64,
    ) -> Result<(), Lost> {
        let message = json(&Message::Recovered {
            v: 1,
            replica: self.shared.replica.clone(),
            model: model.to_string(),
            until_ms,
        });
        let mut invocation = self.recover_script.key(self.trip_key(model));
        invocation
            .key(self.probe_key(model, until_ms))
            .key(&self.channel)
            .arg(until_ms)
            .arg(message)
            .arg(millis(self.config.probe_hold));
        let _: i64 = self.timed(invocation.invoke_async(conn)).await?;
        if self.pending.get(model).is_some_and(|(u, _)| *u <= until_ms) {
            self.pending.remove(model);
        }
        Ok(())
    }

    /// Tries to take the fleet's probe slot of the cooldown of `model` ending at
    /// `until_ms`; grants it to the tracker when taken.
    async fn claim(
        &mut self,
        conn: &mut MultiplexedConnection,
        model: &Arc<str>,
        until_ms: u64,
    ) -> Result<(), Lost> {
        let entry = self
            .pending
            .entry(model.clone())
            .or_insert((until_ms, false));
        if entry.0 > until_ms || (entry.0 == until_ms && entry.1) {
            return Ok(()); // a later cooldown is known, or the slot is ours already
        }
        *entry = (until_ms, false);
        let key = self.probe_key(model, until_ms);
        let expires = until_ms.saturating_add(millis(self.config.probe_hold));
        let set = ::redis::cmd("SET")
            .arg(&key)
            .arg(&self.shared.replica)
            .arg("NX")
            .arg("PXAT")
            .arg(expires)
            .to_owned();
        let taken: Option<String> = self.timed(set.query_async(conn)).await?;
        if taken.is_some() {
            self.pending.insert(model.clone(), (until_ms, true));
            self.shared.apply(Apply::Grant(model.clone(), until_ms));
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        conn: &mut MultiplexedConnection,
        payload: &[u8],
    ) -> Result<(), Lost> {
        let Some((replica, event)) = serde_json::from_slice::<Message>(payload)
            .ok()
            .and_then(Message::event)
        else {
            self.warn_message();
            return Ok(());
        };
        if replica == self.shared.replica {
            return Ok(());
        }
        match &event {
            SharedEvent::Tripped { model, until, .. } => {
                let (model, until_ms) = (model.clone(), wall_ms(*until));
                self.shared.apply(Apply::Event(event));
                self.claim(conn, &model, until_ms).await
            }
            SharedEvent::Recovered { model, until } => {
                if self
                    .pending
                    .get(model)
                    .is_some_and(|(u, _)| *u <= wall_ms(*until))
                {
                    self.pending.remove(model);
                }
                self.shared.apply(Apply::Event(event));
                Ok(())
            }
        }
    }

    /// Reads every trip in force and applies it; settles cooldowns whose probe outcome
    /// was missed.
    async fn reconcile(&mut self, conn: &mut MultiplexedConnection) -> Result<(), Lost> {
        let keys = self.trip_keys(conn).await?;
        for chunk in keys.chunks(100) {
            let values: Vec<Option<Vec<u8>>> = self.timed(conn.mget(chunk)).await?;
            for (key, value) in chunk.iter().zip(values) {
                if let Some(value) = value {
                    self.reconcile_trip(conn, key, &value).await?;
                }
            }
        }
        self.settle_pending(conn).await
    }

    async fn trip_keys(&mut self, conn: &mut MultiplexedConnection) -> Result<Vec<Vec<u8>>, Lost> {
        let pattern = format!("{}trip:*", glob_escape(&self.config.prefix));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let scan = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .to_owned();
            let (next, batch): (u64, Vec<Vec<u8>>) = self.timed(scan.query_async(conn)).await?;
            keys.extend(batch);
            if next == 0 || keys.len() > 100_000 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn reconcile_trip(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Lost> {
        let prefix_len = self.config.prefix.len() + "trip:".len();
        let model = std::str::from_utf8(&key[prefix_len.min(key.len())..])
            .ok()
            .filter(|m| !m.is_empty());
        let event = model.and_then(|m| serde_json::from_slice::<TripValue>(value).ok()?.event(m));
        let Some(event) = event else {
            self.warn_key(key.to_vec(), "not a trip of ours");
            return Ok(());
        };
        let (model, until_ms) = (event.model().clone(), wall_ms(event.until()));
        self.shared.apply(Apply::Event(event));
        self.claim(conn, &model, until_ms).await
    }

    /// For cooldowns over whose outcome never arrived: a `recovered` slot closes the
    /// breaker here too; an expired slot is claimed again (its holder died).
    async fn settle_pending(&mut self, conn: &mut MultiplexedConnection) -> Result<(), Lost> {
        let now = now_ms();
        let hold = millis(self.config.probe_hold);
        let over: Vec<(Arc<str>, u64)> = self
            .pending
            .iter()
            .filter(|(_, (until, mine))| *until <= now && !mine)
            .map(|(m, (u, _))| (m.clone(), *u))
            .collect();
        self.pending
            .retain(|_, (until, _)| until.saturating_add(hold.saturating_mul(6)) > now);
        for (model, until_ms) in over {
            let slot: Option<String> = self
                .timed(conn.get(self.probe_key(&model, until_ms)))
                .await?;
            match slot.as_deref() {
                Some("recovered") => {
                    self.pending.remove(&model);
                    self.shared.apply(Apply::Event(SharedEvent::Recovered {
                        model,
                        until: from_wall_ms(until_ms),
                    }));
                }
                Some(_) => {}
                None => {
                    self.pending.insert(model.clone(), (until_ms, false));
                    self.claim_again(conn, &model, until_ms).await?;
                }
            }
        }
        Ok(())
    }

    async fn claim_again(
        &mut self,
        conn: &mut MultiplexedConnection,
        model: &Arc<str>,
        until_ms: u64,
    ) -> Result<(), Lost> {
        // The slot expired: a new one, held from now for probe_hold.
        let key = self.probe_key(model, until_ms);
        let set = ::redis::cmd("SET")
            .arg(&key)
            .arg(&self.shared.replica)
            .arg("NX")
            .arg("PX")
            .arg(millis(self.config.probe_hold))
            .to_owned();
        let taken: Option<String> = self.timed(set.query_async(conn)).await?;
        if taken.is_some() {
            self.pending.insert(model.clone(), (until_ms, true));
            self.shared.apply(Apply::Grant(model.clone(), until_ms));
        }
        Ok(())
    }

    fn warn_key(&mut self, key: Vec<u8>, what: &str) {
        if self.warned_keys.len() < 1024 && self.warned_keys.insert(key.clone()) {
            let shown = String::from_utf8_lossy(&key[..key.len().min(200)]).into_owned();
            tracing::warn!(target: "tower_openrouter::health", redis = %self.shared.target, key = %shown, "ignoring a key under the health prefix: {what}");
        }
    }

    fn warn_message(&mut self) {
        let now = Instant::now();
        if self
            .last_bad_message
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_bad_message = Some(now);
            tracing::warn!(target: "tower_openrouter::health", redis = %self.shared.target, channel = %self.channel, "ignoring a message on the health channel that is not ours (at most one such warning a minute)");
        }
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A Redis error for a log line: its kind and the server's words, never the URL.
fn describe(e: &::redis::RedisError) -> String {
    match e.detail() {
        Some(d) => format!("{:?}: {d}", e.kind()),
        None if e.is_io_error() => "connection failed".to_owned(),
        None => format!("{:?}", e.kind()),
    }
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_credentials_only() {
        assert_eq!(
            redact("redis://:hunter2@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(
            redact("rediss://user:p%40ss@h.example/1"),
            "rediss://***@h.example/1"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
        assert_eq!(redact("no url"), "<not a URL>");
    }

    #[test]
    fn bad_settings_are_typed_errors_without_the_password() {
        let e = RedisStoreConfig::new("http://:hunter2@h")
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "redis_url");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = RedisStoreConfig::new("redis://h")
            .prefix("")
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "prefix");
        let e = RedisStoreConfig::new("redis://h")
            .reconcile(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "reconcile_ms");
        assert!(RedisStoreConfig::new("rediss://:x@h:6380/2")
            .validate()
            .is_ok());
        let debug = format!("{:?}", RedisStoreConfig::new("redis://:hunter2@h"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }

    #[test]
    fn messages_round_trip_and_foreign_ones_are_refused() {
        let m = json(&Message::Trip {
            v: 1,
            replica: "r".into(),
            model: "a/b".into(),
            until_ms: 5,
            trips: 2,
            reason: "probe_failed".into(),
        });
        let (r, e) = serde_json::from_slice::<Message>(m.as_bytes())
            .unwrap()
            .event()
            .unwrap();
        assert_eq!(r, "r");
        assert_eq!(
            e,
            SharedEvent::Tripped {
                model: "a/b".into(),
                until: from_wall_ms(5),
                trips: 2,
                reason: TripReason::ProbeFailed
            }
        );
        for bad in [&b"hello"[..], br#"{"kind":"trip"}"#, br#"{"kind":"trip","v":1,"replica":"r","model":"m","until_ms":1,"trips":1,"reason":"bored"}"#] {
            assert!(serde_json::from_slice::<Message>(bad).ok().and_then(Message::event).is_none());
        }
    }
}
