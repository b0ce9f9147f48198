//! The response future of [`Fallback`](super::Fallback): the walk over the chain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::capacity::{CapacitySkips, SlotWait};
use super::chain::Chain;
use super::hedge::{HedgeCall, Hedged};
use super::layer::{Order, Shared};
use super::race::Race;
use super::select::Selected;
use super::template::BodyTemplate;
use super::ServedBy;
use crate::catalog::CallFilter;
use crate::error::{Action, AttemptRecord, BoxError, Credentials, Error, ErrorKind};
use crate::extensions::PanicProbe;
use crate::health::{PanicLead, PanicTurn, ProbeEnd, ProbeWait};
use crate::observe::CallObs;
use crate::routing::MAX_SERVER_MODELS;
use crate::ForceAttempt;
use crate::{Attempt, AttemptLog, Deadline, UpstreamInfo};

pin_project! {
    /// The future of [`Fallback`](super::Fallback).
    pub struct ResponseFuture<S>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: State<S::Future>,
        // Boxed: the context is most of this future's size, and the future is moved by
        // every layer above on its way out; one allocation per call costs less.
        ctx: Option<Box<CallCtx<S>>>,
        // A call without fallback: its request's credentials (the context holds them
        // otherwise, in its base request).
        kept: Option<Box<KeptCredentials>>,
        // The call's span, entered while the walk runs (attempt spans are its children).
        span: tracing::Span,
    }
}

/// The credential headers of a call without fallback, kept (only when it has one) so an
/// upstream error that quotes them can be scrubbed.
pub(crate) struct KeptCredentials {
    authorization: Option<http::HeaderValue>,
    api_key: Option<http::HeaderValue>,
}

impl KeptCredentials {
    /// The credential headers of `req`, when it has one.
    pub(crate) fn of<B>(req: &Request<B>) -> Option<Box<Self>> {
        let h = req.headers();
        let authorization = h.get(http::header::AUTHORIZATION).cloned();
        let api_key = h.get(crate::error::API_KEY).cloned();
        (authorization.is_some() || api_key.is_some()).then(|| {
            Box::new(KeptCredentials {
                authorization,
                api_key,
            })
        })
    }

    fn scrub(&self, err: &mut Error) {
        let c = Credentials::from_values(self.authorization.as_ref(), self.api_key.as_ref());
        err.scrub_credentials(&c);
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Failed { error: Option<Error> },
        Ready { req: Option<Request<Full<Bytes>>> },
        Calling { #[pin] fut: F },
        // An attempt that may be hedged, or two attempts at once (see `race.rs`).
        Racing { race: Box<Race<F>> },
        Waiting { sleep: Pin<Box<Sleep>> },
        WaitingSlot { wait: SlotWait },
        AwaitingProbe { wait: ProbeWait },
        Done,
    }
}

/// What the walk does next (short-lived: moved once into the state).
#[allow(clippy::large_enum_variant)]
pub(super) enum Step {
    Send(Request<Full<Bytes>>),
    Wait(Instant),
    WaitSlot(SlotWait),
    AwaitProbe(ProbeWait),
    Fail(Error),
}

/// The model (or server-side window) of the attempt in flight.
#[derive(Default)]
pub(super) struct Current {
    /// Chain positions of the window (the first is the attempt's model).
    window: [usize; MAX_SERVER_MODELS],
    len: usize,
    started: Option<Instant>,
    log_len: usize,
    /// Models skipped or failed before this attempt was sent.
    models_before: usize,
    /// Sent in panic mode or after a wait: never hedged.
    forced: bool,
}

/// The hedge of a call: chain positions of the attempt hedged and of the hedge.
#[derive(Clone, Copy)]
struct HedgeSent {
    from: usize,
    to: usize,
    /// The hedge went upstream (it may have waited for the service to be ready).
    sent: bool,
}

/// Everything one call needs across attempts.
pub(crate) struct CallCtx<S> {
    svc: S,
    shared: Arc<Shared>,
    name: Option<Arc<str>>,
    chain: Chain,
    /// The `model` of the caller's body.
    caller_model: Option<Arc<str>>,
    /// Chain positions in the order they are tried ([`Order::Health`] only).
    order: Option<Box<[usize]>>,
    next: usize,
    /// Models per attempt: the layer's server-side window on a generation endpoint, else
    /// 1 (an embeddings body takes no `models`).
    width: usize,
    base: Request<Full<Bytes>>,
    template: BodyTemplate,
    log: AttemptLog,
    deadline: Option<Deadline>,
    cur: Current,
    /// Models skipped or failed before the one in flight.
    models_before: usize,
    /// Attempts that reached the upstream.
    upstream: usize,
    /// The cooling model whose cooldown ends first: (end, chain position).
    earliest_cooling: Option<(Option<Instant>, usize)>,
    /// Panic mode was entered (every model cooling before any upstream call).
    forced: bool,
    /// Panic mode's leader token while this call's probe is in flight.
    panic: Option<PanicLead>,
    /// The rate-limited model that may be retried after its Retry-After: (ready at, the
    /// hint, pos).
    rate_wait: Option<(Instant, Duration, usize)>,
    waited: bool,
    /// The catalog's view of this call: models that cannot serve it are skipped.
    filter: Option<CallFilter>,
    obs: CallObs,
    /// When the soonest hint (a `Retry-After`, a cooldown's end) of the call ends.
    soonest_hint: Option<Instant>,
    /// Models skipped at their adaptive concurrency limit, owed one try after a wait.
    capacity: CapacitySkips,
    /// The chain's hedging, when it hedges this request.
    hedge: Option<HedgeCall>,
    /// The call's one hedge, once it was decided.
    hedged: Option<HedgeSent>,
}

impl<S> CallCtx<S> {
    pub(crate) fn new(
        svc: S,
        shared: Arc<Shared>,
        selected: Selected,
        base: Request<Full<Bytes>>,
        log: AttemptLog,
    ) -> Self {
        let Selected {
            name,
            chain,
            caller_model,
        } = selected;
        let obs = CallObs::new(&base, name.as_deref());
        let template = BodyTemplate::new();
        let deadline = base.extensions().get::<Deadline>().copied();
        let order = match (&shared.order, &shared.health) {
            (Order::Health, Some(h)) => {
                let mut order: Vec<(usize, f64)> = chain
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i, h.success_rate(m.model()).unwrap_or(1.0)))
                    .collect();
                // Stable: equal rates keep the chain's order.
                order.sort_by(|a, b| b.1.total_cmp(&a.1));
                Some(order.into_iter().map(|(i, _)| i).collect())
            }
            _ => None,
        };
        let width = if crate::body::is_generation_endpoint(base.method(), base.uri().path()) {
            shared.window.clamp(1, MAX_SERVER_MODELS)
        } else {
            1
        };
        CallCtx {
            svc,
            width,
            shared,
            name,
            chain,
            caller_model,
            order,
            next: 0,
            base,
            template,
            log,
            deadline,
            cur: Current::default(),
            models_before: 0,
            upstream: 0,
            earliest_cooling: None,
            forced: false,
            panic: None,
            rate_wait: None,
            waited: false,
            filter: None,
            obs,
            soonest_hint: None,
            capacity: CapacitySkips::default(),
            hedge: None,
            hedged: None,
        }
    }

    pub(crate) fn with_filter(mut self, filter: Option<CallFilter>) -> Self {
        self.filter = filter;
        self
    }

    pub(crate) fn with_hedge(mut self, hedge: Option<HedgeCall>) -> Self {
        self.hedge = hedge;
        self
    }

    /// Skips the model at `pos` if the catalog says it cannot serve this call.
    fn skip_unfit(&mut self, pos: usize) -> bool {
        let m = &self.chain.models()[pos];
        let Some(why) = self.filter.as_ref().and_then(|f| f.unfit(m.model())) else {
            return false;
        };
        self.log.push(crate::catalog::skipped(&m.model, pos, &why));
        self.models_before += 1;
        true
    }

    fn position(&self, i: usize) -> usize {
        match &self.order {
            Some(o) => o[i],
            None => i,
        }
    }

    fn note_cooling(&mut self, pos: usize) {
        let until = self
            .shared
            .health
            .as_ref()
            .and_then(|h| h.cooldown_until(self.chain.models()[pos].model()));
        let earlier = match self.earliest_cooling {
            None => true,
            // `None` (no known end) sorts first: it may be available now.
            Some((cur, _)) => until < cur,
        };
        if earlier {
            self.earliest_cooling = Some((until, pos));
        }
        if let Some(until) = until {
            self.note_hint(until);
        }
    }

    /// Records a model skipped because it is cooling down (no upstream call).
    fn skip_cooling(&mut self, pos: usize) {
        let m = &self.chain.models()[pos];
        tracing::debug!(
            model = m.model(),
            label = m.label.as_deref(),
            kind = ErrorKind::ModelCoolingDown.as_str(),
            action = "skip",
            "model is cooling down; skipped"
        );
        self.log.push(AttemptRecord {
            model: m.model.clone(),
            index: pos,
            retry: 0,
            elapsed: std::time::Duration::ZERO,
            error: Error::new(ErrorKind::ModelCoolingDown).with_model(m.model.clone()),
        });
        self.models_before += 1;
        self.obs.skipped(&m.model);
        self.note_cooling(pos);
    }

    fn note_hint(&mut self, until: Instant) {
        if self.soonest_hint.is_none_or(|cur| until < cur) {
            self.soonest_hint = Some(until);
        }
    }

    /// The error that ends the call: every attempt, the last upstream status, and the
    /// soonest hint still in the future as `retry_after`, so a caller can act on it at the
    /// top level.
    fn call_error(&self, err: Error) -> Error {
        let attempts = self.log.snapshot();
        let status = attempts.iter().rev().find_map(|a| a.status());
        let now = Instant::now();
        let mut err = err.with_attempts(attempts);
        if let Some(status) = status {
            err = err.with_status(status);
        }
        if let Some(until) = self.soonest_hint.filter(|&t| t > now) {
            err = err.with_retry_after(until - now);
        }
        err
    }

    /// Records a model skipped because it is at its concurrency limit (no upstream call).
    fn skip_at_capacity(&mut self, pos: usize) {
        let m = &self.chain.models()[pos];
        tracing::debug!(
            model = m.model(),
            label = m.label.as_deref(),
            kind = ErrorKind::ModelAtCapacity.as_str(),
            action = "skip",
            "model is at its concurrency limit; skipped"
        );
        self.log.push(AttemptRecord {
            model: m.model.clone(),
            index: pos,
            retry: 0,
            elapsed: std::time::Duration::ZERO,
            error: Error::new(ErrorKind::ModelAtCapacity).with_model(m.model.clone()),
        });
        self.models_before += 1;
        self.capacity.note(pos);
    }

    /// Queues for the first model's slot, when its limit has a queue with room.
    fn queue_for(&mut self, pos: usize) -> bool {
        let Some(health) = self.shared.health.as_ref() else {
            return false;
        };
        let deadline = self.deadline.map(|d| d.instant());
        self.capacity.queue(&self.chain, health, pos, deadline)
    }

    /// With the chain used up: the model that freed a slot, or a wait for one.
    fn capacity_step(&mut self) -> Option<Step> {
        let health = self.shared.health.as_ref()?;
        if let Some(pos) = self.capacity.take_ready(&self.chain, health) {
            return Some(self.send(&[pos], false));
        }
        let deadline = self.deadline.map(|d| d.instant());
        self.capacity
            .wait(&self.chain, health, deadline)
            .map(Step::WaitSlot)
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| d.is_expired())
    }

    fn deadline_error(&self) -> Error {
        self.call_error(Error::new(ErrorKind::DeadlineExceeded))
    }

    /// Waiting out the soonest `Retry-After` once every model failed: the end of the wait
    /// when it is worth doing, `Err` when it is needed but the deadline leaves no room.
    ///
    /// The wait lies in `[hint, 1.5 x hint]` from when the hint came (jittered, so callers
    /// told the same hint do not all call again at once), is never longer than
    /// [`max_rate_limit_wait`](super::FallbackLayer::max_rate_limit_wait), and ends before
    /// the deadline with at least half the time left after the hint for the call itself.
    fn rate_limit_wait(&mut self) -> Result<Option<Instant>, Error> {
        let Some((at, hint, pos)) = self.rate_wait.filter(|_| !self.waited) else {
            return Ok(None);
        };
        let max = self.shared.max_rate_limit_wait;
        let (Some(deadline), true) = (self.deadline, self.shared.wait_for_rate_limit) else {
            return Ok(None);
        };
        if hint > max {
            return Ok(None);
        }
        let deadline = deadline.instant();
        if at >= deadline {
            return Err(self.deadline_error());
        }
        let received = at - hint;
        let spread = hint.mul_f64(0.5 * self.shared.jitter.unit());
        let latest = (received + max).min(at + (deadline - at) / 2);
        self.waited = true;
        self.cur.window[0] = pos;
        self.cur.len = 1;
        Ok(Some((at + spread).min(latest).max(at)))
    }

    /// Decides what to do next: the next model (or window), a wait, or the end.
    fn next_step(&mut self) -> Step {
        if self.expired() {
            return Step::Fail(self.deadline_error());
        }
        if let Some((window, len)) = self.next_window() {
            return self.send(&window[..len], false);
        }
        if let Some(wait) = self.capacity.take_queue_wait() {
            // The first model at its limit: wait in its queue, then look again.
            return Step::WaitSlot(wait);
        }
        self.chain_used_up()
    }

    /// The next model (or window) of the chain that may be tried, skipping (and
    /// recording) the models that cannot be: `None` when the chain is used up.
    fn next_window(&mut self) -> Option<([usize; MAX_SERVER_MODELS], usize)> {
        let width = self.width;
        let mut window = [0usize; MAX_SERVER_MODELS];
        let mut len = 0;
        while len < width && self.next < self.chain.len() {
            let pos = self.position(self.next);
            self.next += 1;
            if self.skip_unfit(pos) {
                continue;
            }
            let model = self.chain.models()[pos].model();
            let (available, free) = match &self.shared.health {
                Some(h) => (h.is_available(model), h.has_capacity(model)),
                None => (true, true),
            };
            if !available {
                self.skip_cooling(pos);
            } else if !free && self.next == 1 && self.queue_for(pos) {
                // Tried again after the wait in its queue.
                self.next = 0;
                return None;
            } else if !free {
                self.skip_at_capacity(pos);
            } else {
                window[len] = pos;
                len += 1;
            }
        }
        (len > 0).then_some((window, len))
    }

    /// What the call does once the chain is used up.
    fn chain_used_up(&mut self) -> Step {
        // A model only busy comes first: wait for its slot.
        if let Some(step) = self.capacity_step() {
            return step;
        }
        // Panic mode: never end with zero upstream attempts while time is left; one
        // probe of the model whose cooldown ends first, however many callers are here.
        if self.upstream == 0 && !self.forced {
            if let Some((_, pos)) = self.earliest_cooling {
                self.forced = true;
                return self.panic_step(pos);
            }
        }
        match self.rate_limit_wait() {
            Ok(Some(until)) => return Step::Wait(until),
            Ok(None) => {}
            Err(e) => return Step::Fail(e),
        }
        if self.log.cut_short() {
            // A needed backoff did not fit in the time left, and no model is left to try.
            return Step::Fail(self.deadline_error());
        }
        let attempts = self.log.snapshot();
        if let Some(e) = crate::catalog::no_capable_model(&attempts) {
            return Step::Fail(e);
        }
        let detail = if attempts.is_empty() {
            "the chain has no model"
        } else {
            "every model of the chain failed"
        };
        Step::Fail(self.call_error(Error::new(ErrorKind::Exhausted).with_detail(detail)))
    }

    /// Panic mode (see `health/panic.rs`): lead the probe of the model at `pos`, or wait
    /// for the one in flight.
    fn panic_step(&mut self, pos: usize) -> Step {
        let Some(health) = self.shared.health.as_ref() else {
            return self.send(&[pos], true);
        };
        let model = self.chain.models()[pos].model();
        let deadline = self.deadline.map(|d| d.instant());
        match health.panic_turn(model, deadline) {
            PanicTurn::Lead(lead) => {
                let mut step = self.send(&[pos], true);
                if let Step::Send(req) = &mut step {
                    req.extensions_mut().insert(PanicProbe);
                    // One call: a probe retried on the model it just found broken would
                    // spend what the breaker is there to save.
                    if let Some(a) = req.extensions_mut().get_mut::<Attempt>() {
                        a.max_retries = Some(0);
                    }
                    self.panic = Some(lead);
                }
                step
            }
            PanicTurn::Follow(wait) => {
                tracing::debug!(model, "every model is cooling down; waiting for the probe");
                self.cur.window[0] = pos;
                self.cur.len = 1;
                Step::AwaitProbe(wait)
            }
            PanicTurn::Untracked => self.send(&[pos], true),
        }
    }

    /// A follower's wait for panic mode's probe ended (`None`: at the deadline).
    fn probe_ended(&mut self, end: Option<ProbeEnd>) -> Step {
        let pos = self.cur.window[0];
        match end {
            None => Step::Fail(self.deadline_error()),
            // The model answered: this caller's own call.
            Some(ProbeEnd::Closed) => self.send(&[pos], true),
            // No verdict: the next follower leads (this one, if first).
            Some(ProbeEnd::Released) => self.panic_step(pos),
            Some(ProbeEnd::Failed) => {
                // The probe's failure cooled its model for longer: the hint is the soonest
                // cooldown end now.
                self.refresh_cooling_hints();
                let now = Instant::now();
                if self.soonest_hint.is_none_or(|t| t <= now) {
                    // No cooldown left to point at: never fail without a call or a hint.
                    return self.send(&[pos], true);
                }
                let model = self.chain.models()[pos].model();
                let detail = format!("every model is cooling down and the probe of {model} failed");
                Step::Fail(self.call_error(Error::new(ErrorKind::Exhausted).with_detail(detail)))
            }
        }
    }

    /// Hints from the cooldowns of the models skipped as cooling, read again.
    fn refresh_cooling_hints(&mut self) {
        self.soonest_hint = None;
        for record in self.log.snapshot() {
            if record.kind() == ErrorKind::ModelCoolingDown {
                self.note_cooling(record.index);
            }
        }
    }

    /// Builds the request for `window` (chain positions; the first is the model).
    fn send(&mut self, window: &[usize], force: bool) -> Step {
        let models = self.chain.models();
        let first = &models[window[0]];
        let body = if self.width > 1 {
            let ids: Vec<Arc<str>> = window.iter().map(|&p| models[p].model.clone()).collect();
            self.template.render(&self.base, first.model(), Some(&ids))
        } else {
            self.template.render(&self.base, first.model(), None)
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => return Step::Fail(e),
        };
        if let Some(json) = self.template.take_rebased() {
            // The base request now holds the body for this model, and the caller's buffer
            // is released: one copy per call, however many models are tried.
            crate::body::replace_body(&mut self.base, json.bytes().clone());
            self.base.extensions_mut().insert(json);
        }
        let mut req = crate::body::clone_request_with_body(&self.base, body);
        req.extensions_mut().insert(Attempt {
            model: first.model.clone(),
            index: window[0],
            retry: 0,
            timeout: first.timeout,
            max_retries: first.max_retries,
            label: first.label.clone(),
        });
        if force {
            req.extensions_mut().insert(ForceAttempt);
        }
        if self.upstream > 0 || self.waited {
            req.extensions_mut().insert(crate::LaterAttempt);
        }
        self.obs.sending(&first.model);
        self.cur.window[..window.len()].copy_from_slice(window);
        self.cur.len = window.len();
        self.cur.started = Some(Instant::now());
        self.cur.log_len = self.log.len();
        self.cur.models_before = self.models_before;
        self.cur.forced = force;
        Step::Send(req)
    }

    /// Same-model retries logged since the attempt at `pos` started (only its own
    /// records count: a hedge running beside it logs into the same log).
    fn retries(&self, pos: usize) -> u32 {
        if self.hedged.is_some() {
            return self.log.count_since(self.cur.log_len, pos) as u32;
        }
        self.log.len().saturating_sub(self.cur.log_len) as u32
    }

    /// The instant the attempt in flight is hedged at (`None`: it is not).
    pub(super) fn hedge_at(&self) -> Option<Instant> {
        let h = self.hedge.as_ref()?;
        if self.hedged.is_some() || self.cur.forced || self.next >= self.chain.len() {
            return None;
        }
        let model = self.chain.models()[self.cur.window[0]].model();
        let at = self.cur.started? + h.delay(model)?;
        match self.deadline {
            Some(d) if at >= d.instant() => None,
            _ => Some(at),
        }
    }

    /// The hedge of the attempt in flight, once it has gone without content for the
    /// delay: the request for the next model the walk finds (skipping, as a fallback
    /// does, the models that cannot be tried) and that attempt's [`Current`], when the
    /// budget allows one. The call's `cur` stays the earlier attempt's.
    pub(super) fn hedge_request(&mut self) -> Option<(Request<Full<Bytes>>, Current)> {
        if self.expired() {
            return None;
        }
        // A model to hedge with first, without recording anything: the budget is only
        // drawn on for a hedge that can be sent (`hedge_at` arms no timer when no model is
        // left at all). Then the budget, before the walk below records the models it skips.
        if !self.hedge_target_left() {
            return None;
        }
        if !self.hedge.as_ref()?.withdraw() {
            crate::observe::hedge_refused(&self.chain.models()[self.cur.window[0]].model);
            return None;
        }
        let earlier = std::mem::take(&mut self.cur);
        let from = earlier.window[0];
        let step = self
            .next_window()
            .map(|(window, len)| self.send(&window[..len], false));
        let hedge = std::mem::replace(&mut self.cur, earlier);
        let Some(Step::Send(mut req)) = step else {
            // No model left to hedge with (or its body could not be made, as for every
            // other model: the attempt in flight says how it ends).
            return None;
        };
        req.extensions_mut().insert(crate::LaterAttempt);
        let to = hedge.window[0];
        self.hedged = Some(HedgeSent {
            from,
            to,
            sent: false,
        });
        Some((req, hedge))
    }

    /// Whether a model after the one in flight may be tried now (not unfit for the
    /// request, not cooling down, not at its concurrency limit). Records nothing.
    fn hedge_target_left(&self) -> bool {
        (self.next..self.chain.len()).any(|i| {
            let model = self.chain.models()[self.position(i)].model();
            let fit = self
                .filter
                .as_ref()
                .is_none_or(|f| f.unfit(model).is_none());
            fit && self
                .shared
                .health
                .as_ref()
                .is_none_or(|h| h.is_available(model) && h.has_capacity(model))
        })
    }

    /// The hedge went upstream.
    pub(super) fn hedge_sent(&mut self) {
        if let Some(h) = &mut self.hedged {
            h.sent = true;
            let models = self.chain.models();
            crate::observe::hedge(&models[h.from].model, &models[h.to].model, false);
        }
    }

    /// Swaps the attempt the call's `cur` describes (the race hands each attempt's
    /// outcome over with its own).
    pub(super) fn swap_current(&mut self, other: &mut Current) {
        std::mem::swap(&mut self.cur, other);
    }

    /// The service, to call the hedge.
    pub(super) fn service(&mut self) -> &mut S {
        &mut self.svc
    }

    /// The attempt in flight answered: its time to first content is a sample of its model
    /// (unless a same-model retry made it longer).
    fn first_token(&self) {
        let (Some(h), Some(started)) = (&self.hedge, self.cur.started) else {
            return;
        };
        let pos = self.cur.window[0];
        if self.retries(pos) == 0 {
            h.record(&self.chain.models()[pos].model, started.elapsed());
        }
    }

    /// Handles a failed attempt: `Some(error)` ends the call.
    pub(super) fn failed(&mut self, mut err: Error) -> Option<Error> {
        // Before it is logged or returned: the request's own credentials out of whatever
        // the upstream said (the log's records become errors' and `ServedBy`'s attempts).
        err.scrub_credentials(&Credentials::of(self.base.headers()));
        let pos = self.cur.window[0];
        let m = &self.chain.models()[pos];
        let err = err.or_model(&m.model);
        let elapsed = self.cur.started.map(|s| s.elapsed()).unwrap_or_default();
        let retry = self.retries(pos);
        let kind = err.kind();
        let action = err.action();
        tracing::warn!(
            model = m.model(),
            label = m.label.as_deref(),
            kind = kind.as_str(),
            action = %action,
            "attempt failed"
        );
        self.log.push(AttemptRecord {
            model: m.model.clone(),
            index: pos,
            retry,
            elapsed,
            error: err.clone(),
        });
        self.models_before += 1;
        self.obs.left(&m.model);
        if kind == ErrorKind::DeadlineExceeded {
            return Some(self.deadline_error());
        }
        if action == Action::Fatal {
            return Some(if self.log.len() > 1 {
                err.with_attempts(self.log.snapshot())
            } else {
                err
            });
        }
        if kind == ErrorKind::ModelCoolingDown {
            // Rejected by the health layer (another request holds the probe): no upstream call.
            self.note_cooling(pos);
        } else if kind == ErrorKind::ModelAtCapacity {
            // Rejected by the health layer (the last slot went to another request).
            self.capacity.note(pos);
        } else {
            self.upstream += 1;
        }
        if let Some(ra) = err.retry_after() {
            let at = Instant::now() + ra;
            self.note_hint(at);
            if kind == ErrorKind::RateLimited && self.rate_wait.is_none_or(|(cur, _, _)| at < cur) {
                self.rate_wait = Some((at, ra, pos));
            }
        }
        None
    }

    /// An attempt's outcome: the response (with [`ServedBy`]) or what to do next.
    // `Step` is large (it holds a request), and moved once, like the state it becomes:
    // boxing it would add an allocation per attempt.
    #[allow(clippy::result_large_err)]
    pub(super) fn answered<B>(
        &mut self,
        res: Result<Response<B>, Error>,
    ) -> Result<Response<B>, Step> {
        if let Some(lead) = self.panic.take() {
            // The followers learn the probe's outcome (the health layer recorded it).
            let end = match &res {
                Ok(_) => ProbeEnd::Closed,
                Err(e) if e.counts_for_health() => ProbeEnd::Failed,
                Err(_) => ProbeEnd::Released,
            };
            if end == ProbeEnd::Failed {
                // The failure cooled the model for longer than when it was skipped.
                self.refresh_cooling_hints();
            }
            lead.finish(end);
        }
        match res {
            Ok(mut resp) => {
                if self.hedge.is_some() {
                    self.first_token();
                }
                self.served(&mut resp);
                Ok(resp)
            }
            Err(e) => Err(match self.failed(e) {
                Some(e) => Step::Fail(e),
                None => self.next_step(),
            }),
        }
    }

    /// After the wait for a rate limit: the model's own call, even if it is cooling (the
    /// rate limit may have tripped it) or being probed, since it was told to wait and did.
    fn waited(&mut self) -> Step {
        let pos = self.cur.window[0];
        self.send(&[pos], true)
    }

    /// After the wait for a free slot: the walk goes on, or the deadline came first.
    fn slot_waited(&mut self, free: bool) -> Step {
        // A queue wait ends without a slot after its own wait: the walk goes on.
        if self.capacity.queue_ended() || free {
            self.next_step()
        } else {
            Step::Fail(self.deadline_error())
        }
    }

    fn served<B>(&mut self, resp: &mut Response<B>) {
        let models = self.chain.models();
        let first = &models[self.cur.window[0]];
        let answered = resp
            .extensions()
            .get::<UpstreamInfo>()
            .and_then(|u| u.model.clone());
        let window = &self.cur.window[1..self.cur.len];
        let server_side_fallback = answered
            .as_deref()
            .is_some_and(|a| window.iter().any(|&p| models[p].model() == a));
        let hedge = self.hedged.filter(|h| h.sent).map(|h| Hedged {
            earlier: models[h.from].model.clone(),
            hedge: models[h.to].model.clone(),
            hedge_won: self.cur.window[0] == h.to,
        });
        let hedge_won = hedge.as_ref().is_some_and(|h| h.hedge_won);
        if let Some(h) = hedge.as_ref().filter(|h| h.hedge_won) {
            crate::observe::hedge(&h.earlier, &h.hedge, true);
        }
        let served = ServedBy {
            model: answered.unwrap_or_else(|| first.model.clone()),
            requested: first.model.clone(),
            caller_model: self.caller_model.clone(),
            index: self.cur.window[0],
            label: first.label.clone(),
            chain: self.name.clone(),
            attempts: if self.log.is_empty() {
                Vec::new()
            } else {
                self.log.snapshot()
            },
            fell_back: self.cur.models_before > 0 || server_side_fallback || hedge_won,
            hedge,
        };
        tracing::debug!(
            model = &*served.model,
            label = first.label.as_deref(),
            fell_back = served.fell_back,
            "served"
        );
        self.obs
            .served(&served.model, served.attempts.len(), served.fell_back);
        resp.extensions_mut().insert(served);
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request<Full<Bytes>>>,
{
    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            ctx: None,
            kept: None,
            span: tracing::Span::none(),
        }
    }

    /// A call without fallback (a non-generation endpoint): the inner future as it is,
    /// and the request's credentials to take out of its error.
    pub(crate) fn passthrough(fut: S::Future, kept: Option<Box<KeptCredentials>>) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            ctx: None,
            kept,
            span: tracing::Span::none(),
        }
    }

    /// Starts the walk. The context's service was polled ready by the caller.
    pub(crate) fn start(mut ctx: Box<CallCtx<S>>) -> Self {
        let span = ctx.obs.span().clone();
        let _entered = span.enter();
        let state = match ctx.next_step() {
            Step::Send(req) => {
                let fut = ctx.svc.call(req);
                launch(&mut ctx, fut)
            }
            Step::Fail(e) => State::Failed { error: Some(e) },
            Step::Wait(at) => State::Waiting {
                sleep: Box::pin(tokio::time::sleep_until(at)),
            },
            Step::WaitSlot(wait) => State::WaitingSlot { wait },
            Step::AwaitProbe(wait) => State::AwaitingProbe { wait },
        };
        drop(_entered);
        ResponseFuture {
            state,
            ctx: Some(ctx),
            kept: None,
            span,
        }
    }
}

impl<S, B> Future for ResponseFuture<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<B>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            let step = match this.state.as_mut().project() {
                StateProj::Failed { error } => Step::Fail(
                    error
                        .take()
                        .unwrap_or_else(|| Error::new(ErrorKind::Exhausted)),
                ),
                StateProj::Ready { req } => {
                    let ctx = this.ctx.as_mut().expect("polled after completion");
                    if let Err(e) = ready!(ctx.svc.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(Error::from_box(e.into())));
                    }
                    let fut = ctx.svc.call(req.take().expect("request present"));
                    this.state.set(launch(ctx, fut));
                    continue;
                }
                StateProj::Calling { fut } => {
                    let res = ready!(fut.poll(cx)).map_err(|e| Error::from_box(e.into()));
                    let Some(ctx) = this.ctx.as_mut() else {
                        // A pass-through call: no chain to walk.
                        this.state.set(State::Done);
                        return Poll::Ready(res.map_err(|mut e| {
                            if let Some(kept) = this.kept {
                                kept.scrub(&mut e);
                            }
                            e
                        }));
                    };
                    match ctx.answered(res) {
                        Ok(resp) => {
                            this.state.set(State::Done);
                            *this.ctx = None;
                            return Poll::Ready(Ok(resp));
                        }
                        Err(step) => step,
                    }
                }
                StateProj::Racing { race } => {
                    let ctx = this.ctx.as_mut().expect("polled after completion");
                    match ready!(race.poll(ctx, cx)) {
                        Ok(resp) => {
                            this.state.set(State::Done);
                            *this.ctx = None;
                            return Poll::Ready(Ok(resp));
                        }
                        Err(step) => step,
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.ctx.as_mut().expect("polled after completion").waited()
                }
                StateProj::WaitingSlot { wait } => {
                    let free = ready!(wait.as_mut().poll(cx));
                    let ctx = this.ctx.as_mut().expect("polled after completion");
                    ctx.slot_waited(free)
                }
                StateProj::AwaitingProbe { wait } => {
                    let end = ready!(wait.as_mut().poll(cx));
                    this.ctx
                        .as_mut()
                        .expect("polled after completion")
                        .probe_ended(end)
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            match step.into_state() {
                Ok(state) => this.state.set(state),
                Err(e) => {
                    if let Some(ctx) = this.ctx.take() {
                        ctx.obs.failed(&e);
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

/// The state of an attempt just called: plain, or armed to be hedged.
fn launch<S>(ctx: &mut CallCtx<S>, fut: S::Future) -> State<S::Future>
where
    S: Service<Request<Full<Bytes>>>,
{
    match ctx.hedge_at() {
        None => State::Calling { fut },
        Some(at) => State::Racing {
            race: Box::new(Race::armed(fut, at)),
        },
    }
}

impl Step {
    /// The state that carries the step out (`Err`: the call ends with this error).
    fn into_state<F>(self) -> Result<State<F>, Error> {
        match self {
            Step::Send(req) => Ok(State::Ready { req: Some(req) }),
            Step::Wait(at) => Ok(State::Waiting {
                sleep: Box::pin(tokio::time::sleep_until(at)),
            }),
            Step::WaitSlot(wait) => Ok(State::WaitingSlot { wait }),
            Step::AwaitProbe(wait) => Ok(State::AwaitingProbe { wait }),
            Step::Fail(e) => Err(e),
        }
    }
}
