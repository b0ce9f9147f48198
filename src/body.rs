//! Request bodies: buffering once into a cheaply cloneable `Request<Full<Bytes>>`, and
//! helpers every attempt uses.
//!
//! (Skeleton: buffering layer and model rewrite are filled in by the body work.)

use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::Request;
use http_body::Body as _;
use http_body_util::Full;

/// The bytes of a `Full<Bytes>` body, without consuming it (a reference-count bump, no
/// copy). An already consumed body gives empty bytes.
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
pub fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut out = Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
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
