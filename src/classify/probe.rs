//! The success-body probe: the facts of a non-streaming 2xx body ([`UpstreamInfo`]), and
//! in the same one pass whether the body is whole JSON at all, by a walk over its bytes
//! (no `Value`, no serde visitor on the happy path).

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::BodyFailure;
use crate::extensions::UpstreamInfo;

/// The facts of a success body ([`UpstreamInfo`], `None` when it names neither `model`
/// nor `provider`), or why the body is no answer: not JSON, or JSON cut short.
///
/// One walk of the top-level object: each member's key is read, the `id`, `model` and
/// `provider` string values are borrowed from the body (decoded only when escaped), and
/// every other value is skipped by counting brackets, its strings jumped over with
/// `memchr`. Nothing between them is decoded or checked beyond what tells a whole body
/// from a cut one: a strict prefix of a JSON object never closes its outer `{`, so every
/// cut is found, whatever byte it falls after, and more than whitespace after the close
/// is not JSON. (The walk was also cheaper than the serde visitor it replaced, which
/// stopped after `model` and `provider` and could not tell a cut body.) The first
/// `model` and `provider` are kept (OpenRouter sends one of each); what only observers
/// need (`id`, finish reasons, `usage`, the last two found by byte scans in `facts`) is
/// filled only when `observed`: off the happy path otherwise.
///
/// A body that is JSON but not an object, or whose `model` or `provider` is not a string
/// (or `null`, or a string that does not decode), is whole JSON without facts (`Ok(None)`;
/// a body that is not an object is judged by serde_json, off the happy path).
pub(crate) fn upstream_info(
    body: &[u8],
    observed: bool,
) -> Result<Option<UpstreamInfo>, BodyFailure> {
    let mut found = Found::default();
    let mut walk = Walk { body, i: 0 };
    match walk.peek() {
        Ok(b'{') => walk.object(&mut found)?,
        Ok(_) => return whole_json(body).map(|()| None),
        Err(_) => return Err(BodyFailure::NotJson),
    }
    if found.odd || (found.model.is_none() && found.provider.is_none()) {
        return Ok(None);
    }
    let mut info = UpstreamInfo {
        model: found.model.map(|m| Arc::from(&*m)),
        provider: found.provider.map(|m| Arc::from(&*m)),
        ..UpstreamInfo::default()
    };
    if observed {
        info.id = found.id.map(|m| Arc::from(&*m));
        super::facts::read(body, &mut info);
    }
    Ok(Some(info))
}

/// What the walk found.
#[derive(Default)]
struct Found<'b> {
    id: Option<Cow<'b, str>>,
    model: Option<Cow<'b, str>>,
    provider: Option<Cow<'b, str>>,
    /// A fact was something other than a string or `null`, or did not decode.
    odd: bool,
}

/// Which fact a top-level key names.
#[derive(Clone, Copy)]
enum Fact {
    Id,
    Model,
    Provider,
}

impl<'b> Found<'b> {
    /// The fact the key `quoted` (its token, quotes included) names, when it is still to
    /// be read.
    fn wants(&self, quoted: &[u8], escaped: bool) -> Option<Fact> {
        let decoded;
        let key = if escaped {
            decoded = decode(quoted, true)?;
            decoded.as_bytes()
        } else {
            // Compared as bytes: the names are ASCII.
            &quoted[1..quoted.len() - 1]
        };
        let (fact, slot) = match key {
            b"id" => (Fact::Id, &self.id),
            b"model" => (Fact::Model, &self.model),
            b"provider" => (Fact::Provider, &self.provider),
            _ => return None,
        };
        slot.is_none().then_some(fact)
    }

    fn set(&mut self, fact: Fact, value: Option<Cow<'b, str>>) {
        match fact {
            Fact::Id => self.id = value,
            Fact::Model => self.model = value,
            Fact::Provider => self.provider = value,
        }
    }
}

/// A walk over a body, `i` the next byte.
struct Walk<'b> {
    body: &'b [u8],
    i: usize,
}

impl<'b> Walk<'b> {
    /// The next byte that is not whitespace (`i` left on it); `Truncated` at the end.
    fn peek(&mut self) -> Result<u8, BodyFailure> {
        while let Some(&b) = self.body.get(self.i) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Ok(b);
            }
            self.i += 1;
        }
        Err(BodyFailure::Truncated)
    }

    /// The top-level object, `i` on its `{`: its facts into `found`, and nothing but
    /// whitespace after its `}`.
    fn object(&mut self, found: &mut Found<'b>) -> Result<(), BodyFailure> {
        self.i += 1;
        if self.peek()? != b'}' {
            loop {
                self.member(found)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => break,
                    _ => return Err(BodyFailure::NotJson),
                }
            }
        }
        self.i += 1;
        match self.body[self.i..].trim_ascii().is_empty() {
            true => Ok(()),
            false => Err(BodyFailure::NotJson),
        }
    }

    /// One `"key": value` member, `i` before its key; `i` after its value.
    fn member(&mut self, found: &mut Found<'b>) -> Result<(), BodyFailure> {
        if self.peek()? != b'"' {
            return Err(BodyFailure::NotJson);
        }
        let (start, end, escaped) = self.string()?;
        let fact = found.wants(&self.body[start - 1..end + 1], escaped);
        if self.peek()? != b':' {
            return Err(BodyFailure::NotJson);
        }
        self.i += 1;
        let Some(fact) = fact else {
            return self.skip_value();
        };
        match self.peek()? {
            b'"' => {
                let (start, end, escaped) = self.string()?;
                let text = decode(&self.body[start - 1..end + 1], escaped);
                found.odd |= text.is_none();
                found.set(fact, text);
            }
            b'n' if self.body[self.i..].starts_with(b"null") => self.i += 4,
            _ => {
                found.odd = true;
                self.skip_value()?;
            }
        }
        Ok(())
    }

    /// A string, `i` on its opening quote: the span of its text and whether it has an
    /// escape; `i` after its closing quote.
    fn string(&mut self) -> Result<(usize, usize, bool), BodyFailure> {
        let start = self.i + 1;
        let (end, escaped) = string_end(self.body, start).ok_or(BodyFailure::Truncated)?;
        self.i = end + 1;
        Ok((start, end, escaped))
    }

    /// Any value, `i` on it (after whitespace); `i` after it. A scalar is skipped to the
    /// next delimiter (its spelling is not checked, only that it starts like a JSON one);
    /// an array or object to its matching close.
    fn skip_value(&mut self) -> Result<(), BodyFailure> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                self.i = close_of(self.body, self.i + 1)?;
                Ok(())
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let rest = &self.body[self.i..];
                let len = rest
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                    .ok_or(BodyFailure::Truncated)?;
                self.i += len;
                Ok(())
            }
            _ => Err(BodyFailure::NotJson),
        }
    }
}

/// The offset after the bracket that closes the array or object whose contents start at
/// `from` (`Truncated`: the body ends first). Only strings and brackets are read.
fn close_of(body: &[u8], from: usize) -> Result<usize, BodyFailure> {
    let mut depth = 1usize;
    let mut i = from;
    while let Some(&b) = body.get(i) {
        if !BRACKET_OR_QUOTE[usize::from(b)] {
            i += 1;
            continue;
        }
        match b {
            b'"' => i = string_end(body, i + 1).ok_or(BodyFailure::Truncated)?.0,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(BodyFailure::Truncated)
}

/// The bytes [`close_of`] stops at.
static BRACKET_OR_QUOTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0;
    let stops = *b"\"{[}]";
    while k < stops.len() {
        t[stops[k] as usize] = true;
        k += 1;
    }
    t
};

/// How far a string's text is searched in the walk's own loop before `memchr` takes over:
/// most keys and values are shorter, and a `memchr` call costs more than they do.
const SHORT: usize = 24;

/// The offset of the closing quote of the string whose text starts at `i`, and whether
/// the text has an escape (`None`: the body ends first). The first [`SHORT`] bytes are
/// searched 8 at a time in a `u64`, the rest of a long text with `memchr`.
#[inline(always)]
fn string_end(body: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        if i >= body.len() {
            return None;
        }
        let short = body.len().min(i.checked_add(SHORT)?);
        loop {
            if i + 8 > short {
                while i < short && body[i] != b'"' && body[i] != b'\\' {
                    i += 1;
                }
                break;
            }
            let word = u64::from_le_bytes(body[i..i + 8].try_into().ok()?);
            let hits = bytes_eq(word, b'"') | bytes_eq(word, b'\\');
            if hits != 0 {
                // Little-endian: the lowest set bit is in the first such byte.
                i += (hits.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        if i == short {
            i += memchr::memchr2(b'"', b'\\', body.get(i..)?)?;
        }
        if body[i] == b'"' {
            return Some((i, escaped));
        }
        // A backslash and the byte it escapes.
        escaped = true;
        i += 2;
    }
}

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` equal to `c`, exactly (no false positives).
#[inline(always)]
fn bytes_eq(word: u64, c: u8) -> u64 {
    let x = word ^ (LOW * u64::from(c));
    // A byte's high bit survives iff the byte of `x` is zero.
    !(((x & !HIGH).wrapping_add(!HIGH)) | x) & HIGH
}

/// A string token's text (`quoted` includes the quotes): borrowed when it has no escape,
/// `None` when it does not decode (not UTF-8, a bad escape).
fn decode(quoted: &[u8], escaped: bool) -> Option<Cow<'_, str>> {
    if escaped {
        serde_json::from_slice::<String>(quoted)
            .ok()
            .map(Cow::Owned)
    } else {
        std::str::from_utf8(&quoted[1..quoted.len() - 1])
            .ok()
            .map(Cow::Borrowed)
    }
}

/// Whether `body` is one whole JSON value (of any type), followed by whitespace only.
fn whole_json(body: &[u8]) -> Result<(), BodyFailure> {
    let mut de = serde_json::Deserializer::from_slice(body);
    IgnoredAny::deserialize(&mut de)
        .and_then(|_| de.end())
        .map_err(|e| {
            if e.is_eof() {
                BodyFailure::Truncated
            } else {
                BodyFailure::NotJson
            }
        })
}

#[cfg(test)]
mod tests {
    use super::upstream_info;
    use crate::classify::BodyFailure::{self, NotJson, Truncated};

    type Facts = Option<(Option<String>, Option<String>)>;

    fn info(body: &str) -> Result<Facts, BodyFailure> {
        upstream_info(body.as_bytes(), true).map(|i| {
            i.map(|i| {
                (
                    i.model.map(|m| m.to_string()),
                    i.provider.map(|p| p.to_string()),
                )
            })
        })
    }

    fn some(model: Option<&str>, provider: Option<&str>) -> Result<Facts, BodyFailure> {
        Ok(Some((
            model.map(str::to_owned),
            provider.map(str::to_owned),
        )))
    }

    #[test]
    fn reads_model_and_provider_wherever_they_are() {
        let tail = r#""choices":[{"message":{"content":"{\"model\":\"no\"}","model":"nested"}}],"usage":{"total_tokens":3}"#;
        let first =
            format!(r#"{{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o",{tail}}}"#);
        assert_eq!(info(&first), some(Some("openai/gpt-4o"), Some("OpenAI")));
        let last = format!(r#"{{"id":"gen-1",{tail},"model":"a/b","provider":"P"}}"#);
        assert_eq!(info(&last), some(Some("a/b"), Some("P")));
        assert_eq!(
            info(&format!(r#"{{{tail},"model":"a/b"}}"#)),
            some(Some("a/b"), None)
        );
        assert_eq!(
            info(r#"{"provider":"P","model":null}"#),
            some(None, Some("P"))
        );
        assert_eq!(info(r#"{"model":"a\/b\u0021"}"#), some(Some("a/b!"), None));
        assert_eq!(
            info(" \n{\"model\":\"a/b\",\"provider\":\"P\",\"x\":[1,{\"y\":null}]}\n"),
            some(Some("a/b"), Some("P"))
        );
    }

    #[test]
    fn a_cut_body_is_truncated_wherever_it_is_cut() {
        let whole = r#"{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o","choices":[{"message":{"content":"Hi"}}],"usage":{"total_tokens":3}}"#;
        assert_eq!(info(whole), some(Some("openai/gpt-4o"), Some("OpenAI")));
        // Every strict prefix that has begun, before or after the two facts, and one cut
        // just after a nested object closes.
        for cut in 1..whole.len() {
            assert_eq!(info(&whole[..cut]), Err(Truncated), "cut at {cut}");
        }
        assert_eq!(info(r#"{"model":42,"choices":["#), Err(Truncated));
        assert_eq!(info(r#"[1,2"#), Err(Truncated));
    }

    #[test]
    fn long_texts_escapes_and_brackets_in_strings() {
        let long = "x".repeat(70);
        let whole = format!(
            r#"{{"provider":"P","model":"m","choices":[{{"message":{{"content":"{long}\"}}]{{[\\{long}\u00e9"}}}}],"n":[1,-2.5e3,true,false,null,{{}},[]]}}"#
        );
        assert_eq!(info(&whole), some(Some("m"), Some("P")));
        for cut in 1..whole.len() {
            assert_eq!(info(&whole[..cut]), Err(Truncated), "cut at {cut}");
        }
        // The facts themselves long and escaped.
        let body = format!(r#"{{"model":"{long}\/{long}","provider":"\u0050"}}"#);
        let m = format!("{long}/{long}");
        assert_eq!(info(&body), some(Some(&m), Some("P")));
    }

    #[test]
    fn whole_json_without_facts_is_no_failure() {
        assert_eq!(info(r#"{"choices":[]}"#), Ok(None));
        assert_eq!(info(r#"{"model":42,"provider":"P"}"#), Ok(None));
        assert_eq!(info(r#"["model","a/b"]"#), Ok(None));
        assert_eq!(info(r#""text""#), Ok(None));
    }

    #[test]
    fn what_is_not_json() {
        for body in [
            "",
            "  \r\n",
            "<html><body>Bad gateway</body></html>",
            r#"{"model":"a/b"} trailing"#,
            r#"{"model":"a/b","provider":"P"}<html>"#,
            r#"{"model":42,"x":1 <html>"#,
            "OK",
        ] {
            assert_eq!(info(body), Err(NotJson), "{body:?}");
        }
    }
}
