//! Models skipped because they were at their adaptive concurrency limit (see
//! [`health::adaptive`](crate::health::adaptive)), and the wait for a free slot once the
//! chain is used up.
//!
//! A model at its limit is healthy, only busy: when every other model failed or was
//! skipped too, the request waits (within its deadline) for the first slot any of them
//! frees, then tries that model. Each skipped model is owed one such try, so a call makes
//! at most two attempts per model.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use super::chain::Chain;
use crate::health::HealthTracker;

/// A wait for a free slot: `true` when one is free, `false` at the deadline.
pub(crate) type SlotWait = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Chain positions skipped at capacity and not retried yet, in chain order; and the
/// call's wait in its first model's queue ([`AdaptiveConfig::queue`]).
///
/// [`AdaptiveConfig::queue`]: crate::health::AdaptiveConfig::queue
#[derive(Default)]
pub(crate) struct CapacitySkips {
    skipped: Vec<usize>,
    /// The call has queued (at most once).
    queued: bool,
    /// The queue wait just decided, for the walk to carry out.
    queue_wait: Option<SlotWait>,
    /// A queue wait is under way: its end is no deadline.
    in_queue: bool,
}

impl CapacitySkips {
    /// Queues for a slot of the model at `pos` (the call's first, at its limit), once per
    /// call: `true` when a wait was set up ([`take_queue_wait`](Self::take_queue_wait)).
    pub(crate) fn queue(
        &mut self,
        chain: &Chain,
        health: &HealthTracker,
        pos: usize,
        deadline: Option<Instant>,
    ) -> bool {
        if self.queued {
            return false;
        }
        self.queue_wait = health.queue_for_slot(chain.models()[pos].model(), deadline);
        self.queued = self.queue_wait.is_some();
        self.queued
    }

    /// The queue wait [`queue`](Self::queue) set up.
    pub(crate) fn take_queue_wait(&mut self) -> Option<SlotWait> {
        let wait = self.queue_wait.take()?;
        self.in_queue = true;
        Some(wait)
    }

    /// Whether the slot wait that just ended was a queue wait.
    pub(crate) fn queue_ended(&mut self) -> bool {
        std::mem::take(&mut self.in_queue)
    }

    pub(crate) fn note(&mut self, pos: usize) {
        if !self.skipped.contains(&pos) {
            self.skipped.push(pos);
        }
    }

    /// The first skipped model that has a free slot and is not cooling down, taken off
    /// the list; models that started cooling down meanwhile are dropped from it.
    pub(crate) fn take_ready(&mut self, chain: &Chain, health: &HealthTracker) -> Option<usize> {
        self.skipped
            .retain(|&p| health.is_available(chain.models()[p].model()));
        let i = self
            .skipped
            .iter()
            .position(|&p| health.has_capacity(chain.models()[p].model()))?;
        Some(self.skipped.remove(i))
    }

    /// A wait for a slot of any skipped model; `None` when none is left to wait for.
    pub(crate) fn wait(
        &self,
        chain: &Chain,
        health: &HealthTracker,
        deadline: Option<Instant>,
    ) -> Option<SlotWait> {
        if self.skipped.is_empty() {
            return None;
        }
        let models: Vec<Arc<str>> = self
            .skipped
            .iter()
            .map(|&p| chain.models()[p].model.clone())
            .collect();
        Some(health.wait_for_slot(models, deadline))
    }
}
