//! The catalog's cost per request: the requirement scan of a buffered body (on the
//! `JsonBody` index the buffering layer already built) and a catalog lookup (an
//! `ArcSwap` load and a hash lookup, no lock).
//!
//! The bodies are about 1 KB and 100 KB, made of the real prompts of
//! `tests/fixtures/prompts.json` (English, code, logs, German, Chinese, Japanese,
//! `\u`-escaped text):
//!
//! * `chat`: a system prompt and user / assistant turns of text;
//! * `tools`: an agent request, three tool definitions, `tool_choice`, an assistant
//!   `tool_calls` turn and a `tool` result among the turns;
//! * `image`: turns whose user content is a text part and an `image_url` part (1 KB: a
//!   link; 100 KB: a base64 `data:` URL, as the SDKs send a local picture);
//! * `long_prompt`: one user message holding the whole text (a document to summarise).
//!
//! The budget: the scan adds at most 1 us at 1 KB and 15 us at 100 KB (median).
//! Measured (medians of three runs, 2-core machine): chat 0.28 / 10.1 µs, tools 0.47 /
//! 12.2 µs, image 0.35 / 2.9 µs, long prompt 0.22 / 8.7 µs (1 KB / 100 KB); 8.2k
//! instructions for the 1 KB tools body, 176k for the 100 KB one (callgrind). A catalog
//! `get` takes 42 ns and a whole `check` 129 ns.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use tower_openrouter::catalog::{MaxPrice, ModelCatalog, ModelInfo, Requirements};
use tower_openrouter::JsonBody;

#[path = "../tests/fixtures/prompt_texts.rs"]
mod prompt_texts;
use prompt_texts::texts;

/// At least `size` bytes of text from the fixture, cycling through it; cut short at a
/// character boundary.
fn text_of(texts: &[String], size: usize, from: &mut usize) -> String {
    let mut out = String::new();
    while out.len() < size {
        let t = &texts[*from % texts.len()];
        *from += 1;
        out.push_str(t);
        out.push('\n');
    }
    let mut end = size.min(out.len());
    while !out.is_char_boundary(end) {
        end += 1;
    }
    out.truncate(end);
    out
}

fn tool(name: &str, about: &str, param: &str) -> Value {
    json!({"type": "function", "function": {"name": name, "description": about,
        "parameters": {"type": "object", "required": [param],
            "properties": {param: {"type": "string", "description": format!("The {param} to use.")}}}}})
}

/// Turns of text until the body is about `size` bytes; `extra` may add members and
/// `turn` shapes each user turn's content.
fn conversation(size: usize, turn: impl Fn(usize, String) -> Value, extra: Value) -> Bytes {
    let texts = texts();
    let mut from = 0;
    let mut messages = vec![json!({"role": "system", "content":
        "You are a careful assistant. Answer briefly and cite sources."})];
    let mut len = extra.to_string().len() + 100;
    let mut i = 0;
    while len < size {
        let piece = (size - len).clamp(40, 700);
        let text = text_of(&texts, piece, &mut from);
        let m = if i % 2 == 0 {
            json!({"role": "user", "content": turn(i, text)})
        } else {
            json!({"role": "assistant", "content": text})
        };
        len += m.to_string().len() + 1;
        messages.push(m);
        i += 1;
    }
    let mut body = json!({"model": "anthropic/claude-sonnet-4.5", "max_tokens": 1024,
        "temperature": 0.2, "messages": messages});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn chat(size: usize) -> Bytes {
    conversation(size, |_, t| Value::String(t), json!({}))
}

fn tools(size: usize) -> Bytes {
    let tools = json!({
        "tool_choice": "auto",
        "tools": [
            tool("get_weather", "Current weather for a city.", "city"),
            tool("search_docs", "Full-text search over the product documentation.", "query"),
            tool("run_sql", "Runs a read-only SQL query against the analytics replica.", "sql"),
        ],
    });
    let body = conversation(
        size,
        |i, t| match i % 6 {
            2 => json!([{"type": "text", "text": t}]),
            _ => Value::String(t),
        },
        tools,
    );
    with_tool_turns(&body)
}

/// Adds an assistant `tool_calls` turn and its `tool` result after the first turns.
fn with_tool_turns(body: &Bytes) -> Bytes {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    let messages = v["messages"].as_array_mut().unwrap();
    let at = messages.len().min(3);
    messages.insert(
        at,
        json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "search_docs", "arguments": "{\"query\":\"retry budget\"}"}}]}),
    );
    messages.insert(
        at + 1,
        json!({"role": "tool", "tool_call_id": "call_1",
        "content": "Retry budget: at most 20% extra load; see /docs/retry#budget."}),
    );
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

fn image(size: usize) -> Bytes {
    let url = |i: usize| {
        if size < 10_000 {
            format!("https://example.com/photos/{i}.jpg")
        } else {
            // One local picture, base64 as the SDKs send it: most of the body.
            let data: String = (0..size * 9 / 10)
                .map(|k| {
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[k * 7 % 64]
                        as char
                })
                .collect();
            format!("data:image/jpeg;base64,{data}")
        }
    };
    conversation(
        size,
        |i, t| {
            let mut parts = vec![json!({"type": "text", "text": t})];
            if i == 0 {
                parts.push(
                    json!({"type": "image_url", "image_url": {"url": url(i), "detail": "auto"}}),
                );
            }
            Value::Array(parts)
        },
        json!({}),
    )
}

fn long_prompt(size: usize) -> Bytes {
    let texts = texts();
    let text = text_of(&texts, size - 200, &mut 0);
    let body = json!({"model": "anthropic/claude-sonnet-4.5", "max_tokens": 2048, "messages": [
        {"role": "system", "content": "Summarise the document the user sends."},
        {"role": "user", "content": text}]});
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn scan(c: &mut Criterion) {
    type Make = fn(usize) -> Bytes;
    let shapes: [(&str, Make); 4] = [
        ("chat", chat),
        ("tools", tools),
        ("image", image),
        ("long_prompt", long_prompt),
    ];
    let mut g = c.benchmark_group("catalog/requirements_scan");
    for (name, make) in shapes {
        for size in [1_000, 100_000] {
            let json = JsonBody::parse(make(size)).unwrap();
            if std::env::var_os("SHOW_BODIES").is_some() {
                eprintln!("{name}/{size}: {} bytes", json.bytes().len());
            }
            g.throughput(Throughput::Bytes(json.bytes().len() as u64));
            let id = BenchmarkId::new(name, size);
            g.bench_with_input(id, &json, |b, json| {
                b.iter(|| Requirements::scan(black_box(json)))
            });
        }
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let catalog = ModelCatalog::from_models((0..400).map(|i| {
        ModelInfo::new(format!("vendor{}/model-{i}", i % 40))
            .with_context_length(128_000)
            .with_supported_parameters(["tools", "max_tokens"])
    }));
    let needs = Requirements::scan(&JsonBody::parse(tools(1_000)).unwrap());
    let ceiling = MaxPrice::default();
    c.bench_function("catalog/get", |b| {
        b.iter(|| catalog.get(black_box("vendor7/model-207")))
    });
    c.bench_function("catalog/check", |b| {
        b.iter(|| catalog.check(black_box("vendor7/model-207"), &needs, &ceiling))
    });
}

criterion_group!(benches, scan, lookup);
criterion_main!(benches);
