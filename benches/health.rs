//! The health tracker's hot path: `check` + `record` of a known model, alone and from
//! many threads at once, and one attempt through `Health<S>` around a ready upstream.
//!
//! `cargo bench --bench health`

// A bench measures real (wall-clock) time across threads: `std::time::Instant` is right here,
// unlike in the crate, where time must follow tokio's paused clock.
#![allow(clippy::disallowed_types)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::Full;
use tower::{service_fn, Layer, Service};
use tower_openrouter::health::{HealthConfig, HealthLayer, HealthTracker};
use tower_openrouter::{Attempt, Error, ErrorKind};

const MODEL: &str = "anthropic/claude-sonnet-4.5";

fn tracker() -> HealthTracker {
    let t = HealthTracker::new(HealthConfig::default());
    // A handful of models, as a real chain has.
    for m in ["openai/gpt-4o", "google/gemini-2.5-flash", MODEL, "x/y"] {
        t.record(m, Ok(()));
    }
    t
}

fn check_and_record(c: &mut Criterion) {
    let t = tracker();
    c.bench_function("check+record success", |b| {
        b.iter(|| {
            black_box(t.check(black_box(MODEL)));
            t.record(black_box(MODEL), Ok(()));
        })
    });

    // A counted failure that does not trip (failure path: window totals are read).
    let t = HealthTracker::new(
        HealthConfig::default()
            .consecutive_failures(u32::MAX)
            .min_calls(u32::MAX),
    );
    let err = Error::new(ErrorKind::ProviderError);
    c.bench_function("check+record failure", |b| {
        b.iter(|| {
            black_box(t.check(black_box(MODEL)));
            t.record(black_box(MODEL), Err(&err));
        })
    });

    let t = tracker();
    c.bench_function("is_available", |b| {
        b.iter(|| black_box(t.is_available(black_box(MODEL))))
    });
}

fn many_threads(c: &mut Criterion) {
    for threads in [2usize, 8] {
        let t = tracker();
        c.bench_function(&format!("check+record success, {threads} threads"), |b| {
            // Time per operation of one thread while all threads hammer the same model.
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            for _ in 0..iters {
                                black_box(t.check(black_box(MODEL)));
                                t.record(black_box(MODEL), Ok(()));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
}

fn through_layer(c: &mut Criterion) {
    let t = tracker();
    let upstream = service_fn(|_req: http::Request<Full<Bytes>>| {
        std::future::ready(Ok::<_, Error>(http::Response::new(())))
    });
    let mut svc = HealthLayer::new(t).layer(upstream);
    let body = Full::new(Bytes::from_static(b"{\"model\":\"x\"}"));
    let attempt = Attempt::new(MODEL);
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("Health<S> attempt (request built outside)", |b| {
        b.iter_batched(
            || {
                let mut req = http::Request::new(body.clone());
                req.extensions_mut().insert(attempt.clone());
                req
            },
            |req| {
                assert!(svc.poll_ready(&mut cx).is_ready());
                let fut = pin!(svc.call(req));
                match fut.poll(&mut cx) {
                    Poll::Ready(r) => black_box(r.is_ok()),
                    Poll::Pending => unreachable!(),
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = check_and_record, many_threads, through_layer
}
criterion_main!(benches);
