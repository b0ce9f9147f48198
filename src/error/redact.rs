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

/// What a secret is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

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
    fn multibyte_text_around_a_key() {
        assert_eq!(s("clé sk-or-v1-é ok"), "clé [redacted]é ok");
    }
}
