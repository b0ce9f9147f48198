//! Streams through `OpenRouterLayer` with its default settings: a stream that stalls after
//! its first token ends at the default idle limit (30 s); a slow but living stream (chunks
//! or keep-alive comments) runs for as long as it lives; an end after the finish reason but
//! without the end marker is a complete answer, an end without either is `StreamTruncated`.
#![cfg(feature = "mock")]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::config::{Config, SecondsOrOff};
use tower_openrouter::health::ModelHealth;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::{OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::{Action, Error, ErrorKind, HealthTracker};

const A: &str = "anthropic/claude-sonnet-4.5";
const CHAT: &str = "/api/v1/chat/completions";
const MESSAGES: &str = "/api/v1/messages";
const RESPONSES: &str = "/api/v1/responses";
const KEEP_ALIVE: &str = ": OPENROUTER PROCESSING";

fn request(path: &str) -> http::Request<String> {
    let body = if path == RESPONSES {
        format!(r#"{{"model":"{A}","stream":true,"input":"hi"}}"#)
    } else {
        format!(r#"{{"model":"{A}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#)
    };
    http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// What the caller of the stack got for one streamed request.
struct Run {
    /// What the stand-in sent for the reply (read straight from it).
    sent: Vec<u8>,
    /// The data bytes the caller received.
    bytes: Vec<u8>,
    /// The error frame that ended the body, if one did.
    error: Option<Error>,
    /// From the request to the body's end; `None`: still open after an hour.
    took: Option<Duration>,
    health: HealthTracker,
    mock: MockOpenRouter,
}

/// `reply` for model `A` on `path` through `OpenRouterLayer` built from `layer` (one
/// chain, `[A]`), the body read to its end (for at most an hour). The response itself is
/// one success for health.
async fn run(layer: OpenRouterLayerBuilder, reply: Reply, path: &str) -> Run {
    let sent = {
        let mock = MockOpenRouter::new();
        mock.model(A).respond(reply.clone());
        let req = request(path).map(|b| Full::new(Bytes::from(b)));
        let mut body = mock.oneshot(req).await.unwrap().into_body();
        let mut sent = Vec::new();
        // A stalled stream: what came before the stall.
        let read = async {
            while let Some(frame) = body.frame().await {
                sent.extend_from_slice(&frame.unwrap().into_data().unwrap());
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3600), read).await;
        sent
    };
    let mock = MockOpenRouter::new();
    mock.model(A).respond(reply);
    let layer = layer.chain([A]).build().unwrap();
    let health = layer.health().clone();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let start = Instant::now();
    let resp = svc.oneshot(request(path)).await.unwrap();
    assert_eq!(calls_and_failures(&health), (1, 0), "{path}");
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => bytes.extend_from_slice(&f.into_data().unwrap()),
                Err(e) => return Some(e),
            }
        }
        None
    };
    let (error, took) = match tokio::time::timeout(Duration::from_secs(3600), read).await {
        Ok(error) => (error, Some(start.elapsed())),
        Err(_) => (None, None),
    };
    if error.is_some() {
        assert!(
            body.frame().await.is_none(),
            "nothing after the error frame"
        );
    }
    assert_eq!(mock.calls(A), 1, "{path}");
    Run {
        sent,
        bytes,
        error,
        took,
        health,
        mock,
    }
}

/// The one model's health: (calls, failures) in the window. A failure after the first
/// token takes back the success its response recorded.
fn calls_and_failures(health: &HealthTracker) -> (u64, u64) {
    let snap: Vec<ModelHealth> = health.snapshot();
    assert_eq!(snap.len(), 1);
    (snap[0].calls, snap[0].failures)
}

/// The one model's failures in a row.
fn consecutive_failures(health: &HealthTracker) -> u32 {
    health.snapshot()[0].consecutive_failures
}

fn chat_chunk(content: &str) -> String {
    format!(
        r#"data: {{"id":"gen-1","object":"chat.completion.chunk","model":"{A}","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
    )
}

#[test]
fn the_default_idle_limit_is_30_s_at_most_the_deadline_and_can_be_turned_off() {
    let s = Duration::from_secs;
    let b = || OpenRouterLayer::builder().chain([A]);
    assert_eq!(b().build().unwrap().idle_timeout(), Some(s(30)));
    // A short deadline the user set is not turned into a ConfigError by the default.
    assert_eq!(
        b().deadline(s(20)).build().unwrap().idle_timeout(),
        Some(s(20))
    );
    assert_eq!(
        b().idle_timeout(s(5)).build().unwrap().idle_timeout(),
        Some(s(5))
    );
    assert_eq!(b().idle_timeout(None).build().unwrap().idle_timeout(), None);
    // A limit the user set is still checked.
    let err = b().deadline(s(20)).idle_timeout(s(30)).build().unwrap_err();
    assert_eq!(err.field(), "idle_timeout");
    assert_eq!(
        err.to_string(),
        "idle_timeout (30s) is longer than deadline (20s)"
    );

    // The same from JSON.
    let json = |settings: &str| {
        OpenRouterLayer::from_json(&format!(
            r#"{{"default_chain": ["{A}"], "settings": {{{settings}}}}}"#
        ))
    };
    assert_eq!(json("").unwrap().idle_timeout(), Some(s(30)));
    assert_eq!(
        json(r#""deadline_seconds": 20"#).unwrap().idle_timeout(),
        Some(s(20))
    );
    assert_eq!(
        json(r#""idle_timeout_seconds": 12"#)
            .unwrap()
            .idle_timeout(),
        Some(s(12))
    );
    assert_eq!(
        json(r#""idle_timeout_seconds": "off""#)
            .unwrap()
            .idle_timeout(),
        None
    );
    assert_eq!(
        json(r#""idle_timeout_seconds": false"#)
            .unwrap()
            .idle_timeout(),
        None
    );
    let err = json(r#""deadline_seconds": 20, "idle_timeout_seconds": 30"#).unwrap_err();
    assert_eq!(err.field(), "settings.idle_timeout_seconds");
    for bad in [r#""soon""#, "true", "0", "-1"] {
        let err = json(&format!(r#""idle_timeout_seconds": {bad}"#)).unwrap_err();
        assert_eq!(err.field(), "settings.idle_timeout_seconds", "{bad}");
        assert!(!err.to_string().contains("soon"), "{err}");
    }
    let c = Config::from_json(&format!(
        r#"{{"default_chain": ["{A}"], "settings": {{"idle_timeout_seconds": 1.5}}}}"#
    ))
    .unwrap();
    assert_eq!(
        c.settings.idle_timeout_seconds,
        Some(SecondsOrOff::Seconds(1.5))
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_stalling_after_its_first_token_ends_at_exactly_30_s() {
    let stall = || Reply::stream(["Hel", "lo"]).stall_after(1);
    let r = run(OpenRouterLayer::builder(), stall(), CHAT).await;
    let err = r.error.expect("a stalled stream ends with an error frame");
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::StreamTimeout, Action::Fatal)
    );
    assert_eq!(err.model(), Some(A));
    assert_eq!(r.took, Some(Duration::from_secs(30)));
    // Everything up to the stall: the first chunk.
    assert_eq!(r.bytes, r.sent);
    let text = String::from_utf8(r.bytes).unwrap();
    assert_eq!(text.matches("data: ").count(), 1);
    assert!(text.contains("\"content\":\"Hel\""), "{text}");
    // The stall is a failure of the model (it takes back the response's success).
    assert_eq!(calls_and_failures(&r.health), (1, 1));
    assert_eq!(consecutive_failures(&r.health), 1);

    // Turned off, the same stall is waited on (the caller's own timeout decides).
    let r = run(OpenRouterLayer::builder().idle_timeout(None), stall(), CHAT).await;
    assert_eq!(
        r.took, None,
        "no idle limit: the body is still open after an hour"
    );
    assert_eq!(calls_and_failures(&r.health).1, 0);
}

#[tokio::test(start_paused = true)]
async fn a_ten_minute_stream_kept_alive_by_comments_completes_with_every_byte() {
    // Content, then a keep-alive comment every 10 s for 10 minutes, then content and
    // [DONE]: no gap is longer than the 30 s idle limit, and the 300 s deadline does not
    // cut a body that is already flowing.
    let mut events = vec![chat_chunk("Hel")];
    events.extend((0..60).map(|_| KEEP_ALIVE.to_owned()));
    events.push(chat_chunk("lo"));
    events.push(format!(
        r#"data: {{"id":"gen-1","object":"chat.completion.chunk","model":"{A}","choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#
    ));
    events.push("data: [DONE]".to_owned());
    let reply = Reply::sse(events).chunk_delay(Duration::from_secs(10));
    let r = run(OpenRouterLayer::builder(), reply, CHAT).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.took, Some(Duration::from_secs(640)));
    assert_eq!(r.bytes, r.sent);
    let text = String::from_utf8(r.bytes).unwrap();
    assert_eq!(text.matches(KEEP_ALIVE).count(), 60);
    // Nothing was recorded against the model (the window has since moved past the call).
    assert_eq!(calls_and_failures(&r.health).1, 0);
    assert_eq!(consecutive_failures(&r.health), 0);

    // Content every 3 s for about 10 minutes.
    let chunks: Vec<String> = (0..200).map(|i| format!("c{i} ")).collect();
    let reply = Reply::stream(chunks).chunk_delay(Duration::from_secs(3));
    let r = run(OpenRouterLayer::builder(), reply, CHAT).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    // 200 chunks, the final chunk and [DONE], 3 s apart.
    assert_eq!(r.took, Some(Duration::from_secs(606)));
    assert_eq!(r.bytes, r.sent);
    assert_eq!(calls_and_failures(&r.health).1, 0);
    assert_eq!(consecutive_failures(&r.health), 0);
}

#[tokio::test(start_paused = true)]
async fn an_end_after_the_finish_reason_without_the_end_marker_is_a_complete_answer() {
    // Chat: the final chunk (finish_reason "stop", usage), no [DONE]. /messages: the
    // message_delta with its stop_reason, no message_stop.
    for path in [CHAT, MESSAGES] {
        let reply = Reply::stream(["Hel", "lo"]).without_done();
        let r = run(OpenRouterLayer::builder(), reply, path).await;
        let text = std::str::from_utf8(&r.sent).unwrap();
        assert!(!text.contains("[DONE]") && !text.contains("message_stop"));
        assert!(r.error.is_none(), "{path}: {:?}", r.error);
        assert_eq!(r.bytes, r.sent, "{path}");
        assert_eq!(calls_and_failures(&r.health), (1, 0), "{path}");
        assert_eq!(consecutive_failures(&r.health), 0, "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_end_without_finish_reason_nor_end_marker_is_truncated() {
    let cases = [
        (CHAT, vec![chat_chunk("Hel"), chat_chunk("lo")]),
        (
            MESSAGES,
            vec![
                format!(
                    r#"event: message_start
data: {{"type":"message_start","message":{{"id":"msg_1","type":"message","role":"assistant","model":"{A}","content":[],"stop_reason":null}}}}"#
                ),
                r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#
                    .to_owned(),
            ],
        ),
        (
            RESPONSES,
            vec![
                format!(
                    r#"event: response.created
data: {{"type":"response.created","response":{{"model":"{A}"}}}}"#
                ),
                r#"event: response.output_text.delta
data: {"type":"response.output_text.delta","delta":"Hel"}"#
                    .to_owned(),
            ],
        ),
    ];
    for (path, events) in cases {
        let r = run(OpenRouterLayer::builder(), Reply::sse(events), path).await;
        let err = r
            .error
            .unwrap_or_else(|| panic!("{path}: a cut stream is not a success"));
        assert_eq!(
            (err.kind(), err.action()),
            (ErrorKind::StreamTruncated, Action::Fatal),
            "{path}"
        );
        assert_eq!(
            r.bytes, r.sent,
            "{path}: every byte before the end is delivered"
        );
        assert_eq!(calls_and_failures(&r.health), (1, 1), "{path}");
        assert_eq!(consecutive_failures(&r.health), 1, "{path}");
        assert_eq!(r.mock.total_calls(), 1, "{path}");
    }

    // A Responses stream's own end event is its [DONE].
    let reply = Reply::sse([
        format!(r#"data: {{"type":"response.created","response":{{"model":"{A}"}}}}"#),
        r#"data: {"type":"response.output_text.delta","delta":"Hel"}"#.to_owned(),
        format!(r#"data: {{"type":"response.completed","response":{{"model":"{A}"}}}}"#),
    ]);
    let r = run(OpenRouterLayer::builder(), reply, RESPONSES).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.bytes, r.sent);
    assert_eq!(calls_and_failures(&r.health), (1, 0));
}
