//! The catalog's cost per request: the requirement scan of a buffered body (1 KB and
//! 100 KB chat bodies with tools, on the `JsonBody` index the buffering layer already
//! built) and a catalog lookup (an `ArcSwap` load and a hash lookup, no lock).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tower_openrouter::catalog::{MaxPrice, ModelCatalog, ModelInfo, Requirements};
use tower_openrouter::JsonBody;

/// A chat body of about `size` bytes with a tool and mixed text.
fn chat_body(size: usize) -> Bytes {
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
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "max_tokens": 256,
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("catalog/requirements_scan");
    for size in [1_000, 100_000] {
        let json = JsonBody::parse(chat_body(size)).unwrap();
        g.throughput(Throughput::Bytes(json.bytes().len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &json, |b, json| {
            b.iter(|| Requirements::scan(black_box(json)))
        });
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let catalog = ModelCatalog::from_models((0..400).map(|i| {
        ModelInfo::new(format!("vendor{}/model-{i}", i % 40))
            .with_context_length(128_000)
            .with_supported_parameters(["tools", "max_tokens"])
    }));
    let needs = Requirements::scan(&JsonBody::parse(chat_body(1_000)).unwrap());
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
