//! Oracle for the classifier ([`OpenRouterClassifier`] over an [`Outcome`] built from an
//! arbitrary status, headers and body):
//!
//! * it never panics, and neither do the [`Error`]'s `Display` and `Debug`;
//! * the verdict is a pure function of the input: the same answer twice (the wait hint
//!   may move with the clock when it is an HTTP date or a reset time, so it is compared
//!   within a second);
//! * the error body it keeps is [`ErrorBody::parse`] of the body, and a 200 carrying an
//!   error with an HTTP status `code` gets the same answer as that error sent alone
//!   (`{"error": ...}` reparsed) with that status;
//! * a stream failure or a 2xx body that is no answer ([`Outcome::Body`]) is never a success;
//! * no `sk-or-` key in the body reaches the error's `Display` or `Debug`.
//!
//! Shared by the fuzz target `classify` and the stable property test
//! `tests/fuzz_oracles.rs`.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use tower_openrouter::classify::{
    BodyFailure, Classification, ClassifyOutcome, Outcome, StreamFailure,
};
use tower_openrouter::error::ErrorBody;
use tower_openrouter::{Action, ErrorKind, JsonBody, OpenRouterClassifier};

/// Header names the classifier reads, and one it does not.
pub const HEADERS: [&str; 4] = [
    "retry-after",
    "x-ratelimit-reset",
    "content-type",
    "x-other",
];

/// Fuzz entry: `status(2 bytes) (0xFF header)* 0xFF body`, a header being
/// `name-index value`; with fewer parts, no headers or no body.
pub fn fuzz(data: &[u8]) {
    let mut parts: Vec<&[u8]> = data.split(|&b| b == 0xFF).collect();
    let head = parts.remove(0);
    let status = match head {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        [a] => u16::from(*a),
        [] => 200,
    };
    let body = parts.pop().unwrap_or_default();
    let headers: Vec<(String, Vec<u8>)> = parts
        .iter()
        .filter_map(|p| {
            let (&k, v) = p.split_first()?;
            Some((HEADERS[k as usize % HEADERS.len()].to_owned(), v.to_vec()))
        })
        .collect();
    check(status, &headers, body);
}

/// The classifiers checked: the defaults, and one with an override of each kind.
pub fn classifiers() -> [OpenRouterClassifier; 2] {
    [
        OpenRouterClassifier::new(),
        OpenRouterClassifier::new()
            .with_action(ErrorKind::RateLimited, Action::Retry)
            .with_status_action(StatusCode::FORBIDDEN, Action::Fatal)
            .with_health(ErrorKind::ModelNotFound, false),
    ]
}

/// The check (see the module docs). `status` is folded into 100..=999; headers that are
/// not valid HTTP are left out. Panics on a difference.
pub fn check(status: u16, headers: &[(String, Vec<u8>)], body: &[u8]) {
    let status = StatusCode::from_u16(100 + status % 900).expect("100..=999 is a status");
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_bytes(v)) {
            map.append(k, v);
        }
    }
    for c in classifiers() {
        let verdict = c.classify(Outcome::Response {
            status,
            headers: &map,
            body,
        });
        let again = c.classify(Outcome::Response {
            status,
            headers: &map,
            body,
        });
        same("the same input twice", verdict.as_ref(), again.as_ref());
        if !status.is_success() {
            let v = verdict
                .as_ref()
                .expect("an error status is never a success");
            assert_eq!(v.body, ErrorBody::parse(body), "the body kept");
        }
        if status.is_success() {
            if let Some(failed) = says_error(body) {
                assert_eq!(
                    verdict.is_some(),
                    failed,
                    "a {status} whose body says failed={failed}: b\"{}\"",
                    body.escape_ascii()
                );
            }
        }
        if let Some(v) = &verdict {
            if status.is_success() {
                as_if_sent_alone(&c, v, &map, body);
            }
            shows_no_key(v, body);
        }
        // Streams and cut bodies never panic either.
        for failure in [StreamFailure::Ended, StreamFailure::Stalled] {
            for after_content in [false, true] {
                let v = c.classify(Outcome::Stream {
                    failure,
                    after_content,
                });
                assert!(v.is_some(), "a stream failure is never a success");
            }
        }
        for failure in [
            BodyFailure::NotJson,
            BodyFailure::NotEventStream,
            BodyFailure::Truncated,
            BodyFailure::TooLarge,
        ] {
            let v = c.classify(Outcome::Body { status, failure });
            assert!(v.is_some(), "a 2xx that is no answer is never a success");
        }
        let cut = &body[..body.len() / 2];
        let _ = c.classify(Outcome::Response {
            status,
            headers: &map,
            body: cut,
        });
    }
}

/// Two verdicts agree: kind, action, health, status, body; the hint within a second.
fn same(what: &str, a: Option<&Classification>, b: Option<&Classification>) {
    let (a, b) = match (a, b) {
        (None, None) => return,
        (Some(a), Some(b)) => (a, b),
        _ => panic!("{what}: {a:?} vs {b:?}"),
    };
    assert_eq!(
        (a.kind, a.action, a.counts_for_health, a.status, &a.body),
        (b.kind, b.action, b.counts_for_health, b.status, &b.body),
        "{what}"
    );
    let gap = match (a.retry_after, b.retry_after) {
        (Some(x), Some(y)) => x.abs_diff(y),
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => Duration::ZERO,
    };
    assert!(
        gap <= Duration::from_secs(1),
        "{what}: hints {a:?} vs {b:?}"
    );
}

/// Whether a 200's body, read by serde_json, says it failed: a top-level `error` that is
/// not `null`, or a choice whose `finish_reason` is `"error"`. `None`: the oracle cannot
/// say (not JSON for serde_json; or a key on the error's path given twice, a top-level
/// `error` or `choices`, a choice's `error` or `finish_reason`, which the classifier reads
/// as no error rather than guess which one counts).
fn says_error(body: &[u8]) -> Option<bool> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let index = |text: &[u8]| JsonBody::parse(bytes::Bytes::copy_from_slice(text)).ok();
    let twice = |j: &JsonBody, k: &str| j.keys().filter(|x| x == k).count() > 1;
    if let Some(top) = index(body) {
        if twice(&top, "error") || twice(&top, "choices") {
            return None;
        }
        let choices = top
            .raw("choices")
            .and_then(|raw| serde_json::from_str::<Vec<&serde_json::value::RawValue>>(raw).ok());
        for c in choices.iter().flatten() {
            if index(c.get().as_bytes())
                .is_some_and(|c| twice(&c, "error") || twice(&c, "finish_reason"))
            {
                return None;
            }
        }
    }
    let top = doc.get("error").is_some_and(|e| !e.is_null());
    let choice = doc
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.get("finish_reason").and_then(Value::as_str) == Some("error"))
        });
    Some(top || choice)
}

/// The error a 200 carries: its top-level `error`, else the `error` of the first choice
/// whose `finish_reason` is `"error"` (a `null` is no error).
fn carried_error(body: &[u8]) -> Option<Value> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    match doc.get("error") {
        Some(Value::Null) | None => doc
            .get("choices")?
            .as_array()?
            .iter()
            .find(|c| c.get("finish_reason").and_then(Value::as_str) == Some("error"))?
            .get("error")
            .filter(|e| !e.is_null())
            .cloned(),
        Some(e) => Some(e.clone()),
    }
}

/// A 200 whose error has an HTTP status `code` is answered as that error sent alone with
/// that status.
fn as_if_sent_alone(
    c: &OpenRouterClassifier,
    v: &Classification,
    headers: &HeaderMap,
    body: &[u8],
) {
    let Some(status) = v.status.filter(|s| *s != StatusCode::OK) else {
        return;
    };
    // The classifier's probe skips the fields it does not read without checking them (an
    // invalid UTF-8 byte in a string, say): such a body still counts as carrying its
    // error, and serde_json cannot reparse it.
    if serde_json::from_slice::<Value>(body).is_err() {
        return;
    }
    let err = carried_error(body).expect("a 200 with an error status carries an error");
    let alone = serde_json::to_vec(&serde_json::json!({ "error": err })).unwrap();
    let direct = c.classify(Outcome::Response {
        status,
        headers,
        body: &alone,
    });
    same(
        "a 200 carrying an error vs the error alone",
        Some(v),
        direct.as_ref(),
    );
}

/// The error's `Display` and `Debug` hold no `sk-or-` key (and do not panic).
fn shows_no_key(v: &Classification, body: &[u8]) {
    let e = v.clone().into_error();
    let shown = format!("{e} {e:?} {e:#?}");
    assert!(
        !shown.contains("sk-or-"),
        "a key reached the error: {shown} (body b\"{}\")",
        body.escape_ascii()
    );
}
