//! A one-pass index of a JSON object's top-level keys, and byte-exact edits of them.
//!
//! [`JsonBody`] parses a request body once (serde_json, borrowing each top-level value as a
//! `&RawValue`, no `Value` tree) and records where every top-level key and value starts and
//! ends. Edits then build the new body from the original bytes around the changed spans:
//! every other byte (whitespace, escapes, key order, nested objects with their own
//! `"model"` keys) stays exactly as the caller wrote it, and each edit allocates exactly one
//! buffer of the final size.
//!
//! Keys are compared after unescaping (`"mod\u0065l"` is `model`); when a key occurs more
//! than once the last occurrence wins, as in `JSON.parse` and `serde_json`. (The check a
//! generation request gets, [`JsonBody::parse_with_model`], refuses a second `model`.)
//!
//! ```
//! use bytes::Bytes;
//! use serde_json::value::RawValue;
//! use tower_openrouter::body::{edit_top_level, rewrite_model, Edit};
//! use tower_openrouter::JsonBody;
//!
//! let body = Bytes::from_static(br#"{ "messages": [{"role":"user","content":"hi"}], "model" : "a/b" }"#);
//! assert_eq!(
//!     rewrite_model(&body, "c/d")?,
//!     &br#"{ "messages": [{"role":"user","content":"hi"}], "model" : "c/d" }"#[..]
//! );
//!
//! // Parse once, rewrite per attempt.
//! let json = JsonBody::parse_with_model(body.clone())?;
//! assert_eq!(json.model().as_deref(), Some("a/b"));
//! assert_eq!(
//!     json.with_model_and_models("x/y", ["x/y", "z/w"])?,
//!     &br#"{ "messages": [{"role":"user","content":"hi"}], "model" : "x/y", "models" : ["x/y","z/w"] }"#[..]
//! );
//!
//! // General top-level edits.
//! let provider = RawValue::from_string(r#"{"sort":"price"}"#.to_owned())?;
//! let edited = edit_top_level(&body, &[Edit::Set("provider", &provider), Edit::Remove("messages")])?;
//! assert_eq!(edited, &br#"{ "model" : "a/b", "provider" : {"sort":"price"} }"#[..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::extensions::{has_escape, JsonEntry as Entry, JsonIndex as Index};
use crate::{Error, ErrorKind, JsonBody};

/// One change to a top-level member, for [`JsonBody::edit`] and [`edit_top_level`].
///
/// When the same key appears in several edits of one call, the last edit wins.
#[derive(Clone, Copy, Debug)]
pub enum Edit<'a> {
    /// Sets the key to this raw JSON value: replaces the value of its last occurrence, or
    /// appends the member before the closing `}` when the key is absent.
    Set(&'a str, &'a RawValue),
    /// Sets the key to this string (JSON-escaped), like [`Edit::Set`].
    SetString(&'a str, &'a str),
    /// Removes every occurrence of the key (nothing happens when it is absent).
    Remove(&'a str),
}

impl Edit<'_> {
    fn key(&self) -> &str {
        match self {
            Edit::Set(k, _) | Edit::SetString(k, _) | Edit::Remove(k) => k,
        }
    }

    fn value(&self) -> Option<Val<'_>> {
        match *self {
            Edit::Set(_, raw) => Some(Val::Raw(raw.get())),
            Edit::SetString(_, s) => Some(Val::Str(s)),
            Edit::Remove(_) => None,
        }
    }
}

/// Replaces the top-level `model` of a JSON object body with `model`; every other byte is
/// kept. Parses the body; use [`JsonBody::with_model`] to reuse one parse for many
/// rewrites.
///
/// Errors ([`ErrorKind::InvalidBody`]): the body is not a JSON object, or has no
/// top-level `model`.
pub fn rewrite_model(body: &Bytes, model: &str) -> Result<Bytes, Error> {
    JsonBody::parse(body.clone())?.with_model(model)
}

/// Applies top-level edits to a JSON object body, touching only the edited members (see
/// [`JsonBody::edit`]).
///
/// Errors ([`ErrorKind::InvalidBody`]): the body is not a JSON object.
pub fn edit_top_level(body: &Bytes, edits: &[Edit<'_>]) -> Result<Bytes, Error> {
    Ok(JsonBody::parse(body.clone())?.edit(edits))
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidBody).with_detail(detail)
}

impl JsonBody {
    /// Parses `bytes` as a JSON object and indexes its top-level members.
    ///
    /// Errors ([`ErrorKind::InvalidBody`], the detail says which, never echoing the body):
    /// not valid JSON, or valid JSON that is not an object.
    pub fn parse(bytes: Bytes) -> Result<Self, Error> {
        let index = index(&bytes)?;
        Ok(JsonBody {
            bytes,
            index: Arc::new(index),
        })
    }

    /// Like [`JsonBody::parse`], and also checks what OpenRouter's generation endpoints
    /// need: exactly one top-level `model`, a string that decodes (no lone surrogate such
    /// as `"\udc00"`), and a `stream` that, when present, is a boolean.
    ///
    /// A second `model` key is an error rather than "the last one wins": the fallback
    /// rewrites one span, and a body read differently by two parsers must not reach the
    /// upstream. A `"stream": "yes"` would be read as "not streamed" here and as
    /// something else upstream.
    pub fn parse_with_model(bytes: Bytes) -> Result<Self, Error> {
        let json = Self::parse(bytes)?;
        json.check_model()?;
        json.check_stream()?;
        Ok(json)
    }

    fn check_model(&self) -> Result<(), Error> {
        let Some(i) = self.index.model else {
            return Err(invalid("the request body has no top-level \"model\""));
        };
        let e = self.index.entries[i];
        if self.bytes[e.value_start] != b'"' {
            return Err(invalid(format!(
                "the request body's \"model\" is not a string (it is {})",
                json_type(self.bytes[e.value_start])
            )));
        }
        // Only an escape can fail to decode: the parse checked that the body is UTF-8.
        let value = &self.bytes[e.value_start..e.value_end];
        if has_escape(value) && self.model().is_none() {
            return Err(invalid(
                "the request body's \"model\" is not a valid Unicode string (a lone surrogate escape)",
            ));
        }
        let models = self
            .index
            .entries
            .iter()
            .filter(|e| self.key_eq(e, "model"));
        if models.count() > 1 {
            return Err(invalid(
                "the request body has more than one top-level \"model\" key",
            ));
        }
        Ok(())
    }

    fn check_stream(&self) -> Result<(), Error> {
        for e in self
            .index
            .entries
            .iter()
            .filter(|e| self.key_eq(e, "stream"))
        {
            let first = self.bytes[e.value_start];
            if first != b't' && first != b'f' {
                return Err(invalid(format!(
                    "the request body's \"stream\" is not a boolean (it is {})",
                    json_type(first)
                )));
            }
        }
        Ok(())
    }

    /// The [`JsonBody`] for a buffered request: the one in its extensions when it still
    /// describes the request's body (same buffer), otherwise a fresh parse.
    pub fn from_request(req: &Request<Full<Bytes>>) -> Result<Self, Error> {
        let bytes = super::full_bytes(req.body());
        match req.extensions().get::<JsonBody>() {
            Some(json) if json.is_for(&bytes) => Ok(json.clone()),
            _ => Self::parse(bytes),
        }
    }

    /// The body with its top-level `model` replaced by `model` (JSON-escaped): the bytes
    /// before and after the old value are kept as they are. One allocation of the final
    /// size.
    ///
    /// Errors ([`ErrorKind::InvalidBody`]): there is no top-level `model`.
    pub fn with_model(&self, model: &str) -> Result<Bytes, Error> {
        let e = self.model_entry()?;
        let (head, tail) = (&self.bytes[..e.value_start], &self.bytes[e.value_end..]);
        let mut len = Out::Count(head.len() + tail.len());
        put_json_str(&mut len, model);
        let mut out = Out::with_capacity(len.len());
        out.put(head);
        put_json_str(&mut out, model);
        out.put(tail);
        Ok(out.into_bytes())
    }

    /// The body with `model` replaced and `models` (OpenRouter's server-side fallback
    /// list) set to `models`, in one pass and one allocation: what a client-side chain
    /// sends when each attempt hands a window of models to OpenRouter. An empty `models`
    /// removes the `models` member.
    ///
    /// Errors ([`ErrorKind::InvalidBody`]): there is no top-level `model`.
    pub fn with_model_and_models<I>(&self, model: &str, models: I) -> Result<Bytes, Error>
    where
        I: IntoIterator + Clone,
        I::Item: AsRef<str>,
    {
        self.model_entry()?;
        let list = StrIter(models);
        let models_val = if list.is_empty() {
            None
        } else {
            Some(Val::List(&list))
        };
        Ok(self.apply(
            &[("model", Some(Val::Str(model))), ("models", models_val)],
            None,
        ))
    }

    /// The body with `edits` applied, touching only the edited members:
    ///
    /// * a replaced value keeps its key's bytes and the whitespace around the colon;
    /// * a removed member takes one separating comma with it;
    /// * a new member is appended before the closing `}`, separated like the body's own
    ///   members (an empty object `{}` gets no comma).
    ///
    /// One allocation of the final size.
    pub fn edit(&self, edits: &[Edit<'_>]) -> Bytes {
        self.apply(&ops(edits), None)
    }

    /// [`JsonBody::edit`], with the index of the result (for storing back in the request
    /// extensions): computed while writing, not by parsing the new body.
    pub fn edited(&self, edits: &[Edit<'_>]) -> JsonBody {
        let mut entries = Vec::with_capacity(self.index.entries.len() + edits.len());
        let bytes = self.apply(&ops(edits), Some(&mut entries));
        let mut json = JsonBody {
            bytes,
            index: Arc::new(Index {
                open: self.index.open,
                close: 0,
                entries: Vec::new(),
                model: None,
            }),
        };
        let close = entries
            .last()
            .map_or(self.index.open + 1, |e: &Entry| e.value_end);
        let close = skip_ws(&json.bytes, close);
        let model = entries.iter().rposition(|e| json.key_eq(e, "model"));
        json.index = Arc::new(Index {
            open: self.index.open,
            close,
            entries,
            model,
        });
        json
    }

    fn model_entry(&self) -> Result<Entry, Error> {
        self.index
            .model
            .map(|i| self.index.entries[i])
            .ok_or_else(|| invalid("the request body has no top-level \"model\" to rewrite"))
    }

    /// Applies deduplicated operations: (key, Some(value)) sets, (key, None) removes.
    /// Applies deduplicated operations, recording the new members' spans in `rec`.
    fn apply(&self, ops: &[(&str, Option<Val<'_>>)], rec: Option<&mut Vec<Entry>>) -> Bytes {
        let mut len = Out::Count(0);
        self.write_edited(&mut len, ops, None);
        let mut out = Out::with_capacity(len.len());
        self.write_edited(&mut out, ops, rec);
        out.into_bytes()
    }

    /// Writes the edited body: the body's own members (kept, replaced or removed), then
    /// the set members it did not have, each byte outside them as the body had it.
    fn write_edited(
        &self,
        out: &mut Out,
        ops: &[(&str, Option<Val<'_>>)],
        mut rec: Option<&mut Vec<Entry>>,
    ) {
        let b = &self.bytes[..];
        let Index {
            open,
            close,
            ref entries,
            ..
        } = *self.index;
        let lead = &b[open + 1..entries.first().map_or(close, |e| e.key_start)];
        out.put(&b[..open + 1]);
        out.put(lead);
        let emitted = self.write_own_members(out, ops, rec.as_deref_mut());
        self.write_new_members(out, ops, rec, emitted, lead);
        out.put(&b[entries.last().map_or(close, |e| e.value_end)..]);
    }

    /// The body's own members in order: kept, replaced (only the last of a repeated key)
    /// or removed. Returns whether any was written.
    #[inline]
    fn write_own_members(
        &self,
        out: &mut Out,
        ops: &[(&str, Option<Val<'_>>)],
        mut rec: Option<&mut Vec<Entry>>,
    ) -> bool {
        let b = &self.bytes[..];
        let entries = &self.index.entries;
        let mut emitted = false;
        for (i, e) in entries.iter().enumerate() {
            let op = ops.iter().find(|(k, _)| self.key_eq(e, k));
            let replacement = match op {
                None => None,
                Some((_, None)) => continue,
                Some((k, Some(v))) => {
                    if entries[i + 1..].iter().any(|later| self.key_eq(later, k)) {
                        None
                    } else {
                        Some(v)
                    }
                }
            };
            if emitted {
                out.put(&b[entries[i - 1].value_end..e.key_start]);
            }
            emitted = true;
            let key_start = out.len();
            let value_start = key_start + (e.value_start - e.key_start);
            match replacement {
                None => out.put(&b[e.key_start..e.value_end]),
                Some(v) => {
                    out.put(&b[e.key_start..e.value_start]);
                    v.write(out);
                }
            }
            if let Some(rec) = rec.as_deref_mut() {
                rec.push(Entry {
                    key_start,
                    key_end: key_start + (e.key_end - e.key_start),
                    value_start,
                    value_end: out.len(),
                    escaped: e.escaped,
                });
            }
        }
        emitted
    }

    /// The set members the body did not have, after its own, styled like the body's own:
    /// its last separator and colon (`lead` is the space before its first member).
    #[inline]
    fn write_new_members(
        &self,
        out: &mut Out,
        ops: &[(&str, Option<Val<'_>>)],
        mut rec: Option<&mut Vec<Entry>>,
        mut emitted: bool,
        lead: &[u8],
    ) {
        let b = &self.bytes[..];
        let entries = &self.index.entries;
        let n = entries.len();
        let sep: (&[u8], &[u8]) = match n {
            0 => (b",", b""),
            1 => (b",", lead),
            _ => (&b[entries[n - 2].value_end..entries[n - 1].key_start], b""),
        };
        let colon: &[u8] = entries
            .last()
            .map_or(b":", |e| &b[e.key_end..e.value_start]);
        for (k, v) in ops {
            let Some(v) = v else { continue };
            if entries.iter().any(|e| self.key_eq(e, k)) {
                continue;
            }
            if emitted {
                out.put(sep.0);
                out.put(sep.1);
            }
            emitted = true;
            let key_start = out.len();
            put_json_str(out, k);
            let key_end = out.len();
            out.put(colon);
            let value_start = out.len();
            v.write(out);
            if let Some(rec) = rec.as_deref_mut() {
                rec.push(Entry {
                    key_start,
                    key_end,
                    value_start,
                    value_end: out.len(),
                    escaped: key_end - key_start != k.len() + 2,
                });
            }
        }
    }
}

/// The operations of `edits`: (key, Some(value)) sets, (key, None) removes; the last
/// edit of a key wins.
fn ops<'e>(edits: &'e [Edit<'e>]) -> Vec<(&'e str, Option<Val<'e>>)> {
    let mut ops = Vec::with_capacity(edits.len());
    for (i, edit) in edits.iter().enumerate() {
        if edits[i + 1..].iter().all(|later| later.key() != edit.key()) {
            ops.push((edit.key(), edit.value()));
        }
    }
    ops
}

/// A value to write.
#[derive(Clone, Copy)]
enum Val<'a> {
    /// Raw JSON text.
    Raw(&'a str),
    /// A string to JSON-escape.
    Str(&'a str),
    /// An array of strings.
    List(&'a dyn WriteList),
}

impl Val<'_> {
    fn write(&self, out: &mut Out) {
        match *self {
            Val::Raw(r) => out.put(r.as_bytes()),
            Val::Str(s) => put_json_str(out, s),
            Val::List(l) => l.write(out),
        }
    }
}

trait WriteList {
    fn write(&self, out: &mut Out);
}

struct StrIter<I>(I);

impl<I> StrIter<I>
where
    I: IntoIterator + Clone,
    I::Item: AsRef<str>,
{
    fn is_empty(&self) -> bool {
        self.0.clone().into_iter().next().is_none()
    }
}

impl<I> WriteList for StrIter<I>
where
    I: IntoIterator + Clone,
    I::Item: AsRef<str>,
{
    fn write(&self, out: &mut Out) {
        out.put(b"[");
        for (i, s) in self.0.clone().into_iter().enumerate() {
            if i > 0 {
                out.put(b",");
            }
            put_json_str(out, s.as_ref());
        }
        out.put(b"]");
    }
}

/// Where output goes: first counted, then written into a buffer of exactly that size.
enum Out {
    Count(usize),
    Buf(Vec<u8>),
}

impl Out {
    fn with_capacity(n: usize) -> Self {
        Out::Buf(Vec::with_capacity(n))
    }

    fn put(&mut self, b: &[u8]) {
        match self {
            Out::Count(n) => *n += b.len(),
            Out::Buf(v) => v.extend_from_slice(b),
        }
    }

    fn len(&self) -> usize {
        match self {
            Out::Count(n) => *n,
            Out::Buf(v) => v.len(),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Out::Count(_) => Bytes::new(),
            Out::Buf(v) => {
                debug_assert_eq!(v.len(), v.capacity(), "size computed exactly");
                Bytes::from(v)
            }
        }
    }
}

/// Writes `s` as a JSON string, escaped as serde_json does.
fn put_json_str(out: &mut Out, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let unicode;
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                unicode = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(c >> 4) as usize],
                    HEX[(c & 0xf) as usize],
                ];
                &unicode
            }
            _ => continue,
        };
        out.put(&bytes[start..i]);
        out.put(esc);
        start = i + 1;
    }
    out.put(&bytes[start..]);
    out.put(b"\"");
}

fn json_type(first: u8) -> &'static str {
    match first {
        b'{' => "an object",
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// From the opening quote of a valid JSON string: one past its closing quote, and whether
/// it has escapes.
fn scan_string(b: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut i = start + 1;
    let mut escaped = false;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                escaped = true;
                i += 2;
            }
            b'"' => return Some((i + 1, escaped)),
            _ => i += 1,
        }
    }
    None
}

/// One top-level member as the serde pass sees it.
struct Member {
    value_start: usize,
    value_len: usize,
    is_model: bool,
}

struct TopLevel {
    base: usize,
}

impl<'de> Visitor<'de> for TopLevel {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(16);
        while let Some(is_model) = map.next_key_seed(IsModel)? {
            let raw: &'de RawValue = map.next_value()?;
            let text = raw.get();
            // The raw value borrows from the input: its offset is a pointer difference.
            let value_start = (text.as_ptr() as usize)
                .checked_sub(self.base)
                .ok_or_else(|| de::Error::custom("raw value outside the body"))?;
            members.push(Member {
                value_start,
                value_len: text.len(),
                is_model,
            });
        }
        Ok(members)
    }
}

/// Deserializes a key into "is it `model`?" without allocating (serde_json hands escaped
/// keys over unescaped).
struct IsModel;

impl<'de> DeserializeSeed<'de> for IsModel {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IsModel {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == "model")
    }
}

fn index(bytes: &[u8]) -> Result<Index, Error> {
    let top = TopLevel {
        base: bytes.as_ptr() as usize,
    };
    // A body that parses is UTF-8 throughout, so one check of the whole body up front lets
    // serde_json read it as a `str` and skip its second UTF-8 check of every raw value (a
    // third of the parse for a 1 KB body). A body that is not UTF-8 takes the slice path,
    // whose error (and its line and column) stays the one it always was.
    let members = match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            de.deserialize_map(top).and_then(|m| de.end().map(|()| m))
        }
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            de.deserialize_map(top).and_then(|m| de.end().map(|()| m))
        }
    };
    let members = members.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            invalid("the request body is valid JSON but not an object")
        }
        _ => invalid(format!(
            "the request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )),
    })?;
    // serde_json validated the syntax; walk the separators to find each key's span.
    let broken = || invalid("the request body could not be indexed");
    let open = skip_ws(bytes, 0);
    if bytes.get(open) != Some(&b'{') {
        return Err(broken());
    }
    let mut pos = open + 1;
    let mut entries = Vec::with_capacity(members.len());
    let mut model = None;
    for (i, m) in members.iter().enumerate() {
        pos = skip_ws(bytes, pos);
        if i > 0 {
            if bytes.get(pos) != Some(&b',') {
                return Err(broken());
            }
            pos = skip_ws(bytes, pos + 1);
        }
        if bytes.get(pos) != Some(&b'"') {
            return Err(broken());
        }
        let (key_end, escaped) = scan_string(bytes, pos).ok_or_else(broken)?;
        let colon = skip_ws(bytes, key_end);
        if bytes.get(colon) != Some(&b':') || skip_ws(bytes, colon + 1) != m.value_start {
            return Err(broken());
        }
        if m.is_model {
            model = Some(i);
        }
        entries.push(Entry {
            key_start: pos,
            key_end,
            value_start: m.value_start,
            value_end: m.value_start + m.value_len,
            escaped,
        });
        pos = m.value_start + m.value_len;
    }
    let close = skip_ws(bytes, pos);
    if bytes.get(close) != Some(&b'}') {
        return Err(broken());
    }
    Ok(Index {
        open,
        close,
        entries,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn rewrite(s: &str, model: &str) -> String {
        String::from_utf8(rewrite_model(&b(s), model).unwrap().to_vec()).unwrap()
    }

    fn edit(s: &str, edits: &[Edit<'_>]) -> String {
        String::from_utf8(edit_top_level(&b(s), edits).unwrap().to_vec()).unwrap()
    }

    fn detail(s: &str) -> String {
        let e = JsonBody::parse_with_model(b(s)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidBody);
        e.detail().unwrap().to_owned()
    }

    #[test]
    fn rewrite_touches_only_the_model_value() {
        assert_eq!(rewrite(r#"{"model":"a/b"}"#, "c/d"), r#"{"model":"c/d"}"#);
        // Unusual whitespace, model not first, nested "model" keys left alone.
        let body = "\r\n\t{ \"messages\" :[{\"model\":\"nested\",\"content\":\"h\\u00e9 \u{1F600}\"}] ,\n\n  \"model\"\t:\t \"a/b\"  , \"x\":{\"model\":1}}\n ";
        let want = "\r\n\t{ \"messages\" :[{\"model\":\"nested\",\"content\":\"h\\u00e9 \u{1F600}\"}] ,\n\n  \"model\"\t:\t \"z/\u{e9}\"  , \"x\":{\"model\":1}}\n ";
        assert_eq!(rewrite(body, "z/\u{e9}"), want);
        // An escaped key is the same key.
        assert_eq!(
            rewrite(r#"{"mod\u0065l":"a","modelx":"b"}"#, "c"),
            r#"{"mod\u0065l":"c","modelx":"b"}"#
        );
        // Duplicate keys: the last one is the one that counts (and is rewritten).
        assert_eq!(
            rewrite(r#"{"model":"a","model":"b"}"#, "c"),
            r#"{"model":"a","model":"c"}"#
        );
        // The new value is escaped.
        assert_eq!(
            rewrite(r#"{"model":"a"}"#, "q\"\\\n\u{1}"),
            r#"{"model":"q\"\\\n\u0001"}"#
        );
        // An escaped old value is replaced as a whole.
        assert_eq!(
            rewrite(r#"{"model":"a\"b\\","n":1}"#, "c"),
            r#"{"model":"c","n":1}"#
        );
    }

    #[test]
    fn rewrite_allocates_exactly_the_final_size() {
        let json = JsonBody::parse(b(r#"{ "model" : "a" , "k": [1,2] }"#)).unwrap();
        for m in ["", "x", "openai/gpt-4o", "\u{1F600}\"\n"] {
            let out = json.with_model(m).unwrap();
            let mut expected = Out::Count(0);
            put_json_str(&mut expected, m);
            assert_eq!(out.len(), json.bytes().len() - 3 + expected.len());
        }
    }

    #[test]
    fn rewrite_without_model_is_typed() {
        let e = rewrite_model(&b(r#"{"messages":[]}"#), "a").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidBody);
        assert!(e.detail().unwrap().contains("no top-level \"model\""));
        let e = rewrite_model(&b("[1]"), "a").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidBody);
    }

    #[test]
    fn invalid_bodies_name_the_problem_without_echoing() {
        assert!(detail(r#"{"model":"secret-content"#).contains("not valid JSON"));
        assert!(detail("secret-content").contains("not valid JSON"));
        assert!(detail("").contains("not valid JSON"));
        assert!(detail(r#"{"model":"a"} trailing"#).contains("not valid JSON"));
        assert!(detail(r#"["secret-content"]"#).contains("not an object"));
        assert!(detail(r#""secret-content""#).contains("not an object"));
        assert!(detail(r#"{"messages":"secret-content"}"#).contains("no top-level \"model\""));
        assert!(detail(r#"{"x":{"model":"secret-content"}}"#).contains("no top-level"));
        let d = detail(r#"{"model":["secret-content"]}"#);
        assert!(d.contains("not a string") && d.contains("array"), "{d}");
        assert!(detail(r#"{"model":null}"#).contains("null"));
        assert!(detail(r#"{"model":12}"#).contains("a number"));
        for s in [
            r#"{"model":"secret-content"#,
            r#"["secret-content"]"#,
            r#"{"model":["secret-content"]}"#,
            r#""secret-content""#,
        ] {
            let e = JsonBody::parse_with_model(b(s)).unwrap_err();
            assert!(!format!("{e} {e:?}").contains("secret"), "{e:?}");
        }
        assert!(JsonBody::parse_with_model(b(r#"{"model":"a/b"}"#)).is_ok());
        // Invalid UTF-8 is not valid JSON.
        let e = JsonBody::parse(Bytes::from_static(b"{\"model\":\"\xff\"}")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidBody);
    }

    #[test]
    fn index_accessors() {
        let json =
            JsonBody::parse(b(r#" {"a":1, "mod\u0065l" : "x\ty" ,"b":{"model":2}} "#)).unwrap();
        assert_eq!(json.keys().collect::<Vec<_>>(), ["a", "model", "b"]);
        assert_eq!(json.model().as_deref(), Some("x\ty"));
        assert_eq!(json.raw("b"), Some(r#"{"model":2}"#));
        assert_eq!(json.raw("a"), Some("1"));
        assert!(json.contains_key("model") && !json.contains_key("c"));
        let span = json.model_span().unwrap();
        assert_eq!(&json.bytes()[span], br#""x\ty""#);
        assert!(json.is_for(&json.bytes().clone()));
        assert!(!json.is_for(&Bytes::copy_from_slice(json.bytes())));
        let dbg = format!("{json:?}");
        assert!(!dbg.contains("x\\ty") && dbg.contains("JsonBody"), "{dbg}");
    }

    #[test]
    fn edits_replace_insert_remove() {
        let r = raw(r#"["a","b"]"#);
        // Replace in place.
        assert_eq!(
            edit(
                r#"{"model":"m", "models" : ["x"] ,"n":1}"#,
                &[Edit::Set("models", &r)]
            ),
            r#"{"model":"m", "models" : ["a","b"] ,"n":1}"#
        );
        // Insert: styled like the last separator and colon.
        assert_eq!(
            edit(r#"{"model":"m", "n" : 1}"#, &[Edit::Set("models", &r)]),
            r#"{"model":"m", "n" : 1, "models" : ["a","b"]}"#
        );
        assert_eq!(
            edit("{\n  \"model\": \"m\"\n}", &[Edit::Set("models", &r)]),
            "{\n  \"model\": \"m\",\n  \"models\": [\"a\",\"b\"]\n}"
        );
        // Into an empty object: no comma.
        assert_eq!(
            edit("{}", &[Edit::Set("models", &r)]),
            r#"{"models":["a","b"]}"#
        );
        assert_eq!(
            edit(
                " { } ",
                &[Edit::Set("a", &raw("1")), Edit::SetString("b", "x\"")]
            ),
            r#" { "a":1,"b":"x\""} "#
        );
        // Remove first, middle, last, only.
        let s = r#"{"a":1, "b":2 ,"c":3}"#;
        assert_eq!(edit(s, &[Edit::Remove("a")]), r#"{"b":2 ,"c":3}"#);
        assert_eq!(edit(s, &[Edit::Remove("b")]), r#"{"a":1 ,"c":3}"#);
        assert_eq!(edit(s, &[Edit::Remove("c")]), r#"{"a":1, "b":2}"#);
        assert_eq!(
            edit(s, &[Edit::Remove("a"), Edit::Remove("b")]),
            r#"{"c":3}"#
        );
        assert_eq!(
            edit(
                s,
                &[Edit::Remove("a"), Edit::Remove("b"), Edit::Remove("c")]
            ),
            "{}"
        );
        assert_eq!(edit(r#"{ "a":1 }"#, &[Edit::Remove("a")]), "{  }");
        assert_eq!(edit(s, &[Edit::Remove("zz")]), s);
        // Remove every duplicate; replace only the last one.
        assert_eq!(
            edit(r#"{"a":1,"b":2,"a":3}"#, &[Edit::Remove("a")]),
            r#"{"b":2}"#
        );
        assert_eq!(
            edit(r#"{"a":1,"b":2,"a":3}"#, &[Edit::Set("a", &raw("9"))]),
            r#"{"a":1,"b":2,"a":9}"#
        );
        // Remove and insert together; escaped key matched; last edit of a key wins.
        assert_eq!(
            edit(
                r#"{"\u0061":1,"b":2}"#,
                &[
                    Edit::Remove("a"),
                    Edit::SetString("c", "x"),
                    Edit::Set("c", &raw("[]"))
                ]
            ),
            r#"{"b":2,"c":[]}"#
        );
        // Nested keys are never touched.
        assert_eq!(
            edit(r#"{"x":{"models":1}}"#, &[Edit::Remove("models")]),
            r#"{"x":{"models":1}}"#
        );
    }

    #[test]
    fn model_and_models_in_one_pass() {
        let json = JsonBody::parse(b(r#"{"models":["old"],"model":"a","k":true}"#)).unwrap();
        assert_eq!(
            json.with_model_and_models("b", ["b", "c"]).unwrap(),
            &br#"{"models":["b","c"],"model":"b","k":true}"#[..]
        );
        let empty: [&str; 0] = [];
        assert_eq!(
            json.with_model_and_models("b", empty).unwrap(),
            &br#"{"model":"b","k":true}"#[..]
        );
        let json = JsonBody::parse(b(r#"{"model":"a"}"#)).unwrap();
        let window: Vec<std::sync::Arc<str>> = vec!["x".into(), "y".into()];
        assert_eq!(
            json.with_model_and_models("x", &window).unwrap(),
            &br#"{"model":"x","models":["x","y"]}"#[..]
        );
        let json = JsonBody::parse(b(r#"{"k":1}"#)).unwrap();
        assert_eq!(
            json.with_model_and_models("x", ["x"]).unwrap_err().kind(),
            ErrorKind::InvalidBody
        );
    }

    #[test]
    fn deeply_nested_values_are_indexed_without_recursion() {
        let depth = 100_000;
        let body = format!(
            "{{\"x\":{}{},\"model\":\"a\"}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let json = JsonBody::parse_with_model(Bytes::from(body)).unwrap();
        assert_eq!(json.raw("x").unwrap().len(), 2 * depth);
        assert!(json.with_model("b").unwrap().ends_with(b"\"model\":\"b\"}"));
    }

    fn ws(n: u8) -> &'static str {
        ["", " ", "\n  ", "\t\r\n"][n as usize % 4]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The index `edited` computes while writing is the one a fresh parse finds.
        #[test]
        fn edited_index_equals_a_fresh_parse(
            members in proptest::collection::vec(
                (0..6usize, proptest::sample::select(vec!["1", "\"s\"", "{\"model\":[]}", "[ ]", "null"]), 0..4u8),
                0..6),
            edits in proptest::collection::vec((0..6usize, proptest::option::of(proptest::sample::select(vec!["2", "\"t\"", "{}"]))), 0..5),
            outer in 0..4u8,
        ) {
            const KEYS: [&str; 6] = ["model", "models", "mod\\u0065l", "a", "q\\\"", "provider"];
            const NAMES: [&str; 6] = ["model", "models", "model", "a", "q\"", "route"];
            let mut body = format!("{}{{", ws(outer));
            for (i, (k, v, w)) in members.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&format!("{}\"{}\"{}:{}{}", ws(*w), KEYS[*k], ws(w + 1), ws(w + 2), v));
            }
            body.push_str(&format!("{}}}{}", ws(outer + 1), ws(outer)));
            let json = JsonBody::parse(Bytes::from(body)).unwrap();
            let raws: Vec<Option<Box<RawValue>>> = edits.iter().map(|(_, v)| v.map(raw)).collect();
            let list: Vec<Edit<'_>> = edits
                .iter()
                .zip(&raws)
                .map(|((k, _), v)| match v {
                    Some(v) => Edit::Set(NAMES[*k], v),
                    None => Edit::Remove(NAMES[*k]),
                })
                .collect();
            let edited = json.edited(&list);
            let fresh = JsonBody::parse(edited.bytes().clone()).unwrap();
            proptest::prop_assert_eq!(&*edited.index, &*fresh.index);
            proptest::prop_assert_eq!(edited.bytes(), &json.edit(&list));
        }
    }
}
