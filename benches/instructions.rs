//! Instructions per request of the whole stack, for callgrind: a figure that stays the
//! same on a busy machine, where wall-clock benches (`benches/stack.rs`) do not.
//!
//! Runs the 1 KB chat-completion request of `benches/stack.rs` N times, after 1,000
//! uncounted warm-up requests, through `OpenRouterLayer` over an in-process canned
//! success (`stack`), through the bare client alone (`bare`), or through the stack over
//! `MockOpenRouter` (`mock`); `sizes` prints the stack's future size. Only the function
//! `measured` is counted:
//!
//! ```text
//! cargo bench --bench instructions --no-run      # prints the executable's path
//! INSTR_MODE=stack valgrind --tool=callgrind --collect-atstart=no \
//!     --toggle-collect='*measured*' target/release/deps/instructions-<hash>
//! INSTR_MODE=bare  valgrind ... (the same)
//! ```
//!
//! `Collected` / `INSTR_N` (default 20,000) is instructions per request; `stack` minus
//! `bare` is what the stack costs. `callgrind_annotate` on the output file shows where.
//! Without valgrind it just runs (`cargo bench --bench instructions`, a fraction of a
//! second).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};
use tower_openrouter::mock::MockOpenRouter;
use tower_openrouter::OpenRouterLayer;

mod support;
use support::{body, client, request_of};

async fn one<S, B>(svc: &S, body: &Bytes)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let resp = svc.clone().oneshot(request_of(body)).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!bytes.is_empty());
}

/// The counted part: `n` requests, one after another.
#[inline(never)]
fn measured<S, B>(rt: &tokio::runtime::Runtime, svc: &S, body: &Bytes, n: u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        for _ in 0..n {
            one(svc, body).await;
        }
    })
}

fn go<S, B>(rt: &tokio::runtime::Runtime, svc: &S, body: &Bytes, n: u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    // Warm-up, not counted. `black_box` keeps this loop's code different from
    // `measured`'s, so the compiler does not merge the two into one function.
    rt.block_on(async {
        for i in 0..1000u64 {
            one(svc, body).await;
            std::hint::black_box(i);
        }
    });
    measured(rt, svc, body, n);
}

fn main() {
    // Settings from the environment: `cargo bench` passes its own arguments.
    let mode = std::env::var("INSTR_MODE").unwrap_or_else(|_| "stack".into());
    let n: u64 = std::env::var("INSTR_N").map_or(20_000, |s| s.parse().expect("INSTR_N"));
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
    let body = body(1024);
    match mode.as_str() {
        "bare" => go(&rt, &client(), &body, n),
        "stack" => {
            let stack = rt.block_on(async { layer.layer(client()) });
            go(&rt, &stack, &body, n)
        }
        "mock" => {
            let stack = rt.block_on(async { layer.layer(MockOpenRouter::new()) });
            go(&rt, &stack, &body, n)
        }
        "sizes" => {
            let mut stack = rt.block_on(async { layer.layer(client()) });
            let req = request_of(&body);
            let fut = stack.clone().oneshot(request_of(&body));
            println!("oneshot future: {} bytes", std::mem::size_of_val(&fut));
            let f2 = stack.call(req);
            println!("stack future: {} bytes", std::mem::size_of_val(&f2));
        }
        other => panic!("INSTR_MODE: bare, stack, mock or sizes, not {other}"),
    }
}
