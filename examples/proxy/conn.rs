//! Connections: accepting them, hyper's HTTP/1 server on each, and the limits on a slow or
//! oversized client (header-read and body-read timeouts, the largest request head).
//!
//! hyper answers a request head it cannot take (over [`MAX_HEAD_BYTES`]: 431; unparsable:
//! 400; a URI too long: 414) itself, with an empty body. [`JsonErrors`] replaces that
//! answer on the socket with the same status and an OpenRouter-shaped error JSON, so an
//! SDK shows a message rather than a bare status.

use std::future::Future as _;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::Service;
use tower_openrouter::BoxError;

/// Default limits on a slow client: the request headers, then its body.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers); more is a 431.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How connections are served.
#[derive(Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) body_timeout: Duration,
}

/// Accepts connections and serves `app` on each with hyper's HTTP/1 server.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnLimits,
) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let (sock, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let _ = sock.set_nodelay(true);
        tokio::spawn(serve_connection(sock, app.clone(), limits));
    }
}

/// One connection: a stalled head is dropped after `header_timeout`, an oversized one is
/// a 431 with an error JSON, a body must arrive within `body_timeout` (else a 408 and the
/// connection closed, see `error.rs`).
pub(crate) async fn serve_connection(sock: tokio::net::TcpStream, app: Router, limits: ConnLimits) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        app.clone()
            .call(req.map(|b| ReadTimeout::new(b, limits.body_timeout)))
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(JsonErrors::new(sock)), svc)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The error of a request body that did not arrive in time (found by `error.rs` in the
/// failure's sources: a 408).
#[derive(Debug)]
pub(crate) struct BodyReadTimeout(pub(crate) Duration);

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyReadTimeout {}

pin_project! {
    /// A request body that must arrive within a time limit (from when its headers were
    /// read): a client that stalls mid-body gets an error, and its connection is closed.
    pub(crate) struct ReadTimeout<B> {
        #[pin]
        inner: B,
        sleep: Pin<Box<tokio::time::Sleep>>,
        limit: Duration,
    }
}

impl<B> ReadTimeout<B> {
    pub(crate) fn new(inner: B, limit: Duration) -> Self {
        ReadTimeout {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl<B> Body for ReadTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        match this.sleep.as_mut().poll(cx) {
            // The failed request's WARN line (`error.rs`) says it: no line of its own.
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout(*this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A connection's socket on which hyper's own bodiless answers to a request head it
    /// cannot take are replaced by the same status with an error JSON (and
    /// `connection: close`: hyper closes the connection after them).
    pub(crate) struct JsonErrors<IO> {
        #[pin]
        io: IO,
        // The replacement being written, and how much of it is out.
        pending: Option<(Bytes, usize)>,
    }
}

impl<IO> JsonErrors<IO> {
    pub(crate) fn new(io: IO) -> Self {
        JsonErrors { io, pending: None }
    }
}

/// The answer to write instead of `head`, when `head` is one of hyper's automatic ones:
/// `HTTP/1.1 400|414|431 ...` with `content-length: 0` and nothing after the head. The
/// gateway's own 4xx answers always carry a JSON body, so they never match.
fn replacement(head: &[u8]) -> Option<Bytes> {
    let rest = head.strip_prefix(b"HTTP/1.1 4")?;
    let (status, message) = match rest.get(..2)? {
        b"00" => (
            http::StatusCode::BAD_REQUEST,
            "the request is not valid HTTP/1.1 (request line or a header)",
        ),
        b"14" => (http::StatusCode::URI_TOO_LONG, "the request URI is too long"),
        b"31" => (
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request head (request line and headers) is larger than this gateway's 64 KiB limit",
        ),
        _ => return None,
    };
    let bodiless = head.ends_with(b"\r\n\r\n")
        && head
            .windows(b"\r\n\r\n".len())
            .position(|w| w == b"\r\n\r\n")
            == Some(head.len() - 4)
        && head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !bodiless {
        return None;
    }
    let body =
        serde_json::json!({ "error": { "code": status.as_u16(), "message": message } }).to_string();
    let text = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-should-retry: false\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    tracing::warn!(status = status.as_u16(), "request refused: {message}");
    Some(Bytes::from(text))
}

impl<IO: AsyncWrite> JsonErrors<IO> {
    /// Writes the replacement to its end; `len` is what hyper handed us, reported written
    /// once the replacement is out.
    fn drain(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        let mut this = self.project();
        while let Some((bytes, done)) = this.pending.as_mut() {
            let n = std::task::ready!(this.io.as_mut().poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *done += n;
            if *done == bytes.len() {
                *this.pending = None;
                return Poll::Ready(Ok(len));
            }
        }
        Poll::Ready(Ok(len))
    }
}

impl<IO: AsyncWrite> AsyncWrite for JsonErrors<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.pending.is_none() {
            match replacement(buf) {
                Some(r) => *self.as_mut().project().pending = Some((r, 0)),
                None => return self.project().io.poll_write(cx, buf),
            }
        }
        self.drain(cx, buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // hyper's head is one buffer: an automatic answer is the first non-empty slice.
        let first = bufs.iter().find(|b| !b.is_empty());
        if self.pending.is_none() {
            match first.and_then(|b| replacement(b)) {
                Some(r) => *self.as_mut().project().pending = Some((r, 0)),
                None => return self.project().io.poll_write_vectored(cx, bufs),
            }
        }
        self.drain(cx, first.map_or(0, |b| b.len()))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl<IO: AsyncRead> AsyncRead for JsonErrors<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::replacement;

    #[test]
    fn only_hypers_bodiless_answers_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 04:00:00 GMT\r\n\r\n";
        let r = replacement(hyper_431).unwrap();
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("\r\ncontent-length: "));
        assert!(head.contains("\r\nconnection: close"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], 431);
        assert_eq!(
            head.split("content-length: ")
                .nth(1)
                .unwrap()
                .split("\r\n")
                .next()
                .unwrap(),
            body.len().to_string()
        );
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some());
        // The gateway's own answers (a body follows, or another status) pass unchanged.
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}").is_none());
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
