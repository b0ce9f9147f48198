//! The classify layer against hand-written upstreams.

mod chunks;

use chunks::Chunks;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_openrouter::classify::{
    Classification, ClassifyLayer, ClassifyOutcome, OpenRouterClassifier, Outcome,
};
use tower_openrouter::{Action, Attempt, Error, ErrorKind, UpstreamInfo};

fn request(model: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::post("http://127.0.0.1/api/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"a/b\"}")))
        .unwrap();
    if let Some(m) = model {
        req.extensions_mut().insert(Attempt::new(m));
    }
    req
}

async fn call<B>(
    layer: ClassifyLayer<impl ClassifyOutcome>,
    status: u16,
    headers: &[(&'static str, &'static str)],
    body: impl Fn() -> B + Send + Sync + 'static,
) -> Result<Response<tower_openrouter::classify::ResponseBody<B>>, Error>
where
    B: Body<Data = Bytes, Error = std::io::Error> + Unpin + Send + 'static,
{
    let headers: Vec<_> = headers.to_vec();
    let upstream = service_fn(move |_req: Request<Full<Bytes>>| {
        let mut resp = Response::builder().status(status);
        for (k, v) in &headers {
            resp = resp.header(*k, *v);
        }
        let resp = resp.body(body()).unwrap();
        async move { Ok::<_, std::io::Error>(resp) }
    });
    layer
        .layer(upstream)
        .oneshot(request(Some("openai/gpt-4o")))
        .await
}

const SUCCESS: &str = r#"{"id":"gen-1","object":"chat.completion","created":1,"model":"openai/gpt-4o","provider":"OpenAI","choices":[{"index":0,"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":0.00042}}"#;

#[tokio::test]
async fn success_passes_through_byte_identical_with_upstream_info() {
    let s = SUCCESS.as_bytes();
    let parts: Vec<&'static [u8]> = vec![&s[..10], &s[10..100], &s[100..]];
    let resp = call(
        ClassifyLayer::new(),
        200,
        &[("content-type", "application/json")],
        move || Chunks::new(&parts),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let info = resp.extensions().get::<UpstreamInfo>().unwrap().clone();
    assert_eq!(info.model.as_deref(), Some("openai/gpt-4o"));
    assert_eq!(info.provider.as_deref(), Some("OpenAI"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, SUCCESS.as_bytes());
}

#[tokio::test]
async fn single_chunk_success_is_not_copied() {
    let shared = Bytes::from_static(SUCCESS.as_bytes());
    let ptr = shared.as_ptr();
    let upstream = service_fn(move |_req: Request<Full<Bytes>>| {
        let b = shared.clone();
        async move { Ok::<_, std::io::Error>(Response::new(Full::new(b))) }
    });
    let resp = ClassifyLayer::new()
        .layer(upstream)
        .oneshot(request(None))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame.as_ptr(), ptr);
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn success_with_error_becomes_err() {
    let err = call(ClassifyLayer::new(), 200, &[], || {
        Chunks::new(&[br#"{"id":"gen-1","error":{"code":429,"message":"Rate limit exceeded"},"choices":[{"message":{"content":null}}]}"#])
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.action(), Action::Fallback);
    assert_eq!(err.model(), Some("openai/gpt-4o"));
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));

    let err = call(ClassifyLayer::new(), 200, &[], || {
        Chunks::new(&[br#"{"choices":[{"index":0,"finish_reason":"error","error":{"code":502,"message":"upstream died"}}]}"#])
    })
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::ProviderError, Action::Fallback)
    );
    assert!(err.to_string().contains("upstream died"), "{err}");
}

/// Wraps a classifier and records how many body bytes it was shown.
struct Recording {
    inner: OpenRouterClassifier,
    seen: Arc<AtomicUsize>,
}

impl ClassifyOutcome for Recording {
    fn classify(&self, outcome: Outcome<'_>) -> Option<Classification> {
        if let Outcome::Response { body, .. } = outcome {
            self.seen.store(body.len(), Ordering::SeqCst);
        }
        self.inner.classify(outcome)
    }
}

#[tokio::test]
async fn error_bodies_over_the_cap_are_cut() {
    let seen = Arc::new(AtomicUsize::new(0));
    let layer = ClassifyLayer::with_classifier(Recording {
        inner: OpenRouterClassifier::new(),
        seen: seen.clone(),
    });
    // 100 KiB of error body in 1 KiB chunks.
    let big: &'static [u8] = Box::leak(vec![b'x'; 100 * 1024].into_boxed_slice());
    let err = call(layer.clone(), 503, &[], move || {
        Chunks::new(&big.chunks(1024).collect::<Vec<_>>())
    })
    .await
    .unwrap_err();
    assert_eq!(seen.load(Ordering::SeqCst), 64 * 1024);
    assert_eq!(err.kind(), ErrorKind::ModelUnavailable);
    assert!(err.to_string().len() < 1000);

    // A smaller cap, and a message longer than Display shows.
    let long = format!(
        r#"{{"error":{{"code":500,"message":"{}"}}}}"#,
        "m".repeat(5000)
    );
    let long: &'static [u8] = Box::leak(long.into_bytes().into_boxed_slice());
    let err = call(layer.clone().error_body_limit(6000), 500, &[], move || {
        Chunks::new(&[long])
    })
    .await
    .unwrap_err();
    assert_eq!(seen.load(Ordering::SeqCst), long.len());
    assert_eq!(err.body().unwrap().message.len(), 5000);
    let shown = err.to_string();
    assert!(shown.len() < 600, "{}", shown.len());
    assert!(shown.contains("..."));
    let err = call(layer.error_body_limit(100), 500, &[], move || {
        Chunks::new(&[long])
    })
    .await
    .unwrap_err();
    assert_eq!(seen.load(Ordering::SeqCst), 100);
    assert!(err.body().is_none(), "a cut body does not parse");
    assert_eq!(err.kind(), ErrorKind::ProviderError);
}

#[tokio::test]
async fn payment_required_says_top_up() {
    let err = call(ClassifyLayer::new(), 402, &[], || {
        Chunks::new(&[br#"{"error":{"code":402,"message":"Insufficient credits"}}"#])
    })
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::InsufficientCredits, Action::Fatal)
    );
    let s = err.to_string();
    assert!(s.contains("top up"), "{s}");
    assert!(s.contains("retrying will not help"), "{s}");
    assert!(s.contains("openai/gpt-4o"), "{s}");
}

#[tokio::test]
async fn flagged_input_is_never_shown() {
    let err = call(ClassifyLayer::new(), 403, &[], || {
        Chunks::new(&[br#"{"error":{"code":403,"message":"Your input was flagged","metadata":{"reasons":["violence"],"flagged_input":"SENTINEL-FLAGGED-INPUT","provider_name":"OpenAI"}}}"#])
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ContentModerated);
    for shown in [format!("{err}"), format!("{err:?}"), format!("{err:#?}")] {
        assert!(!shown.contains("SENTINEL-FLAGGED-INPUT"), "{shown}");
    }
}

#[tokio::test]
async fn inner_errors() {
    // Our own error passes through unchanged (no model added).
    let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(Error::new(ErrorKind::ModelCoolingDown))
    });
    let err = ClassifyLayer::new()
        .layer(upstream)
        .oneshot(request(Some("a/b")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelCoolingDown);
    assert_eq!(err.model(), None);

    // A client error: transport, with the model and the io error as source.
    let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    });
    let err = ClassifyLayer::new()
        .layer(upstream)
        .oneshot(request(Some("a/b")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::Transport, Action::Retry)
    );
    assert_eq!(err.model(), Some("a/b"));
    let src = std::error::Error::source(&err).unwrap();
    assert_eq!(
        src.downcast_ref::<std::io::Error>().unwrap().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

#[tokio::test]
async fn read_error_of_a_success_body_is_truncated_and_fatal() {
    let err = call(ClassifyLayer::new(), 200, &[], || {
        Chunks::new(&[b"{\"model\":"]).then_error()
    })
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind(), err.action(), err.status()),
        (
            ErrorKind::ResponseTruncated,
            Action::Fatal,
            Some(StatusCode::OK)
        )
    );
    assert!(err.counts_for_health());
    assert_eq!(err.model(), Some("openai/gpt-4o"));
    // The read error is the source.
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(
        source.downcast_ref::<std::io::Error>().unwrap().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    // Also with nothing read yet (the upstream had answered), and with the action set.
    let err = call(
        ClassifyLayer::new().truncated_action(Action::Fallback),
        200,
        &[],
        || Chunks::new(&[]).then_error(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind(), err.action()),
        (ErrorKind::ResponseTruncated, Action::Fallback)
    );
}

#[tokio::test]
async fn bodies_over_the_success_cap_are_too_large_and_read_no_further() {
    let s = SUCCESS.as_bytes();
    let parts: Vec<&'static [u8]> = s.chunks(16).collect();
    let err = call(
        ClassifyLayer::new().success_body_limit(40),
        200,
        &[],
        move || Chunks::new(&parts),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind(), err.action(), err.counts_for_health()),
        (ErrorKind::ResponseTooLarge, Action::Fatal, false)
    );
    assert_eq!(err.status(), Some(StatusCode::OK));
    assert_eq!(
        err.detail(),
        Some("the body passed the response body limit of 40 bytes")
    );

    // Content-Length over the cap: not read at all, even if it carries an error.
    let err = call(
        ClassifyLayer::new().success_body_limit(10),
        200,
        &[("content-length", "39")],
        || Chunks::new(&[br#"{"error":{"code":500,"message":"boom"}}"#]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResponseTooLarge);
    assert_eq!(
        err.detail(),
        Some("its Content-Length passes the response body limit of 10 bytes")
    );
    // A body of exactly the cap is read and passes.
    let resp = call(
        ClassifyLayer::new().success_body_limit(SUCCESS.len()),
        200,
        &[],
        move || Chunks::new(&s.chunks(7).collect::<Vec<_>>()),
    )
    .await
    .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, SUCCESS.as_bytes());
}

#[tokio::test]
async fn a_classifier_may_let_a_bad_body_pass_unchecked() {
    struct OnlyStatuses;
    impl ClassifyOutcome for OnlyStatuses {
        fn classify(&self, o: Outcome<'_>) -> Option<Classification> {
            match o {
                Outcome::Response { status, .. } if !status.is_success() => {
                    OpenRouterClassifier::new().classify(o)
                }
                _ => None,
            }
        }
    }
    let s = SUCCESS.as_bytes();
    let parts: Vec<&'static [u8]> = s.chunks(16).collect();
    let resp = call(
        ClassifyLayer::with_classifier(OnlyStatuses).success_body_limit(40),
        200,
        &[],
        move || Chunks::new(&parts),
    )
    .await
    .unwrap();
    assert!(resp.extensions().get::<UpstreamInfo>().is_none());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, SUCCESS.as_bytes());
    for bad in [&b"<html>portal</html>"[..], br#"{"model":"a/b","choi"#] {
        let resp = call(
            ClassifyLayer::with_classifier(OnlyStatuses),
            200,
            &[],
            move || Chunks::new(&[bad]),
        )
        .await
        .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], bad);
    }
}

#[tokio::test]
async fn bad_success_bodies_are_typed() {
    let cases: [(&'static [u8], &'static str, ErrorKind, Action); 6] = [
        (b"<html><body>502 Bad Gateway</body></html>", "text/html", ErrorKind::InvalidResponse, Action::Fallback),
        (b"<html>not json at all</html>", "application/json", ErrorKind::InvalidResponse, Action::Fallback),
        (b"", "application/json", ErrorKind::InvalidResponse, Action::Fallback),
        (br#"{"model":"a/b"} and more"#, "application/json", ErrorKind::InvalidResponse, Action::Fallback),
        (br#"{"id":"gen-1","model":"a/b","provider":"P","choices":[{"message":{"content":"Hel"#, "application/json", ErrorKind::ResponseTruncated, Action::Fatal),
        // Cut just after a nested object closes.
        (br#"{"id":"gen-1","model":"a/b","provider":"P","choices":[{"message":{"content":"Hello"}}"#, "application/json", ErrorKind::ResponseTruncated, Action::Fatal),
    ];
    for (body, ct, kind, action) in cases {
        let headers: &'static [(&'static str, &'static str)] =
            Box::leak(vec![("content-type", ct)].into_boxed_slice());
        let err = call(ClassifyLayer::new(), 200, headers, move || {
            Chunks::new(&[body])
        })
        .await
        .unwrap_err();
        assert_eq!((err.kind(), err.action()), (kind, action), "{body:?}");
        assert!(err.counts_for_health());
        assert_eq!(err.model(), Some("openai/gpt-4o"));
    }
    // A 204 has no body to judge.
    let resp = call(ClassifyLayer::new(), 204, &[], || Chunks::new(&[])).await;
    assert_eq!(resp.unwrap().status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn event_streams_are_not_buffered() {
    let resp = call(
        ClassifyLayer::new(),
        200,
        &[("content-type", "text/event-stream")],
        || Chunks::new(&[b": OPENROUTER PROCESSING\n\n", b"data: [DONE]\n\n"]),
    )
    .await
    .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b": OPENROUTER PROCESSING\n\ndata: [DONE]\n\n");
}

#[tokio::test]
async fn a_classifier_may_accept_an_error_status() {
    struct AcceptAll;
    impl ClassifyOutcome for AcceptAll {
        fn classify(&self, _: Outcome<'_>) -> Option<Classification> {
            None
        }
    }
    let big: &'static [u8] = Box::leak(vec![b'y'; 3000].into_boxed_slice());
    let resp = call(
        ClassifyLayer::with_classifier(AcceptAll).error_body_limit(1000),
        500,
        &[],
        move || Chunks::new(&big.chunks(700).collect::<Vec<_>>()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 500);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], big);
}
