//! Secrets an upstream echoes back in its error text, replaced before the text is kept.
//!
//! A provider that rejects a key often quotes it (`Invalid API key provided: Bearer
//! sk-or-v1-...`), and whatever an [`ErrorBody`](super::ErrorBody) holds reaches
//! `Display`, `Debug` and so log lines. Every text of an error body is scrubbed when it is
//! parsed and again when it is attached to an [`Error`](super::Error) (a body a custom
//! classifier built by hand), so no path skips it. Only error bodies pay: a success never
//! comes here.
//!
//! What becomes `[redacted]`:
//! * any `sk-or-` token (OpenRouter's keys), wherever it starts;
//! * any other `sk-` key of 20 or more characters (OpenAI, Anthropic and most providers'
//!   keys, which a provider's `metadata.raw` may quote for a bring-your-own-key call);
//! * `Bearer <credential>` (the whole `Authorization` value as a request sends it), for a
//!   credential of 8 or more token characters that is not a plain lowercase word, so the
//!   key of any upstream is covered when it is quoted with its scheme.
//!
//! And, once the fallback layer hands an error out of the stack, the exact
//! [`Credentials`] of the request wherever they appear, whatever their shape (a gateway's
//! own key, `mykey123`, echoed as `Invalid API key provided: mykey123`): the whole
//! `Authorization` value, the credential after its scheme, and an `x-api-key` value. The
//! fallback future holds the request anyway, so this costs nothing until an error leaves.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use super::Error;

/// What a secret is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// The header some clients (Anthropic's SDKs, for `/messages`) send the key in.
pub(crate) const API_KEY: &str = "x-api-key";

/// A character of a key (`sk-or-v1-0a1b...`).
fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

/// A character of a bearer credential (RFC 6750's token68, `=` padding included).
fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// The end of an `sk-` key starting at `i`, if one does.
fn key_at(b: &[u8], i: usize) -> Option<usize> {
    let rest = b.get(i..)?;
    if !rest.starts_with(b"sk-") {
        return None;
    }
    let end = i + 3 + rest[3..].iter().take_while(|&&c| is_key_char(c)).count();
    if rest.starts_with(b"sk-or-") {
        return Some(end);
    }
    // Other providers' keys: only at a word start and long enough, so prose ("a
    // desk-top", "task-based") is never touched.
    let at_word_start = i == 0 || !is_key_char(b[i - 1]);
    (at_word_start && end - i >= 23).then_some(end)
}

/// The end of `Bearer <credential>` starting at `i`, if one does.
fn bearer_at(b: &[u8], i: usize) -> Option<usize> {
    let word = b.get(i..i + 6)?;
    if !word.eq_ignore_ascii_case(b"bearer") || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
        return None;
    }
    let gap = b[i + 6..]
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    if gap == 0 {
        return None;
    }
    let start = i + 6 + gap;
    let mut end = start + b[start..].iter().take_while(|&&c| is_token68(c)).count();
    // A sentence's full stop is not part of the credential.
    while end > start && b[end - 1] == b'.' {
        end -= 1;
    }
    let cred = &b[start..end];
    let word_like = cred.iter().all(u8::is_ascii_lowercase);
    (cred.len() >= 8 && !word_like).then_some(end)
}

/// `text` with every secret replaced, or `None` when it holds none (no allocation).
pub(crate) fn scrubbed(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(j) = memchr::memchr3(b's', b'b', b'B', &b[i..]) {
        let at = i + j;
        let found = if b[at] == b's' {
            key_at(b, at)
        } else {
            bearer_at(b, at)
        };
        match found {
            Some(end) => {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..at]);
                o.push_str(REDACTED);
                copied = end;
                i = end;
            }
            None => i = at + 1,
        }
    }
    let mut o = out?;
    o.push_str(&text[copied..]);
    Some(o)
}

/// Replaces every secret in `text`.
pub(crate) fn scrub(text: &mut String) {
    if let Some(clean) = scrubbed(text) {
        *text = clean;
    }
}

/// The credentials a request carries, as an upstream would quote them back.
#[derive(Debug, Default)]
pub(crate) struct Credentials<'a> {
    /// Longest first (a whole `Bearer <key>` before the key alone); `len` are set.
    values: [&'a str; 3],
    len: usize,
}

impl<'a> Credentials<'a> {
    /// The `Authorization` value (whole, and the credential after its scheme) and the
    /// `x-api-key` value of `headers`; values that are not text cannot appear in an error
    /// text and are left out.
    pub(crate) fn of(headers: &'a HeaderMap) -> Self {
        Self::from_values(
            headers.get(http::header::AUTHORIZATION),
            headers.get(API_KEY),
        )
    }

    /// The same from the two header values.
    pub(crate) fn from_values(
        authorization: Option<&'a HeaderValue>,
        api_key: Option<&'a HeaderValue>,
    ) -> Self {
        let mut c = Credentials::default();
        let text = |v: Option<&'a HeaderValue>| v.and_then(|v| v.to_str().ok()).map(str::trim);
        if let Some(v) = text(authorization) {
            c.push(v);
            if let Some((_scheme, cred)) = v.split_once([' ', '\t']) {
                c.push(cred.trim());
            }
        }
        if let Some(v) = text(api_key) {
            c.push(v);
        }
        c.values[..c.len].sort_by_key(|v| std::cmp::Reverse(v.len()));
        c
    }

    fn push(&mut self, v: &'a str) {
        if !v.is_empty() && !self.values[..self.len].contains(&v) {
            self.values[self.len] = v;
            self.len += 1;
        }
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `text` with every credential (and every secret [`scrubbed`] finds) replaced, or
    /// `None` when it holds none.
    fn scrubbed(&self, text: &str) -> Option<String> {
        let mut out = scrubbed(text);
        for v in &self.values[..self.len] {
            let cur = out.as_deref().unwrap_or(text);
            if memchr::memmem::find(cur.as_bytes(), v.as_bytes()).is_some() {
                out = Some(cur.replace(v, REDACTED));
            }
        }
        out
    }

    fn scrub(&self, text: &mut String) {
        if let Some(clean) = self.scrubbed(text) {
            *text = clean;
        }
    }
}

/// A source error whose text (or its sources' text) quoted a secret: the chain's texts,
/// scrubbed. It replaces the original, which can then no longer be downcast.
#[derive(Debug)]
struct ScrubbedSource {
    text: String,
    source: Option<Box<ScrubbedSource>>,
}

impl std::fmt::Display for ScrubbedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for ScrubbedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// `err`'s chain with every secret replaced, or `None` when no text of it holds one.
fn scrubbed_chain(
    err: &(dyn std::error::Error + 'static),
    creds: &Credentials<'_>,
) -> Option<ScrubbedSource> {
    let mut texts = Vec::new();
    let mut found = false;
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        let clean = creds.scrubbed(&text);
        found |= clean.is_some();
        texts.push(clean.unwrap_or(text));
        cur = e.source();
    }
    if !found {
        return None;
    }
    texts.into_iter().rev().fold(None, |source, text| {
        Some(ScrubbedSource {
            text,
            source: source.map(Box::new),
        })
    })
}

impl Error {
    /// Replaces `creds` (and every secret [`scrubbed`] finds) in whatever upstream text
    /// this error holds: its body, detail and `source()` chain, and those of its attempts.
    pub(crate) fn scrub_credentials(&mut self, creds: &Credentials<'_>) {
        if creds.is_empty() {
            return;
        }
        let i = &mut *self.inner;
        if let Some(b) = &mut i.body {
            b.each_text(|t| creds.scrub(t));
        }
        if let Some(d) = &mut i.detail {
            creds.scrub(d);
        }
        if let Some(clean) = i.source.as_deref().and_then(|s| scrubbed_chain(s, creds)) {
            i.source = Some(Arc::new(clean));
        }
        for a in &mut i.attempts {
            a.error.scrub_credentials(creds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        scrubbed(text).unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn keys_and_bearer_credentials_are_redacted() {
        assert_eq!(
            s("Invalid API key provided: Bearer sk-or-v1-0123456789abcdef."),
            "Invalid API key provided: [redacted]."
        );
        assert_eq!(
            s("key sk-or-v1-abc is disabled"),
            "key [redacted] is disabled"
        );
        // Glued to other text, and the bare prefix.
        assert_eq!(s("x_sk-or-v1-abc,sk-or-"), "x_[redacted],[redacted]");
        assert_eq!(
            s("Incorrect API key provided: sk-proj-AbCdEf0123456789xyzw"),
            "Incorrect API key provided: [redacted]"
        );
        assert_eq!(
            s("authorization: bearer eyJhbGciOi.J9eyJzdWIi=="),
            "authorization: [redacted]"
        );
        assert_eq!(s("BEARER\tAbCdEfGh1"), "[redacted]");
    }

    #[test]
    fn prose_is_left_alone() {
        for text in [
            "Rate limit exceeded",
            "a task-based desk-top sk-short",
            "Missing Bearer authentication in header",
            "Bearer token",
            "bearerAbCdEf012345",
            "subscriber Bearer",
            "",
            "sk-",
        ] {
            assert_eq!(scrubbed(text), None, "{text}");
        }
    }

    #[test]
    fn a_requests_exact_credentials_are_redacted_wherever_an_error_holds_them() {
        use crate::error::{ErrorBody, ErrorKind};

        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Token  mykey123 "),
        );
        headers.insert("x-api-key", HeaderValue::from_static("other-key"));
        let creds = Credentials::of(&headers);
        assert_eq!(
            creds.values[..creds.len],
            ["Token  mykey123", "other-key", "mykey123"]
        );
        assert_eq!(
            creds
                .scrubbed("Token  mykey123 / mykey123, other-key sk-or-v1-x")
                .as_deref(),
            Some("[redacted] / [redacted], [redacted] [redacted]")
        );
        assert_eq!(creds.scrubbed("fine"), None);

        let body = ErrorBody::parse(
            br#"{"error":{"code":401,"message":"bad key mykey123","metadata":{"raw":"mykey123"}}}"#,
        )
        .unwrap();
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect failed")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let outer = Wrap(std::io::Error::other("dialing with other-key"));
        let attempt = Error::new(ErrorKind::Transport).with_source(outer);
        let mut e = Error::new(ErrorKind::Unauthorized)
            .with_body(body)
            .with_detail("saw mykey123")
            .with_attempts(vec![crate::AttemptRecord {
                model: "a/b".into(),
                index: 0,
                retry: 0,
                elapsed: std::time::Duration::ZERO,
                error: attempt,
            }]);
        e.scrub_credentials(&creds);
        assert_eq!(e.body().unwrap().message, "bad key [redacted]");
        assert_eq!(
            e.body().unwrap().metadata.raw.as_deref(),
            Some("[redacted]")
        );
        assert_eq!(e.detail(), Some("saw [redacted]"));
        let a = &e.attempts()[0].error;
        let src = std::error::Error::source(a).unwrap();
        assert_eq!(src.to_string(), "connect failed");
        assert_eq!(src.source().unwrap().to_string(), "dialing with [redacted]");
        assert!(src.source().unwrap().source().is_none());
        assert!(!format!("{e} {e:?}").contains("key mykey123"));

        // No credential: nothing to do; a source without one is kept as it is.
        let mut plain = Error::new(ErrorKind::Transport)
            .with_source(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        plain.scrub_credentials(&creds);
        let src = std::error::Error::source(&plain).unwrap();
        assert!(src.downcast_ref::<std::io::Error>().is_some());
        assert!(Credentials::of(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn multibyte_text_around_a_key() {
        assert_eq!(s("clé sk-or-v1-é ok"), "clé [redacted]é ok");
    }
}
