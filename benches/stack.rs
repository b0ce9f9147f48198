//! What the whole stack costs per request.
//!
//! * Against the in-process MockOpenRouter alone: a first-try success, and a call whose
//!   primary is rate limited (one fallback).
//! * Against a bare in-process `service_fn` answering every request with a canned
//!   OpenRouter success (group `stack`): both sides build the same request, call the
//!   service and read the whole response body, so the difference is what the stack costs
//!   per request on the happy path (buffering and checking the body, deadline, fallback,
//!   retry, health, attempt timeout, classification). Request bodies of 1 KB and 100 KB.
//!
//! `cargo bench --bench stack`

// Benches measure wall-clock time (and wait for a real store): std's clock is right here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::OpenRouterLayer;

mod support;
use support::{body, client, request_of, SUCCESS};

const BODY: &str = r#"{"model":"x/y","messages":[{"role":"user","content":"Explain recursion"}],"max_tokens":500}"#;

fn request() -> http::Request<Full<Bytes>> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let layer = OpenRouterLayer::builder()
        .chain(["a/primary", "b/secondary"])
        .deadline(Duration::from_secs(60))
        .attempt_timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mock = MockOpenRouter::new();
    c.bench_function("mock alone", |b| {
        b.iter(|| rt.block_on(mock.clone().oneshot(request())).unwrap())
    });
    let svc = layer.layer(mock.clone());
    c.bench_function("stack, first try answers", |b| {
        b.iter(|| rt.block_on(svc.clone().oneshot(request())).unwrap())
    });

    // 429 without Retry-After, and health that never cools (so every call falls back).
    let layer = OpenRouterLayer::builder()
        .chain(["a/primary", "b/secondary"])
        .health_config(
            tower_openrouter::HealthConfig::default()
                .consecutive_failures(u32::MAX)
                .without_failure_ratio(),
        )
        .build()
        .unwrap();
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::status(429));
    let svc = layer.layer(mock.clone());
    c.bench_function("stack, primary 429 then secondary", |b| {
        b.iter(|| rt.block_on(svc.clone().oneshot(request())).unwrap())
    });
}

/// Runs `iters` requests through `svc` on one current-thread runtime and returns the time.
fn run<S, B>(rt: &tokio::runtime::Runtime, svc: &S, body: &Bytes, iters: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let resp = svc.clone().oneshot(request_of(body)).await.unwrap();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(bytes.len(), SUCCESS.len());
        }
        start.elapsed()
    })
}

fn bench_bare(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = OpenRouterLayer::builder()
        .chain(["openai/gpt-4o-mini", "anthropic/claude-3-haiku"])
        .attempt_timeout(Duration::from_secs(60))
        .deadline(Duration::from_secs(180))
        .build()
        .unwrap();
    // The tracker's timers and maps need the runtime.
    let stack = rt.block_on(async { layer.layer(client()) });
    let bare = client();

    let mut group = c.benchmark_group("stack");
    for (name, size) in [("1KB", 1024), ("100KB", 100 * 1024)] {
        let body = body(size);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("bare", name), &body, |b, body| {
            b.iter_custom(|iters| run(&rt, &bare, body, iters))
        });
        group.bench_with_input(
            BenchmarkId::new("openrouter_layer", name),
            &body,
            |b, body| b.iter_custom(|iters| run(&rt, &stack, body, iters)),
        );
    }
    #[cfg(feature = "redis")]
    shared_health(&rt, &mut group);
    group.finish();
}

/// The same stack with health shared through a real Redis (feature `redis`; needs
/// `redis-server` on the PATH, started here on a free loopback port, killed at the end).
/// On the happy path nothing is published: the difference is the store's presence.
#[cfg(feature = "redis")]
fn shared_health(
    rt: &tokio::runtime::Runtime,
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) {
    use tower_openrouter::health::{RedisHealthStore, RedisStoreConfig};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(mut server) = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("skipping stack/openrouter_layer_shared: no redis-server");
        return;
    };
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stack = rt.block_on(async {
        let store =
            RedisHealthStore::connect(RedisStoreConfig::new(format!("redis://127.0.0.1:{port}/0")))
                .await
                .unwrap();
        let layer = OpenRouterLayer::builder()
            .chain(["openai/gpt-4o-mini", "anthropic/claude-3-haiku"])
            .attempt_timeout(Duration::from_secs(60))
            .deadline(Duration::from_secs(180))
            .health_store(store.into_store())
            .build()
            .unwrap();
        layer.layer(client())
    });
    let body = body(1024);
    group.bench_with_input(
        BenchmarkId::new("openrouter_layer_shared", "1KB"),
        &body,
        |b, body| b.iter_custom(|iters| run(rt, &stack, body, iters)),
    );
    let _ = server.kill();
    let _ = server.wait();
}

criterion_group!(benches, bench);
criterion_group! {
    name = bare;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_bare
}
criterion_main!(benches, bare);
