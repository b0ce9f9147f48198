//! The store's background task: connect, serve (pub/sub, the publish queue,
//! reconciliation), lose, reconnect with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSubStream};
use ::redis::{AsyncCommands, Client, Script};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::wire::{json, millis, Message, TripValue, RECOVER_SCRIPT, TRIP_SCRIPT};
use super::{Apply, RedisStoreConfig, Shared};
use crate::health::store::{from_wall_ms, now_ms, wall_ms, SharedEvent};

pub(super) struct Task {
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
    pub(super) fn new(
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

    pub(super) async fn run(mut self) {
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

    async fn connect(&mut self) -> Result<(MultiplexedConnection, PubSubStream), Lost> {
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

    async fn serve(&mut self, mut conn: MultiplexedConnection, mut stream: PubSubStream) -> Lost {
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
        let expires = until_ms.saturating_add(millis(self.config.probe_hold));
        self.take_slot(conn, model, until_ms, ("PXAT", expires))
            .await
    }

    /// `SET NX` of the probe slot with `expiry` (`PXAT ms` or `PX ms`); grants it to the
    /// tracker when taken.
    async fn take_slot(
        &mut self,
        conn: &mut MultiplexedConnection,
        model: &Arc<str>,
        until_ms: u64,
        expiry: (&str, u64),
    ) -> Result<(), Lost> {
        let set = ::redis::cmd("SET")
            .arg(self.probe_key(model, until_ms))
            .arg(&self.shared.replica)
            .arg("NX")
            .arg(expiry.0)
            .arg(expiry.1)
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
        let hold = millis(self.config.probe_hold);
        self.take_slot(conn, model, until_ms, ("PX", hold)).await
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

/// A Redis error for a log line: its kind and the server's words, never the URL.
fn describe(e: &::redis::RedisError) -> String {
    match e.detail() {
        Some(d) => format!("{:?}: {d}", e.kind()),
        None if e.is_io_error() => "connection failed".to_owned(),
        None => format!("{:?}", e.kind()),
    }
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
