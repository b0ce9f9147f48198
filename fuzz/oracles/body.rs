//! Differential oracle for the body rewriter (`src/body/json.rs`): serde_json's `Value`
//! is the reference.
//!
//! * A body serde_json reads as an object, [`JsonBody::parse`] accepts, with the same keys
//!   and values; one it reads as another value, or rejects, we reject too, except where
//!   we are deliberately lenient (see [`LENIENT`]).
//! * [`JsonBody::with_model`] / [`rewrite_model`]: the result parses to the original
//!   `Value` with only `model` changed, and every byte outside the old `model` value is
//!   kept.
//! * [`edit_top_level`] / [`JsonBody::edit`]: the result parses to the original `Value`
//!   with the edits applied in order; [`JsonBody::edited`]'s index is the one a fresh
//!   parse finds.
//! * [`JsonBody::parse_with_model`] accepts exactly the bodies with one string `model`
//!   and a boolean (or no) `stream`.
//!
//! Shared by the fuzz target `body` and the stable property test `tests/fuzz_oracles.rs`.

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tower_openrouter::body::{edit_top_level, rewrite_model, Edit};
use tower_openrouter::{ErrorKind, JsonBody};

/// serde_json errors (reading a `Value`) that our index deliberately does not raise: it
/// borrows each top-level value as a `RawValue`, which checks the grammar but neither
/// nests on the stack nor converts numbers nor decodes nested strings. So a body nested
/// deeper than serde_json's 128 levels, a number outside `f64`, or a lone surrogate escape
/// inside a value other than `model` is forwarded as the caller wrote it (the upstream
/// judges it). A lone surrogate in a key or in `model` is still an error
/// ([`JsonBody::parse_with_model`]).
pub const LENIENT: [&str; 4] = [
    "recursion limit exceeded",
    "number out of range",
    "lone leading surrogate in hex escape",
    "unexpected end of hex escape",
];

/// One top-level edit, owned (a `Set` value is raw JSON text).
#[derive(Debug, Clone)]
pub enum EditSpec {
    /// `Edit::Set(key, raw)`.
    Set(String, String),
    /// `Edit::SetString(key, value)`.
    SetString(String, String),
    /// `Edit::Remove(key)`.
    Remove(String),
}

/// Keys an edit names: the ones the stack edits, and a few that need escaping.
pub const KEYS: [&str; 8] = [
    "model", "models", "stream", "provider", "messages", "q\"", "", "\u{e9}\n",
];

/// Fuzz entry: `body 0xFF model (0xFF edit)*`, where an edit is `op key-index rest`
/// (`0xFF` never occurs in JSON or UTF-8, so it separates the parts).
pub fn fuzz(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xFF);
    let body = parts.next().unwrap_or_default();
    let model = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let edits: Vec<EditSpec> = parts
        .filter_map(|p| {
            let (&op, rest) = p.split_first()?;
            let (&k, rest) = rest.split_first().unwrap_or((&0, &[]));
            let key = KEYS[k as usize % KEYS.len()].to_owned();
            let text = String::from_utf8_lossy(rest).into_owned();
            Some(match op % 3 {
                0 => EditSpec::Set(key, text),
                1 => EditSpec::SetString(key, text),
                _ => EditSpec::Remove(key),
            })
        })
        .collect();
    check(body, &model, &edits);
}

/// The check (see the module docs). Panics on a difference.
pub fn check(body: &[u8], model: &str, edits: &[EditSpec]) {
    let shown = body.escape_ascii().to_string();
    let reference = serde_json::from_slice::<Value>(body);
    let ours = JsonBody::parse(Bytes::copy_from_slice(body));
    let json = match (reference, ours) {
        (Ok(Value::Object(map)), Ok(json)) => {
            agrees(&json, &map, &shown);
            rewrites_agree(&json, &map, model, edits);
            json
        }
        (Ok(Value::Object(_)), Err(e)) => {
            panic!("serde_json reads an object, we reject it ({e}): b\"{shown}\"")
        }
        (Ok(other), Ok(_)) => {
            panic!("accepted a body that is not an object ({other}): b\"{shown}\"")
        }
        (_, Err(e)) => {
            assert_eq!(e.kind(), ErrorKind::InvalidBody, "{e}");
            return;
        }
        (Err(reason), Ok(json)) => {
            let why = reason.to_string();
            assert!(
                LENIENT.iter().any(|l| why.contains(l)),
                "serde_json rejects ({why}), we accept: b\"{shown}\""
            );
            assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
                "not even valid JSON grammar, yet accepted: b\"{shown}\""
            );
            json
        }
    };
    // With or without a reference: byte-exact rewrites that our own parser reads back.
    keeps_bytes(&json, model, edits);
}

/// The index says what serde_json says: the same keys (duplicates collapse, the last
/// occurrence wins), each raw value parses to the same `Value`, the same `model`.
fn agrees(json: &JsonBody, map: &Map<String, Value>, body: &str) {
    let mut keys: Vec<String> = json.keys().map(|k| k.into_owned()).collect();
    keys.sort();
    keys.dedup();
    let mut want: Vec<&String> = map.keys().collect();
    want.sort();
    assert_eq!(keys.iter().collect::<Vec<_>>(), want, "keys of b\"{body}\"");
    for (k, v) in map {
        let raw = json
            .raw(k)
            .unwrap_or_else(|| panic!("no raw value for {k:?}"));
        assert_eq!(
            &serde_json::from_str::<Value>(raw).unwrap(),
            v,
            "value of {k:?}"
        );
    }
    assert_eq!(
        json.model().as_deref(),
        map.get("model").and_then(Value::as_str),
        "model of b\"{body}\""
    );
    assert_eq!(json.model_span().is_some(), map.contains_key("model"));
    let models = json.keys().filter(|k| k == "model").count();
    let streams = json.keys().filter(|k| k == "stream").count();
    let valid = map.get("model").is_some_and(Value::is_string)
        && models == 1
        && map.get("stream").is_none_or(Value::is_boolean);
    match JsonBody::parse_with_model(json.bytes().clone()) {
        Ok(_) => assert!(valid, "parse_with_model accepted b\"{body}\""),
        // Stricter than "the last one wins" on purpose: every `stream` must be a boolean
        // (serde_json's `Value` sees only the last of several).
        Err(_) if streams > 1 => {}
        Err(e) => {
            assert!(!valid, "parse_with_model rejected b\"{body}\": {e}");
            assert_eq!(e.kind(), ErrorKind::InvalidBody);
        }
    }
}

fn parse_object(bytes: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => m,
        other => panic!(
            "a rewritten body is not an object ({other:?}): b\"{}\"",
            bytes.escape_ascii()
        ),
    }
}

/// The edits this oracle can apply: a `Set` whose text is a JSON value serde_json reads.
fn usable(edits: &[EditSpec]) -> Vec<(EditSpec, Option<Box<RawValue>>)> {
    edits
        .iter()
        .filter_map(|e| match e {
            EditSpec::Set(_, raw) => {
                serde_json::from_str::<Value>(raw).ok()?;
                let raw = RawValue::from_string(raw.clone()).ok()?;
                Some((e.clone(), Some(raw)))
            }
            _ => Some((e.clone(), None)),
        })
        .collect()
}

fn as_edits(specs: &[(EditSpec, Option<Box<RawValue>>)]) -> Vec<Edit<'_>> {
    specs
        .iter()
        .map(|(e, raw)| match (e, raw) {
            (EditSpec::Set(k, _), Some(raw)) => Edit::Set(k, raw),
            (EditSpec::SetString(k, v), _) => Edit::SetString(k, v),
            (EditSpec::Remove(k), _) | (EditSpec::Set(k, _), None) => Edit::Remove(k),
        })
        .collect()
}

/// Rewrites read back by serde_json as the original with only the edited keys changed.
fn rewrites_agree(json: &JsonBody, map: &Map<String, Value>, model: &str, edits: &[EditSpec]) {
    match json.with_model(model) {
        Ok(out) => {
            let mut want = map.clone();
            want.insert("model".into(), Value::String(model.into()));
            assert_eq!(parse_object(&out), want, "with_model({model:?})");
            assert_eq!(
                rewrite_model(json.bytes(), model).unwrap(),
                out,
                "rewrite_model and with_model differ"
            );
        }
        Err(e) => {
            assert!(!map.contains_key("model"), "with_model failed: {e}");
            assert_eq!(e.kind(), ErrorKind::InvalidBody);
        }
    }
    if map.contains_key("model") {
        let window = [model, "fuzz/other"];
        let out = json.with_model_and_models(model, window).unwrap();
        let mut want = map.clone();
        want.insert("model".into(), Value::String(model.into()));
        want.insert("models".into(), serde_json::json!(window));
        assert_eq!(parse_object(&out), want, "with_model_and_models");
    }
    let specs = usable(edits);
    let list = as_edits(&specs);
    let out = edit_top_level(json.bytes(), &list).unwrap();
    let mut want = map.clone();
    for (e, _) in &specs {
        match e {
            EditSpec::Set(k, raw) => {
                want.insert(k.clone(), serde_json::from_str(raw).unwrap());
            }
            EditSpec::SetString(k, v) => {
                want.insert(k.clone(), Value::String(v.clone()));
            }
            EditSpec::Remove(k) => {
                want.remove(k);
            }
        }
    }
    assert_eq!(parse_object(&out), want, "edits {edits:?}");
}

/// Byte-exact rewrites: every byte outside the old `model` value kept, the result read
/// back by our own parser; `edited`'s index the one a fresh parse finds.
fn keeps_bytes(json: &JsonBody, model: &str, edits: &[EditSpec]) {
    let body = json.bytes();
    if let Some(span) = json.model_span() {
        let out = json.with_model(model).unwrap();
        assert_eq!(
            &out[..span.start],
            &body[..span.start],
            "bytes before model"
        );
        assert!(out.ends_with(&body[span.end..]), "bytes after model");
        let again = JsonBody::parse(out).expect("a rewritten body parses");
        assert_eq!(again.model().as_deref(), Some(model));
    }
    let specs = usable(edits);
    let list = as_edits(&specs);
    let edited = json.edited(&list);
    assert_eq!(edited.bytes(), &json.edit(&list), "edited and edit differ");
    let fresh = JsonBody::parse(edited.bytes().clone()).expect("an edited body parses");
    let keys = |j: &JsonBody| j.keys().map(|k| k.into_owned()).collect::<Vec<_>>();
    assert_eq!(keys(&edited), keys(&fresh), "edited keys");
    assert_eq!(edited.model_span(), fresh.model_span(), "edited model span");
    for k in keys(&fresh) {
        assert_eq!(edited.raw(&k), fresh.raw(&k), "edited raw value of {k:?}");
    }
}
