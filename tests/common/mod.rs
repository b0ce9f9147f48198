//! Helpers shared by the timeout and retry tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::{Duration, Instant};
use tower::{service_fn, Service};
use tower_openrouter::Error;

pub type Req = Request<Full<Bytes>>;
pub type Resp = Response<Full<Bytes>>;

/// A buffered chat request for `model`.
pub fn req(model: &str) -> Req {
    Request::post("http://localhost/api/v1/chat/completions")
        .header("authorization", "Bearer sk-or-test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            "{{\"model\":\"{model}\",\"messages\":[]}}"
        ))))
        .unwrap()
}

pub fn ok() -> Resp {
    Response::new(Full::new(Bytes::from_static(b"{\"choices\":[]}")))
}

/// A copy of a recorded request: its parts and its body (shared, not copied).
fn copy(req: &Req) -> Req {
    let mut out = Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
    out
}

/// What an upstream saw: every request and when it arrived.
#[derive(Clone, Default)]
pub struct Seen {
    calls: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<(Instant, Req)>>>,
}

impl Seen {
    pub fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Start times of the calls, relative to `t0`, in seconds.
    pub fn starts(&self, t0: Instant) -> Vec<f64> {
        let log = self.log.lock().unwrap();
        log.iter()
            .map(|(t, _)| t.duration_since(t0).as_secs_f64())
            .collect()
    }

    /// The time between one call's start and the next, exact (no float rounding).
    #[allow(dead_code)]
    pub fn gaps(&self) -> Vec<Duration> {
        let log = self.log.lock().unwrap();
        log.windows(2).map(|w| w[1].0 - w[0].0).collect()
    }

    pub fn requests(&self) -> Vec<Req> {
        let log = self.log.lock().unwrap();
        log.iter().map(|(_, r)| copy(r)).collect()
    }

    fn record(&self, req: &Req) -> usize {
        let mut log = self.log.lock().unwrap();
        log.push((Instant::now(), copy(req)));
        self.calls.fetch_add(1, Ordering::SeqCst)
    }
}

/// An upstream that records each call and answers call `n` (0-based) with `answer(n)`.
pub fn upstream<F, Fut>(
    answer: F,
) -> (
    impl Service<Req, Response = Resp, Error = Error, Future = impl Send> + Clone + Send,
    Seen,
)
where
    F: Fn(usize, Req) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    let seen = Seen::default();
    let s = seen.clone();
    let svc = service_fn(move |req: Req| {
        let n = s.record(&req);
        answer(n, req)
    });
    (svc, seen)
}

/// An upstream that never answers.
pub fn hanging() -> (
    impl Service<Req, Response = Resp, Error = Error, Future = impl Send> + Clone + Send,
    Seen,
) {
    upstream(|_, _| std::future::pending())
}
