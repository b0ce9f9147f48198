//! Every status row and every body shape of OPENROUTER.md through the default classifier:
//! kind, action, retry hint and health counting, plus the user overrides.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use tower_openrouter::classify::{
    Classification, ClassifyOutcome, OpenRouterClassifier, Outcome, StreamFailure,
};
use tower_openrouter::{Action, ErrorKind};

use Action::*;
use ErrorKind::*;

struct Row {
    name: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    kind: ErrorKind,
    action: Action,
    retry_after: Option<Duration>,
    counts: bool,
}

const fn row(
    name: &'static str,
    status: u16,
    body: &'static str,
    kind: ErrorKind,
    action: Action,
    counts: bool,
) -> Row {
    Row {
        name,
        status,
        headers: &[],
        body,
        kind,
        action,
        retry_after: None,
        counts,
    }
}

fn classify(
    c: &OpenRouterClassifier,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Classification> {
    c.classify(Outcome::Response {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body,
    })
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

const MODERATION: &str = r#"{"error":{"code":403,"message":"openai/gpt-4o requires moderation on OpenAI. Your input was flagged for \"violence\".","metadata":{"reasons":["violence"],"flagged_input":"FLAGGED-SENTINEL","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#;
const CONTEXT: &str = r#"{"error":{"code":400,"message":"This endpoint's maximum context length is 131072 tokens. However, you requested about 141607 tokens (10535 of text input, 131072 in the output). Please reduce the length of either one, or use the \"middle-out\" transform to compress your prompt automatically.","metadata":{"provider_name":"Chutes"}}}"#;
const NEWER_503: &str = r#"{"error":{"code":503,"message":"No endpoints available","metadata":{"error_type":"provider_overloaded","provider_code":"529"},"availability":{"code":"temporarily_unavailable","retryable":true,"retry_after":3,"requested_models":["a/b"]}}}"#;

fn rows() -> Vec<Row> {
    vec![
        // 400 and its typed variants.
        row(
            "400 invalid",
            400,
            r#"{"error":{"code":400,"message":"Input required: specify \"prompt\" or \"messages\""}}"#,
            InvalidRequest,
            Fatal,
            false,
        ),
        row(
            "400 context length (older shape)",
            400,
            CONTEXT,
            ContextLengthExceeded,
            Fallback,
            false,
        ),
        row(
            "400 context_length_exceeded type",
            400,
            r#"{"error":{"code":400,"message":"too long","type":"context_length_exceeded"}}"#,
            ContextLengthExceeded,
            Fallback,
            false,
        ),
        row(
            "400 max_tokens_exceeded (newer)",
            400,
            r#"{"error":{"code":400,"message":"max_tokens is too large","metadata":{"error_type":"max_tokens_exceeded"}}}"#,
            ContextLengthExceeded,
            Fallback,
            false,
        ),
        row(
            "400 content_policy_violation",
            400,
            r#"{"error":{"code":"content_policy_violation","message":"Your request was rejected"}}"#,
            ContentModerated,
            Fallback,
            false,
        ),
        row(
            "400 unknown model id",
            400,
            r#"{"error":{"code":400,"message":"invalid/model-name is not a valid model ID"}}"#,
            ModelNotFound,
            Fallback,
            false,
        ),
        row(
            "401",
            401,
            r#"{"error":{"code":401,"message":"No auth credentials found"}}"#,
            Unauthorized,
            Fatal,
            false,
        ),
        row(
            "402",
            402,
            r#"{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}"#,
            InsufficientCredits,
            Fatal,
            false,
        ),
        row(
            "403 moderation (older shape)",
            403,
            MODERATION,
            ContentModerated,
            Fallback,
            false,
        ),
        row(
            "403 guardrail",
            403,
            r#"{"error":{"code":403,"message":"Request blocked by guardrail policy"}}"#,
            ContentModerated,
            Fallback,
            false,
        ),
        row(
            "403 region",
            403,
            r#"{"error":{"code":403,"message":"This model is not available in your region."}}"#,
            Forbidden,
            Fallback,
            false,
        ),
        row(
            "404 no endpoints",
            404,
            r#"{"error":{"code":404,"message":"No endpoints found for x/y."}}"#,
            ModelNotFound,
            Fallback,
            true,
        ),
        row(
            "408",
            408,
            r#"{"error":{"code":408,"message":"Request timed out"}}"#,
            UpstreamTimeout,
            Retry,
            true,
        ),
        row(
            "413 plain",
            413,
            r#"{"error":{"code":413,"message":"Request entity too large"}}"#,
            PayloadTooLarge,
            Fatal,
            false,
        ),
        row(
            "413 context",
            413,
            r#"{"error":{"code":413,"message":"Prompt exceeds the model's context length"}}"#,
            ContextLengthExceeded,
            Fallback,
            false,
        ),
        row(
            "422",
            422,
            r#"{"error":{"code":422,"message":"Unprocessable"}}"#,
            InvalidRequest,
            Fatal,
            false,
        ),
        Row {
            headers: &[("retry-after", "5")],
            retry_after: Some(Duration::from_secs(5)),
            ..row(
                "429 older shape, raw text, Retry-After",
                429,
                r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"provider_name":"BaseTen","raw":"...temporarily rate-limited upstream..."}}}"#,
                RateLimited,
                Fallback,
                true,
            )
        },
        row(
            "429 raw as a JSON string",
            429,
            r#"{"error":{"code":429,"message":"Provider returned error","metadata":{"provider_name":"Together","raw":"{\"error\":{\"message\":\"rate limited\",\"type\":\"rate_limit\"}}"}}}"#,
            RateLimited,
            Fallback,
            true,
        ),
        Row {
            headers: &[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")],
            retry_after: Some(Duration::ZERO),
            ..row(
                "429 Retry-After as a past HTTP date",
                429,
                "",
                RateLimited,
                Fallback,
                true,
            )
        },
        row(
            "500",
            500,
            r#"{"error":{"code":500,"message":"Internal Server Error"}}"#,
            ProviderError,
            Retry,
            true,
        ),
        row(
            "502",
            502,
            r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"provider_name":"Fireworks","raw":"bad gateway"}}}"#,
            ProviderError,
            Fallback,
            true,
        ),
        row(
            "502 html from a proxy",
            502,
            "<html><body>502 Bad Gateway</body></html>",
            ProviderError,
            Fallback,
            true,
        ),
        row(
            "502 refined by error_type",
            502,
            r#"{"error":{"code":502,"message":"x","metadata":{"error_type":"provider_overloaded"}}}"#,
            ProviderOverloaded,
            Fallback,
            true,
        ),
        row(
            "503 plain",
            503,
            r#"{"error":{"code":503,"message":"No endpoints found that can handle the requested parameters."}}"#,
            ModelUnavailable,
            Fallback,
            true,
        ),
        Row {
            retry_after: Some(Duration::from_secs(3)),
            ..row(
                "503 newer shape (error_type, provider_code, availability)",
                503,
                NEWER_503,
                ProviderOverloaded,
                Fallback,
                true,
            )
        },
        Row {
            headers: &[("retry-after", "10")],
            retry_after: Some(Duration::from_secs(10)),
            ..row(
                "503 header wins over availability.retry_after",
                503,
                NEWER_503,
                ProviderOverloaded,
                Fallback,
                true,
            )
        },
        Row {
            retry_after: Some(Duration::from_secs(2)),
            ..row(
                "500 availability.retryable false: no same-model retry",
                500,
                r#"{"error":{"code":500,"message":"x","availability":{"retryable":false,"retry_after":"2"}}}"#,
                ProviderError,
                Fallback,
                true,
            )
        },
        row("504", 504, "", UpstreamTimeout, Retry, true),
        row("524", 524, "", UpstreamTimeout, Retry, true),
        row(
            "529",
            529,
            r#"{"error":{"code":529,"message":"Provider overloaded"}}"#,
            ProviderOverloaded,
            Fallback,
            true,
        ),
        row("unknown 5xx", 599, "", ProviderError, Retry, true),
        row("501", 501, "", ProviderError, Retry, true),
        row(
            "unknown 4xx",
            418,
            "I'm a teapot",
            UnexpectedStatus,
            Fatal,
            false,
        ),
        row("3xx", 302, "", UnexpectedStatus, Fatal, false),
        // 200 that still failed.
        row(
            "200 top-level error 429",
            200,
            r#"{"id":"gen-1","error":{"code":429,"message":"Rate limit exceeded"},"choices":[{"index":0,"message":{"role":"assistant","content":null}}]}"#,
            RateLimited,
            Fallback,
            true,
        ),
        row(
            "200 choice finish_reason error with its error",
            200,
            r#"{"id":"gen-1","model":"a/b","choices":[{"index":0,"finish_reason":"error","error":{"code":502,"message":"upstream died"},"message":{"role":"assistant","content":""}}]}"#,
            ProviderError,
            Fallback,
            true,
        ),
        row(
            "200 choice finish_reason error without detail",
            200,
            r#"{"choices":[{"index":0,"finish_reason":"stop"},{"index":1,"finish_reason":"error"}]}"#,
            ProviderError,
            Retry,
            true,
        ),
        row(
            "200 top-level error as a string",
            200,
            r#"{"error":"something broke"}"#,
            ProviderError,
            Retry,
            true,
        ),
        row(
            "200 stream error chunk",
            200,
            r#"{"id":"x","object":"chat.completion.chunk","model":"a/b","error":{"code":502,"message":"died"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#,
            ProviderError,
            Fallback,
            true,
        ),
        // /api/v1/messages envelope, at its real statuses.
        row(
            "messages 529 overloaded_error",
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ProviderOverloaded,
            Fallback,
            true,
        ),
        row(
            "messages 429 rate_limit_error",
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
            RateLimited,
            Fallback,
            true,
        ),
        row(
            "messages 500 api_error",
            500,
            r#"{"type":"error","error":{"type":"api_error","message":"internal"}}"#,
            ProviderError,
            Retry,
            true,
        ),
        row(
            "messages 400 invalid_request_error",
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: field required"}}"#,
            InvalidRequest,
            Fatal,
            false,
        ),
        row(
            "messages 400 invalid_request_error context",
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum context"}}"#,
            ContextLengthExceeded,
            Fallback,
            false,
        ),
        row(
            "messages 401 authentication_error",
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            Unauthorized,
            Fatal,
            false,
        ),
        row(
            "messages 403 permission_error",
            403,
            r#"{"type":"error","error":{"type":"permission_error","message":"not allowed"}}"#,
            Forbidden,
            Fallback,
            false,
        ),
        row(
            "messages 404 not_found_error",
            404,
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#,
            ModelNotFound,
            Fallback,
            true,
        ),
        row(
            "messages 413 request_too_large",
            413,
            r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum size"}}"#,
            PayloadTooLarge,
            Fatal,
            false,
        ),
        row(
            "messages 402 billing_error",
            402,
            r#"{"type":"error","error":{"type":"billing_error","message":"credit balance too low"}}"#,
            InsufficientCredits,
            Fatal,
            false,
        ),
        row(
            "messages 504 timeout_error",
            504,
            r#"{"type":"error","error":{"type":"timeout_error","message":"timed out"}}"#,
            UpstreamTimeout,
            Retry,
            true,
        ),
        // The same envelope inside a 200 (a /messages stream's `event: error`).
        row(
            "messages event overloaded_error",
            200,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ProviderOverloaded,
            Fallback,
            true,
        ),
        row(
            "messages event rate_limit_error",
            200,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"x"}}"#,
            RateLimited,
            Fallback,
            true,
        ),
        row(
            "messages event api_error",
            200,
            r#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
            ProviderError,
            Retry,
            true,
        ),
        row(
            "messages event invalid_request_error",
            200,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"x"}}"#,
            InvalidRequest,
            Fatal,
            false,
        ),
        row(
            "messages event authentication_error",
            200,
            r#"{"type":"error","error":{"type":"authentication_error","message":"x"}}"#,
            Unauthorized,
            Fatal,
            false,
        ),
        row(
            "messages event permission_error",
            200,
            r#"{"type":"error","error":{"type":"permission_error","message":"x"}}"#,
            Forbidden,
            Fallback,
            false,
        ),
        row(
            "messages event not_found_error",
            200,
            r#"{"type":"error","error":{"type":"not_found_error","message":"x"}}"#,
            ModelNotFound,
            Fallback,
            true,
        ),
        row(
            "messages event request_too_large",
            200,
            r#"{"type":"error","error":{"type":"request_too_large","message":"x"}}"#,
            PayloadTooLarge,
            Fatal,
            false,
        ),
        row(
            "messages event billing_error",
            200,
            r#"{"type":"error","error":{"type":"billing_error","message":"x"}}"#,
            InsufficientCredits,
            Fatal,
            false,
        ),
        row(
            "messages event timeout_error",
            200,
            r#"{"type":"error","error":{"type":"timeout_error","message":"x"}}"#,
            UpstreamTimeout,
            Retry,
            true,
        ),
    ]
}

#[test]
fn every_row_and_body_shape() {
    let c = OpenRouterClassifier::new();
    let mut failures = Vec::new();
    for r in rows() {
        let got = classify(&c, r.status, &headers(r.headers), r.body.as_bytes());
        let Some(got) = got else {
            failures.push(format!("{}: classified as success", r.name));
            continue;
        };
        let want = (r.kind, r.action, r.retry_after, r.counts);
        let have = (got.kind, got.action, got.retry_after, got.counts_for_health);
        if want != have {
            failures.push(format!("{}: want {want:?}, got {have:?}", r.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn status_and_body_are_kept() {
    let c = OpenRouterClassifier::new();
    let v = classify(&c, 429, &HeaderMap::new(), r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"provider_name":"BaseTen","raw":"{\"detail\":\"slow\"}"}}}"#.as_bytes()).unwrap();
    assert_eq!(v.status, Some(StatusCode::TOO_MANY_REQUESTS));
    let body = v.body.unwrap();
    assert_eq!(body.provider_name(), Some("BaseTen"));
    assert_eq!(body.metadata.raw_json().unwrap()["detail"], "slow");
    // A 200 carrying a 429 reports the 429.
    let v = classify(
        &c,
        200,
        &HeaderMap::new(),
        br#"{"error":{"code":429,"message":"x"}}"#,
    )
    .unwrap();
    assert_eq!(v.status, Some(StatusCode::TOO_MANY_REQUESTS));
    let v = classify(
        &c,
        200,
        &HeaderMap::new(),
        br#"{"choices":[{"finish_reason":"error"}]}"#,
    )
    .unwrap();
    assert_eq!(v.status, Some(StatusCode::OK));
}

#[test]
fn successes_are_none() {
    let c = OpenRouterClassifier::new();
    let h = HeaderMap::new();
    for body in [
        r#"{"id":"gen-1","object":"chat.completion","model":"openai/gpt-4o","provider":"OpenAI","choices":[{"index":0,"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":0.00042}}"#,
        r#"{"choices":[{"finish_reason":"stop","message":{"content":"the \"error\" field is null","role":"assistant"}}],"error":null}"#,
        r#"{"choices":[{"delta":{"content":"error"},"finish_reason":null}]}"#,
        "",
        "not json at all",
        "[DONE]",
    ] {
        assert!(classify(&c, 200, &h, body.as_bytes()).is_none(), "{body}");
    }
    assert!(classify(&c, 204, &h, b"").is_none());
}

#[test]
fn x_ratelimit_reset_only_without_retry_after() {
    let c = OpenRouterClassifier::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let reset = (now + Duration::from_secs(10)).as_millis().to_string();
    let mut h = HeaderMap::new();
    h.insert("x-ratelimit-limit", "20".parse().unwrap());
    h.insert("x-ratelimit-remaining", "0".parse().unwrap());
    h.insert("x-ratelimit-reset", reset.parse().unwrap());
    let body = br#"{"error":{"code":429,"message":"Rate limit exceeded: free-models-per-min"}}"#;
    let v = classify(&c, 429, &h, body).unwrap();
    let ra = v.retry_after.unwrap();
    assert!(
        ra > Duration::from_secs(8) && ra <= Duration::from_secs(10),
        "{ra:?}"
    );
    h.insert("retry-after", "1".parse().unwrap());
    let v = classify(&c, 429, &h, body).unwrap();
    assert_eq!(v.retry_after, Some(Duration::from_secs(1)));
    // A future HTTP date.
    let mut h = HeaderMap::new();
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
    h.insert("retry-after", at.parse().unwrap());
    let ra = classify(&c, 503, &h, b"").unwrap().retry_after.unwrap();
    assert!(
        ra > Duration::from_secs(57) && ra <= Duration::from_secs(60),
        "{ra:?}"
    );
}

#[derive(Debug)]
struct ClientError(Box<dyn std::error::Error + Send + Sync>);
impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client error")
    }
}
impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[test]
fn transport_errors() {
    let c = OpenRouterClassifier::new();
    for io in [
        std::io::ErrorKind::ConnectionRefused,
        std::io::ErrorKind::ConnectionReset,
    ] {
        let e = ClientError(Box::new(std::io::Error::from(io)));
        let v = c.classify(Outcome::Transport(&e)).unwrap();
        assert_eq!(
            (v.kind, v.action, v.retry_after, v.counts_for_health),
            (Transport, Retry, None, true)
        );
        assert_eq!(v.status, None);
    }
    let e = ClientError(Box::new(tower::timeout::error::Elapsed::new()));
    let v = c.classify(Outcome::Transport(&e)).unwrap();
    assert_eq!(
        (v.kind, v.action, v.counts_for_health),
        (AttemptTimeout, Fallback, true)
    );
    let bare = tower::timeout::error::Elapsed::new();
    assert_eq!(
        c.classify(Outcome::Transport(&bare)).unwrap().kind,
        AttemptTimeout
    );
}

#[test]
fn stream_failures() {
    let c = OpenRouterClassifier::new();
    let v = |failure, after_content| {
        let v = c
            .classify(Outcome::Stream {
                failure,
                after_content,
            })
            .unwrap();
        (v.kind, v.action, v.counts_for_health)
    };
    assert_eq!(
        v(StreamFailure::Ended, false),
        (StreamTruncated, Retry, true)
    );
    assert_eq!(
        v(StreamFailure::Ended, true),
        (StreamTruncated, Fatal, true)
    );
    assert_eq!(
        v(StreamFailure::Stalled, false),
        (StreamTimeout, Fallback, true)
    );
}

#[test]
fn override_by_kind() {
    let c = OpenRouterClassifier::new().with_action(ContentModerated, Fatal);
    let h = HeaderMap::new();
    assert_eq!(
        classify(&c, 403, &h, MODERATION.as_bytes()).unwrap().action,
        Fatal
    );
    // Another 403 keeps its rule.
    assert_eq!(
        classify(&c, 403, &h, br#"{"error":{"code":403,"message":"region"}}"#)
            .unwrap()
            .action,
        Fallback
    );
}

#[test]
fn override_by_status() {
    let c = OpenRouterClassifier::new().with_status_action(StatusCode::FORBIDDEN, Fatal);
    let h = HeaderMap::new();
    assert_eq!(
        classify(&c, 403, &h, MODERATION.as_bytes()).unwrap().action,
        Fatal
    );
    assert_eq!(classify(&c, 403, &h, b"").unwrap().action, Fatal);
    assert_eq!(classify(&c, 404, &h, b"").unwrap().action, Fallback);
    // The status rule applies to a 200 that carries that code too.
    let c = OpenRouterClassifier::new().with_status_action(StatusCode::TOO_MANY_REQUESTS, Fatal);
    assert_eq!(
        classify(&c, 200, &h, br#"{"error":{"code":429,"message":"x"}}"#)
            .unwrap()
            .action,
        Fatal
    );
    // And it wins over a kind rule.
    let c = OpenRouterClassifier::new()
        .with_action(ProviderError, Retry)
        .with_status_action(StatusCode::INTERNAL_SERVER_ERROR, Fatal);
    assert_eq!(classify(&c, 500, &h, b"").unwrap().action, Fatal);
    assert_eq!(classify(&c, 502, &h, b"").unwrap().action, Retry);
}

#[test]
fn rate_limit_wait_instead_of_fallback() {
    let c = OpenRouterClassifier::new().with_action(RateLimited, Retry);
    let mut h = HeaderMap::new();
    h.insert("retry-after", "2".parse().unwrap());
    let v = classify(&c, 429, &h, b"").unwrap();
    assert_eq!(
        (v.action, v.retry_after),
        (Retry, Some(Duration::from_secs(2)))
    );
    // The upstream's `retryable: false` still stops same-model retries.
    let v = classify(
        &c,
        429,
        &h,
        br#"{"error":{"code":429,"message":"x","availability":{"retryable":false}}}"#,
    )
    .unwrap();
    assert_eq!(v.action, Fallback);
}

#[test]
fn override_health_counting() {
    let c = OpenRouterClassifier::new()
        .with_health(RateLimited, false)
        .with_health(ContentModerated, true);
    let h = HeaderMap::new();
    assert!(!classify(&c, 429, &h, b"").unwrap().counts_for_health);
    assert!(
        classify(&c, 403, &h, MODERATION.as_bytes())
            .unwrap()
            .counts_for_health
    );
    assert!(classify(&c, 500, &h, b"").unwrap().counts_for_health);
}

#[test]
fn flagged_input_never_shown() {
    let c = OpenRouterClassifier::new();
    let v = classify(&c, 403, &HeaderMap::new(), MODERATION.as_bytes()).unwrap();
    assert_eq!(
        v.body.as_ref().unwrap().metadata.flagged_input.as_deref(),
        Some("FLAGGED-SENTINEL")
    );
    let e = v.into_error().with_model("openai/gpt-4o");
    assert!(!format!("{e}").contains("FLAGGED-SENTINEL"));
    assert!(!format!("{e:?}").contains("FLAGGED-SENTINEL"));
    assert!(!format!("{e:#?}").contains("FLAGGED-SENTINEL"));
}
