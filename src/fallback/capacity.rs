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

/// Chain positions skipped at capacity and not retried yet, in chain order.
#[derive(Default)]
pub(crate) struct CapacitySkips {
    skipped: Vec<usize>,
}

impl CapacitySkips {
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
