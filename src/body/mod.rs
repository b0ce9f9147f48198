//! Request bodies: buffering once into a cheaply cloneable `Request<Full<Bytes>>`
//! ([`BufferRequestLayer`]), byte-exact edits of a JSON body's top-level members
//! ([`JsonBody`](crate::JsonBody), [`rewrite_model`], [`edit_top_level`]). The helpers every
//! attempt uses (copying a buffered request, swapping its body) are the crate's own.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_openrouter::body::BufferRequestLayer;
//! use tower_openrouter::JsonBody;
//! use tower_openrouter::ErrorKind;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let upstream = service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     // The buffering layer left a parsed index of the body for inner layers.
//!     let json = JsonBody::from_request(&req)?;
//!     assert_eq!(json.model().as_deref(), Some("openai/gpt-4o"));
//!     Ok::<_, tower_openrouter::Error>(http::Response::new(req.into_body()))
//! });
//! let svc = BufferRequestLayer::new().limit(1024).layer(upstream);
//!
//! let req = http::Request::post("http://127.0.0.1/api/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"openai/gpt-4o","messages":[]}"#)))
//!     .unwrap();
//! let resp = svc.clone().oneshot(req).await.unwrap();
//! let echoed = resp.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(echoed, Bytes::from_static(br#"{"model":"openai/gpt-4o","messages":[]}"#));
//!
//! let req = http::Request::post("http://127.0.0.1/api/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"messages":[]}"#)))
//!     .unwrap();
//! let err = svc.oneshot(req).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidBody);
//! # }
//! ```

mod collect;
mod json;
mod layer;

pub(crate) use collect::Collected;
pub use json::{edit_top_level, rewrite_model, Edit};
pub(crate) use layer::{is_generation_endpoint, is_messages_endpoint};
pub use layer::{BufferRequest, BufferRequestLayer, ResponseFuture, DEFAULT_BODY_LIMIT};

use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::Request;
use http_body::Body as _;
use http_body_util::Full;

/// The bytes of a `Full<Bytes>` body, without consuming it (a reference-count bump, no
/// copy). An already consumed body gives empty bytes.
///
/// Plumbing, hidden from the docs: public only because the crate's integration tests read
/// the bodies their stand-in upstreams receive with it.
#[doc(hidden)]
pub fn full_bytes(body: &Full<Bytes>) -> Bytes {
    let mut body = body.clone();
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// A copy of a buffered request for another attempt: same method, URI, version, headers,
/// extensions and body bytes (the body is shared by reference count, not copied).
pub(crate) fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    with_parts_of(req, req.body().clone())
}

fn with_parts_of(req: &Request<Full<Bytes>>, body: Full<Bytes>) -> Request<Full<Bytes>> {
    let mut out = Request::new(body);
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
    out
}

/// Replaces a buffered request's body with `bytes`, and its `Content-Length` header (when
/// it has one) with the new length.
pub(crate) fn replace_body(req: &mut Request<Full<Bytes>>, bytes: Bytes) {
    if req.headers().contains_key(http::header::CONTENT_LENGTH) {
        req.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(bytes.len()),
        );
    }
    *req.body_mut() = Full::new(bytes);
}

/// A copy of a buffered request for another attempt, with a new body (see
/// [`replace_body`]); nothing else is copied but the request's parts.
pub(crate) fn clone_request_with_body(
    req: &Request<Full<Bytes>>,
    bytes: Bytes,
) -> Request<Full<Bytes>> {
    let mut out = with_parts_of(req, Full::default());
    replace_body(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_bytes_shares_the_buffer() {
        let b = Bytes::from_static(b"{\"model\":\"a/b\"}");
        let full = Full::new(b.clone());
        let got = full_bytes(&full);
        assert_eq!(got, b);
        assert_eq!(got.as_ptr(), b.as_ptr());
        // The original body is still whole.
        assert_eq!(full_bytes(&full), b);
    }

    #[test]
    fn clone_request_copies_everything() {
        let mut req = Request::post("http://x/api/v1/chat/completions")
            .header("authorization", "Bearer sk-or-test")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        req.extensions_mut().insert(crate::Attempt::new("a/b"));
        let c = clone_request(&req);
        assert_eq!(c.method(), req.method());
        assert_eq!(c.uri(), req.uri());
        assert_eq!(c.headers(), req.headers());
        assert_eq!(
            c.extensions().get::<crate::Attempt>().unwrap().model(),
            "a/b"
        );
        assert_eq!(full_bytes(c.body()), Bytes::from_static(b"{}"));
    }
}
