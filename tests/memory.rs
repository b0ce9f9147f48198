//! Peak memory of many large requests in flight through the whole `OpenRouterLayer` stack,
//! measured with a counting global allocator (this test binary only: every allocation of
//! the process counts, the test's own bodies included).
//!
//! 200 concurrent requests with 1 MB bodies each make three attempts; the upstream holds
//! every third attempt until all 200 are there, so the peak is taken with every request
//! at its third attempt at once.
//!
//! * Three attempts of one model (two retries): attempts share the caller's buffer.
//! * Three models (two fallbacks): each model gets a body with its own `model` value, which
//!   replaces the caller's buffer in the call (the next model's body is made from it), so
//!   a call still holds one copy.
//!
//! Both peaks stay within 1.2x the bodies' size.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_openrouter::health::HealthConfig;
use tower_openrouter::stack::OpenRouterLayer;
use tower_openrouter::{Attempt, RetryPolicy};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUESTS: usize = 200;
const BODY: usize = 1024 * 1024;

const SUCCESS: &[u8] = br#"{"id":"gen-1","object":"chat.completion","model":"m/c","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"ok"}}]}"#;

/// A 1 MB chat-completion body asking for `model`.
fn body(model: &str, seed: usize) -> Bytes {
    let head = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":""#);
    let tail = r#""}]}"#;
    let mut v = Vec::with_capacity(BODY);
    v.extend_from_slice(head.as_bytes());
    let fill = BODY - head.len() - tail.len();
    v.resize(v.len() + fill, b'a' + (seed % 26) as u8);
    v.extend_from_slice(tail.as_bytes());
    assert_eq!(v.len(), BODY);
    Bytes::from(v)
}

/// Runs 200 concurrent 1 MB requests through `layer`; the upstream fails every attempt
/// but the third (`third(attempt)` says which one that is) and holds that one until all
/// 200 requests are at it. Returns the peak of live bytes over the bodies' size.
fn peak_ratio(layer: OpenRouterLayer, model: &str, third: fn(&Attempt) -> bool) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(REQUESTS));
        let upstream = service_fn(move |req: Request<Full<Bytes>>| {
            let barrier = barrier.clone();
            async move {
                let attempt = req.extensions().get::<Attempt>().unwrap().clone();
                if !third(&attempt) {
                    let resp = Response::builder()
                        .status(StatusCode::INTERNAL_SERVER_ERROR)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(
                            br#"{"error":{"code":500,"message":"Internal Server Error"}}"#,
                        )))
                        .unwrap();
                    return Ok::<_, Infallible>(resp);
                }
                // Hold this attempt's request (and its body) until every request is here.
                barrier.wait().await;
                drop(req);
                Ok(Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(SUCCESS)))
                    .unwrap())
            }
        });
        let svc = layer.layer(upstream);

        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let mut calls = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS {
            let req = Request::post("http://127.0.0.1/api/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(body(model, i)))
                .unwrap();
            calls.push(tokio::spawn(svc.clone().oneshot(req)));
        }
        for call in calls {
            let resp = call.await.unwrap().unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], SUCCESS);
        }
        let peak = PEAK.load(Ordering::Relaxed) - before;
        peak as f64 / (REQUESTS * BODY) as f64
    })
}

fn health() -> HealthConfig {
    // Keep every model in service: this test is about memory, not breakers.
    HealthConfig::default()
        .consecutive_failures(1_000_000)
        .without_failure_ratio()
}

#[test]
fn attempts_share_the_request_buffer() {
    // One test function: the allocator counts the whole process, so nothing may run beside.

    // Three attempts of one model: two retries of a 500.
    let layer = OpenRouterLayer::builder()
        .chain(["m/a"])
        .retry_policy(
            RetryPolicy::default()
                .no_budget()
                .backoff_base(Duration::from_millis(10))
                .backoff_cap(Duration::from_millis(50)),
        )
        .max_retries(2)
        .health_config(health())
        .build()
        .unwrap();
    let same = peak_ratio(layer, "m/a", |a| a.retry == 2);
    println!("three attempts of one model: peak {same:.3}x the bodies' size");
    assert!(
        same <= 1.2,
        "peak {same:.3}x the bodies' size with three attempts of one model"
    );

    // Three models: two fallbacks.
    let layer = OpenRouterLayer::builder()
        .chain(["m/a", "m/b", "m/c"])
        .max_retries(0)
        .retry_policy(RetryPolicy::default().no_budget())
        .health_config(health())
        .build()
        .unwrap();
    let chain = peak_ratio(layer, "m/a", |a| a.index == 2);
    println!("three models: peak {chain:.3}x the bodies' size");
    assert!(
        chain <= 1.2,
        "peak {chain:.3}x the bodies' size with three models"
    );
}
