//! An OpenRouter outage, ridden out: no API key, no network, the same output every run.
//!
//! `MockOpenRouter` (a scripted OpenRouter stand-in, in process) plays OpenRouter and
//! `OpenRouterLayer` wraps it exactly as it would wrap your HTTP client, with a chain of
//! three models. The primary is rate limited (429 with `Retry-After`), goes down (503,
//! then 502) and recovers, while a request arrives every 5 seconds (every third one
//! streamed and read to the end). For each request the demo prints the model that served
//! it, whether that was a fallback, the upstream calls it cost and every failed or
//! skipped attempt before the answer; for each model, the health changes
//! (`HealthTracker::snapshot`) as it trips, cools down, gets its one probe (half-open) and
//! recovers. Then a summary, the metrics a dashboard would chart (from `metrics-util`'s
//! debugging recorder: tries, outcomes, retries, skips and breaker transitions per model,
//! fallbacks, tokens, cost), three failures that are not outages (402, 403, 400), and two
//! requests the model catalog keeps away from models that cannot serve them (a tools
//! request and a 150k-token prompt), with no call spent on those models.
//!
//! Time is tokio's paused clock: the cooldowns (15 s, then 30 s) pass at once and
//! `t=+15.0s` is virtual time. The cooldowns keep their default 10% jitter and the retry
//! backoff its jitter, both from fixed seeds, so every run prints the same thing.
//!
//! Run it with `cargo run --example demo`; `cargo test --example demo` checks the story.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::Instant;
use tower::util::rng::Rng;
use tower::{Layer, ServiceExt};
use tower_openrouter::catalog::ModelCatalog;
use tower_openrouter::health::BreakerState;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::{
    AttemptRecord, Error, ErrorKind, HealthConfig, HealthTracker, OpenRouter, OpenRouterLayer,
    RetryPolicy, ServedBy,
};

const PRIMARY: &str = "anthropic/claude-sonnet-4.5";
const SECONDARY: &str = "openai/gpt-4o";
const THIRD: &str = "google/gemini-2.5-flash";
/// No tools, a 131k context (in the stand-in's catalog).
const SMALL: &str = "meta-llama/llama-3.1-8b-instruct";

/// One request every `EVERY`, `REQUESTS` of them.
const EVERY: Duration = Duration::from_secs(5);
const REQUESTS: u32 = 15;
/// How long the stand-in takes to answer (so a probe is in flight long enough to be seen).
const LATENCY: Duration = Duration::from_millis(300);
/// How often health is sampled while a request is in flight.
const TICK: Duration = Duration::from_millis(100);

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    // Virtual time: every sleep and cooldown passes at once, in order (tokio `test-util`).
    tokio::time::pause();
    run(&mut io::stdout()).await.map(drop)
}

/// What happened: printed as the summary, checked by the test.
#[derive(Debug, Default)]
pub struct Story {
    /// Requests sent.
    pub requests: u32,
    /// Requests answered (streams read to `[DONE]`).
    pub succeeded: u32,
    /// Requests served by a model after the primary.
    pub fell_back: u32,
    /// Attempts that skipped a cooling model, without an upstream call.
    pub skipped: u32,
    /// Upstream calls the stand-in received.
    pub upstream_calls: u64,
    /// The stand-in's calls per model.
    pub calls: BTreeMap<String, u64>,
    /// The model that served each request, in order.
    pub served: Vec<String>,
    /// Every health change, in order.
    pub changes: Vec<Change>,
    /// The counters the stack recorded during the outage (`name{label=value,..}`, labels
    /// sorted, model ids shortened).
    pub counters: BTreeMap<String, u64>,
}

/// A model's breaker changed state.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// When it was seen (virtual time since the start).
    pub at: Duration,
    /// The model.
    pub model: String,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Trips in a row, after the change.
    pub trips: u32,
}

/// From this second on, OpenRouter does this (in words, and as the stand-in's script).
type Event = (u64, &'static str, fn(&MockOpenRouter));

/// What OpenRouter does, and when.
fn timeline() -> [Event; 6] {
    [
        (
            5,
            "claude-sonnet-4.5 is rate limited: 429, Retry-After: 4",
            |m| {
                m.model(PRIMARY)
                    .respond(slow(Reply::status(429).retry_after(4)));
            },
        ),
        (9, "claude-sonnet-4.5 goes down: 503 No endpoints", |m| {
            m.model(PRIMARY).respond(slow(Reply::status(503)));
        }),
        (15, "gpt-4o answers one 500 Internal Server Error", |m| {
            m.model(SECONDARY).respond(slow(Reply::status(500))).once();
        }),
        (20, "claude-sonnet-4.5 now answers 502 Bad Gateway", |m| {
            m.model(PRIMARY).respond(slow(Reply::status(502)));
        }),
        (40, "gpt-4o answers one 429, Retry-After: 8", |m| {
            m.model(SECONDARY)
                .respond(slow(Reply::status(429).retry_after(8)))
                .once();
        }),
        (42, "claude-sonnet-4.5 recovers", |m| {
            m.model(PRIMARY).respond(answer());
        }),
    ]
}

/// A healthy answer: four chunks when streamed, their text joined otherwise.
fn answer() -> Reply {
    slow(Reply::stream([
        "Rayleigh ",
        "scattering: ",
        "blue light ",
        "scatters most.",
    ]))
}

fn slow(reply: Reply) -> Reply {
    Reply::delay(LATENCY, reply)
}

/// The stack of the demo: the three-model chain, default settings but for determinism.
fn stack(openrouter: &MockOpenRouter) -> (OpenRouter<MockOpenRouter>, HealthTracker) {
    let layer = OpenRouterLayer::builder()
        .chain([PRIMARY, SECONDARY, THIRD])
        .attempt_timeout(Duration::from_secs(60))
        .deadline(Duration::from_secs(180))
        // The default 10% cooldown jitter, from a fixed seed (leave it random in
        // production). Any seed prints the same every run; this one shortens the two trips'
        // cooldowns (15 s, 30 s) by 0.12 s and 0.09 s, so each still ends just after a
        // request arrives and the next one is the probe, as the story reads (a seed that cut
        // more than 0.3 s would move a probe 5 s earlier).
        .health_config(HealthConfig::default().jitter_seed(382))
        // Retry backoff jitter from a fixed seed.
        .retry_policy(RetryPolicy::new().rng(Seeded(7)))
        .build()
        .expect("valid settings");
    let health = layer.health().clone();
    (layer.layer(openrouter.clone()), health)
}

/// Runs the outage story and the failures that are not outages, printing to `out`.
pub async fn run(out: &mut impl Write) -> io::Result<Story> {
    let start = Instant::now();
    let openrouter = MockOpenRouter::new();
    openrouter.default_reply(answer());
    let (client, health) = stack(&openrouter);
    let mut watch = Watch::new(health, start);

    writeln!(
        out,
        "tower-openrouter demo: an OpenRouter outage, ridden out (in-process stand-in, no key, no network)
chain: {PRIMARY} -> {SECONDARY} -> {THIRD}
a request every {}s, every third streamed and read to [DONE]; t=+ is virtual time
per request: kind, served by, primary or fallback, upstream calls, attempts that failed or
were skipped before the answer (model_cooling_down: skipped without an upstream call)
",
        EVERY.as_secs()
    )?;

    // The metrics of the outage, in a recorder of this thread (feature `metrics`).
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let local = metrics::set_default_local_recorder(&recorder);

    let mut story = Story::default();
    let mut events = timeline().into_iter().peekable();
    for n in 1..=REQUESTS {
        let at = start + EVERY * (n - 1);
        while let Some((when, what, script)) = events.next_if(|e| start + secs(e.0) <= at) {
            tokio::time::sleep_until(start + secs(when)).await;
            script(&openrouter);
            writeln!(out, "{:<9} upstream  {what}", stamp(start, Instant::now()))?;
        }
        tokio::time::sleep_until(at).await;
        let stream = n % 3 == 2;
        let calls_before = openrouter.total_calls();
        let result = watch.during(send(&client, stream)).await;
        let calls = plural(openrouter.total_calls() - calls_before, "call");
        story.requests += 1;
        let line = match result {
            Ok((served, chunks)) => {
                story.succeeded += 1;
                story.fell_back += u32::from(served.fell_back);
                story.skipped += served
                    .attempts
                    .iter()
                    .filter(|a| a.kind() == ErrorKind::ModelCoolingDown)
                    .count() as u32;
                story.served.push(served.model.to_string());
                let how = if served.fell_back {
                    "fallback"
                } else {
                    "primary"
                };
                let streamed = chunks.map_or(String::new(), |c| format!("  [{c} chunks, DONE]"));
                format!(
                    "{:<18} {how:<8}  {calls:<7}{}{streamed}",
                    short(&served.model),
                    attempts(&served.attempts),
                )
            }
            Err(err) => format!("failed after {calls}: {err}"),
        };
        let kind = if stream { "stream" } else { "chat" };
        let line = format!("{:<9} #{n:<3} {kind:<6}  {line}", stamp(start, at));
        writeln!(out, "{}", line.trim_end())?;
        for change in watch.unprinted() {
            writeln!(out, "{change}")?;
        }
    }
    drop(local);
    story.upstream_calls = openrouter.total_calls();
    story.calls = openrouter.calls_by_model();
    story.changes = watch.changes;
    summary(&story, out)?;
    let seen = Metrics::from(&snapshotter);
    seen.print(out)?;
    story.counters = seen.counters;
    not_outages(out).await?;
    capabilities(out).await?;
    Ok(story)
}

/// Requests, success rate, upstream calls per request and per model, the primary's trips.
fn summary(story: &Story, out: &mut impl Write) -> io::Result<()> {
    let per_model = |count: &dyn Fn(&str) -> u64| {
        [PRIMARY, SECONDARY, THIRD]
            .map(|m| format!("{m} {}", count(m)))
            .join(", ")
    };
    let served = |m: &str| story.served.iter().filter(|s| *s == m).count() as u64;
    let calls = |m: &str| story.calls.get(m).copied().unwrap_or(0);
    let primary: Vec<&Change> = story
        .changes
        .iter()
        .filter(|c| c.model == PRIMARY)
        .collect();
    let probes = primary
        .iter()
        .filter(|c| c.to == BreakerState::HalfOpen)
        .count();
    let trips = primary.iter().map(|c| c.trips).max().unwrap_or(0);
    writeln!(out, "\nSummary")?;
    writeln!(
        out,
        "  requests: {}, succeeded: {} ({:.0}%), fell back: {}",
        story.requests,
        story.succeeded,
        100.0 * f64::from(story.succeeded) / f64::from(story.requests),
        story.fell_back,
    )?;
    writeln!(
        out,
        "  upstream calls: {} ({:.2} per request); {} attempts skipped a cooling model without a call",
        story.upstream_calls,
        story.upstream_calls as f64 / f64::from(story.requests),
        story.skipped,
    )?;
    writeln!(out, "  calls per model: {}", per_model(&calls))?;
    writeln!(out, "  served by:       {}", per_model(&served))?;
    if let Some(back) = primary.iter().rfind(|c| c.to == BreakerState::Closed) {
        writeln!(
            out,
            "  primary: {trips} {}, {probes} {}, back in service at {}",
            if trips == 1 { "trip" } else { "trips" },
            if probes == 1 { "probe" } else { "probes" },
            stamp_at(back.at),
        )?;
    }
    Ok(())
}

/// What the recorder saw: counters and gauges by `name{labels}`, histograms' values.
struct Metrics {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
    histograms: BTreeMap<String, Vec<f64>>,
}

impl From<&Snapshotter> for Metrics {
    fn from(snapshotter: &Snapshotter) -> Self {
        let mut m = Metrics {
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
            histograms: BTreeMap::new(),
        };
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), short(l.value())))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            match value {
                DebugValue::Counter(n) => drop(m.counters.insert(name, n)),
                DebugValue::Gauge(g) => drop(m.gauges.insert(name, g.into_inner())),
                DebugValue::Histogram(h) => {
                    let values = h.into_iter().map(|v| v.into_inner());
                    m.histograms.entry(name).or_default().extend(values)
                }
            }
        }
        m
    }
}

impl Metrics {
    /// The sum of the counters named `name` whose labels include every one of `labels`.
    fn count(&self, name: &str, labels: &[&str]) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .filter(|(k, _)| labels.iter().all(|l| has_label(k, l)))
            .map(|(_, v)| v)
            .sum()
    }

    /// The values of the histograms named `name` whose labels include `label`.
    fn values(&self, name: &str, label: &str) -> Vec<f64> {
        self.histograms
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && has_label(k, label))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    }

    /// One line per model, then the fallbacks: what a dashboard would chart.
    fn print(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "\nMetrics of the outage (feature `metrics`, metrics-util's debugging recorder; names in the README)"
        )?;
        writeln!(
            out,
            "  {:<18} {:>5} {:>3} {:>6} {:>7} {:>7}  {:>6} {:>6} {:>6}  {:<6} {:>8}",
            "model",
            "tries",
            "ok",
            "failed",
            "retries",
            "skipped",
            "opened",
            "probes",
            "closed",
            "now",
            "mean s"
        )?;
        for model in [PRIMARY, SECONDARY, THIRD].map(short) {
            let m = format!("gen_ai.request.model={model}");
            let ok = self.count("openrouter.attempts", &[&m, "outcome=success"]);
            let tries = self.count("openrouter.attempts", &[&m]);
            let state = |s: &str| {
                self.count(
                    "openrouter.breaker.transitions",
                    &[&m, &format!("state={s}")],
                )
            };
            let gauge = self.gauges.get(&format!("openrouter.breaker.state{{{m}}}"));
            let now = gauge.map_or("-", |&g| match g as u8 {
                0 => "closed",
                1 => "half",
                _ => "open",
            });
            let durations = self.values("gen_ai.client.operation.duration", &m);
            let mean = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
            writeln!(
                out,
                "  {model:<18} {tries:>5} {ok:>3} {:>6} {:>7} {:>7}  {:>6} {:>6} {:>6}  {now:<6} {mean:>8.2}",
                tries - ok,
                self.count("openrouter.retries", &[&m]),
                self.count("openrouter.cooldown.skips", &[&m]),
                state("open"),
                state("half_open"),
                state("closed"),
            )?;
        }
        let fallbacks: Vec<String> = self
            .counters
            .iter()
            .filter_map(|(k, v)| {
                let labels = k.strip_prefix("openrouter.fallbacks{")?.strip_suffix('}')?;
                let (from, to) = labels.split_once(',')?;
                Some(format!(
                    "{} -> {} {v}",
                    from.strip_prefix("from=")?,
                    to.strip_prefix("to=")?
                ))
            })
            .collect();
        writeln!(out, "  fallbacks: {}", fallbacks.join(", "))?;
        let tokens = |t: &str| {
            self.values(
                "gen_ai.client.token.usage",
                &format!("gen_ai.token.type={t}"),
            )
            .iter()
            .sum::<f64>()
        };
        let ttfc = self.values("gen_ai.client.operation.time_to_first_chunk", "");
        writeln!(
            out,
            "  tokens (chat answers): {} in, {} out; cost ${:.5}; streams' time to first chunk {:.2} s (mean of {})",
            tokens("input"),
            tokens("output"),
            self.values("openrouter.cost", "").iter().sum::<f64>(),
            ttfc.iter().sum::<f64>() / ttfc.len().max(1) as f64,
            ttfc.len(),
        )
    }
}

fn has_label(key: &str, label: &str) -> bool {
    let Some(labels) = key.split_once('{').and_then(|(_, l)| l.strip_suffix('}')) else {
        return false;
    };
    label.is_empty() || labels.split(',').any(|l| l == label)
}

/// Three failures of the caller's own: one stops at once, two fall back; none trips.
async fn not_outages(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "\nFailures that are not outages (fresh stand-in, same stack; none counts against health)"
    )?;
    let cases: [(&str, Reply); 3] = [
        ("402 out of credits", Reply::status(402)),
        ("403 moderation", Reply::moderation()),
        ("400 context length", Reply::context_length()),
    ];
    for (what, reply) in cases {
        let openrouter = MockOpenRouter::new();
        openrouter.model(PRIMARY).respond(reply);
        let (client, _) = stack(&openrouter);
        let calls = || plural(openrouter.total_calls(), "call");
        match send(&client, false).await {
            Ok((served, _)) => writeln!(
                out,
                "  {what:<19} -> served by {} ({}){}",
                short(&served.model),
                calls(),
                attempts(&served.attempts),
            )?,
            Err(err) => writeln!(
                out,
                "  {what:<19} -> {} ({}), stops after {}:\n     {err}",
                err.kind(),
                err.action(),
                calls()
            )?,
        }
    }
    writeln!(
        out,
        "Every failure kind, one by one: cargo run --example classify"
    )
}

/// A model that cannot serve a request is skipped without a call: the catalog (the
/// stand-in's `GET /api/v1/models`, read through the same client) says what each supports.
async fn capabilities(out: &mut impl Write) -> io::Result<()> {
    let openrouter = MockOpenRouter::new();
    let catalog = ModelCatalog::new();
    let uri = http::Uri::from_static("https://openrouter.ai/api/v1/models");
    let n = catalog
        .refresh_from(openrouter.clone(), &uri)
        .await
        .map_err(io::Error::other)?;
    let chain = [SMALL, SECONDARY, THIRD];
    let client = OpenRouterLayer::builder()
        .chain(chain)
        .catalog(catalog)
        .build()
        .expect("valid settings")
        .layer(openrouter.clone());
    writeln!(
        out,
        "\nRequests a model cannot serve (catalog: {n} models from GET /api/v1/models)"
    )?;
    writeln!(out, "  chain: {}", chain.map(short).join(" -> "))?;
    let tools = format!(
        r#"{{"model":"{SMALL}","messages":[{{"role":"user","content":"Weather in Oslo?"}}],"tools":[{{"type":"function","function":{{"name":"get_weather"}}}}]}}"#
    );
    // About 150k tokens of English (a long document to summarize).
    let text =
        "The quick brown fox jumps over the lazy dog near the river bank today. ".repeat(13_400);
    let long = format!(
        r#"{{"model":"{SMALL}","max_tokens":1000,"messages":[{{"role":"user","content":"Summarize: {text}"}}]}}"#
    );
    for (what, body) in [("tools request", tools), ("150k-token prompt", long)] {
        let before = openrouter.total_calls();
        let req = http::Request::post("https://openrouter.ai/api/v1/chat/completions")
            .header("content-type", "application/json")
            .body(body)
            .expect("a valid request");
        let resp = client
            .clone()
            .oneshot(req)
            .await
            .map_err(io::Error::other)?;
        let served = resp
            .extensions()
            .get::<ServedBy>()
            .cloned()
            .expect("ServedBy");
        writeln!(
            out,
            "  {what:<18} -> served by {} ({}){}",
            short(&served.model),
            plural(openrouter.total_calls() - before, "call"),
            attempts(&served.attempts),
        )?;
    }
    Ok(())
}

/// Sends one request (streamed or not) and reads its answer to the end: the model that
/// served it and, for a stream, the number of content chunks.
async fn send(
    client: &OpenRouter<MockOpenRouter>,
    stream: bool,
) -> Result<(ServedBy, Option<usize>), Error> {
    let body = format!(
        r#"{{"model":"{PRIMARY}","messages":[{{"role":"user","content":"Why is the sky blue?"}}],"stream":{stream}}}"#
    );
    let req = http::Request::post("https://openrouter.ai/api/v1/chat/completions")
        .header("authorization", "Bearer sk-or-v1-not-a-real-key")
        .header("content-type", "application/json")
        .body(body)
        .expect("a valid request");
    let resp = client.clone().oneshot(req).await?;
    let served = resp
        .extensions()
        .get::<ServedBy>()
        .cloned()
        .expect("ServedBy");
    let bytes = resp.into_body().collect().await?.to_bytes();
    let chunks = stream.then(|| {
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.trim_end().ends_with("data: [DONE]"), "a whole stream");
        text.matches("\"content\":\"").count() - 1 // the final chunk's delta is empty
    });
    Ok((served, chunks))
}

/// Health changes, from `HealthTracker::snapshot`, sampled while requests are in flight.
struct Watch {
    health: HealthTracker,
    start: Instant,
    /// Each model's state and trips at the last sample.
    last: BTreeMap<Arc<str>, (BreakerState, u32)>,
    changes: Vec<Change>,
    /// Lines not printed yet.
    lines: Vec<String>,
}

impl Watch {
    fn new(health: HealthTracker, start: Instant) -> Self {
        Watch {
            health,
            start,
            last: BTreeMap::new(),
            changes: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Runs `fut`, sampling health every `TICK` meanwhile and once at the end.
    async fn during<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut tick = tokio::time::interval(TICK);
        let output = loop {
            tokio::select! {
                biased;
                output = &mut fut => break output,
                _ = tick.tick() => self.sample(),
            }
        };
        self.sample();
        output
    }

    /// The changes seen since the last call, as lines.
    fn unprinted(&mut self) -> std::vec::Drain<'_, String> {
        self.lines.drain(..)
    }

    fn sample(&mut self) {
        let now = Instant::now();
        for m in self.health.snapshot() {
            let (from, trips) = self
                .last
                .insert(m.model.clone(), (m.state, m.trips))
                .unwrap_or((BreakerState::Closed, 0));
            if from == m.state {
                continue;
            }
            self.changes.push(Change {
                at: now - self.start,
                model: m.model.to_string(),
                from,
                to: m.state,
                trips: m.trips,
            });
            let until = m
                .cooldown_until
                .map_or(String::new(), |u| stamp(self.start, u));
            let why = match (from, m.state) {
                (_, BreakerState::HalfOpen) => {
                    "cooldown over: this request is its one probe".into()
                }
                (BreakerState::HalfOpen, BreakerState::Closed) => {
                    "probe succeeded: back in service".into()
                }
                (BreakerState::HalfOpen, _) => {
                    format!("probe failed, trip {}: skipped until {until}", m.trips)
                }
                (_, BreakerState::Open) if m.trips > trips => {
                    format!("tripped, trip {}: skipped until {until}", m.trips)
                }
                (_, BreakerState::Open) => format!("Retry-After: skipped until {until}"),
                (_, BreakerState::Closed) => "back in service".into(),
            };
            self.lines.push(format!(
                "{:<9} health    {} {} -> {}  ({why})",
                stamp(self.start, now),
                short(&m.model),
                state(from),
                state(m.state),
            ));
        }
    }
}

fn state(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
    }
}

/// `anthropic/claude-sonnet-4.5` -> `claude-sonnet-4.5`.
fn short(model: &str) -> &str {
    model.split_once('/').map_or(model, |(_, m)| m)
}

fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// ` after: claude-sonnet-4.5 rate_limited 429, ...` (empty when the first try answered).
fn attempts(records: &[AttemptRecord]) -> String {
    if records.is_empty() {
        return String::new();
    }
    let list: Vec<String> = records
        .iter()
        .map(|a| {
            let status = a
                .status()
                .map_or(String::new(), |s| format!(" {}", s.as_u16()));
            let retry = if a.retry > 0 {
                format!(" (retry {})", a.retry)
            } else {
                String::new()
            };
            let why = match (a.kind(), a.error.detail()) {
                (ErrorKind::Incapable, Some(why)) => format!(" ({why})"),
                _ => String::new(),
            };
            format!("{} {}{status}{retry}{why}", short(&a.model), a.kind())
        })
        .collect();
    format!("  after: {}", list.join(", "))
}

/// A fixed-seed random source for the retry jitter: Knuth's MMIX LCG, high bits.
struct Seeded(u64);

impl Rng for Seeded {
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 ^ (self.0 >> 32)
    }
}

/// `t=+15.0s`: virtual time since `start`.
fn stamp(start: Instant, at: Instant) -> String {
    stamp_at(at - start)
}

fn stamp_at(elapsed: Duration) -> String {
    format!("t=+{:.1}s", elapsed.as_secs_f64())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BreakerState::{Closed, HalfOpen, Open};

    #[tokio::test(start_paused = true)]
    async fn the_primary_trips_is_probed_and_recovers_the_same_way_every_run() {
        let mut out = Vec::new();
        let story = run(&mut out).await.unwrap();
        assert_eq!(story.requests, 15);
        assert_eq!(story.succeeded, 15);
        assert_eq!(story.fell_back, 8);
        assert_eq!(story.skipped, 3);
        // 22 upstream calls for 15 requests: a cooling model is skipped without a call.
        assert_eq!(story.upstream_calls, 22);
        let calls = |m: &str| story.calls[m];
        assert_eq!((calls(PRIMARY), calls(SECONDARY), calls(THIRD)), (12, 9, 1));
        assert_eq!(story.served.iter().filter(|m| *m == THIRD).count(), 1);
        assert_eq!(story.served[9..], [PRIMARY; 6]);

        // The 429 alone cools nothing (it holds back that request only); five failures
        // in a row trip the primary; its one probe after the cooldown brings it back.
        let primary: Vec<(u128, BreakerState, BreakerState, u32)> = story
            .changes
            .iter()
            .filter(|c| c.model == PRIMARY)
            .map(|c| (c.at.as_millis(), c.from, c.to, c.trips))
            .collect();
        assert_eq!(
            primary,
            [
                (25_300, Closed, Open, 1),
                (45_000, Open, HalfOpen, 1),
                (45_300, HalfOpen, Closed, 1),
            ]
        );

        // The metrics agree with the story: per model tries and outcomes, 8 + 1
        // fallbacks, one retry (gpt-4o's 500), 3 skips, the primary opened once, probed
        // once, closed once.
        let c = |k: &str| story.counters.get(k).copied().unwrap_or(0);
        let attempts = |m: &str, o: &str| {
            c(&format!(
                "openrouter.attempts{{gen_ai.request.model={m},outcome={o}}}"
            ))
        };
        let (a, b, g) = ("claude-sonnet-4.5", "gpt-4o", "gemini-2.5-flash");
        assert_eq!(
            [
                attempts(a, "success"),
                attempts(a, "rate_limited"),
                attempts(a, "model_unavailable"),
                attempts(a, "provider_error"),
            ],
            [7, 1, 2, 2]
        );
        assert_eq!(
            [
                attempts(b, "success"),
                attempts(b, "provider_error"),
                attempts(b, "rate_limited"),
                attempts(g, "success"),
            ],
            [7, 1, 1, 1]
        );
        assert_eq!(c(&format!("openrouter.fallbacks{{from={a},to={b}}}")), 8);
        assert_eq!(c(&format!("openrouter.fallbacks{{from={b},to={g}}}")), 1);
        assert_eq!(
            c(&format!(
                "openrouter.retries{{error.type=provider_error,gen_ai.request.model={b}}}"
            )),
            1
        );
        assert_eq!(
            c(&format!(
                "openrouter.cooldown.skips{{gen_ai.request.model={a}}}"
            )),
            3
        );
        let moves = |m: &str, s: &str| {
            c(&format!(
                "openrouter.breaker.transitions{{gen_ai.request.model={m},state={s}}}"
            ))
        };
        assert_eq!(
            [moves(a, "open"), moves(a, "half_open"), moves(a, "closed")],
            [1, 1, 1]
        );
        assert_eq!(story.counters.len(), 15, "{:#?}", story.counters);

        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().count() <= 80, "{text}");
        for line in [
            "requests: 15, succeeded: 15 (100%), fell back: 8",
            "upstream calls: 22 (1.47 per request)",
            "primary: 1 trip, 1 probe, back in service at t=+45.3s",
            // The seeded cooldown jitter: 15 s less 0.12 s.
            "tripped, trip 1: skipped until t=+40.2s",
            "insufficient_credits (fatal), stops after 1 call",
            "Add more using https://openrouter.ai/settings/credits; retrying will not help",
            "served by gpt-4o (2 calls)  after: claude-sonnet-4.5 content_moderated 403",
            "served by gpt-4o (2 calls)  after: claude-sonnet-4.5 context_length_exceeded 400",
            // The catalog: a tools request and a long prompt skip models without a call.
            "tools request      -> served by gpt-4o (1 call)  after: llama-3.1-8b-instruct incapable (no tools)",
            "150k-token prompt  -> served by gemini-2.5-flash (1 call)  after: llama-3.1-8b-instruct incapable (context 131072 < estimated 151422), gpt-4o incapable (context 128000 < estimated 151422)",
            "fallbacks: claude-sonnet-4.5 -> gpt-4o 8, gpt-4o -> gemini-2.5-flash 1",
            "tokens (chat answers): 150 in, 75 out; cost $0.00630; streams' time to first chunk 0.30 s (mean of 5)",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }

        // The same output every run.
        let mut again = Vec::new();
        run(&mut again).await.unwrap();
        assert_eq!(text, String::from_utf8(again).unwrap());

        // The README's excerpt is real output.
        let readme = include_str!("../README.md");
        let excerpt = readme
            .split("```text\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README has the demo's excerpt");
        let lines: Vec<&str> = text.lines().collect();
        for line in excerpt.lines().filter(|l| *l != "...") {
            assert!(
                lines.contains(&line),
                "README line not in the output: {line:?}"
            );
        }
    }
}
