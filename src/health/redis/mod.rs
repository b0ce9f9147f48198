//! [`RedisHealthStore`]: model health shared across a fleet of replicas through Redis
//! (feature `redis`).
//!
//! (The store's documentation is on [`RedisHealthStore`]: this module is private.)

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::Client;
use tokio::sync::{mpsc, watch};

use super::store::{
    from_wall_ms, redact_url as redact, HealthSink, HealthStore, SharedEvent, StoreStatus,
};
use crate::error::ConfigError;
use task::Task;

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

/// A [`HealthStore`] on Redis (feature `redis`). Cheap to clone; attach it to one tracker
/// ([`HealthTracker::with_store`](super::HealthTracker::with_store)).
///
/// Redis is never on a request's path. A replica's trips and recoveries go into a
/// bounded queue (full: the event is dropped, with a WARN) that one background task
/// writes to Redis; what other replicas share arrives by pub/sub and is applied to the
/// local tracker, and a periodic reconciliation (every second by default) reads the trips
/// in force, for messages missed while disconnected and for a replica that starts late.
///
/// # In Redis (all keys under the prefix, default `tower-openrouter:`)
///
/// * `{prefix}trip:{model}`: the trip in force, JSON `{"v":1,"until_ms","trips","reason",
///   "replica"}`, expiring at its cooldown end (`SET ... PXAT`). A Lua script writes it
///   only when its end is later than the one stored: a cooldown is never shortened,
///   whichever replica writes first.
/// * `{prefix}probe:{until_ms}:{model}`: the fleet's probe slot of one cooldown
///   (`SET NX PXAT end + probe_hold`); its holder probes, the others skip the model until
///   the outcome arrives (or the slot expires: a replica that died mid-probe). After a
///   successful probe it holds `recovered`.
/// * channel `{prefix}events`: trips and recoveries, JSON, to every replica at once.
///
/// Data under the prefix that is not ours (another program's keys, a bad value) is
/// ignored with a WARN, never a panic.
///
/// # Faults
///
/// While Redis is unreachable or slower than the command timeout, the replica runs on
/// its local health alone (every replica probes for itself); one WARN says so when the
/// connection is lost, it reconnects with backoff, and when Redis is back it writes the
/// trips it holds and reads the fleet's again. The URL may carry a password
/// (`redis://:secret@host/0`, `rediss://` for TLS); it is never logged or shown.
///
/// # Example
///
/// ```no_run
/// use tower_openrouter::health::{HealthConfig, HealthTracker, RedisHealthStore, RedisStoreConfig};
///
/// # async fn run() -> Result<(), tower_openrouter::ConfigError> {
/// let store = RedisHealthStore::connect(
///     RedisStoreConfig::new("redis://:secret@cache.internal:6379/0").prefix("chat-api:"),
/// )
/// .await?;
/// let tracker = HealthTracker::with_store(HealthConfig::default(), store.into_store());
/// # let _ = tracker; Ok(()) }
/// ```
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

mod task;
mod wire;

#[cfg(test)]
mod tests;
