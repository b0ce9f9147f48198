//! Properties of the byte-exact body edits: for arbitrary JSON objects written with
//! arbitrary whitespace and escapes, an edit equals the same edit on a `serde_json::Value`,
//! and every byte outside the edited span is unchanged.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tower_openrouter::body::{edit_top_level, rewrite_model, Edit};
use tower_openrouter::JsonBody;

#[derive(Debug, Clone)]
enum Tree {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<Tree>),
    Obj(Vec<(String, Tree)>),
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,6}",
        1 => Just("model".to_owned()),
        1 => Just("models".to_owned()),
        1 => "\\PC{0,4}",
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        Just(Tree::Null),
        any::<bool>().prop_map(Tree::Bool),
        any::<i64>().prop_map(Tree::Int),
        (-1e6f64..1e6).prop_map(Tree::Float),
        "\\PC{0,8}|[\"\\\\\n\t\u{1}]{0,3}".prop_map(Tree::Str),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::Arr),
            prop::collection::vec((key(), inner), 0..4).prop_map(Tree::Obj),
        ]
    })
}

/// Writes JSON with whitespace and string escapes chosen by `noise`.
struct Writer<'a> {
    out: String,
    noise: &'a [u8],
    at: usize,
}

impl Writer<'_> {
    fn next(&mut self) -> u8 {
        let n = self.noise[self.at % self.noise.len()];
        self.at += 1;
        n
    }

    fn ws(&mut self) {
        const WS: [&str; 6] = ["", "", " ", "\n  ", "\t", " \r\n "];
        let w = WS[self.next() as usize % WS.len()];
        self.out.push_str(w);
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            let escape = self.next() % 4 == 0;
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '/' if escape => self.out.push_str("\\/"),
                c if (c as u32) < 0x20 || escape => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        self.out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn tree(&mut self, t: &Tree) {
        match t {
            Tree::Null => self.out.push_str("null"),
            Tree::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Tree::Int(i) => self.out.push_str(&i.to_string()),
            Tree::Float(f) => self.out.push_str(&serde_json::to_string(f).unwrap()),
            Tree::Str(s) => self.string(s),
            Tree::Arr(items) => {
                self.out.push('[');
                self.ws();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                        self.ws();
                    }
                    self.tree(item);
                    self.ws();
                }
                self.out.push(']');
            }
            Tree::Obj(members) => {
                self.out.push('{');
                self.ws();
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                        self.ws();
                    }
                    self.string(k);
                    self.ws();
                    self.out.push(':');
                    self.ws();
                    self.tree(v);
                    self.ws();
                }
                self.out.push('}');
            }
        }
    }
}

/// A top-level object with a string `model` somewhere among `members`.
fn body() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((key(), tree()), 0..6),
        "\\PC{0,12}",
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 1..64),
    )
        .prop_map(|(mut members, model, at, noise)| {
            // The last `model` must be a string: drop other `model` members after it.
            let at = at.index(members.len() + 1);
            members.insert(at, ("model".to_owned(), Tree::Str(model)));
            let mut seen = false;
            for i in (0..members.len()).rev() {
                if members[i].0 == "model" {
                    if seen || i == at {
                        seen = true;
                    } else {
                        members.remove(i);
                    }
                }
            }
            let mut w = Writer {
                out: String::new(),
                noise: &noise,
                at: 0,
            };
            w.ws();
            w.tree(&Tree::Obj(members));
            w.ws();
            w.out
        })
}

fn object(bytes: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(bytes).unwrap() {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rewrite_equals_value_edit_and_keeps_other_bytes(body in body(), model in "\\PC{0,16}") {
        let bytes = Bytes::from(body.clone());
        // `parse`, not `parse_with_model`: the rewriter's rule for a repeated `model` (the
        // last one wins) is what is tested here; the gateway check rejects such bodies.
        let json = JsonBody::parse(bytes.clone()).unwrap();
        let span = json.model_span().unwrap();
        let out = rewrite_model(&bytes, &model).unwrap();
        prop_assert_eq!(&out, &json.with_model(&model).unwrap());

        let mut want = object(&bytes);
        want.insert("model".to_owned(), Value::String(model.clone()));
        prop_assert_eq!(object(&out), want);

        let suffix = bytes.len() - span.end;
        prop_assert_eq!(&out[..span.start], &bytes[..span.start]);
        prop_assert_eq!(&out[out.len() - suffix..], &bytes[span.end..]);
        let new_value: String = serde_json::from_slice(&out[span.start..out.len() - suffix]).unwrap();
        prop_assert_eq!(new_value, model);
    }

    #[test]
    fn edits_equal_value_edits(
        body in body(),
        edits in prop::collection::vec(
            (prop_oneof![Just("models"), Just("provider"), Just("route"), Just("model"), Just("a")],
             prop::option::of(tree())),
            0..5),
        noise in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        let bytes = Bytes::from(body);
        let raws: Vec<(String, Option<Box<RawValue>>)> = edits
            .iter()
            .map(|(k, v)| {
                let raw = v.as_ref().map(|t| {
                    let mut w = Writer { out: String::new(), noise: &noise, at: 0 };
                    w.tree(t);
                    RawValue::from_string(w.out).unwrap()
                });
                (k.to_string(), raw)
            })
            .collect();
        let list: Vec<Edit<'_>> = raws
            .iter()
            .map(|(k, v)| match v {
                Some(v) => Edit::Set(k, v),
                None => Edit::Remove(k),
            })
            .collect();
        let out = edit_top_level(&bytes, &list).unwrap();

        let mut want = object(&bytes);
        for (k, v) in &raws {
            match v {
                Some(v) => { want.insert(k.clone(), serde_json::from_str(v.get()).unwrap()); }
                None => { want.remove(k); }
            }
        }
        prop_assert_eq!(object(&out), want);
        // No edit, no change.
        prop_assert_eq!(edit_top_level(&bytes, &[]).unwrap(), bytes);
    }
}
