//! Model rewrite: the crate's span rewrite against a `serde_json::Value` round trip, at
//! 1 KB, 100 KB and 1 MB bodies.
//!
//! * `span/parse+rewrite`: `rewrite_model` (index the body, then rewrite; what one
//!   standalone call costs);
//! * `span/rewrite`: `JsonBody::with_model` on an index built once per call (what the
//!   fallback layer pays per attempt);
//! * `value_round_trip`: `from_slice::<Value>`, set `model`, `to_vec`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tower_openrouter::body::rewrite_model;
use tower_openrouter::JsonBody;

/// A chat body of about `size` bytes: several messages, `model` not first.
pub fn chat_body(size: usize) -> Bytes {
    let mut messages = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let content = format!(
            "Message {i}: explain how a tower retry layer decides between the same model and the next one, with \"quotes\", unicode é ü 日本 and escapes \\n."
        );
        len += content.len() + 40;
        messages.push(serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": content}));
        i += 1;
    }
    let body = serde_json::json!({
        "messages": messages,
        "model": "anthropic/claude-sonnet-4.5",
        "temperature": 0.2,
        "max_tokens": 256,
        "stream": false,
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn value_round_trip(body: &[u8], model: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["model"] = serde_json::Value::String(model.to_owned());
    serde_json::to_vec(&v).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("model_rewrite");
    for (label, size) in [("1KB", 1 << 10), ("100KB", 100 << 10), ("1MB", 1 << 20)] {
        let body = chat_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        let json = JsonBody::parse_with_model(body.clone()).unwrap();
        group.bench_with_input(BenchmarkId::new("span/rewrite", label), &json, |b, json| {
            b.iter(|| json.with_model(black_box("openai/gpt-4o")).unwrap())
        });
        group.bench_with_input(
            BenchmarkId::new("span/parse+rewrite", label),
            &body,
            |b, body| {
                b.iter(|| rewrite_model(black_box(body), black_box("openai/gpt-4o")).unwrap())
            },
        );
        group.bench_with_input(
            BenchmarkId::new("value_round_trip", label),
            &body,
            |b, body| b.iter(|| value_round_trip(black_box(body), black_box("openai/gpt-4o"))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
