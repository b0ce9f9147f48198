//! Panic mode: one probe for every caller that finds its whole chain cooling down.
//!
//! When a request finds every model of its chain cooling down before it has made any
//! upstream call, the fallback layer does not fail it without a single attempt: it probes
//! the model whose cooldown ends first, ahead of time. Under load, many callers arrive at
//! that point at once; without a gate each would send its own forced attempt (100
//! callers, 100 calls to a model the breaker just benched). The [`PanicGate`] of each
//! model lets exactly one of them lead:
//!
//! * the **leader** ([`PanicLead`]) sends the probe. Its request carries
//!   [`PanicProbe`](crate::extensions::PanicProbe), so the health layer admits it and
//!   gives it the breaker's probe slot even before the cooldown is over (unless another
//!   probe of the model is in flight already): its success closes the breaker, a counted
//!   failure opens it again, for longer. The probe is one call, without same-model
//!   retries.
//! * the **followers** wait (within their own deadline) for the leader's outcome, told
//!   through the gate: the probe answered ([`ProbeEnd::Closed`]), it failed with an error
//!   that counts for health ([`ProbeEnd::Failed`]), or it gave no verdict
//!   ([`ProbeEnd::Released`]: dropped, or an error that says nothing about the model),
//!   when the next follower to look becomes the leader.
//!
//! The gate is one atomic word and a [`Notify`] per model, touched only in panic mode:
//! checking and recording a model never reads it. The leader's token ends its round when
//! it is dropped without an outcome, so a cancelled leader never leaves followers waiting
//! for an outcome that will not come.
//!
//! Panic mode is per replica: with a [shared store](super::HealthStore) each replica in
//! panic sends at most one probe per model; a probe's success closes the breaker on the
//! others through the store, as any probe's does.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::tracker::{HealthTracker, ModelState};

/// How a probe round ended, as the followers learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeEnd {
    /// The probe answered: the model serves again.
    Closed,
    /// The probe failed with an error that counts for health: the model stays benched.
    Failed,
    /// The probe gave no verdict (dropped, or an error that does not count for health):
    /// the next caller to look leads a new round.
    Released,
}

impl ProbeEnd {
    fn bits(self) -> u64 {
        match self {
            ProbeEnd::Closed => 0,
            ProbeEnd::Failed => 1,
            ProbeEnd::Released => 2,
        }
    }

    fn from_bits(bits: u64) -> Self {
        match bits & END_MASK {
            0 => ProbeEnd::Closed,
            1 => ProbeEnd::Failed,
            _ => ProbeEnd::Released,
        }
    }
}

/// The gate's word: rounds ended so far (above [`ROUND_SHIFT`]), whether a leader is in
/// flight ([`LEADING`]), and how the latest round ended (the low bits).
const END_MASK: u64 = 0b11;
const LEADING: u64 = 0b100;
const ROUND_SHIFT: u32 = 3;

/// The panic gate of one model (see the [module docs](self)).
#[derive(Default)]
pub(crate) struct PanicGate {
    word: AtomicU64,
    notify: Notify,
}

impl PanicGate {
    /// `Ok(round)`: the caller leads this round. `Err(round)`: a leader is in flight; the
    /// caller follows until the round ends.
    fn enter(&self) -> Result<u64, u64> {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let round = w >> ROUND_SHIFT;
            if w & LEADING != 0 {
                return Err(round);
            }
            match self.word.compare_exchange_weak(
                w,
                w | LEADING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(round),
                Err(found) => w = found,
            }
        }
    }

    /// Ends `round` (only its leader calls this) and wakes its followers.
    fn finish(&self, round: u64, end: ProbeEnd) {
        let next = (round.wrapping_add(1) << ROUND_SHIFT) | end.bits();
        self.word.store(next, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// How `round` ended, once it has.
    fn ended(&self, round: u64) -> Option<ProbeEnd> {
        let w = self.word.load(Ordering::Acquire);
        (w >> ROUND_SHIFT != round).then(|| ProbeEnd::from_bits(w))
    }
}

/// The leader's token: [`finish`](Self::finish) it with the probe's outcome; dropped
/// unfinished it ends the round as [`ProbeEnd::Released`].
pub(crate) struct PanicLead {
    state: Arc<ModelState>,
    round: u64,
    done: bool,
}

impl PanicLead {
    /// Tells the followers how the probe ended.
    pub(crate) fn finish(mut self, end: ProbeEnd) {
        self.done = true;
        self.state.panic.finish(self.round, end);
    }
}

impl Drop for PanicLead {
    fn drop(&mut self) {
        if !self.done {
            self.state.panic.finish(self.round, ProbeEnd::Released);
        }
    }
}

/// A follower's wait: how the round ended, or `None` at the deadline.
pub(crate) type ProbeWait = Pin<Box<dyn Future<Output = Option<ProbeEnd>> + Send>>;

/// A caller's part in panic mode.
pub(crate) enum PanicTurn {
    /// Send the probe.
    Lead(PanicLead),
    /// Wait for the probe in flight.
    Follow(ProbeWait),
    /// The model is not tracked (more than `max_models`): no gate, just call it.
    Untracked,
}

impl HealthTracker {
    /// The part of a caller that found every model of its chain cooling down and chose
    /// `model` (the one whose cooldown ends first) to probe: lead the probe, or follow the
    /// one in flight until it ends or `deadline` passes.
    pub(crate) fn panic_turn(&self, model: &str, deadline: Option<Instant>) -> PanicTurn {
        let Some(state) = self.state(model) else {
            return PanicTurn::Untracked;
        };
        match state.panic.enter() {
            Ok(round) => {
                tracing::info!(
                    target: crate::observe::TARGET,
                    model = &*state.name,
                    "every model of the chain is cooling down: one forced probe"
                );
                PanicTurn::Lead(PanicLead {
                    state,
                    round,
                    done: false,
                })
            }
            Err(round) => PanicTurn::Follow(follow(state, round, deadline)),
        }
    }
}

fn follow(state: Arc<ModelState>, round: u64, deadline: Option<Instant>) -> ProbeWait {
    Box::pin(async move {
        let gate = &state.panic;
        let ended = async {
            loop {
                let notified = gate.notify.notified();
                tokio::pin!(notified);
                // Registered before the check: a round ending after it wakes us.
                notified.as_mut().enable();
                if let Some(end) = gate.ended(round) {
                    return end;
                }
                notified.await;
            }
        };
        match deadline {
            Some(at) => tokio::time::timeout_at(at, ended).await.ok(),
            None => Some(ended.await),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_per_round_and_the_end_is_kept() {
        let gate = PanicGate::default();
        assert_eq!(gate.enter(), Ok(0));
        assert_eq!(gate.enter(), Err(0));
        assert_eq!(gate.ended(0), None);
        gate.finish(0, ProbeEnd::Failed);
        assert_eq!(gate.ended(0), Some(ProbeEnd::Failed));
        assert_eq!(gate.enter(), Ok(1));
        gate.finish(1, ProbeEnd::Released);
        assert_eq!(gate.ended(1), Some(ProbeEnd::Released));
        assert_eq!(gate.enter(), Ok(2));
        gate.finish(2, ProbeEnd::Closed);
        assert_eq!(gate.ended(2), Some(ProbeEnd::Closed));
    }
}
