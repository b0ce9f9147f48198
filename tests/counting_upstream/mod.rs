//! A hand-written upstream for layer tests: counts its calls and keeps the last request.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, Service};
use tower_openrouter::body::full_bytes;
use tower_openrouter::Error;

/// An upstream that counts its calls, records the last request it saw and answers with
/// the body it received.
#[derive(Clone, Default)]
pub struct Upstream {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Option<Request<Full<Bytes>>>>>,
}

impl Upstream {
    pub fn service(
        &self,
    ) -> impl Service<Request<Full<Bytes>>, Response = Response<Bytes>, Error = Error, Future: Send>
           + Clone {
        let this = self.clone();
        service_fn(move |req: Request<Full<Bytes>>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let body = full_bytes(req.body());
                *this.seen.lock().unwrap() = Some(req);
                Ok::<_, Error>(Response::new(body))
            }
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Request<Full<Bytes>> {
        self.seen
            .lock()
            .unwrap()
            .take()
            .expect("the upstream was called")
    }
}
