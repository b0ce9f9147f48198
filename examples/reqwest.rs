//! A `reqwest::Client` wrapped in [`OpenRouterLayer`] through
//! [`ReqwestService`](tower_openrouter::reqwest::ReqwestService): one chat completion with
//! a fallback chain, then one streamed completion printed as it arrives.
//!
//! ```text
//! OPENROUTER_API_KEY=sk-or-... cargo run --example reqwest     # the real OpenRouter
//! cargo run --example reqwest                                  # the loopback stand-in
//! ```
//!
//! Without `OPENROUTER_API_KEY` it says so in one line and runs against the loopback
//! stand-in, whose primary model answers 429, so the fallback shows. The key is only ever
//! put into the `Authorization` header (marked sensitive); it is never printed.
//!
//! TLS: reqwest's `rustls-no-provider` feature with rustls's `ring` provider installed as
//! the process default (builds with a C compiler alone) and the platform's certificates.

use std::time::Duration;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::mock::{MockOpenRouter, MockServer, Reply};
use tower_openrouter::reqwest::ReqwestService;
use tower_openrouter::{OpenRouterLayer, ServedBy};

const CHAIN: [&str; 3] = [
    "anthropic/claude-sonnet-4.5",
    "openai/gpt-4o",
    "google/gemini-2.5-flash",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::var("OPENROUTER_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    // (base URL, key, the stand-in's server kept alive while we use it)
    let (base, key, _stand_in) = match key {
        Some(key) => ("https://openrouter.ai/api/v1".to_owned(), key, None),
        None => {
            let server = stand_in().await?;
            (server.url(), "sk-or-stand-in".to_owned(), Some(server))
        }
    };

    // reqwest built without a TLS provider of its own: use rustls's ring provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let layer = OpenRouterLayer::builder()
        .chain(CHAIN)
        .attempt_timeout(Duration::from_secs(60))
        .deadline(Duration::from_secs(180))
        .build()?;
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(ReqwestService::new(http));

    let mut auth = HeaderValue::try_from(format!("Bearer {key}"))?;
    auth.set_sensitive(true);
    let request = |stream: bool| {
        let body = format!(
            r#"{{"model":"{}","stream":{stream},"messages":[{{"role":"user","content":"Say hello in five words."}}],"max_tokens":32}}"#,
            CHAIN[0]
        );
        http::Request::post(format!("{base}/chat/completions"))
            .header(AUTHORIZATION, auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("X-Title", "tower-openrouter reqwest example")
            .body(body)
    };

    // One plain call.
    match client.clone().oneshot(request(false)?).await {
        Ok(resp) => {
            if let Some(s) = resp.extensions().get::<ServedBy>() {
                println!("served by: {} (asked for {})", s.model, s.requested);
                for a in &s.attempts {
                    println!(
                        "  failed before: {} (retry {}): {}",
                        a.model, a.retry, a.error
                    );
                }
            }
            let bytes = resp.into_body().collect().await?.to_bytes();
            println!("{}", String::from_utf8_lossy(&bytes));
        }
        // Display never contains the key or the request body.
        Err(e) => println!("failed: {e}"),
    }

    // One stream, printed chunk by chunk as reqwest reads it.
    match client.oneshot(request(true)?).await {
        Ok(resp) => {
            let model = resp.extensions().get::<ServedBy>().map(|s| s.model.clone());
            println!("stream served by: {}", model.as_deref().unwrap_or("?"));
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Ok(data) = frame.into_data() {
                            print!("{}", String::from_utf8_lossy(&data));
                        }
                    }
                    Err(e) => {
                        println!("\nstream failed: {e}");
                        break;
                    }
                }
            }
        }
        Err(e) => println!("stream failed before its first token: {e}"),
    }
    Ok(())
}

/// The loopback stand-in, with a rate-limited primary.
async fn stand_in() -> std::io::Result<MockServer> {
    let mock = MockOpenRouter::new();
    mock.model(CHAIN[0])
        .respond(Reply::status(429).retry_after(30));
    let server = mock.serve().await?;
    println!(
        "OPENROUTER_API_KEY is not set: calling the loopback stand-in at {} instead (its primary answers 429)",
        server.url()
    );
    Ok(server)
}
