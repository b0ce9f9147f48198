//! Classification hot path.
//!
//! * `success_200/classifier`: the default classifier on a 2 KB success body (a byte scan
//!   for `"error"`, no parse), against `value_parse`, the `serde_json::Value` parse a
//!   naive check would do;
//! * `error_503/classifier`: a newer-shape error body (parse, rules, hints);
//! * `layer/success_200`: a whole call through `ClassifyLayer` (read, check, `UpstreamInfo`,
//!   replay) against the bare upstream;
//! * `sse/parse`: the SSE parser over a 100-event stream, in 1 KB chunks.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_openrouter::classify::{ClassifyLayer, ClassifyOutcome, OpenRouterClassifier, Outcome};
use tower_openrouter::stream::SseParser;

fn success_body() -> Bytes {
    let content =
        "A tower retry layer decides between the same model and the next one. ".repeat(26);
    Bytes::from(format!(
        r#"{{"id":"gen-1","object":"chat.completion","created":1,"model":"openai/gpt-4o","provider":"OpenAI","choices":[{{"index":0,"finish_reason":"stop","native_finish_reason":"stop","message":{{"role":"assistant","content":"{content}"}}}}],"usage":{{"prompt_tokens":10,"completion_tokens":400,"total_tokens":410,"cost":0.00042}}}}"#
    ))
}

fn bench(c: &mut Criterion) {
    let classifier = OpenRouterClassifier::new();
    let headers = HeaderMap::new();
    let body = success_body();

    let mut g = c.benchmark_group("success_200");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("classifier", |b| {
        b.iter(|| {
            classifier.classify(Outcome::Response {
                status: StatusCode::OK,
                headers: &headers,
                body: black_box(&body),
            })
        })
    });
    g.bench_function("value_parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
    g.finish();

    let err = br#"{"error":{"code":503,"message":"No endpoints available","metadata":{"error_type":"provider_overloaded","provider_code":"529"},"availability":{"code":"temporarily_unavailable","retryable":true,"retry_after":3,"requested_models":["a/b"]}}}"#;
    c.bench_function("error_503/classifier", |b| {
        b.iter(|| {
            classifier.classify(Outcome::Response {
                status: StatusCode::SERVICE_UNAVAILABLE,
                headers: &headers,
                body: black_box(err),
            })
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let upstream = {
        let body = body.clone();
        service_fn(move |_req: Request<Full<Bytes>>| {
            let body = body.clone();
            async move { Ok::<_, std::io::Error>(Response::new(Full::new(body))) }
        })
    };
    let layered = ClassifyLayer::new().layer(upstream.clone());
    let mut g = c.benchmark_group("layer");
    g.bench_function("success_200", |b| {
        b.iter(|| {
            rt.block_on(async {
                let resp = layered
                    .clone()
                    .oneshot(Request::new(Full::default()))
                    .await
                    .unwrap();
                resp.into_body().collect().await.unwrap().to_bytes()
            })
        })
    });
    g.bench_function("bare_upstream", |b| {
        b.iter(|| {
            rt.block_on(async {
                let resp = upstream
                    .clone()
                    .oneshot(Request::new(Full::default()))
                    .await
                    .unwrap();
                resp.into_body().collect().await.unwrap().to_bytes()
            })
        })
    });
    g.finish();

    let chunk = "data: {\"id\":\"gen-1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"},\"finish_reason\":null}]}\n\n";
    let stream = format!(
        ": OPENROUTER PROCESSING\n\n{}data: [DONE]\n\n",
        chunk.repeat(100)
    );
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut n = 0usize;
            for c in stream.as_bytes().chunks(1024) {
                p.feed(c, |e| n += e.data.len());
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
