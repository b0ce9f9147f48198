//! How to unit-test your own OpenRouter-calling code with `MockOpenRouter`.
//!
//! `MyClient` stands for your library: it asks a model one question over any HTTP client
//! `Service` (hyper-util, a reqwest adapter, tower-openrouter's stack...) and retries a
//! 429 once after its `Retry-After`. Its tests (at the bottom, run by `cargo test`) script
//! the stand-in and assert exactly what your code sent and how it reacted: the number of
//! calls, the bodies and headers received, and the time it waited (paused tokio time, so
//! a 2-second wait takes no time at all). `main` runs the same checks over real loopback
//! HTTP with hyper-util's client.
//!
//! Run it with `cargo run --example testing`; test it with
//! `cargo test --example testing`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ------------------------------------------------------------------ "your library"

/// A tiny OpenRouter client, generic over the HTTP client service.
pub struct MyClient<S> {
    http: S,
    base_url: String,
    api_key: String,
}

impl<S, B> MyClient<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// A client for `base_url` (like `https://openrouter.ai/api/v1`).
    pub fn new(http: S, base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        MyClient {
            http,
            base_url: base_url.into(),
            api_key: api_key.into(),
        }
    }

    /// Asks `model` one question; retries once on a 429, after its `Retry-After`.
    pub async fn ask(&self, model: &str, question: &str) -> Result<String, BoxError> {
        #[derive(serde::Serialize)]
        struct Message<'a> {
            role: &'a str,
            content: &'a str,
        }
        #[derive(serde::Serialize)]
        struct ChatRequest<'a> {
            model: &'a str,
            messages: [Message<'a>; 1],
        }
        let body = Bytes::from(serde_json::to_vec(&ChatRequest {
            model,
            messages: [Message {
                role: "user",
                content: question,
            }],
        })?);
        for attempt in 0..2 {
            let req = Request::post(format!("{}/chat/completions", self.base_url))
                .header("authorization", format!("Bearer {}", self.api_key))
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))?;
            let resp = self.http.clone().oneshot(req).await.map_err(Into::into)?;
            let status = resp.status();
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(Into::into)?
                .to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&bytes)?;
            if status == StatusCode::TOO_MANY_REQUESTS && attempt == 0 {
                tokio::time::sleep(wait.unwrap_or(Duration::from_secs(1))).await;
                continue;
            }
            if !status.is_success() {
                let message = json["error"]["message"].as_str().unwrap_or("unknown error");
                return Err(format!("OpenRouter said {}: {message}", status.as_u16()).into());
            }
            let content = json["choices"][0]["message"]["content"].as_str();
            return Ok(content.ok_or("no content in the answer")?.to_owned());
        }
        Err("still rate limited after one retry".into())
    }
}

// ------------------------------------------------------------------ main: over loopback

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower_openrouter::mock::{MockOpenRouter, Reply};

    let mock = MockOpenRouter::new();
    mock.model("openai/gpt-4o")
        .respond(Reply::status(429).retry_after(1))
        .once()
        .then(Reply::ok_text("Paris"));
    let server = mock.serve().await?;
    println!("stand-in listening at {}", server.url());

    let http = Client::builder(TokioExecutor::new()).build_http();
    let client = MyClient::new(http, server.url(), "sk-or-test");
    let answer = client.ask("openai/gpt-4o", "Capital of France?").await?;
    println!("answer: {answer}");
    assert_eq!(answer, "Paris");
    assert_eq!(mock.calls("openai/gpt-4o"), 2, "one 429, one retry");
    let sent = mock.requests();
    assert!(sent
        .iter()
        .all(|r| r.headers()["authorization"] == "Bearer sk-or-test"));
    println!(
        "the stand-in saw {} requests, both with the same body ({} bytes)",
        sent.len(),
        sent[0].body().len()
    );
    server.shutdown().await;
    Ok(())
}

// ------------------------------------------------------------------ your unit tests

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;
    use tower_openrouter::mock::{MockOpenRouter, Reply};

    fn client(mock: &MockOpenRouter) -> MyClient<MockOpenRouter> {
        MyClient::new(mock.clone(), "https://openrouter.ai/api/v1", "sk-or-test")
    }

    #[tokio::test]
    async fn sends_one_well_formed_request() {
        let mock = MockOpenRouter::new();
        mock.model("openai/gpt-4o").respond(Reply::ok_text("Paris"));

        let answer = client(&mock)
            .ask("openai/gpt-4o", "Capital of France?")
            .await
            .unwrap();

        assert_eq!(answer, "Paris");
        assert_eq!(mock.calls("openai/gpt-4o"), 1);
        let req = &mock.requests()[0];
        assert_eq!(req.uri().path(), "/api/v1/chat/completions");
        assert_eq!(req.headers()["authorization"], "Bearer sk-or-test");
        assert_eq!(
            req.body(),
            &Bytes::from_static(
                br#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Capital of France?"}]}"#
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_429_once_after_retry_after() {
        let mock = MockOpenRouter::new();
        mock.model("openai/gpt-4o")
            .respond(Reply::status(429).retry_after(2))
            .once()
            .then(Reply::ok_text("Paris"));

        let start = Instant::now();
        let answer = client(&mock)
            .ask("openai/gpt-4o", "Capital of France?")
            .await
            .unwrap();

        assert_eq!(answer, "Paris");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(2),
            "waited exactly Retry-After"
        );
        assert_eq!(mock.calls("openai/gpt-4o"), 2);
        let bodies = mock.bodies("openai/gpt-4o");
        assert_eq!(bodies[0], bodies[1], "the retry sends the same body");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_a_second_429() {
        let mock = MockOpenRouter::new();
        mock.model("openai/gpt-4o").respond(Reply::status(429));

        let err = client(&mock).ask("openai/gpt-4o", "?").await.unwrap_err();

        assert_eq!(err.to_string(), "OpenRouter said 429: Rate limit exceeded");
        assert_eq!(mock.calls("openai/gpt-4o"), 2);
    }

    #[tokio::test]
    async fn does_not_retry_other_errors() {
        let mock = MockOpenRouter::new();
        mock.model("openai/gpt-4o").respond(Reply::status(402));

        let err = client(&mock).ask("openai/gpt-4o", "?").await.unwrap_err();

        assert!(err
            .to_string()
            .starts_with("OpenRouter said 402: Insufficient credits"));
        assert_eq!(mock.total_calls(), 1);
    }

    #[tokio::test]
    async fn reports_a_dropped_connection() {
        let mock = MockOpenRouter::new();
        mock.model("openai/gpt-4o").respond(Reply::disconnect());

        let err = client(&mock).ask("openai/gpt-4o", "?").await.unwrap_err();

        assert!(err.downcast_ref::<std::io::Error>().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_model_is_slow() {
        let mock = MockOpenRouter::new();
        mock.model("openai/gpt-4o")
            .respond(Reply::delay(Duration::from_secs(30), Reply::ok()));

        let start = Instant::now();
        let answer = client(&mock).ask("openai/gpt-4o", "?").await.unwrap();

        assert_eq!(answer, "Hello from openai/gpt-4o");
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }
}
