//! The token usage and cost of a stream, for observers: OpenRouter sends them at the end
//! (chat: the last chunk's `usage`; `/messages`: `message_start` and `message_delta`;
//! Responses: `response.completed`), long after the attempt's span recorded its first
//! chunk. Kept only while somebody observes ([`observe::listening`](crate::observe));
//! recorded once, when the stream's watcher goes (at its end, or when the caller drops
//! the body), on the attempt's span and (feature `metrics`) in the token and cost
//! histograms.

use std::sync::Arc;

use tracing::Span;

use crate::classify::facts;
use crate::extensions::Usage;

/// What a stream said of its usage so far.
pub(crate) struct StreamUsage {
    /// The attempt's span (the current one when the stream's head came).
    span: Span,
    op: &'static str,
    /// The model the attempt asked for, and the one the stream says served it.
    model: Option<Arc<str>>,
    answered: Option<Arc<str>>,
    usage: Usage,
    seen: bool,
}

impl StreamUsage {
    /// A tracker when somebody observes, else `None` (nothing is read).
    pub(crate) fn start(op: &'static str, model: Option<Arc<str>>) -> Option<Box<Self>> {
        crate::observe::listening().then(|| {
            Box::new(StreamUsage {
                span: Span::current(),
                op,
                model,
                answered: None,
                usage: Usage::default(),
                seen: false,
            })
        })
    }

    /// The model the stream names (its first chunk's `model`).
    pub(crate) fn answered_by(&mut self, model: Option<&Arc<str>>) {
        if self.answered.is_none() {
            self.answered = model.cloned();
        }
    }

    /// Reads one event's `usage`, if it has one; a later count replaces an earlier one
    /// (`/messages` sends the input tokens first and the output tokens last).
    pub(crate) fn read(&mut self, data: &[u8]) {
        let Some(u) = facts::usage(data) else { return };
        let acc = &mut self.usage;
        acc.input_tokens = u.input_tokens.or(acc.input_tokens);
        acc.output_tokens = u.output_tokens.or(acc.output_tokens);
        acc.cost = u.cost.or(acc.cost);
        self.seen = true;
    }
}

impl Drop for StreamUsage {
    fn drop(&mut self) {
        if !self.seen {
            return;
        }
        crate::observe::record_usage(&self.span, &self.usage);
        #[cfg(feature = "metrics")]
        if let Some(model) = &self.model {
            let answered = self.answered.as_ref().unwrap_or(model);
            crate::observe::metrics::usage(self.op, model, answered, &self.usage);
        }
        let _ = (self.op, &self.model);
    }
}
