//! Every OpenRouter endpoint through one stack (issue 11): fallback only on generation
//! endpoints, the caller's model honoured, the stand-in's server-side routing.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::{Chains, ServedBy, UnlistedModel};
use tower_openrouter::health::HealthConfig;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::retry::RetryPolicy;
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::{Error, ErrorKind};

const BASE: &str = "http://localhost/api/v1";

fn builder() -> OpenRouterLayerBuilder {
    OpenRouterLayer::builder()
        .chains(
            Chains::new(["a/head", "b/second", "c/third"])
                .with_chain("coding", ["d/coder", "b/second"]),
        )
        .deadline(Duration::from_secs(120))
        .attempt_timeout(Duration::from_secs(30))
        .health_config(HealthConfig::default().jitter(0.0))
        .retry_policy(
            RetryPolicy::new()
                .max_retries(1)
                .backoff_base(Duration::from_millis(100))
                .backoff_cap(Duration::from_secs(1)),
        )
}

fn stack(b: OpenRouterLayerBuilder, mock: &MockOpenRouter) -> OpenRouter<MockOpenRouter> {
    ServiceBuilder::new()
        .layer(b.build().unwrap())
        .service(mock.clone())
}

fn request(method: Method, path: &str, body: &'static str) -> http::Request<String> {
    http::Request::builder()
        .method(method)
        .uri(format!("{BASE}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap()
}

/// Status, body and `ServedBy` of one call.
async fn call(
    svc: &OpenRouter<MockOpenRouter>,
    req: http::Request<String>,
) -> Result<(StatusCode, Bytes, Option<ServedBy>), Error> {
    let resp = svc.clone().oneshot(req).await?;
    let status = resp.status();
    let served = resp.extensions().get::<ServedBy>().cloned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, body, served))
}

const KEY: &str = r#"{"data":{"label":"sk-or-v1-abc...","limit_remaining":12.5,"usage":3.25}}"#;

#[tokio::test(start_paused = true)]
async fn a_get_passes_through_with_retry_and_its_bytes_untouched() {
    let mock = MockOpenRouter::new();
    mock.route("/api/v1/key")
        .respond(Reply::status(500))
        .once()
        .then(Reply::json(200, KEY));
    let svc = stack(builder(), &mock);
    let (status, body, served) = call(&svc, request(Method::GET, "/key", "")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, KEY.as_bytes(), "the response is unchanged");
    assert!(served.is_none(), "no model served a GET");
    // The 500 was retried on the same path: two calls, both GETs with an empty body.
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.uri().path(), "/api/v1/key");
        assert!(r.body().is_empty());
    }
    assert!(mock.calls_by_model().is_empty(), "no model was called");
}

#[tokio::test(start_paused = true)]
async fn a_failing_get_is_a_classified_error() {
    let mock = MockOpenRouter::new();
    mock.route("/api/v1/credits").respond(Reply::status(401));
    let svc = stack(builder(), &mock);
    let err = call(&svc, request(Method::GET, "/credits", ""))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(mock.total_calls(), 1, "a fatal kind is not retried");
}

const EMBED: &str =
    r#"{ "model" : "e/embed", "input": ["caf\u00e9", "x"], "encoding_format":"float"}"#;
const EMBEDDING: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"e/embed","usage":{"prompt_tokens":2,"total_tokens":2}}"#;

#[tokio::test(start_paused = true)]
async fn embeddings_keep_their_model_and_bytes_and_retry_on_it() {
    let mock = MockOpenRouter::new();
    mock.model("e/embed")
        .respond(Reply::status(500))
        .once()
        .then(Reply::json(200, EMBEDDING));
    let svc = stack(builder(), &mock);
    let (status, body, _) = call(&svc, request(Method::POST, "/embeddings", EMBED))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, EMBEDDING.as_bytes());
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.body(), EMBED.as_bytes(), "bytes upstream == bytes sent");
    }
    assert_eq!(mock.calls("e/embed"), 2);
    assert_eq!(mock.calls("a/head"), 0, "never the chat chain's model");
}

#[tokio::test(start_paused = true)]
async fn failing_embeddings_never_move_to_another_model() {
    let mock = MockOpenRouter::new();
    mock.model("e/embed").respond(Reply::status(503));
    let svc = stack(builder(), &mock);
    let err = call(&svc, request(Method::POST, "/embeddings", EMBED))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelUnavailable);
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let calls: Vec<(String, u64)> = mock.calls_by_model().into_iter().collect();
    // 503 moves on to another model in a chain; here there is none, and it is not a
    // same-model retry kind: one call, and the classified error itself.
    assert_eq!(calls, [("e/embed".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn embeddings_fall_back_when_they_name_a_chain() {
    let mock = MockOpenRouter::new();
    mock.model("d/coder").respond(Reply::status(503));
    mock.model("b/second").respond(Reply::json(200, EMBEDDING));
    let svc = stack(builder().chain_header("x-chain"), &mock);
    let mut req = request(Method::POST, "/embeddings", EMBED);
    req.headers_mut()
        .insert("x-chain", "coding".parse().unwrap());
    let (status, _, served) = call(&svc, req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let served = served.unwrap();
    assert_eq!(&*served.requested, "b/second");
    assert_eq!(served.caller_model.as_deref(), Some("e/embed"));
    let seen = mock.requests();
    assert!(seen.iter().all(|r| r.headers().get("x-chain").is_none()));
    assert_eq!(
        seen.iter().map(|r| r.model().unwrap()).collect::<Vec<_>>(),
        ["d/coder", "b/second"]
    );
}

const CHAT_OTHER: &str = r#"{"model":"z/other","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test(start_paused = true)]
async fn the_callers_model_goes_first_then_the_default_fallbacks() {
    let mock = MockOpenRouter::new();
    mock.model("z/other").respond(Reply::status(502));
    let svc = stack(builder().max_retries(0), &mock);
    let (_, _, served) = call(&svc, request(Method::POST, "/chat/completions", CHAT_OTHER))
        .await
        .unwrap();
    let served = served.unwrap();
    assert_eq!(served.caller_model.as_deref(), Some("z/other"));
    assert_eq!(&*served.model, "b/second");
    let models: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.model().unwrap().to_owned())
        .collect();
    assert_eq!(
        models,
        ["z/other", "b/second"],
        "the default head is not tried"
    );
    // Served as asked: the body went up byte for byte.
    assert_eq!(mock.requests()[0].body(), CHAT_OTHER.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn an_alias_or_a_chain_head_selects_that_chain() {
    let mock = MockOpenRouter::new();
    let svc = stack(builder(), &mock);
    let alias = r#"{"model":"coding","messages":[]}"#;
    let (_, body, served) = call(&svc, request(Method::POST, "/chat/completions", alias))
        .await
        .unwrap();
    let served = served.unwrap();
    assert_eq!(served.chain.as_deref(), Some("coding"));
    assert_eq!(served.caller_model.as_deref(), Some("coding"));
    assert_eq!(&*served.model, "d/coder");
    assert!(body.windows(9).any(|w| w == b"\"d/coder\""));
    let head = r#"{"model":"d/coder","messages":[]}"#;
    let (_, _, served) = call(&svc, request(Method::POST, "/chat/completions", head))
        .await
        .unwrap();
    assert_eq!(served.unwrap().chain.as_deref(), Some("coding"));
}

#[tokio::test(start_paused = true)]
async fn a_refused_model_costs_no_call() {
    let mock = MockOpenRouter::new();
    let svc = stack(builder().unlisted_model(UnlistedModel::Reject), &mock);
    let err = call(&svc, request(Method::POST, "/chat/completions", CHAT_OTHER))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelNotAllowed);
    assert!(err.to_string().contains("z/other"), "{err}");
    assert_eq!(mock.total_calls(), 0);
    // A configured model still goes through.
    let ok = r#"{"model":"a/head","messages":[]}"#;
    call(&svc, request(Method::POST, "/chat/completions", ok))
        .await
        .unwrap();
    assert_eq!(mock.total_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn hybrid_windows_on_the_responses_api() {
    let mock = MockOpenRouter::new();
    // The first window fails server-side whole, the second on its first model: e/5 serves.
    for m in ["a/head", "b/second", "c/third", "d/4"] {
        mock.model(m).respond(Reply::status(503));
    }
    let svc = stack(
        builder()
            .chain(["a/head", "b/second", "c/third", "d/4", "e/5", "f/6"])
            .server_side_window(3)
            .max_retries(0),
        &mock,
    );
    let body = r#"{"model":"a/head","input":"hi"}"#;
    let (status, _, served) = call(&svc, request(Method::POST, "/responses", body))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let served = served.unwrap();
    assert_eq!(&*served.requested, "d/4");
    assert_eq!(&*served.model, "e/5", "the model OpenRouter reports");
    assert_eq!(served.attempts.len(), 1, "one client-side attempt failed");
    let tried: Vec<(String, u64)> = mock.calls_by_model().into_iter().collect();
    let tried: Vec<(&str, u64)> = tried.iter().map(|(m, n)| (m.as_str(), *n)).collect();
    assert_eq!(
        tried,
        [
            ("a/head", 1),
            ("b/second", 1),
            ("c/third", 1),
            ("d/4", 1),
            ("e/5", 1)
        ],
        "every model tried server-side is counted, f/6 never"
    );
    assert_eq!(mock.total_calls(), 2, "two upstream requests");
    let bodies: Vec<Bytes> = mock.requests().iter().map(|r| r.body().clone()).collect();
    assert_eq!(
        bodies,
        [
            Bytes::from_static(
                br#"{"model":"a/head","input":"hi","models":["a/head","b/second","c/third"]}"#
            ),
            Bytes::from_static(br#"{"model":"d/4","input":"hi","models":["d/4","e/5","f/6"]}"#),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn native_routing_applies_to_the_responses_api() {
    use tower_openrouter::routing::{ProviderPreferences, RoutingConfig, SortBy};
    let mock = MockOpenRouter::new();
    let routing = RoutingConfig::builder()
        .models(["a/head", "b/second"])
        .provider(ProviderPreferences::new().sort(SortBy::Price))
        .route("fallback")
        .build()
        .unwrap();
    let svc = stack(builder().native_routing(routing), &mock);
    let body = r#"{"model":"a/head","input":"hi"}"#;
    call(&svc, request(Method::POST, "/responses", body))
        .await
        .unwrap();
    assert_eq!(
        mock.requests()[0].body(),
        r#"{"model":"a/head","input":"hi","models":["a/head","b/second"],"provider":{"sort":"price"},"route":"fallback"}"#
            .as_bytes()
    );
}

const EMBED_CHAINS: &str = r#"{
    "default_chain": ["a/head", "b/second"],
    "chains": {"embed": ["e/embed", "e/other"]},
    "endpoint_chains": {"embeddings": "embed"},
    "settings": {"max_retries_per_model": 0}
}"#;

#[tokio::test(start_paused = true)]
async fn an_endpoint_chain_gives_embeddings_model_fallback() {
    let mock = MockOpenRouter::new();
    mock.model("e/embed").respond(Reply::status(503));
    mock.model("e/other").respond(Reply::json(200, EMBEDDING));
    let layer = OpenRouterLayer::from_json(EMBED_CHAINS).unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let (status, body, served) = call(&svc, request(Method::POST, "/embeddings", EMBED))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, EMBEDDING.as_bytes());
    let served = served.unwrap();
    assert_eq!(served.chain.as_deref(), Some("embed"));
    assert_eq!(&*served.requested, "e/other");
    assert_eq!(served.caller_model.as_deref(), Some("e/embed"));
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body(), EMBED.as_bytes(), "the caller's bytes first");
    // Only `model` changes for the fallback, and no `models` is added.
    assert_eq!(
        seen[1].body(),
        EMBED.replace(r#""e/embed""#, r#""e/other""#).as_bytes()
    );
    // Another model is tried first, then the endpoint chain's fallbacks (never the chat
    // chain's models).
    mock.model("z/emb").respond(Reply::status(502));
    let other = r#"{"model":"z/emb","input":"x"}"#;
    let (_, _, served) = call(&svc, request(Method::POST, "/embeddings", other))
        .await
        .unwrap();
    assert_eq!(&*served.unwrap().requested, "e/other");
    let models: Vec<String> = mock.requests()[2..]
        .iter()
        .map(|r| r.model().unwrap().to_owned())
        .collect();
    assert_eq!(models, ["z/emb", "e/other"]);
    assert_eq!(mock.calls("a/head") + mock.calls("b/second"), 0);
}

#[test]
fn an_endpoint_chain_must_name_a_chain() {
    let err = OpenRouterLayer::from_json(
        &EMBED_CHAINS.replace(r#""embeddings": "embed""#, r#""embeddings": "nope""#),
    )
    .unwrap_err();
    assert_eq!(err.field(), "endpoint_chains.embeddings");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = OpenRouterLayer::builder()
        .chain(["a/b"])
        .allowed_models(["ok/1", " "])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "allowed_models");
}

/// The allow-list: a request naming a model or provider outside it costs no call.
mod allow_list {
    use super::*;
    use tower_openrouter::routing::{ProviderPreferences, RoutingConfig};

    async fn refused(svc: &OpenRouter<MockOpenRouter>, path: &str, body: &'static str) -> Error {
        let err = call(svc, request(Method::POST, path, body))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelNotAllowed, "{body}");
        err
    }

    #[tokio::test(start_paused = true)]
    async fn models_and_providers_outside_it_are_refused() {
        let mock = MockOpenRouter::new();
        let svc = stack(
            builder()
                .allowed_models(["meta-llama/*", "x/extra"])
                .allowed_providers(["OpenAI"]),
            &mock,
        );
        for (path, body, named) in [
            (
                "/chat/completions",
                r#"{"model":"evil/a","messages":[]}"#,
                "evil/a",
            ),
            (
                "/chat/completions",
                r#"{"model":"a/head","models":["b/second","evil/a"],"messages":[]}"#,
                "evil/a",
            ),
            (
                "/messages",
                r#"{"model":"a/head","messages":[],"fallbacks":[{"model":"evil/b"}]}"#,
                "evil/b",
            ),
            (
                "/responses",
                r#"{"model":"a/head","input":"x","provider":{"only":["Evil"]}}"#,
                "Evil",
            ),
            (
                "/chat/completions",
                r#"{"model":"a/head","messages":[],"provider":{"order":["openai","Evil"]}}"#,
                "Evil",
            ),
            (
                "/embeddings",
                r#"{"model":"evil/embed","input":"x"}"#,
                "evil/embed",
            ),
        ] {
            let err = refused(&svc, path, body).await;
            assert!(err.to_string().contains(named), "{err}");
        }
        let err = call(
            &svc,
            request(
                Method::POST,
                "/chat/completions",
                r#"{"model":"a/head","messages":[],"provider":{"only":"openai"}}"#,
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRouting);
        assert_eq!(mock.total_calls(), 0);
        // The chains (names and models), the list and its prefixes are served.
        for body in [
            r#"{"model":"coding","messages":[]}"#,
            r#"{"model":"c/third","models":["d/coder","meta-llama/llama-3.1-8b-instruct"],"messages":[]}"#,
            r#"{"model":"x/extra","messages":[],"provider":{"only":["openai"],"ignore":["Other"]}}"#,
        ] {
            call(&svc, request(Method::POST, "/chat/completions", body))
                .await
                .unwrap();
        }
        assert_eq!(mock.total_calls(), 3);
        // A request that names its chain is not held to its `model` (the chain's replace
        // it), only to what it sends along.
        let svc = stack(
            builder()
                .allowed_models(Vec::<String>::new())
                .chain_header("x-chain"),
            &mock,
        );
        let mut req = request(
            Method::POST,
            "/chat/completions",
            r#"{"model":"any/thing","messages":[]}"#,
        );
        req.headers_mut()
            .insert("x-chain", "coding".parse().unwrap());
        let (_, _, served) = call(&svc, req).await.unwrap();
        assert_eq!(&*served.unwrap().requested, "d/coder");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stack_that_rejects_unlisted_models_holds_models_to_its_chains() {
        let mock = MockOpenRouter::new();
        let routing = RoutingConfig::builder()
            .models(["a/head", "r/routed"])
            .provider(ProviderPreferences::new().only(["Routed"]))
            .build()
            .unwrap();
        let svc = stack(
            builder()
                .unlisted_model(UnlistedModel::Reject)
                .allowed_providers(Vec::<String>::new())
                .native_routing(routing),
            &mock,
        );
        refused(
            &svc,
            "/chat/completions",
            r#"{"model":"a/head","models":["evil/a"],"messages":[]}"#,
        )
        .await;
        refused(
            &svc,
            "/chat/completions",
            r#"{"model":"a/head","messages":[],"provider":{"only":["Evil"]}}"#,
        )
        .await;
        assert_eq!(mock.total_calls(), 0);
        // What the stack's own routing config injects is allowed.
        call(
            &svc,
            request(
                Method::POST,
                "/chat/completions",
                r#"{"model":"a/head","messages":[]}"#,
            ),
        )
        .await
        .unwrap();
        let sent: serde_json::Value = serde_json::from_slice(mock.requests()[0].body()).unwrap();
        assert_eq!(sent["models"], serde_json::json!(["a/head", "r/routed"]));
        assert_eq!(sent["provider"]["only"], serde_json::json!(["Routed"]));
    }
}

/// The stand-in's own server-side routing, without the stack.
mod mock_routing {
    use super::*;

    async fn raw(mock: &MockOpenRouter, path: &str, body: &'static str) -> (StatusCode, String) {
        let req = http::Request::post(format!("{BASE}{path}"))
            .body(http_body_util::Full::new(Bytes::from_static(
                body.as_bytes(),
            )))
            .unwrap();
        let resp = mock.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn models_are_tried_in_order_and_the_server_names_the_one_that_served() {
        let mock = MockOpenRouter::new();
        mock.model("a/1").respond(Reply::status(429));
        mock.model("b/2").respond(Reply::status(503)).once();
        let (status, body) = raw(
            &mock,
            "/chat/completions",
            r#"{"model":"a/1","models":["a/1","b/2","c/3"],"messages":[]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#""model":"c/3""#), "{body}");
        assert_eq!(mock.calls("a/1"), 1);
        assert_eq!(mock.calls("b/2"), 1);
        assert_eq!(mock.calls("c/3"), 1);
        // b/2's script moved on: the next request is served by it.
        let (_, body) = raw(
            &mock,
            "/chat/completions",
            r#"{"model":"a/1","models":["a/1","b/2"],"messages":[]}"#,
        )
        .await;
        assert!(body.contains(r#""model":"b/2""#), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn every_model_failing_answers_with_the_last_failure() {
        let mock = MockOpenRouter::new();
        mock.model("a/1").respond(Reply::status(429));
        mock.model("b/2").respond(Reply::status(502));
        let (status, _) = raw(
            &mock,
            "/chat/completions",
            r#"{"model":"a/1","models":["a/1","b/2"],"messages":[]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(mock.total_calls(), 1);
        assert_eq!(mock.calls("a/1") + mock.calls("b/2"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_fallbacks_are_server_side_too() {
        let mock = MockOpenRouter::new();
        mock.model("a/1").respond(Reply::status(529));
        let (status, body) = raw(
            &mock,
            "/messages",
            r#"{"model":"a/1","max_tokens":5,"messages":[],"fallbacks":[{"model":"b/2"}]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#""model":"b/2""#), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn openrouters_documented_limits_are_400s() {
        let mock = MockOpenRouter::new();
        for (path, body) in [
            (
                "/messages",
                r#"{"model":"a","messages":[],"fallbacks":[{"model":"b"},{"model":"c"},{"model":"d"},{"model":"e"}]}"#,
            ),
            (
                "/messages",
                r#"{"model":"a","messages":[],"models":["b"],"fallbacks":[{"model":"c"}]}"#,
            ),
            (
                "/messages",
                r#"{"model":"a","messages":[],"fallbacks":[{"model":"b","max_tokens":3}]}"#,
            ),
            (
                "/chat/completions",
                r#"{"model":"a","messages":[],"models":["a","b","c","d"]}"#,
            ),
        ] {
            let (status, _) = raw(&mock, path, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        }
        assert!(mock.calls_by_model().is_empty(), "no model was tried");
    }
}

/// The Responses API stream: held until its first content event.
mod responses_stream {
    use super::*;

    const CREATED: &str = r#"event: response.created
data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","model":"a/head"}}"#;
    const IN_PROGRESS: &str = r#"event: response.in_progress
data: {"type":"response.in_progress","response":{"id":"resp_1","status":"in_progress"}}"#;
    const RATE_LIMITED: &str = r#"event: error
data: {"type":"error","code":"rate_limit_exceeded","message":"Rate limit exceeded","param":null}"#;
    const DELTA: &str = r#"event: response.output_text.delta
data: {"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}"#;
    const COMPLETED: &str = r#"event: response.completed
data: {"type":"response.completed","response":{"id":"resp_1","status":"completed"}}"#;
    const FAILED: &str = r#"event: response.failed
data: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"server_error","message":"The provider failed"}}}"#;

    const BODY: &str = r#"{"model":"a/head","input":"hi","stream":true}"#;

    fn served_by_b(events: &[&str]) -> Reply {
        let created = CREATED.replace("a/head", "b/second");
        let mut all = vec![created];
        all.extend(events.iter().map(|e| e.to_string()));
        Reply::sse(all)
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_after_the_opening_events_still_falls_over() {
        let mock = MockOpenRouter::new();
        mock.model("a/head")
            .respond(Reply::sse([CREATED, IN_PROGRESS, RATE_LIMITED]));
        mock.model("b/second")
            .respond(served_by_b(&[DELTA, COMPLETED]));
        let svc = stack(builder(), &mock);
        let (status, body, served) = call(&svc, request(Method::POST, "/responses", BODY))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let served = served.unwrap();
        assert_eq!(&*served.model, "b/second");
        assert_eq!(served.attempts.len(), 1);
        assert_eq!(served.attempts[0].kind(), ErrorKind::RateLimited);
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            !text.contains("rate_limit_exceeded"),
            "a/head's bytes never reach the caller"
        );
        assert!(
            text.contains(r#""delta":"Hi""#) && text.ends_with("\n\n"),
            "{text}"
        );
        assert_eq!(mock.calls("a/head"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn response_failed_before_content_is_a_typed_error() {
        let mock = MockOpenRouter::new();
        mock.model("a/head").respond(Reply::sse([CREATED, FAILED]));
        mock.model("b/second")
            .respond(Reply::sse([CREATED, FAILED]));
        mock.model("c/third").respond(Reply::sse([CREATED, FAILED]));
        let svc = stack(builder().max_retries(0), &mock);
        let err = call(&svc, request(Method::POST, "/responses", BODY))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Exhausted);
        let attempts = err.attempts();
        assert_eq!(attempts.len(), 3);
        for a in attempts {
            assert_eq!(a.kind(), ErrorKind::ProviderError);
            assert_eq!(a.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn response_failed_after_content_ends_the_body_with_an_error() {
        let mock = MockOpenRouter::new();
        mock.model("a/head")
            .respond(Reply::sse([CREATED, DELTA, FAILED]));
        let svc = stack(builder(), &mock);
        let resp = svc
            .clone()
            .oneshot(request(Method::POST, "/responses", BODY))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut seen = Vec::new();
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => seen.extend_from_slice(&f.into_data().unwrap_or_default()),
                Some(Err(e)) => break e,
                None => panic!("the stream ended without its error"),
            }
        };
        assert_eq!(err.kind(), ErrorKind::StreamInterrupted);
        let text = String::from_utf8(seen).unwrap();
        assert!(text.contains(r#""delta":"Hi""#));
        assert!(
            !text.contains("response.failed"),
            "the failing event is cut: {text}"
        );
        assert_eq!(mock.total_calls(), 1, "never replayed after content");
    }
}
