//! No Debug or Display output of a request, error, `ServedBy`, layer or config, and no log
//! line, ever contains the API key or the request body: a sentinel key and sentinel body
//! content are sent through the whole stack against every kind of failure, with every log
//! level and every span's fields captured, and no completion text is logged either.
#![cfg(feature = "mock")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::config::Config;
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::health::HealthConfig;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::OpenRouterLayer;

const KEY: &str = "sk-or-v1-SENTINELKEY0123456789abcdef";
const CONTENT: &str = "SENTINEL-PROMPT-CONTENT";

const A: &str = "anthropic/claude-sonnet-4.5";
const B: &str = "openai/gpt-4o";
const C: &str = "google/gemini-2.5-flash";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line at every level, and every span's fields as recorded by its end (the
/// observe module's spans), captured for this thread while the guard lives.
fn capture_logs() -> (Capture, tracing::subscriber::DefaultGuard) {
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} shows the API key: {text}");
    assert!(
        !text.contains("SENTINELKEY"),
        "{what} shows part of the API key: {text}"
    );
    assert!(
        !text.contains(CONTENT),
        "{what} shows request content: {text}"
    );
}

fn request() -> http::Request<String> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"x/y","messages":[{{"role":"user","content":"{CONTENT}"}}]}}"#
        ))
        .unwrap()
}

/// An OpenRouter moderation body that echoes the caller's input, as OpenRouter does, and a
/// provider `raw` that quotes it too.
fn echoing_moderation() -> Reply {
    Reply::error_body(
        403,
        format!(
            r#"{{"error":{{"code":403,"message":"Your input was flagged","metadata":{{"reasons":["violence"],"flagged_input":"{CONTENT}","provider_name":"OpenAI","raw":"input: {CONTENT}"}}}}}}"#
        ),
    )
}

#[tokio::test(start_paused = true)]
async fn no_output_or_log_line_shows_the_key_or_the_body() {
    let (logs, _guard) = capture_logs();

    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(echoing_moderation())
        .then(Reply::status(429).retry_after(1))
        .then(Reply::status(500))
        .then(Reply::context_length());
    mock.model(B)
        .respond(Reply::status(503))
        .then(Reply::ok_with_error(502))
        .then(Reply::ok());
    mock.model(C).respond(Reply::status(402));

    let layer = OpenRouterLayer::builder()
        .chain([A, B, C])
        .deadline(Duration::from_secs(60))
        .attempt_timeout(Duration::from_secs(10))
        .health_config(HealthConfig::default().jitter(0.0))
        .build()
        .unwrap();
    assert_clean("OpenRouterLayer Debug", &format!("{layer:?}"));
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());

    let mut outputs = Vec::new();
    for _ in 0..6 {
        let req = request();
        assert_clean("request Debug", &format!("{:?}", req.extensions()));
        match svc.clone().oneshot(req).await {
            Ok(resp) => {
                let served = resp.extensions().get::<ServedBy>().cloned().unwrap();
                outputs.push(format!("{served:?} {served:#?}"));
            }
            Err(e) => {
                outputs.push(format!("{e} {e:?} {e:#?}"));
                for a in e.attempts() {
                    outputs.push(format!("{} {:?}", a.error, a));
                }
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    outputs.push(format!("{s} {s:?}"));
                    src = s.source();
                }
            }
        }
    }
    assert!(
        mock.total_calls() >= 6,
        "the scenarios reached the upstream"
    );
    // The stand-in did receive the key and the body: the sentinels are real.
    let received = mock.requests();
    assert!(received
        .iter()
        .any(|r| r.headers()["authorization"] == format!("Bearer {KEY}").as_str()));
    assert!(received
        .iter()
        .any(|r| String::from_utf8_lossy(r.body()).contains(CONTENT)));
    for r in &received {
        assert_clean("ReceivedRequest Debug", &format!("{r:?}"));
    }
    for o in &outputs {
        assert_clean("error/ServedBy output", o);
    }
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!logged.is_empty(), "the stack logged something at TRACE");
    assert_clean("log output", &logged);
    // The spans were captured, with their response facts, and no completion text (the
    // stand-in answers "Hello from {model}").
    for field in [
        "openrouter.call",
        "openrouter.attempt",
        "gen_ai.response.model",
        "gen_ai.usage.output_tokens",
    ] {
        assert!(logged.contains(field), "{field} not logged:\n{logged}");
    }
    assert!(
        !logged.contains("Hello from"),
        "a completion was logged: {logged}"
    );

    let config: Config =
        serde_json::from_str(&format!(r#"{{"default_chain":["{A}","{B}"]}}"#)).unwrap();
    assert_clean("Config Debug", &format!("{config:?}"));
}

/// A request for the chain's head `A`, streamed or not.
fn request_for(stream: bool) -> http::Request<String> {
    let mut req = request();
    *req.body_mut() = format!(
        r#"{{"model":"{A}","stream":{stream},"messages":[{{"role":"user","content":"{CONTENT}"}}]}}"#
    );
    req
}

/// Everything an error shows: `Display`, `Debug` (plain and pretty), each attempt, and
/// every error down the `source()` chain.
fn everything_shown(e: &tower_openrouter::Error) -> Vec<String> {
    let mut out = vec![format!("{e} {e:?} {e:#?}")];
    for a in e.attempts() {
        out.push(format!("{} {:?}", a.error, a));
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push(format!("{s} {s:?}"));
        src = s.source();
    }
    out
}

/// Item 7: an upstream that echoes the key back (in the message, in `metadata.raw`, in a
/// 200's error, in a mid-stream error event) never gets it into `Display`, `Debug`, the
/// `source()` chain or a log line: the key and the whole `Authorization` value become
/// `[redacted]`, and the rest of the message stays.
#[tokio::test(start_paused = true)]
async fn an_upstream_error_that_echoes_the_key_is_scrubbed() {
    use http_body_util::BodyExt;

    let (logs, _guard) = capture_logs();

    let echo = format!("Invalid API key provided: Bearer {KEY}");
    let mock = MockOpenRouter::new();
    // Call 1: A's provider quotes the key in `raw` (a JSON object and as text), B says
    // the key is invalid and quotes the whole Authorization value: fatal.
    // Call 2: A quotes it in a 200's error; B answers.
    // Call 3: a stream whose error event quotes it after content.
    mock.model(A)
        .respond(Reply::error_body(
            503,
            format!(
                r#"{{"error":{{"code":503,"message":"upstream rejected key {KEY}","metadata":{{"provider_name":"P","raw":{{"error":{{"message":"{echo}"}}}}}}}}}}"#
            ),
        ))
        .then(Reply::ok_with_error(502).message(&echo))
        .then(Reply::sse([
            r#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#.to_owned(),
            format!(
                r#"data: {{"error":{{"code":401,"message":"{echo}","metadata":{{"raw":"{KEY}"}}}},"choices":[{{"delta":{{}},"finish_reason":"error"}}]}}"#
            ),
        ]));
    mock.model(B)
        .respond(Reply::status(401).message(&echo))
        .then(Reply::ok());

    let svc = ServiceBuilder::new()
        .layer(
            OpenRouterLayer::builder()
                .chain([A, B])
                .deadline(Duration::from_secs(60))
                // One reply per attempt: the script above is the whole story.
                .max_retries(0)
                .build()
                .unwrap(),
        )
        .service(mock.clone());

    let err = svc.clone().oneshot(request_for(false)).await.unwrap_err();
    let shown = everything_shown(&err);
    assert!(
        shown[0].contains("Invalid API key provided: [redacted]"),
        "the message stays, the credential goes: {}",
        shown[0]
    );
    assert_eq!(err.attempts().len(), 2, "{err:?}");
    let raw = err.attempts()[0]
        .error
        .body()
        .unwrap()
        .metadata
        .raw
        .clone()
        .unwrap();
    assert!(raw.contains("[redacted]") && !raw.contains(KEY), "{raw}");
    for s in &shown {
        assert_clean("an echoing error", s);
    }

    let resp = svc.clone().oneshot(request_for(false)).await.unwrap();
    let served = resp.extensions().get::<ServedBy>().cloned().unwrap();
    assert_eq!(served.attempts.len(), 1, "{served:?}");
    let message = &served.attempts[0].error.body().unwrap().message;
    assert_eq!(message, "Invalid API key provided: [redacted]");
    assert_clean(
        "ServedBy after an echoing 200",
        &format!("{served:?} {served:#?}"),
    );

    let resp = svc.clone().oneshot(request_for(true)).await.unwrap();
    let mut body = resp.into_body();
    let mut stream_error = None;
    while let Some(frame) = body.frame().await {
        if let Err(e) = frame {
            stream_error = Some(tower_openrouter::Error::from_box(e.into()));
            break;
        }
    }
    let e = stream_error.expect("the error event ends the stream with an error");
    assert!(e.to_string().contains("[redacted]"), "{e}");
    for s in everything_shown(&e) {
        assert_clean("a mid-stream error", &s);
    }

    assert_eq!(mock.total_calls(), 5);
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("attempt failed"), "{logged}");
    assert_clean("log output", &logged);
}

/// A key of no known shape (a gateway's own key: no `sk-`, quoted without `Bearer`).
const CUSTOM_KEY: &str = "mykey123";

fn assert_no_custom_key(what: &str, text: &str) {
    assert!(!text.contains(CUSTOM_KEY), "{what} shows the key: {text}");
}

/// A request carrying `CUSTOM_KEY` in `header` (`Bearer` for `authorization`).
fn custom_key_request(method: &str, path: &str, header: &str) -> http::Request<String> {
    let value = if header == "authorization" {
        format!("Bearer {CUSTOM_KEY}")
    } else {
        CUSTOM_KEY.to_owned()
    };
    let body = if method == "GET" {
        String::new()
    } else {
        format!(r#"{{"model":"{A}","max_tokens":8,"messages":[{{"role":"user","content":"hi"}}]}}"#)
    };
    http::Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .header(header, value)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// Item 7: the request's exact credential is replaced wherever an upstream quotes it,
/// whatever its shape: in the error that leaves the stack (a fatal 401, `Exhausted`,
/// `DeadlineExceeded`, a call without fallback), in every attempt they list (retries
/// included), in a success's `ServedBy`, and so in `Display`, `Debug`, `source()` and the
/// logs. The rest of the message stays.
#[tokio::test(start_paused = true)]
async fn an_upstream_that_echoes_a_custom_key_bare_is_scrubbed() {
    let (logs, _guard) = capture_logs();
    let echo = format!("Invalid API key provided: {CUSTOM_KEY}");
    let cleaned = "Invalid API key provided: [redacted]";
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::status(500).message(&format!("upstream saw {CUSTOM_KEY}")));
    mock.model(B)
        // 1: fatal. 2: a success after A failed. 3: Exhausted. 4: the deadline.
        // 5: fatal on /messages.
        .respond(Reply::status(401).message(&echo))
        .then(Reply::ok())
        .then(Reply::status(503).message(&echo))
        .then(Reply::hang())
        .then(Reply::status(401).message(&echo));
    mock.route("/api/v1/key")
        .respond(Reply::status(401).message(&echo));
    let layer = OpenRouterLayer::builder()
        .chain([A, B])
        .deadline(Duration::from_secs(60))
        .attempt_timeout(Duration::from_secs(60))
        .wait_for_rate_limit(false)
        // A is always called (three times: two retries), never benched.
        .health_config(HealthConfig::default().consecutive_failures(1000))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let chat = || custom_key_request("POST", "/api/v1/chat/completions", "authorization");
    let mut shown = Vec::new();

    let err = svc.clone().oneshot(chat()).await.unwrap_err();
    assert_eq!(err.kind(), tower_openrouter::ErrorKind::Unauthorized);
    assert_eq!(err.body().unwrap().message, cleaned);
    assert!(err.to_string().contains(cleaned), "{err}");
    // A's three tries (two logged by the retry layer) and B's 401.
    assert_eq!(err.attempts().len(), 4, "{err:?}");
    assert_eq!(
        err.attempts()[0].error.body().unwrap().message,
        "upstream saw [redacted]"
    );
    shown.extend(everything_shown(&err));

    let resp = svc.clone().oneshot(chat()).await.unwrap();
    let served = resp.extensions().get::<ServedBy>().cloned().unwrap();
    assert_eq!(served.attempts.len(), 3, "{served:?}");
    shown.push(format!("{served:?} {served:#?}"));

    let err = svc.clone().oneshot(chat()).await.unwrap_err();
    assert_eq!(err.kind(), tower_openrouter::ErrorKind::Exhausted);
    assert_eq!(
        err.attempts().last().unwrap().error.body().unwrap().message,
        cleaned
    );
    shown.extend(everything_shown(&err));

    let err = svc.clone().oneshot(chat()).await.unwrap_err();
    assert_eq!(err.kind(), tower_openrouter::ErrorKind::DeadlineExceeded);
    // A's three tries, and B's cut by the deadline.
    assert_eq!(err.attempts().len(), 4, "{err:?}");
    shown.extend(everything_shown(&err));

    // `x-api-key` on /messages, and a call without fallback (GET /key).
    let err = svc
        .clone()
        .oneshot(custom_key_request("POST", "/api/v1/messages", "x-api-key"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), tower_openrouter::ErrorKind::Unauthorized);
    assert_eq!(err.body().unwrap().message, cleaned);
    assert_eq!(
        err.attempts()[0].error.body().unwrap().message,
        "upstream saw [redacted]"
    );
    shown.extend(everything_shown(&err));
    let err = svc
        .clone()
        .oneshot(custom_key_request("GET", "/api/v1/key", "authorization"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), tower_openrouter::ErrorKind::Unauthorized);
    assert_eq!(err.body().unwrap().message, cleaned);
    shown.extend(everything_shown(&err));

    // The stand-in did get the key and did echo it: the test is real.
    assert!(mock
        .requests()
        .iter()
        .any(|r| r.headers()["authorization"] == format!("Bearer {CUSTOM_KEY}").as_str()));
    for s in &shown {
        assert_no_custom_key("an echoing error", s);
        assert!(
            s.contains("[redacted]") || !s.contains("Invalid API key"),
            "{s}"
        );
    }
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("attempt failed"), "{logged}");
    assert_no_custom_key("log output", &logged);
}
