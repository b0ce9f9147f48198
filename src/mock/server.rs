//! [`MockServer`]: the stand-in on a loopback port, served by hyper.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::render::{plain_error, Api};
use super::{MockBody, MockOpenRouter};

/// Most connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// Largest request body accepted (a bigger one gets OpenRouter's `413`).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A [`MockOpenRouter`] served over HTTP/1.1 on a loopback port.
///
/// Dropping it (or [`shutdown`](MockServer::shutdown)) stops accepting connections,
/// closes idle ones and lets in-flight responses finish. A connection that is waiting
/// on a [`Reply::hang`](super::Reply::hang) or a stalled stream stays open until the
/// client gives up or the runtime shuts down.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tower_openrouter::mock::MockOpenRouter;
///
/// let mock = MockOpenRouter::new();
/// let server = mock.serve().await?;
/// assert!(server.addr().ip().is_loopback());
/// assert_eq!(server.url(), format!("http://{}/api/v1", server.addr()));
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    stop: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, like `http://127.0.0.1:PORT/api/v1` (append `/chat/completions`).
    pub fn url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Stops accepting, closes idle connections and waits for in-flight responses to
    /// finish (see the caveat about hangs on [`MockServer`]).
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Dropping the sender tells the accept loop and every connection to wind down.
        drop(self.stop.take());
    }
}

impl MockOpenRouter {
    /// Serves the mock on `127.0.0.1` at a free port.
    ///
    /// Must be called within a tokio runtime.
    pub async fn serve(&self) -> io::Result<MockServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        self.serve_listener(listener)
    }

    /// Serves the mock on this listener, which must be bound to a loopback address
    /// (otherwise an `InvalidInput` error).
    ///
    /// Must be called within a tokio runtime.
    pub fn serve_listener(&self, listener: TcpListener) -> io::Result<MockServer> {
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mock: refusing to serve on non-loopback address {addr}"),
            ));
        }
        let (stop, stopped) = watch::channel(());
        let task = tokio::spawn(accept_loop(listener, self.clone(), stopped));
        Ok(MockServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    mock: MockOpenRouter,
    mut stopped: watch::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stopped.changed() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: back off briefly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        conns.spawn(serve_connection(
            stream,
            mock.clone(),
            stopped.clone(),
            permit,
        ));
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    mock: MockOpenRouter,
    mut stopped: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mock = mock.clone();
        async move { answer(mock, req).await }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn answer(mock: MockOpenRouter, req: Request<Incoming>) -> io::Result<Response<MockBody>> {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let api = if parts.uri.path() == "/api/v1/messages" {
                Api::Messages
            } else {
                Api::Chat
            };
            return Ok(plain_error(
                api,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
            ));
        }
        Err(e) => return Err(io::Error::other(e)),
    };
    mock.handle(Request::from_parts(parts, Full::new(bytes)))
        .await
}
