//! The facts of a success body beyond `model` and `provider` (finish reasons, `usage`),
//! found by byte scans next to the probe, so the body is still parsed only once.
//!
//! A JSON string cannot hold an unescaped `"`, so `"finish_reason":` and `"usage":` in the
//! bytes are keys, never text of the answer.

use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;
use serde::Deserialize;

use crate::extensions::{UpstreamInfo, Usage};

/// Fills `info`'s finish reasons and usage from the success body.
pub(crate) fn read(body: &[u8], info: &mut UpstreamInfo) {
    info.finish_reasons = finish_reasons(body);
    info.usage = usage(body);
}

static FINISH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
static STOP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"stop_reason\""));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));

/// The finish reasons most answers carry, shared instead of allocated per response.
static KNOWN: LazyLock<[Arc<str>; 6]> = LazyLock::new(|| {
    [
        "stop",
        "length",
        "tool_calls",
        "content_filter",
        "error",
        "end_turn",
    ]
    .map(Arc::from)
});

/// The value after the key that ends at `at`: the bytes after `:` (and blanks).
fn value_at(body: &[u8], at: usize) -> Option<&[u8]> {
    let rest = body.get(at..)?;
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    Some(rest.trim_ascii_start())
}

/// A string value at the start of `v` (no escapes: finish reasons are plain words).
fn plain_string(v: &[u8]) -> Option<&str> {
    let v = v.strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', v)?;
    if v[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&v[..end]).ok()
}

/// Each choice's `finish_reason` (or the `/messages` `stop_reason`), in order; `null`s
/// are left out.
pub(crate) fn finish_reasons(body: &[u8]) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    for finder in [&*FINISH, &*STOP] {
        for at in finder.find_iter(body) {
            let Some(reason) = value_at(body, at + finder.needle().len()).and_then(plain_string)
            else {
                continue;
            };
            let known = KNOWN.iter().find(|k| &***k == reason);
            out.push(known.cloned().unwrap_or_else(|| Arc::from(reason)));
        }
        if !out.is_empty() {
            break;
        }
    }
    out
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    #[serde(default)]
    cost: Option<f64>,
}

/// The `usage` object of the body (its first; a forward scan has a SIMD prefilter, a
/// reverse one does not, and a body has one `usage`).
pub(crate) fn usage(body: &[u8]) -> Option<Usage> {
    let at = USAGE.find(body)?;
    let v = value_at(body, at + USAGE.needle().len())?;
    // One value, whatever follows it.
    let raw = serde_json::Deserializer::from_slice(v)
        .into_iter::<RawUsage>()
        .next()?
        .ok()?;
    Some(Usage {
        input_tokens: raw.prompt_tokens,
        output_tokens: raw.completion_tokens,
        cost: raw.cost.filter(|c| c.is_finite()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"id":"gen-1","model":"openai/gpt-4o","provider":"OpenAI","choices":[{"index":0,"finish_reason":"stop","native_finish_reason":"end","message":{"content":"he said \"finish_reason\": \"usage\":{\"prompt_tokens\":99}"}},{"finish_reason" : "length"},{"finish_reason":null}],"usage":{"prompt_tokens":10,"completion_tokens":9,"total_tokens":19,"cost":0.00042,"prompt_tokens_details":{"cached_tokens":0}}}"#;

    #[test]
    fn reads_finish_reasons_and_usage_not_text() {
        let reasons = finish_reasons(BODY.as_bytes());
        assert_eq!(
            reasons.iter().map(|r| &**r).collect::<Vec<_>>(),
            ["stop", "length"]
        );
        assert_eq!(
            usage(BODY.as_bytes()),
            Some(Usage {
                input_tokens: Some(10),
                output_tokens: Some(9),
                cost: Some(0.00042)
            })
        );
    }

    #[test]
    fn messages_shape() {
        let body = br#"{"id":"msg_1","type":"message","stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":4}}"#;
        assert_eq!(&*finish_reasons(body)[0], "end_turn");
        let u = usage(body).unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cost),
            (Some(3), Some(4), None)
        );
    }

    #[test]
    fn nothing_when_absent_or_malformed() {
        assert!(finish_reasons(br#"{"choices":[]}"#).is_empty());
        assert_eq!(usage(br#"{"choices":[]}"#), None);
        assert_eq!(usage(br#"{"usage":"many"}"#), None);
        assert_eq!(usage(br#"{"usage":{"prompt_tokens":-1}}"#), None);
        assert_eq!(usage(br#"{"usage""#), None);
    }
}
