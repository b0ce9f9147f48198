//! A hyper-util HTTPS client wrapped in [`OpenRouterLayer`]: one chat completion with a
//! fallback chain, then which model served it and every failed attempt before it.
//!
//! ```text
//! OPENROUTER_API_KEY=sk-or-... cargo run --example client                 # the real OpenRouter
//! cargo run --example client                                             # the loopback stand-in
//! ```
//!
//! Without `OPENROUTER_API_KEY` it says so in one line and runs against the loopback
//! stand-in ([`MockOpenRouter`](tower_openrouter::mock::MockOpenRouter)), whose primary
//! model is scripted to answer 429, so the fallback shows. The key is only ever put into the `Authorization` header (marked
//! sensitive); it is never printed.
//!
//! TLS is rustls with the `ring` provider and the webpki roots: it builds with a C compiler
//! alone (no OpenSSL, no cmake or NASM) and needs no system certificate store.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::mock::{MockOpenRouter, MockServer, Reply};
use tower_openrouter::stack::OpenRouterLayer;
use tower_openrouter::UpstreamInfo;

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

    // rustls with ring and webpki roots: no OpenSSL, no cmake, no system certificates.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);

    let layer = OpenRouterLayer::builder()
        .chain(CHAIN)
        .attempt_timeout(Duration::from_secs(60))
        .deadline(Duration::from_secs(180))
        .build()?;
    let svc = ServiceBuilder::new().layer(layer).service(client);

    let mut auth = HeaderValue::try_from(format!("Bearer {key}"))?;
    auth.set_sensitive(true);
    let body = r#"{"model":"anthropic/claude-sonnet-4.5","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}"#;
    let req = http::Request::post(format!("{base}/chat/completions"))
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .header("X-Title", "tower-openrouter client example")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;

    match svc.oneshot(req).await {
        Ok(resp) => {
            let status = resp.status();
            let served = resp.extensions().get::<ServedBy>().cloned();
            let provider = resp
                .extensions()
                .get::<UpstreamInfo>()
                .and_then(|i| i.provider.clone());
            let bytes = resp.into_body().collect().await?.to_bytes();
            println!("status: {status}");
            if let Some(s) = served {
                println!(
                    "served by: {} (asked for {}, chain position {}, provider {})",
                    s.model,
                    s.requested,
                    s.index,
                    provider.as_deref().unwrap_or("?")
                );
                for a in &s.attempts {
                    println!(
                        "  failed before: {} (retry {}): {}",
                        a.model, a.retry, a.error
                    );
                }
            }
            println!("{}", String::from_utf8_lossy(&bytes));
        }
        Err(e) => {
            // Display never contains the key or the request body.
            println!("failed: {e}");
            for a in e.attempts() {
                println!("  attempt: {} (retry {}): {}", a.model, a.retry, a.error);
            }
        }
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
