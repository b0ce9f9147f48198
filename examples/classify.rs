//! How tower-openrouter classifies OpenRouter's answers, with no API key and no network.
//!
//! A scripted OpenRouter stand-in (`MockOpenRouter`) answers seven requests the way
//! OpenRouter does on a bad day; `ClassifyLayer` alone (no retry, no fallback) turns each
//! answer into a success or a typed `Error` that says what happened and what to do next
//! (retry the same model, fall back to the next one, or stop).
//!
//! Run it with `cargo run --example classify`. For the whole stack riding out an outage,
//! see `cargo run --example demo`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};
use tower_openrouter::classify::ClassifyLayer;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::{Attempt, UpstreamInfo};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let openrouter = MockOpenRouter::new();
    let scenarios: [(&str, &str, Reply); 7] = [
        (
            "429 rate limited, Retry-After: 2",
            "meta-llama/llama-3.3-70b-instruct:free",
            Reply::status(429).retry_after(2).provider("Chutes"),
        ),
        (
            "402 out of credits",
            "anthropic/claude-sonnet-4.5",
            Reply::status(402),
        ),
        (
            "403 moderation flag",
            "openai/gpt-4o",
            Reply::moderation().provider("OpenAI"),
        ),
        (
            "400 context length exceeded",
            "qwen/qwen3-32b",
            Reply::context_length().provider("Chutes"),
        ),
        (
            "503 no endpoints available (availability.retry_after: 3)",
            "google/gemini-2.5-flash",
            Reply::unavailable(3),
        ),
        (
            "200 with a top-level error inside",
            "mistralai/mistral-large",
            Reply::ok_with_error(429).provider("Mistral"),
        ),
        (
            "a healthy answer",
            "openai/gpt-4o-mini",
            Reply::ok_text("The sky is blue because of Rayleigh scattering.").provider("OpenAI"),
        ),
    ];

    println!(
        "tower-openrouter classify: a scripted OpenRouter stand-in, no API key, no network.\n"
    );
    let client = ClassifyLayer::new().layer(openrouter.clone());
    for (n, (what, model, reply)) in scenarios.into_iter().enumerate() {
        openrouter.model(model).respond(reply);
        println!("{}. {what}  [{model}]", n + 1);
        match client.clone().oneshot(request(model)).await {
            Ok(resp) => {
                let info = resp.extensions().get::<UpstreamInfo>().cloned();
                let status = resp.status();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                let (served, provider) = info.map(|i| (i.model, i.provider)).unwrap_or_default();
                let answer = body
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| {
                        v["choices"][0]["message"]["content"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                println!(
                    "   success: HTTP {}, served by {} via {}",
                    status.as_u16(),
                    served.as_deref().unwrap_or("?"),
                    provider.as_deref().unwrap_or("?"),
                );
                println!("   answer: {answer}");
            }
            Err(err) => {
                println!(
                    "   kind: {}   action: {}   retry_after: {}   counts for health: {}",
                    err.kind(),
                    err.action(),
                    err.retry_after()
                        .map(|d| format!("{}s", d.as_secs_f64()))
                        .unwrap_or_else(|| "-".into()),
                    if err.counts_for_health() { "yes" } else { "no" },
                );
                println!("   says: {err}");
            }
        }
        println!();
    }
    println!(
        "{} requests reached the stand-in; none left this process.",
        openrouter.total_calls()
    );
}

fn request(model: &str) -> http::Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"Why is the sky blue?"}}]}}"#
    );
    let mut req = http::Request::post("https://openrouter.ai/api/v1/chat/completions")
        .header("authorization", "Bearer sk-or-v1-not-a-real-key")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    // What the fallback layer sets for every attempt: the error names the model.
    req.extensions_mut().insert(Attempt::new(model));
    req
}
