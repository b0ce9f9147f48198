//! The metric names (see the [module docs](super) for their kinds and labels).

/// Histogram (seconds): one upstream try.
pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
/// Histogram (tokens): `usage` of each answer, by `gen_ai.token.type`.
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// Histogram (seconds): streams, time to the first content event.
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
/// Counter: upstream tries by model and outcome.
pub const ATTEMPTS: &str = "openrouter.attempts";
/// Counter: moves down the chain, by `from` and `to` model.
pub const FALLBACKS: &str = "openrouter.fallbacks";
/// Counter: same-model retries.
pub const RETRIES: &str = "openrouter.retries";
/// Counter: retries the retry budget refused.
pub const RETRY_BUDGET_REFUSALS: &str = "openrouter.retry_budget.refusals";
/// Counter: attempts skipped because the model was cooling down (calls saved).
pub const COOLDOWN_SKIPS: &str = "openrouter.cooldown.skips";
/// Counter: breaker transitions by model and `state`.
pub const BREAKER_TRANSITIONS: &str = "openrouter.breaker.transitions";
/// Gauge: breaker state per model (0 closed, 1 half-open, 2 open).
pub const BREAKER_STATE: &str = "openrouter.breaker.state";
/// Gauge: the adaptive concurrency limit per model.
pub const CONCURRENCY_LIMIT: &str = "openrouter.model.concurrency_limit";
/// Counter: hedges sent, by `from` and `to` model.
pub const HEDGES: &str = "openrouter.hedges";
/// Counter: hedges that answered first, by `from` and `to` model.
pub const HEDGE_WINS: &str = "openrouter.hedge.wins";
/// Counter: hedges the hedge budget refused.
pub const HEDGE_BUDGET_REFUSALS: &str = "openrouter.hedge_budget.refusals";
/// Histogram (US dollars): `usage.cost` of each answer.
pub const COST: &str = "openrouter.cost";
