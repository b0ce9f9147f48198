//! Streams through the classify layer: held until the first content, then watched.
//! Hand-written streaming upstreams, paused time, exact assertions.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
use tower_openrouter::classify::{ClassifyLayer, ResponseBody};
use tower_openrouter::timeout::AttemptTimeoutLayer;
use tower_openrouter::{
    Action, Attempt, Error, ErrorKind, StreamErrorHook, StreamLimits, UpstreamInfo,
};

/// A streaming body fed by a channel: each message is one chunk (or a read error).
struct ChannelBody(mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// One step of a scripted upstream stream.
#[derive(Clone)]
enum Step {
    Send(&'static str),
    Wait(Duration),
    Fail,
    /// Keep the connection open forever.
    Hang,
}

use Step::*;

/// An upstream that answers 200 `text/event-stream` and plays `script` (then ends).
fn upstream(
    script: Vec<Step>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<ChannelBody>,
    Error = std::io::Error,
    Future = impl std::marker::Send,
> + Clone {
    service_fn(move |_req: Request<Full<Bytes>>| {
        let script = script.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for step in script {
                match step {
                    Send(s) => {
                        let _ = tx.send(Ok(Bytes::from_static(s.as_bytes())));
                    }
                    Wait(d) => tokio::time::sleep(d).await,
                    Fail => {
                        let _ = tx.send(Err(std::io::Error::from(
                            std::io::ErrorKind::ConnectionReset,
                        )));
                    }
                    Hang => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        });
        async move {
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(ChannelBody(rx))
                .unwrap())
        }
    })
}

struct Hook {
    calls: Arc<AtomicUsize>,
    kinds: Arc<Mutex<Vec<ErrorKind>>>,
}

fn request(path: &str, limits: StreamLimits) -> (Request<Full<Bytes>>, Hook) {
    let mut req = Request::post(format!("http://127.0.0.1{path}"))
        .body(Full::new(Bytes::from_static(
            b"{\"model\":\"a/b\",\"stream\":true}",
        )))
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let (c, k) = (calls.clone(), kinds.clone());
    req.extensions_mut()
        .insert(StreamErrorHook::new(move |e: &Error| {
            c.fetch_add(1, Ordering::SeqCst);
            k.lock().unwrap().push(e.kind());
        }));
    req.extensions_mut().insert(Attempt::new("a/b"));
    req.extensions_mut().insert(limits);
    (req, Hook { calls, kinds })
}

const CHAT: &str = "/api/v1/chat/completions";
const PREAMBLE: &str = ": OPENROUTER PROCESSING\n\n";
const ROLE: &str = "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"model\":\"openai/gpt-4o\",\"provider\":\"OpenAI\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
const C1: &str = "data: {\"id\":\"gen-1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
const C2: &str = "data: {\"id\":\"gen-1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \"},\"finish_reason\":null}]}\n\n";
const C3: &str = "data: {\"id\":\"gen-1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"you\"},\"finish_reason\":null}]}\n\n";
const STOP: &str = "data: {\"id\":\"gen-1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":3,\"total_tokens\":6}}\n\n";
const DONE: &str = "data: [DONE]\n\n";
const ERROR_CHUNK: &str = "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"model\":\"openai/gpt-4o\",\"error\":{\"code\":502,\"message\":\"Provider disconnected\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n";

async fn run(
    script: Vec<Step>,
    path: &str,
    limits: StreamLimits,
) -> (Result<Response<ResponseBody<ChannelBody>>, Error>, Hook) {
    let (req, hook) = request(path, limits);
    let resp = ClassifyLayer::new()
        .layer(upstream(script))
        .oneshot(req)
        .await;
    (resp, hook)
}

/// Reads the body to its end: the data bytes, then the error frame if one came.
async fn drain(mut body: ResponseBody<ChannelBody>) -> (Vec<u8>, Option<Error>) {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => bytes.extend_from_slice(&f.into_data().unwrap()),
            Err(e) => {
                assert!(
                    body.frame().await.is_none(),
                    "nothing after the error frame"
                );
                return (bytes, Some(e));
            }
        }
    }
    (bytes, None)
}

#[tokio::test(start_paused = true)]
async fn a_clean_stream_is_delivered_exactly_with_upstream_info() {
    let script = vec![
        Send(PREAMBLE),
        Send(ROLE),
        Wait(Duration::from_millis(300)),
        Send(C1),
        Send(C2),
        Send(C3),
        Send(STOP),
        Send(DONE),
    ];
    let (resp, hook) = run(script, CHAT, StreamLimits::default()).await;
    let resp = resp.unwrap();
    let info = resp.extensions().get::<UpstreamInfo>().unwrap();
    assert_eq!(info.model.as_deref(), Some("openai/gpt-4o"));
    assert_eq!(info.provider.as_deref(), Some("OpenAI"));
    let (bytes, err) = drain(resp.into_body()).await;
    assert!(err.is_none());
    assert_eq!(
        bytes,
        [PREAMBLE, ROLE, C1, C2, C3, STOP, DONE].concat().as_bytes()
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn first_event_error_is_an_ordinary_classified_error() {
    let script = vec![Send(PREAMBLE), Send("data: {\"error\":{\"code\":429,\"message\":\"Rate limit exceeded\",\"metadata\":{\"provider_name\":\"BaseTen\"}}}\n\n")];
    let (resp, hook) = run(script, CHAT, StreamLimits::default()).await;
    let err = resp.unwrap_err();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::RateLimited, Action::Fallback)
    );
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(err.model(), Some("a/b"));
    assert!(err.counts_for_health());
    assert_eq!(
        hook.calls.load(Ordering::SeqCst),
        0,
        "not a mid-stream error"
    );

    // The error chunk shape (finish_reason "error") before any content.
    let (resp, _) = run(
        vec![Send(ROLE), Send(ERROR_CHUNK)],
        CHAT,
        StreamLimits::default(),
    )
    .await;
    let err = resp.unwrap_err();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::ProviderError, Action::Fallback)
    );

    // A /messages stream's `event: error`.
    let script = vec![
        Send("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"anthropic/claude-sonnet-4.5\"}}\n\n"),
        Send("event: ping\ndata: {\"type\": \"ping\"}\n\n"),
        Send("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"),
    ];
    let (resp, _) = run(script, "/api/v1/messages", StreamLimits::default()).await;
    let err = resp.unwrap_err();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::ProviderOverloaded, Action::Fallback)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_ending_before_content_is_truncated_and_retryable() {
    let (resp, hook) = run(
        vec![Send(PREAMBLE), Send(ROLE)],
        CHAT,
        StreamLimits::default(),
    )
    .await;
    let err = resp.unwrap_err();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::StreamTruncated, Action::Retry)
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 0);
    // A read error before content is a transport error.
    let (resp, _) = run(vec![Send(PREAMBLE), Fail], CHAT, StreamLimits::default()).await;
    assert_eq!(resp.unwrap_err().kind(), ErrorKind::Transport);
}

#[tokio::test(start_paused = true)]
async fn a_stream_stalling_before_content_times_out_at_the_first_token_limit() {
    let limits = StreamLimits {
        first_token: Some(Duration::from_secs(2)),
        idle: Some(Duration::from_secs(30)),
    };
    let start = Instant::now();
    let (resp, _) = run(vec![Send(PREAMBLE), Hang], CHAT, limits).await;
    let err = resp.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::StreamTimeout, Action::Fallback)
    );
    assert_eq!(err.model(), Some("a/b"));
}

#[tokio::test(start_paused = true)]
async fn an_error_after_three_content_chunks_is_a_typed_error_frame() {
    let script = vec![
        Send(PREAMBLE),
        Send(ROLE),
        Send(C1),
        Send(C2),
        Send(C3),
        Wait(Duration::from_secs(1)),
        Send(ERROR_CHUNK),
    ];
    let (resp, hook) = run(script, CHAT, StreamLimits::default()).await;
    let (bytes, err) = drain(resp.unwrap().into_body()).await;
    assert_eq!(bytes, [PREAMBLE, ROLE, C1, C2, C3].concat().as_bytes());
    let err = err.unwrap();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::StreamInterrupted, Action::Fatal)
    );
    assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY));
    assert_eq!(err.model(), Some("a/b"));
    assert!(err.to_string().contains("Provider disconnected"), "{err}");
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    assert_eq!(*hook.kinds.lock().unwrap(), [ErrorKind::StreamInterrupted]);
}

#[tokio::test(start_paused = true)]
async fn an_error_event_in_the_same_chunk_as_content_is_cut_out() {
    const MIXED: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"code\":500,\"message\":\"x\"}}\n\ndata: [DONE]\n\n";
    let (resp, hook) = run(
        vec![Send(PREAMBLE), Send(MIXED)],
        CHAT,
        StreamLimits::default(),
    )
    .await;
    let (bytes, err) = drain(resp.unwrap().into_body()).await;
    let cut = MIXED.find("data: {\"error\"").unwrap();
    assert_eq!(bytes, [PREAMBLE, &MIXED[..cut]].concat().as_bytes());
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamInterrupted);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);

    // The same after content, inside a later chunk.
    let later: &'static str = Box::leak(format!("{C2}{ERROR_CHUNK}{DONE}").into_boxed_str());
    let (resp, hook) = run(vec![Send(C1), Send(later)], CHAT, StreamLimits::default()).await;
    let (bytes, err) = drain(resp.unwrap().into_body()).await;
    assert_eq!(bytes, [C1, C2].concat().as_bytes());
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamInterrupted);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_ending_without_done_is_truncated_unless_its_finish_reason_came() {
    let (resp, hook) = run(
        vec![Send(ROLE), Send(C1), Send(C2)],
        CHAT,
        StreamLimits::default(),
    )
    .await;
    let (bytes, err) = drain(resp.unwrap().into_body()).await;
    assert_eq!(bytes, [ROLE, C1, C2].concat().as_bytes());
    let err = err.expect("an end without [DONE] nor finish_reason is not a success");
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::StreamTruncated, Action::Fatal)
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);

    // The final chunk (finish_reason "stop", usage) came: the answer is whole, [DONE] or
    // not, also when it is the first content and comes in one chunk with it.
    for script in [
        vec![Send(ROLE), Send(C1), Send(STOP)],
        vec![Send(ROLE), Send(STOP)],
    ] {
        let want: String = script
            .iter()
            .map(|s| match s {
                Send(s) => *s,
                _ => "",
            })
            .collect();
        let (resp, hook) = run(script, CHAT, StreamLimits::default()).await;
        let (bytes, err) = drain(resp.unwrap().into_body()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(bytes, want.as_bytes());
        assert_eq!(hook.calls.load(Ordering::SeqCst), 0);
    }
    // `"finish_reason": null` with spaces, or the words inside content, are not a finish.
    const SPACED: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"finish_reason\"},\"finish_reason\" : null}]}\n\n";
    let (resp, _) = run(vec![Send(C1), Send(SPACED)], CHAT, StreamLimits::default()).await;
    let (_, err) = drain(resp.unwrap().into_body()).await;
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamTruncated);

    // A read error after content: interrupted, reported.
    let (resp, hook) = run(vec![Send(C1), Fail], CHAT, StreamLimits::default()).await;
    let (bytes, err) = drain(resp.unwrap().into_body()).await;
    assert_eq!(bytes, C1.as_bytes());
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamInterrupted);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);

    // /messages streams end with message_stop, not [DONE].
    let script = vec![
        Send("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\"}}\n\n"),
        Send("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"),
        Send("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
    ];
    let (resp, hook) = run(script.clone(), "/api/v1/messages", StreamLimits::default()).await;
    let resp = resp.unwrap();
    assert_eq!(
        resp.extensions()
            .get::<UpstreamInfo>()
            .unwrap()
            .model
            .as_deref(),
        Some("m")
    );
    let (_, err) = drain(resp.into_body()).await;
    assert!(err.is_none());
    assert_eq!(hook.calls.load(Ordering::SeqCst), 0);

    // A /messages stream cut before its stop_reason and message_stop is truncated too.
    let (resp, hook) = run(
        script[..2].to_vec(),
        "/api/v1/messages",
        StreamLimits::default(),
    )
    .await;
    let (_, err) = drain(resp.unwrap().into_body()).await;
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamTruncated);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stall_after_the_first_chunk_ends_at_exactly_the_idle_limit() {
    let limits = StreamLimits {
        first_token: Some(Duration::from_secs(10)),
        idle: Some(Duration::from_secs(5)),
    };
    let script = vec![Wait(Duration::from_secs(1)), Send(C1), Hang];
    let (resp, hook) = run(script, CHAT, limits).await;
    let mut body = resp.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, C1.as_bytes());
    let got_first = Instant::now();
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(got_first.elapsed(), Duration::from_secs(5));
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::StreamTimeout, Action::Fatal)
    );
    assert!(body.frame().await.is_none());
    assert_eq!(*hook.kinds.lock().unwrap(), [ErrorKind::StreamTimeout]);
}

#[tokio::test(start_paused = true)]
async fn a_long_healthy_stream_is_never_cut_by_the_attempt_timeout() {
    // A chunk every second for 10 minutes; attempt timeout 60 s, idle limit 5 s.
    let mut script = vec![Send(PREAMBLE), Send(ROLE)];
    for _ in 0..600 {
        script.push(Wait(Duration::from_secs(1)));
        script.push(Send(C1));
    }
    script.push(Send(STOP));
    script.push(Send(DONE));
    let timeout = AttemptTimeoutLayer::builder(Duration::from_secs(60))
        .first_token(Duration::from_secs(10))
        .idle(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(timeout)
        .layer(ClassifyLayer::new())
        .service(upstream(script));
    let (mut req, hook) = request(CHAT, StreamLimits::default());
    req.extensions_mut().remove::<StreamLimits>();
    let start = Instant::now();
    let resp = svc.oneshot(req).await.unwrap();
    let (bytes, err) = drain(resp.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(600));
    let want = [PREAMBLE, ROLE].concat() + &C1.repeat(600) + STOP + DONE;
    assert_eq!(bytes, want.as_bytes());
    assert_eq!(hook.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn http_errors_on_streams_are_classified_as_usual() {
    let svc = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, std::io::Error>(
            Response::builder()
                .status(503)
                .header("content-type", "text/event-stream")
                .header("retry-after", "4")
                .body(Full::new(Bytes::from_static(
                    b"{\"error\":{\"code\":503,\"message\":\"No endpoints\"}}",
                )))
                .unwrap(),
        )
    });
    let (req, _) = request(CHAT, StreamLimits::default());
    let err = ClassifyLayer::new()
        .layer(svc)
        .oneshot(req)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelUnavailable);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(4)));
}

#[tokio::test(start_paused = true)]
async fn a_hold_over_the_cap_is_released_and_later_errors_are_mid_stream() {
    // Keep-alives only, more than the (tiny) cap, then an error event: the bytes already
    // went out, so the error is a frame, not a retryable error.
    let script = vec![
        Send(PREAMBLE),
        Send(PREAMBLE),
        Send(PREAMBLE),
        Wait(Duration::from_secs(1)),
        Send(ERROR_CHUNK),
    ];
    let (req, hook) = request(CHAT, StreamLimits::default());
    let resp = ClassifyLayer::new()
        .success_body_limit(40)
        .layer(upstream(script))
        .oneshot(req)
        .await
        .unwrap();
    let (bytes, err) = drain(resp.into_body()).await;
    assert_eq!(bytes, PREAMBLE.repeat(3).as_bytes());
    let err = err.unwrap();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::StreamInterrupted, Action::Fatal)
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
}
