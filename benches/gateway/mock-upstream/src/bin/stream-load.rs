//! stream-load: the streaming load generator of the gateway benchmark (STREAM scenario).
//!
//! oha times a whole response; a streaming client cares about the time to the first
//! token. This opens N keep-alive HTTP/1 connections to URL and on each sends the body
//! (a `"stream": true` chat completion) back to back for D seconds, reading every SSE
//! stream to its end. Per stream it records the time to the first `data:` event whose
//! delta carries content (what a user sees first; the `: OPENROUTER PROCESSING` comment
//! and the empty role-only event do not count) and the time to the end of the stream.
//! A stream is ok when the status is 200 and `data: [DONE]` arrived. Prints one JSON
//! object (streams/s, status codes, error kinds, TTFT and total percentiles in ms).
//!
//! usage: stream-load --url URL --body FILE [--connections 32] [--duration 10]
//!                    [--timeout 30] [--header 'name: value']...
//! Only loopback URLs are accepted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Opts {
    url: Uri,
    body: Bytes,
    connections: usize,
    duration: Duration,
    timeout: Duration,
    headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Tally {
    streams: u64,
    ok: u64,
    codes: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    ttft_ms: Vec<f64>,
    total_ms: Vec<f64>,
}

impl Tally {
    fn error(&mut self, kind: &str) {
        self.streams += 1;
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    fn merge(&mut self, o: Tally) {
        self.streams += o.streams;
        self.ok += o.ok;
        for (k, v) in o.codes {
            *self.codes.entry(k).or_default() += v;
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.ttft_ms.extend(o.ttft_ms);
        self.total_ms.extend(o.total_ms);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: stream-load --url URL --body FILE [--connections 32] [--duration 10] \
         [--timeout 30] [--header 'name: value']..."
    );
    std::process::exit(2)
}

fn parse() -> Opts {
    let (mut url, mut body, mut connections, mut duration, mut timeout) =
        (None, None, 32, 10.0, 30.0);
    let mut headers = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--url" => url = Some(val.parse::<Uri>().unwrap_or_else(|_| usage())),
            "--body" => {
                body = Some(Bytes::from(std::fs::read(&val).unwrap_or_else(|e| {
                    eprintln!("stream-load: {val}: {e}");
                    std::process::exit(2)
                })))
            }
            "--connections" => connections = val.parse().unwrap_or_else(|_| usage()),
            "--duration" => duration = val.parse().unwrap_or_else(|_| usage()),
            "--timeout" => timeout = val.parse().unwrap_or_else(|_| usage()),
            "--header" => {
                let (k, v) = val.split_once(':').unwrap_or_else(|| usage());
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            _ => usage(),
        }
    }
    let (Some(url), Some(body)) = (url, body) else {
        usage()
    };
    let host = url.host().unwrap_or_default();
    if !(host == "localhost" || host == "[::1]" || host.starts_with("127.")) {
        eprintln!("stream-load: only loopback targets ({host} is not one)");
        std::process::exit(2);
    }
    Opts {
        url,
        body,
        connections: connections.max(1),
        duration: Duration::from_secs_f64(duration),
        timeout: Duration::from_secs_f64(timeout),
        headers,
    }
}

/// Whether `text` holds a `data:` event with non-empty delta content.
fn has_content(text: &str) -> bool {
    text.lines().filter(|l| l.starts_with("data:")).any(|l| {
        l.split("\"content\":\"")
            .skip(1)
            .any(|rest| !rest.starts_with('"'))
    })
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(o: &Opts) -> Option<Sender> {
    let addr = format!("{}:{}", o.url.host()?, o.url.port_u16().unwrap_or(80));
    let tcp = TcpStream::connect(addr).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    let (send, conn) = http1::handshake(TokioIo::new(tcp)).await.ok()?;
    tokio::spawn(conn);
    Some(send)
}

/// One stream on `send`: Err(kind) on a transport failure (the connection is dropped).
async fn one(o: &Opts, send: &mut Sender, t: &mut Tally) -> Result<(), &'static str> {
    send.ready().await.map_err(|_| "connection closed")?;
    let mut req = Request::post(o.url.clone()).header("content-type", "application/json");
    if let Some(a) = o.url.authority() {
        req = req.header("host", a.as_str());
    }
    for (k, v) in &o.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(o.body.clone()))
        .map_err(|_| "bad request")?;
    let start = Instant::now();
    let resp = send.send_request(req).await.map_err(|_| "request failed")?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut first, mut seen, mut done) = (None, String::new(), false);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body read failed")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // Keep a short tail so an event split over two frames is still seen whole.
        seen.push_str(&String::from_utf8_lossy(&data));
        if first.is_none() && has_content(&seen) {
            first = Some(start.elapsed());
        }
        if seen.contains("data: [DONE]") {
            done = true;
        }
        if seen.len() > 4096 {
            let cut = seen.len() - 1024;
            let cut = (cut..seen.len())
                .find(|&i| seen.is_char_boundary(i))
                .unwrap_or(0);
            seen.drain(..cut);
        }
    }
    t.streams += 1;
    *t.codes.entry(status).or_default() += 1;
    if status == 200 && done {
        t.ok += 1;
        if let Some(f) = first {
            t.ttft_ms.push(f.as_secs_f64() * 1e3);
        }
        t.total_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

async fn worker(o: &'static Opts, until: Instant) -> Tally {
    let mut t = Tally::default();
    let mut send = None;
    while Instant::now() < until {
        if send.is_none() {
            send = connect(o).await;
            if send.is_none() {
                t.error("connect failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let s = send.as_mut().expect("connected");
        match tokio::time::timeout(o.timeout, one(o, s, &mut t)).await {
            Ok(Ok(())) => {}
            Ok(Err(kind)) => {
                t.error(kind);
                send = None;
            }
            Err(_) => {
                t.error("timeout");
                send = None;
            }
        }
    }
    t
}

fn pct(v: &mut [f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        (v[i] * 1000.0).round() / 1000.0
    };
    serde_json::json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)})
}

fn main() {
    let o: &'static Opts = Box::leak(Box::new(parse()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let until = started + o.duration;
    let mut total = rt.block_on(async {
        let tasks: Vec<_> = (0..o.connections)
            .map(|_| tokio::spawn(worker(o, until)))
            .collect();
        let mut total = Tally::default();
        for t in tasks {
            total.merge(t.await.expect("worker"));
        }
        total
    });
    let elapsed = started.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "connections": o.connections,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "streams": total.streams,
        "ok": total.ok,
        "errors": total.streams - total.ok,
        "streams_per_s": (total.streams as f64 / elapsed * 10.0).round() / 10.0,
        "ok_per_s": (total.ok as f64 / elapsed * 10.0).round() / 10.0,
        "status_codes": total.codes.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "error_kinds": total.errors,
        "ttft_ms": pct(&mut total.ttft_ms),
        "total_ms": pct(&mut total.total_ms),
    });
    println!("{out}");
}
