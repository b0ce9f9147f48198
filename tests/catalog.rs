//! Capability- and price-aware chains: the model catalog through the whole stack and the
//! stand-in's `GET /api/v1/models`.
#![cfg(feature = "mock")]

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::catalog::{MaxPrice, ModelCatalog, Requirements};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::health::HealthConfig;
use tower_openrouter::mock::{MockModel, MockOpenRouter, Reply};
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::JsonBody;
use tower_openrouter::{Action, Error, ErrorKind};

// From the stand-in's catalog (src/mock/models.json).
const GPT4O: &str = "openai/gpt-4o"; // tools, image, 128k, $2.5/$10 per M
const MINI: &str = "openai/gpt-4o-mini"; // tools, image, 128k, $0.15/$0.6 per M
const LLAMA: &str = "meta-llama/llama-3.1-8b-instruct"; // no tools, text only, 131k
const MISTRAL: &str = "mistralai/mistral-7b-instruct"; // no tools, text only, 32k
const GEMINI: &str = "google/gemini-2.5-flash"; // tools, every modality, 1M
const SONNET: &str = "anthropic/claude-sonnet-4.5"; // tools, $3/$15 per M
const OPUS: &str = "anthropic/claude-3-opus"; // retired 2026-01-05

type Svc = OpenRouter<MockOpenRouter>;

fn builder(mock: &MockOpenRouter) -> OpenRouterLayerBuilder {
    let catalog = ModelCatalog::from_json(&mock.catalog_json()).unwrap();
    OpenRouterLayer::builder()
        .deadline(Duration::from_secs(120))
        .health_config(HealthConfig::default().jitter(0.0))
        .max_retries(0)
        .catalog(catalog)
}

fn stack(b: OpenRouterLayerBuilder, mock: &MockOpenRouter) -> Svc {
    ServiceBuilder::new()
        .layer(b.build().unwrap())
        .service(mock.clone())
}

/// A chat request for `head` (the chain's first model: the caller's model leads).
fn request(head: &str, body: &str) -> http::Request<String> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.replace(r#""model":"x/y""#, &format!(r#""model":"{head}""#)))
        .unwrap()
}

async fn send(svc: &Svc, req: http::Request<String>) -> Result<ServedBy, Error> {
    let resp = svc.clone().oneshot(req).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(resp.extensions().get::<ServedBy>().cloned().unwrap())
}

const TOOLS: &str = r#"{"model":"x/y","messages":[{"role":"user","content":"Weather in Oslo?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#;

fn skips(served: &ServedBy) -> Vec<(String, ErrorKind, String)> {
    served
        .attempts
        .iter()
        .map(|a| {
            (
                a.model.to_string(),
                a.kind(),
                a.error.detail().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn tools_request_skips_the_no_tools_model_with_no_call() {
    let mock = MockOpenRouter::new();
    mock.model(GPT4O).respond(Reply::status(429));
    let svc = stack(builder(&mock).chain([GPT4O, LLAMA, GEMINI]), &mock);
    let served = send(&svc, request(GPT4O, TOOLS)).await.unwrap();
    assert_eq!(&*served.model, GEMINI);
    assert_eq!(served.index, 2);
    assert_eq!(
        (mock.calls(GPT4O), mock.calls(LLAMA), mock.calls(GEMINI)),
        (1, 0, 1)
    );
    let s = skips(&served);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].0.as_str(), s[0].1), (GPT4O, ErrorKind::RateLimited));
    assert_eq!(
        s[1],
        (
            LLAMA.to_owned(),
            ErrorKind::Incapable,
            "no tools".to_owned()
        )
    );
    assert_eq!(served.attempts[1].index, 1);
    assert_eq!(served.attempts[1].elapsed, Duration::ZERO);
    // The same chain without tools in the request calls the llama model.
    let plain = r#"{"model":"x/y","messages":[{"role":"user","content":"hi"}]}"#;
    let served = send(&svc, request(GPT4O, plain)).await.unwrap();
    assert_eq!(&*served.model, LLAMA);
    assert_eq!(mock.calls(LLAMA), 1);
}

#[tokio::test(start_paused = true)]
async fn image_request_skips_the_text_only_model() {
    let mock = MockOpenRouter::new();
    let svc = stack(builder(&mock).chain([MISTRAL, MINI]), &mock);
    let body = r#"{"model":"x/y","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}}]}]}"#;
    let served = send(&svc, request(MISTRAL, body)).await.unwrap();
    assert_eq!(&*served.model, MINI);
    assert_eq!(mock.calls(MISTRAL), 0);
    assert_eq!(
        skips(&served),
        [(
            MISTRAL.to_owned(),
            ErrorKind::Incapable,
            "no image input".to_owned()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_150k_token_prompt_skips_the_128k_model() {
    let mock = MockOpenRouter::new();
    let svc = stack(builder(&mock).chain([GPT4O, GEMINI]), &mock);
    // English prose: about 150k tokens by the estimate.
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank today. ";
    let text = sentence.repeat(13_400);
    let body = format!(
        r#"{{"model":"x/y","max_tokens":1000,"messages":[{{"role":"user","content":"{text}"}}]}}"#
    );
    let needs = Requirements::scan(&JsonBody::parse(Bytes::from(body.clone())).unwrap());
    assert!(
        (140_000..160_000).contains(&needs.prompt_tokens),
        "{}",
        needs.prompt_tokens
    );
    let served = send(&svc, request(GPT4O, &body)).await.unwrap();
    assert_eq!(&*served.model, GEMINI);
    assert_eq!(mock.calls(GPT4O), 0);
    let want = format!("context 128000 < estimated {}", needs.prompt_tokens + 1000);
    assert_eq!(
        skips(&served),
        [(GPT4O.to_owned(), ErrorKind::Incapable, want)]
    );
}

#[tokio::test(start_paused = true)]
async fn over_the_price_ceiling_skips_the_dear_model() {
    let mock = MockOpenRouter::new();
    let svc = stack(builder(&mock).chain([SONNET, MINI]), &mock);
    let body = r#"{"model":"x/y","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    // No ceiling: the primary serves.
    assert_eq!(
        &*send(&svc, request(SONNET, body)).await.unwrap().model,
        SONNET
    );
    // A request ceiling of one cent: Sonnet's 1000 completion tokens alone cost 1.5 cents.
    let mut req = request(SONNET, body);
    req.extensions_mut().insert(MaxPrice::per_request(0.01));
    let served = send(&svc, req).await.unwrap();
    assert_eq!(&*served.model, MINI);
    assert_eq!(served.attempts.len(), 1);
    assert_eq!(served.attempts[0].kind(), ErrorKind::Incapable);
    let reason = served.attempts[0].error.detail().unwrap();
    assert_eq!(reason, "price $0.0150 > ceiling $0.0100");
    assert_eq!((mock.calls(SONNET), mock.calls(MINI)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_header_ceiling_only_tightens_and_a_bad_one_is_a_typed_error() {
    let mock = MockOpenRouter::new();
    let svc = stack(
        builder(&mock)
            .chain([SONNET, MINI])
            .max_price(MaxPrice::default().completion_per_million(20.0))
            .max_price_header("x-max-price"),
        &mock,
    );
    let body = r#"{"model":"x/y","messages":[{"role":"user","content":"hi"}]}"#;
    let mut req = request(SONNET, body);
    req.headers_mut()
        .insert("x-max-price", "completion=10".parse().unwrap());
    let served = send(&svc, req).await.unwrap();
    assert_eq!(&*served.model, MINI);
    assert_eq!(
        served.attempts[0].error.detail(),
        Some("price completion $15.00/M > ceiling $10.00/M")
    );
    // The header never reaches the upstream.
    assert!(mock
        .requests()
        .iter()
        .all(|r| !r.headers().contains_key("x-max-price")));
    // A looser header does not lift the configured ceiling ($20/M): Sonnet passes anyway.
    let mut req = request(SONNET, body);
    req.headers_mut()
        .insert("x-max-price", "completion=100".parse().unwrap());
    assert_eq!(&*send(&svc, req).await.unwrap().model, SONNET);
    let mut req = request(SONNET, body);
    req.headers_mut()
        .insert("x-max-price", "cheap".parse().unwrap());
    let calls = mock.total_calls();
    let e = svc.clone().oneshot(req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    assert_eq!(mock.total_calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn none_capable_is_no_capable_model_with_zero_calls() {
    let mock = MockOpenRouter::new();
    let svc = stack(builder(&mock).chain([LLAMA, MISTRAL, OPUS]), &mock);
    let e = svc
        .clone()
        .oneshot(request(LLAMA, TOOLS))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoCapableModel);
    assert_eq!(e.action(), Action::Fatal);
    assert_eq!(mock.total_calls(), 0);
    let reasons: Vec<_> = e
        .attempts()
        .iter()
        .map(|a| (a.model.to_string(), a.error.detail().unwrap().to_owned()))
        .collect();
    assert_eq!(
        reasons,
        [
            (LLAMA.to_owned(), "no tools".to_owned()),
            (MISTRAL.to_owned(), "no tools".to_owned()),
            (OPUS.to_owned(), "expired 2026-01-05".to_owned()),
        ]
    );
    assert_eq!(
        e.detail(),
        Some("meta-llama/llama-3.1-8b-instruct: no tools; mistralai/mistral-7b-instruct: no tools; anthropic/claude-3-opus: expired 2026-01-05")
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_lists_skips_beside_failures() {
    let mock = MockOpenRouter::new();
    mock.model(GPT4O).respond(Reply::status(502));
    mock.model(GEMINI).respond(Reply::status(502));
    let svc = stack(builder(&mock).chain([GPT4O, LLAMA, GEMINI]), &mock);
    let e = svc
        .clone()
        .oneshot(request(GPT4O, TOOLS))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exhausted);
    let kinds: Vec<_> = e.attempts().iter().map(|a| a.kind()).collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::ProviderError,
            ErrorKind::Incapable,
            ErrorKind::ProviderError
        ]
    );
    assert_eq!(mock.total_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn hybrid_windows_never_include_an_incapable_model() {
    let mock = MockOpenRouter::new();
    // The stand-in routes server-side like OpenRouter: the whole first window fails.
    for m in [GPT4O, GEMINI, MINI] {
        mock.model(m).respond(Reply::status(503));
    }
    let svc = stack(
        builder(&mock)
            .chain([GPT4O, LLAMA, GEMINI, MISTRAL, MINI, SONNET])
            .server_side_window(3),
        &mock,
    );
    let served = send(&svc, request(GPT4O, TOOLS)).await.unwrap();
    let models: Vec<Vec<String>> = mock
        .requests()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
            serde_json::from_value(v["models"].clone()).unwrap()
        })
        .collect();
    assert_eq!(
        models,
        [vec![GPT4O, GEMINI, MINI], vec![SONNET]]
            .map(|w| w.into_iter().map(String::from).collect::<Vec<_>>())
    );
    assert_eq!(&*served.requested, SONNET);
    assert_eq!(mock.calls(LLAMA) + mock.calls(MISTRAL), 0);
}

#[tokio::test(start_paused = true)]
async fn missing_models_pass_unless_strict() {
    let mock = MockOpenRouter::new();
    let svc = stack(builder(&mock).chain(["acme/unlisted", MINI]), &mock);
    assert_eq!(
        &*send(&svc, request("acme/unlisted", TOOLS))
            .await
            .unwrap()
            .model,
        "acme/unlisted"
    );
    let catalog = ModelCatalog::from_json(&mock.catalog_json())
        .unwrap()
        .strict(true);
    let svc = stack(
        builder(&mock)
            .catalog(catalog)
            .chain(["acme/unlisted", MINI]),
        &mock,
    );
    let served = send(&svc, request("acme/unlisted", TOOLS)).await.unwrap();
    assert_eq!(&*served.model, MINI);
    assert_eq!(
        served.attempts[0].error.detail(),
        Some("not in the catalog (strict mode)")
    );
    assert_eq!(mock.calls("acme/unlisted"), 1);
}

fn models_uri() -> http::Uri {
    "http://localhost/api/v1/models".parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_malformed_refresh_keeps_the_last_good_catalog() {
    let mock = MockOpenRouter::new();
    mock.catalog_model(MockModel::new("acme/agent").context_length(32_000));
    let catalog = ModelCatalog::new();
    assert_eq!(
        catalog
            .refresh_from(mock.clone(), &models_uri())
            .await
            .unwrap(),
        10
    );
    let tools = Requirements::scan(&JsonBody::parse(Bytes::from_static(TOOLS.as_bytes())).unwrap());
    let none = MaxPrice::default();
    assert_eq!(
        catalog
            .check("acme/agent", &tools, &none)
            .map(|u| u.to_string()),
        Some("no tools".into())
    );
    mock.catalog_script()
        .respond(Reply::status(500))
        .once()
        .then(Reply::error_body(200, "<html>not json</html>"))
        .once();
    mock.catalog_model(MockModel::new("acme/agent").supported_parameters(["tools", "tool_choice"]));
    let e = catalog
        .refresh_from(mock.clone(), &models_uri())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    let e = catalog
        .refresh_from(mock.clone(), &models_uri())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidBody);
    // Still the old entry.
    assert_eq!(catalog.len(), 10);
    assert!(catalog.check("acme/agent", &tools, &none).is_some());
    // The next refresh sees the tools: eligible without a restart.
    catalog
        .refresh_from(mock.clone(), &models_uri())
        .await
        .unwrap();
    assert_eq!(catalog.check("acme/agent", &tools, &none), None);
}

#[tokio::test(start_paused = true)]
async fn background_refresh_makes_a_model_eligible_without_restart() {
    let mock = MockOpenRouter::new();
    mock.catalog_model(MockModel::new("acme/agent"));
    let catalog = ModelCatalog::new().refresh_every(Duration::from_secs(600));
    let svc = stack(
        builder(&mock)
            .catalog(catalog.clone())
            .chain(["acme/agent", MINI]),
        &mock,
    );
    // Before the first load nothing is known: every model passes, nothing waits.
    assert!(!catalog.is_loaded());
    let handle = catalog.spawn_refresh(mock.clone(), models_uri(), None);
    while !catalog.is_loaded() {
        tokio::task::yield_now().await;
    }
    let served = send(&svc, request("acme/agent", TOOLS)).await.unwrap();
    assert_eq!(&*served.model, MINI);
    assert_eq!(mock.calls("acme/agent"), 0);

    mock.catalog_model(MockModel::new("acme/agent").supported_parameters(["tools"]));
    tokio::time::sleep(Duration::from_secs(599)).await;
    assert!(catalog
        .get("acme/agent")
        .unwrap()
        .supports("tools")
        .eq(&false));
    tokio::time::sleep(Duration::from_secs(1)).await;
    while !catalog.get("acme/agent").unwrap().supports("tools") {
        tokio::task::yield_now().await;
    }
    let served = send(&svc, request("acme/agent", TOOLS)).await.unwrap();
    assert_eq!(&*served.model, "acme/agent");
    // Two refreshes so far (at 0 s and 600 s): exactly two catalog requests.
    let catalog_calls = mock
        .requests()
        .iter()
        .filter(|r| r.uri().path() == "/api/v1/models")
        .count();
    assert_eq!(catalog_calls, 2);
    handle.abort();
}

#[test]
fn max_price_without_a_catalog_is_a_config_error() {
    let e = OpenRouterLayer::builder()
        .chain([MINI])
        .max_price(MaxPrice::per_request(0.1))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_price");
    let e = OpenRouterLayer::builder()
        .chain([MINI])
        .catalog(ModelCatalog::new())
        .max_price(MaxPrice::per_request(-1.0))
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "max_price.per_request must be a number >= 0, got -1"
    );
}

#[tokio::test(start_paused = true)]
async fn the_settings_file_sets_catalog_and_price_ceilings() {
    let mock = MockOpenRouter::new();
    let path = std::env::temp_dir().join(format!("i13-models-{}.json", std::process::id()));
    std::fs::write(&path, mock.catalog_json()).unwrap();
    let json = format!(
        r#"{{"default_chain": ["{SONNET}", "{LLAMA}", "{MINI}"],
            "catalog": {{"refresh_seconds": 600, "strict": true, "snapshot": {:?}}},
            "max_price": {{"completion": 10, "header": "x-max-price"}}}}"#,
        path.display().to_string()
    );
    let layer = OpenRouterLayer::from_json(&json).unwrap();
    std::fs::remove_file(&path).unwrap();
    let catalog = layer.catalog().unwrap();
    assert_eq!(catalog.len(), 9);
    assert!(catalog.is_strict());
    assert_eq!(catalog.refresh_interval(), Duration::from_secs(600));
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let served = send(&svc, request(SONNET, TOOLS)).await.unwrap();
    assert_eq!(&*served.model, MINI);
    let reasons: Vec<_> = served
        .attempts
        .iter()
        .map(|a| a.error.detail().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        ["price completion $15.00/M > ceiling $10.00/M", "no tools"]
    );

    let e = OpenRouterLayer::from_json(
        r#"{"default_chain": ["a/b"], "catalog": {"snapshot": "/nonexistent/models.json"}}"#,
    )
    .unwrap_err();
    assert_eq!(e.field(), "catalog.snapshot");
    let e = OpenRouterLayer::from_json(
        r#"{"default_chain": ["a/b"], "max_price": {"per_request": 1}}"#,
    )
    .unwrap_err();
    assert_eq!(e.field(), "max_price");
}

/// The `key` member of every body the stand-in received, in order.
fn sent(mock: &MockOpenRouter, key: &str) -> Vec<serde_json::Value> {
    mock.requests()
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(r.body()).unwrap()[key].clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn native_routing_models_never_include_an_incapable_model() {
    use tower_openrouter::routing::RoutingConfig;
    let mock = MockOpenRouter::new();
    let routing = RoutingConfig::builder()
        .models([GPT4O, LLAMA, MINI])
        .build()
        .unwrap();
    let svc = stack(builder(&mock).chain([GPT4O]).native_routing(routing), &mock);
    send(&svc, request(GPT4O, TOOLS)).await.unwrap();
    let plain = r#"{"model":"x/y","messages":[{"role":"user","content":"hi"}]}"#;
    send(&svc, request(GPT4O, plain)).await.unwrap();
    assert_eq!(
        sent(&mock, "models"),
        [
            serde_json::json!([GPT4O, MINI]),
            serde_json::json!([GPT4O, LLAMA, MINI])
        ]
    );
}

/// A default chain without a ceiling and a `budget` chain of one cent per attempt, both
/// of mini, with `routing` injected.
fn budget_stack(mock: &MockOpenRouter, routing: tower_openrouter::routing::RoutingConfig) -> Svc {
    let b = builder(mock)
        .chain([MINI])
        .named_chain("budget", [MINI])
        .chain_max_price("budget", MaxPrice::per_request(0.01))
        .native_routing(routing);
    stack(b, mock)
}

#[tokio::test(start_paused = true)]
async fn native_routing_lists_apply_the_chain_and_request_price_ceilings() {
    use tower_openrouter::routing::RoutingConfig;
    let mock = MockOpenRouter::new();
    let routing = RoutingConfig::builder().models([SONNET, GPT4O, MINI]);
    let svc = budget_stack(&mock, routing.build().unwrap());
    // 1000 completion tokens: Sonnet $0.015, GPT-4o $0.010 plus the prompt, mini $0.0006.
    let body = r#"{"model":"x/y","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    // The default chain has no ceiling: the whole list goes to OpenRouter.
    send(&svc, request(MINI, body)).await.unwrap();
    // The budget chain's ceiling drops the two dear models from the injected list.
    let served = send(&svc, request("budget", body)).await.unwrap();
    assert_eq!(served.chain.as_deref(), Some("budget"));
    // A request's own ceiling applies on the default chain too (and only tightens).
    let mut req = request(MINI, body);
    req.extensions_mut().insert(MaxPrice::per_request(0.012));
    send(&svc, req).await.unwrap();
    assert_eq!(
        sent(&mock, "models"),
        [
            serde_json::json!([SONNET, GPT4O, MINI]),
            serde_json::json!([MINI]),
            serde_json::json!([GPT4O, MINI]),
        ]
    );
    // Every other byte of the caller's body is kept.
    let last = mock.requests().last().unwrap().body().clone();
    assert_eq!(
        std::str::from_utf8(&last).unwrap(),
        format!(
            r#"{{"model":"{MINI}","max_tokens":1000,"messages":[{{"role":"user","content":"hi"}}],"models":["{GPT4O}","{MINI}"]}}"#
        )
    );
}

#[tokio::test(start_paused = true)]
async fn native_routing_messages_fallbacks_apply_the_chain_ceiling() {
    use tower_openrouter::routing::RoutingConfig;
    let mock = MockOpenRouter::new();
    let routing = RoutingConfig::builder().fallbacks([SONNET, MINI]);
    let svc = budget_stack(&mock, routing.build().unwrap());
    let req = |model: &str| {
        http::Request::post("http://localhost/api/v1/messages")
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"model":"{model}","max_tokens":1000,"messages":[{{"role":"user","content":"hi"}}]}}"#
            ))
            .unwrap()
    };
    send(&svc, req(MINI)).await.unwrap();
    send(&svc, req("budget")).await.unwrap();
    assert_eq!(
        sent(&mock, "fallbacks"),
        [
            serde_json::json!([{"model": SONNET}, {"model": MINI}]),
            serde_json::json!([{"model": MINI}]),
        ]
    );
}

/// How many `GET /api/v1/models` the stand-in received.
fn catalog_calls(mock: &MockOpenRouter) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.uri().path() == "/api/v1/models")
        .count()
}

#[tokio::test(start_paused = true)]
async fn the_settings_file_starts_the_background_refresh() {
    let mock = MockOpenRouter::new();
    mock.catalog_model(MockModel::new("acme/agent"));
    let layer = OpenRouterLayer::from_json(&format!(
        r#"{{"default_chain": ["acme/agent", "{MINI}"],
            "settings": {{"max_retries_per_model": 0}},
            "catalog": {{"refresh_seconds": 600, "url": "http://localhost/api/v1/models"}}}}"#
    ))
    .unwrap();
    let catalog = layer.catalog().unwrap().clone();
    let handle = layer.spawn_catalog_refresh(mock.clone()).unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    while !catalog.is_loaded() {
        tokio::task::yield_now().await;
    }
    let served = send(&svc, request("acme/agent", TOOLS)).await.unwrap();
    assert_eq!(&*served.model, MINI);
    assert_eq!(skips(&served)[0].2, "no tools");

    // The next two refreshes fail (a 500, then a body that is not JSON): the old catalog
    // stays, so the model is still skipped.
    mock.catalog_script()
        .respond(Reply::status(500))
        .once()
        .then(Reply::error_body(200, "<html>not json</html>"))
        .once();
    mock.catalog_model(MockModel::new("acme/agent").supported_parameters(["tools"]));
    for n in [2, 3] {
        tokio::time::sleep(Duration::from_secs(600)).await;
        while catalog_calls(&mock) < n {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(catalog.len(), 10);
        let served = send(&svc, request("acme/agent", TOOLS)).await.unwrap();
        assert_eq!(&*served.model, MINI);
    }
    // The fourth sees the tools: eligible without a restart.
    tokio::time::sleep(Duration::from_secs(600)).await;
    while !catalog.get("acme/agent").unwrap().supports("tools") {
        tokio::task::yield_now().await;
    }
    let served = send(&svc, request("acme/agent", TOOLS)).await.unwrap();
    assert_eq!(&*served.model, "acme/agent");
    assert_eq!(catalog_calls(&mock), 4);
    assert_eq!(mock.calls("acme/agent"), 1);
    handle.abort();
}

#[tokio::test(start_paused = true)]
async fn the_settings_file_can_turn_the_refresh_off_and_names_a_bad_url() {
    let mock = MockOpenRouter::new();
    let layer =
        OpenRouterLayer::from_json(r#"{"default_chain": ["a/b"], "catalog": {"refresh": false}}"#)
            .unwrap();
    assert!(layer.spawn_catalog_refresh(mock.clone()).is_none());
    let plain = OpenRouterLayer::from_json(r#"{"default_chain": ["a/b"]}"#).unwrap();
    assert!(plain.spawn_catalog_refresh(mock.clone()).is_none());
    // The default source is OpenRouter's.
    let default =
        OpenRouterLayer::from_json(r#"{"default_chain": ["a/b"], "catalog": {}}"#).unwrap();
    assert_eq!(
        default.catalog().unwrap().source_uri(),
        tower_openrouter::catalog::OPENROUTER_MODELS_URL
    );
    tokio::task::yield_now().await;
    assert_eq!(catalog_calls(&mock), 0);
    for bad in ["/api/v1/models", "not a url at all", "https://user:secret@"] {
        let e = OpenRouterLayer::from_json(&format!(
            r#"{{"default_chain": ["a/b"], "catalog": {{"url": {bad:?}}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field(), "catalog.url");
        assert!(!e.to_string().contains(bad), "{e}");
    }
}
