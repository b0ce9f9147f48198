//! Native routing: exact bytes sent upstream, OpenRouter's limits as typed errors with no
//! upstream call, per-request overrides, keep-or-replace of the caller's own fields.

mod counting_upstream;

use bytes::Bytes;
use counting_upstream::Upstream;
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
use tower_openrouter::body::{full_bytes, BufferRequestLayer};
use tower_openrouter::routing::{
    DataCollection, MaxPrice, NativeRoutingLayer, Percentiles, Performance, ProviderPreferences,
    ProviderSort, RoutingConfig, RoutingOverride, SortBy, SortPartition,
};
use tower_openrouter::JsonBody;
use tower_openrouter::{Error, ErrorKind};

const AUTH: &str = "Bearer sk-or-v1-SENTINEL-KEY-0123456789";

const CHAT: &str = "http://127.0.0.1/api/v1/chat/completions";
const MESSAGES: &str = "http://127.0.0.1/api/v1/messages";

fn post(uri: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("authorization", AUTH)
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

async fn send(
    config: &RoutingConfig,
    up: &Upstream,
    req: Request<Full<Bytes>>,
) -> Result<String, Error> {
    let resp = NativeRoutingLayer::new(config.clone())
        .layer(up.service())
        .oneshot(req)
        .await?;
    Ok(String::from_utf8(resp.into_body().to_vec()).unwrap())
}

fn full_config() -> RoutingConfig {
    RoutingConfig::builder()
        .models([
            "anthropic/claude-3.5-sonnet",
            "openai/gpt-4o",
            "google/gemini-2.0-flash-001",
        ])
        .route("fallback")
        .provider(
            ProviderPreferences::new()
                .order(["Anthropic", "AWS Bedrock", "GCP Vertex"])
                .allow_fallbacks(true),
        )
        .build()
        .unwrap()
}

async fn invalid_routing(config: &RoutingConfig, req: Request<Full<Bytes>>, want: &str) {
    let up = Upstream::default();
    let e = send(config, &up, req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRouting, "{e}");
    assert!(e.detail().unwrap().contains(want), "{e}");
    assert_eq!(up.calls(), 0, "no upstream call for {want}");
}

#[tokio::test]
async fn injects_exactly_the_configured_fields_and_keeps_every_other_byte() {
    let up = Upstream::default();
    let body = "{\n  \"model\": \"anthropic/claude-3.5-sonnet\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"Explain recursion \\u00e9 \u{1F600}\", \"model\": \"nested\"}],\n  \"max_tokens\": 500\n}";
    let mut req = post(CHAT, body);
    req.headers_mut()
        .insert("content-length", body.len().into());
    let sent = send(&full_config(), &up, req).await.unwrap();
    let want = "{\n  \"model\": \"anthropic/claude-3.5-sonnet\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"Explain recursion \\u00e9 \u{1F600}\", \"model\": \"nested\"}],\n  \"max_tokens\": 500,\n  \"models\": [\"anthropic/claude-3.5-sonnet\",\"openai/gpt-4o\",\"google/gemini-2.0-flash-001\"],\n  \"provider\": {\"order\":[\"Anthropic\",\"AWS Bedrock\",\"GCP Vertex\"],\"allow_fallbacks\":true},\n  \"route\": \"fallback\"\n}";
    assert_eq!(sent, want);
    assert!(
        sent.starts_with(&body[..body.len() - 2]),
        "the caller's bytes are a prefix"
    );
    let seen = up.seen();
    assert_eq!(
        seen.headers()["content-length"],
        want.len().to_string().as_str()
    );
    assert_eq!(seen.headers()["authorization"], AUTH);
    let json = seen.extensions().get::<JsonBody>().expect("updated index");
    assert!(json.is_for(&full_bytes(seen.body())));
    assert_eq!(json.raw("route"), Some("\"fallback\""));
}

#[tokio::test]
async fn messages_get_fallbacks_and_chat_does_not() {
    let config = RoutingConfig::builder()
        .fallbacks(["openai/gpt-4o", "google/gemini-2.0-flash-001"])
        .build()
        .unwrap();
    let up = Upstream::default();
    let sent = send(
        &config,
        &up,
        post(
            MESSAGES,
            r#"{"model":"anthropic/claude-sonnet-4.5","max_tokens":10}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        sent,
        r#"{"model":"anthropic/claude-sonnet-4.5","max_tokens":10,"fallbacks":[{"model":"openai/gpt-4o"},{"model":"google/gemini-2.0-flash-001"}]}"#
    );
    let body = Bytes::from_static(br#"{"model":"a/b"}"#);
    let req = Request::post(CHAT).body(Full::new(body.clone())).unwrap();
    send(&config, &up, req).await.unwrap();
    let seen = full_bytes(up.seen().body());
    assert_eq!(
        seen.as_ptr(),
        body.as_ptr(),
        "nothing to inject: the body is not even copied"
    );
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn the_callers_fields_are_kept_by_default_and_replaced_when_configured() {
    let body = r#"{"provider" : {"only":["Groq"]}, "model":"a/b", "models":["a/b"] }"#;
    let up = Upstream::default();
    let sent = send(&full_config(), &up, post(CHAT, body)).await.unwrap();
    assert_eq!(
        sent,
        r#"{"provider" : {"only":["Groq"]}, "model":"a/b", "models":["a/b"], "route":"fallback" }"#
    );

    let replace = RoutingConfig::builder()
        .models(["x/1", "x/2"])
        .provider(ProviderPreferences::new().sort(SortBy::Latency))
        .replace_caller_fields(true)
        .build()
        .unwrap();
    assert!(replace.replaces_caller_fields());
    let sent = send(&replace, &up, post(CHAT, body)).await.unwrap();
    assert_eq!(
        sent,
        r#"{"provider" : {"sort":"latency"}, "model":"a/b", "models":["x/1","x/2"] }"#
    );
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn a_request_override_wins_over_the_config() {
    let up = Upstream::default();
    let config = full_config();
    let mut req = post(CHAT, r#"{"model":"a/b"}"#);
    req.extensions_mut().insert(
        RoutingOverride::new()
            .models(["openai/gpt-4o-mini"])
            .provider(ProviderPreferences::new().zdr(true)),
    );
    let sent = send(&config, &up, req).await.unwrap();
    assert_eq!(
        sent,
        r#"{"model":"a/b","models":["openai/gpt-4o-mini"],"provider":{"zdr":true},"route":"fallback"}"#
    );

    // An empty list injects no `models`; the rest stays configured.
    let mut req = post(CHAT, r#"{"model":"a/b"}"#);
    req.extensions_mut()
        .insert(RoutingOverride::new().models(Vec::<String>::new()));
    let sent = send(&config, &up, req).await.unwrap();
    assert!(!sent.contains("models") && sent.contains("route"), "{sent}");

    // Disabled: the body goes out as it came.
    let body = Bytes::from_static(br#"{"model":"a/b"}"#);
    let mut req = Request::post(CHAT).body(Full::new(body.clone())).unwrap();
    req.extensions_mut().insert(RoutingOverride::disabled());
    send(&config, &up, req).await.unwrap();
    assert_eq!(full_bytes(up.seen().body()).as_ptr(), body.as_ptr());

    // An override can replace the caller's own fields for one request.
    let mut req = post(CHAT, r#"{"model":"a/b","route":"other"}"#);
    req.extensions_mut()
        .insert(RoutingOverride::new().replace_caller_fields(true));
    let sent = send(&config, &up, req).await.unwrap();
    assert!(
        sent.starts_with(r#"{"model":"a/b","route":"fallback","models":"#),
        "{sent}"
    );

    // The override is checked like any other value.
    let mut req = post(CHAT, r#"{"model":"a/b"}"#);
    req.extensions_mut()
        .insert(RoutingOverride::new().models(["m/1", "m/2", "m/3", "m/4"]));
    invalid_routing(
        &config,
        req,
        "`models` has 4 entries; OpenRouter accepts at most 3",
    )
    .await;
    let mut req = post(MESSAGES, r#"{"model":"a/b"}"#);
    req.extensions_mut()
        .insert(RoutingOverride::new().fallbacks(["f/1"]));
    invalid_routing(&config, req, "together with `models`").await;
}

#[tokio::test]
async fn openrouters_limits_are_typed_errors_before_any_call() {
    let none = RoutingConfig::default();
    let models4 = r#"{"model":"a","models":["a","b","c","d"]}"#;
    invalid_routing(&none, post(CHAT, models4), "`models` has 4 entries").await;
    invalid_routing(&none, post(MESSAGES, models4), "at most 3").await;
    invalid_routing(&none, post(CHAT, r#"{"model":"a","models":"a"}"#), "array").await;
    invalid_routing(
        &none,
        post(CHAT, r#"{"model":"a","models":[1]}"#),
        "strings",
    )
    .await;
    invalid_routing(
        &none,
        post(MESSAGES, r#"{"model":"a","fallbacks":[{"model":"b"},{"model":"c"},{"model":"d"},{"model":"e"}]}"#),
        "`fallbacks` has 4 entries; OpenRouter accepts at most 3",
    )
    .await;
    invalid_routing(
        &none,
        post(
            MESSAGES,
            r#"{"model":"a","fallbacks":[{"model":"b"},{"model":"c","provider":"x"}]}"#,
        ),
        "`fallbacks` entry 1 must be",
    )
    .await;
    invalid_routing(
        &none,
        post(MESSAGES, r#"{"model":"a","fallbacks":[{"model":1}]}"#),
        "entry 0",
    )
    .await;
    invalid_routing(
        &none,
        post(MESSAGES, r#"{"model":"a","fallbacks":["b"]}"#),
        "entry 0",
    )
    .await;
    invalid_routing(
        &none,
        post(MESSAGES, r#"{"model":"a","fallbacks":{}}"#),
        "must be an array",
    )
    .await;
    invalid_routing(
        &none,
        post(
            MESSAGES,
            r#"{"model":"a","models":["b"],"fallbacks":[{"model":"c"}]}"#,
        ),
        "`fallbacks` cannot be used together with `models`",
    )
    .await;
    // Injected `fallbacks` with the caller's `models` (kept): the final body breaks the rule.
    let fallbacks = RoutingConfig::builder().fallbacks(["c"]).build().unwrap();
    invalid_routing(
        &fallbacks,
        post(MESSAGES, r#"{"model":"a","models":["b"]}"#),
        "together with `models`",
    )
    .await;
    // Injected `models` with the caller's `fallbacks`.
    invalid_routing(
        &full_config(),
        post(MESSAGES, r#"{"model":"a","fallbacks":[{"model":"c"}]}"#),
        "together with `models`",
    )
    .await;

    // Within the limits: passed on. A chat body's own `fallbacks` is not ours to judge.
    let up = Upstream::default();
    for (uri, body) in [
        (
            MESSAGES,
            r#"{"model":"a","fallbacks":[{"model":"b"},{"model":"c"},{"model":"d"}]}"#,
        ),
        (CHAT, r#"{"model":"a","models":["a","b","c"]}"#),
        (CHAT, r#"{"model":"a","fallbacks":[1,2,3,4]}"#),
    ] {
        assert_eq!(send(&none, &up, post(uri, body)).await.unwrap(), body);
    }
    assert_eq!(up.calls(), 3);
}

#[test]
fn the_builder_checks_the_limits() {
    let e = RoutingConfig::builder()
        .models(["a/1", "a/2", "a/3", "a/4"])
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "models");
    assert!(e.to_string().contains("at most 3"), "{e}");
    let e = RoutingConfig::builder()
        .fallbacks(["a/1", "a/2", "a/3", "a/4"])
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "fallbacks");
    let e = RoutingConfig::builder()
        .models(["a/1"])
        .fallbacks(["a/2"])
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "fallbacks");
    assert!(e.to_string().contains("together with models"));
    let e = RoutingConfig::builder()
        .models(["a/1", ""])
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "models");
    let ok = RoutingConfig::builder()
        .models(["a/1", "a/2", "a/3"])
        .fallbacks(Vec::<String>::new())
        .build()
        .unwrap();
    assert_eq!(ok.models().len(), 3);
    assert!(ok.fallbacks().is_empty() && ok.route().is_none() && ok.provider().is_none());
}

#[tokio::test]
async fn other_requests_and_bad_bodies() {
    let up = Upstream::default();
    let req = Request::get("http://127.0.0.1/api/v1/models")
        .body(Full::new(Bytes::from_static(b"not json")))
        .unwrap();
    assert_eq!(send(&full_config(), &up, req).await.unwrap(), "not json");
    // Without the buffering layer in front, a bad chat body is still a typed error.
    let e = send(&full_config(), &up, post(CHAT, "not json"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidBody);
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn stacked_behind_the_buffering_layer() {
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(BufferRequestLayer::new())
        .layer(NativeRoutingLayer::new(full_config()))
        .service(up.service());
    let body = r#"{"model":"a/b"}"#;
    let sent = svc
        .clone()
        .oneshot(post(CHAT, body))
        .await
        .unwrap()
        .into_body();
    assert!(sent.starts_with(br#"{"model":"a/b","models":["#));
    let e = svc
        .oneshot(post(CHAT, r#"{"model":"a","models":["a","b","c","d"]}"#))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRouting);
    assert_eq!(up.calls(), 1);
}

#[test]
fn provider_preferences_serialize_every_documented_field() {
    let p = ProviderPreferences {
        order: Some(vec!["anthropic".into()]),
        allow_fallbacks: Some(false),
        require_parameters: Some(true),
        data_collection: Some(DataCollection::Deny),
        zdr: Some(true),
        only: Some(vec!["openai".into()]),
        ignore: Some(vec!["deepinfra".into()]),
        quantizations: Some(vec!["fp8".into()]),
        sort: Some(ProviderSort::Detailed {
            by: SortBy::Throughput,
            partition: Some(SortPartition::None),
        }),
        max_price: Some(MaxPrice {
            prompt: Some(1.0),
            completion: Some(2.5),
            request: None,
            image: Some(0.01),
        }),
        preferred_min_throughput: Some(Performance::Percentiles(Percentiles {
            p90: Some(50.0),
            ..Default::default()
        })),
        preferred_max_latency: Some(Performance::Value(3.0)),
        extra: serde_json::Map::from_iter([("enforce_distillable_text".to_owned(), true.into())]),
    };
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(
        json,
        r#"{"order":["anthropic"],"allow_fallbacks":false,"require_parameters":true,"data_collection":"deny","zdr":true,"only":["openai"],"ignore":["deepinfra"],"quantizations":["fp8"],"sort":{"by":"throughput","partition":"none"},"max_price":{"prompt":1.0,"completion":2.5,"image":0.01},"preferred_min_throughput":{"p90":50.0},"preferred_max_latency":3.0,"enforce_distillable_text":true}"#
    );
    let back: ProviderPreferences = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    assert_eq!(
        serde_json::to_string(&ProviderPreferences::new()).unwrap(),
        "{}"
    );
    let sort: ProviderPreferences = serde_json::from_str(r#"{"sort":"price"}"#).unwrap();
    assert_eq!(sort.sort, Some(ProviderSort::By(SortBy::Price)));
}

#[test]
fn debug_output_never_shows_keys_or_bodies() {
    let layer = NativeRoutingLayer::new(full_config());
    let svc = layer
        .clone()
        .layer(service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Error>(Response::new(()))
        }));
    let over = RoutingOverride::new().route("fallback");
    let shown = format!("{layer:?} {svc:?} {over:?}");
    assert!(!shown.contains("SENTINEL"), "{shown}");
    assert!(shown.contains("openai/gpt-4o"));
}

#[tokio::test]
async fn routing_errors_never_echo_the_body() {
    let up = Upstream::default();
    let body = r#"{"model":"a","models":["SENTINEL-1","SENTINEL-2","SENTINEL-3","SENTINEL-4"]}"#;
    let e = send(&RoutingConfig::default(), &up, post(CHAT, body))
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("SENTINEL"), "{shown}");
}
