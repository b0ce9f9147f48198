//! The classifier, the error-body parser and the wait-hint parsers never panic, whatever
//! the bytes and header values.

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use tower_openrouter::classify::{
    parse_rate_limit_reset, parse_retry_after, retry_after_from_headers, ClassifyOutcome,
    OpenRouterClassifier, Outcome,
};
use tower_openrouter::error::ErrorBody;

/// JSON documents shaped like OpenRouter bodies, with arbitrary leaves.
fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)),
        ".{0,40}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "error",
            "overloaded_error",
            "provider_overloaded",
            "context length",
            "429",
            "flagged",
            "invalid_request_error",
            "not a valid model ID",
            "3",
            "-1",
            "1e400",
        ])
        .prop_map(serde_json::Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let keys = prop::sample::select(vec![
        "error",
        "code",
        "message",
        "metadata",
        "raw",
        "provider_name",
        "reasons",
        "flagged_input",
        "error_type",
        "provider_code",
        "availability",
        "retryable",
        "retry_after",
        "requested_models",
        "type",
        "choices",
        "finish_reason",
        "model",
        "provider",
    ]);
    json_leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "[0-9]{0,30}".prop_map(String::into_bytes),
        "[0-9.]{0,12}".prop_map(String::into_bytes),
        "(Mon|Sun|Xyz), [0-9]{1,3} (Nov|Jan|Foo) [0-9]{1,6} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
            .prop_map(String::into_bytes),
    ]
}

fn headers(retry_after: &[u8], reset: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(retry_after) {
        h.insert("retry-after", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(reset) {
        h.insert("x-ratelimit-reset", v);
    }
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn classifier_never_panics_on_bytes(
        status in 100u16..1000,
        body in prop::collection::vec(any::<u8>(), 0..256),
        ra in header_value(),
        reset in header_value(),
    ) {
        let c = OpenRouterClassifier::new();
        let h = headers(&ra, &reset);
        let status = StatusCode::from_u16(status).unwrap();
        let v = c.classify(Outcome::Response { status, headers: &h, body: &body });
        if !status.is_success() {
            prop_assert!(v.is_some());
        }
    }

    #[test]
    fn classifier_never_panics_on_json(status in prop::sample::select(vec![200u16, 400, 403, 413, 429, 500, 502, 503, 529, 418]), doc in json_value()) {
        let bytes = serde_json::to_vec(&doc).unwrap();
        let c = OpenRouterClassifier::new();
        let _ = c.classify(Outcome::Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: &HeaderMap::new(),
            body: &bytes,
        });
        let _ = ErrorBody::parse(&bytes);
    }

    #[test]
    fn error_body_parse_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ErrorBody::parse(&body);
    }

    #[test]
    fn retry_after_parsers_never_panic(ra in header_value(), reset in header_value()) {
        let _ = parse_retry_after(&ra);
        let _ = parse_rate_limit_reset(&reset);
        let _ = retry_after_from_headers(&headers(&ra, &reset));
    }

    #[test]
    fn retry_after_seconds_round_trip(secs in 0u64..1_000_000) {
        prop_assert_eq!(
            parse_retry_after(secs.to_string().as_bytes()),
            Some(std::time::Duration::from_secs(secs))
        );
    }
}
