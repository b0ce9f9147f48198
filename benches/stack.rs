//! What the whole stack costs per request, against the in-process MockOpenRouter alone:
//! a first-try success, and a call whose primary is rate limited (one fallback).

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::OpenRouterLayer;

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

criterion_group!(benches, bench);
criterion_main!(benches);
