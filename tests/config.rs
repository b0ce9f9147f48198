//! The JSON config: everything CONFIG-EXAMPLES.md shows loads; each bad config names its field.

use std::time::Duration;

use tower_openrouter::config::Config;

/// Every shape of CONFIG-EXAMPLES.md in one file.
pub const FULL: &str = r#"{
  "fallback": {
    "default_chain": [
      {"id": "anthropic/claude-3.5-sonnet", "timeout_seconds": 30, "label": "primary"},
      {"id": "openai/gpt-4o", "timeout_seconds": 25, "label": "secondary"},
      {"id": "openai/gpt-4o-mini", "timeout_seconds": 15, "label": "budget-fallback"},
      {"id": "google/gemini-2.0-flash-001", "timeout_seconds": 15, "label": "last-resort"}
    ],
    "task_chains": {
      "coding": ["anthropic/claude-3.5-sonnet", "openai/gpt-4-turbo", "deepseek/deepseek-coder"],
      "creative": ["anthropic/claude-3-opus", "openai/gpt-4-turbo", "meta-llama/llama-3.1-70b-instruct"],
      "fast": ["anthropic/claude-3-haiku", "openai/gpt-3.5-turbo", "meta-llama/llama-3.1-8b-instruct"]
    },
    "capability_chains": {
      "tool_calling": ["anthropic/claude-3.5-sonnet", "openai/gpt-4o", "openai/gpt-4o-mini"],
      "vision": ["openai/gpt-4o", "anthropic/claude-3.5-sonnet", "google/gemini-2.0-flash-001"],
      "long_context": ["google/gemini-2.0-flash-001", "anthropic/claude-3.5-sonnet", "openai/gpt-4o"],
      "budget": ["openai/gpt-4o-mini", "meta-llama/llama-3.1-8b-instruct", "google/gemma-2-9b-it:free"]
    },
    "chains": {
      "by_priority": [
        {"id": "openai/gpt-4o", "priority": 2, "max_retries": 2, "timeout": 30, "disable_duration": 300},
        {"id": "anthropic/claude-3.5-sonnet", "priority": 1, "max_retries": 2, "timeout": 30, "disable_duration": 300}
      ]
    },
    "cost_tiers": [
      {"name": "budget", "models": ["anthropic/claude-3-haiku", "openai/gpt-3.5-turbo", "meta-llama/llama-3.1-8b-instruct"]},
      {"name": "standard", "models": ["anthropic/claude-3.5-sonnet", "openai/gpt-4-turbo"]},
      {"name": "premium", "models": ["anthropic/claude-3-opus", "openai/gpt-4"]}
    ],
    "providers": [
      {"name": "anthropic", "models": ["anthropic/claude-3.5-sonnet", "anthropic/claude-3-haiku"]},
      {"name": "openai", "models": ["openai/gpt-4-turbo", "openai/gpt-3.5-turbo"]},
      {"name": "meta", "models": ["meta-llama/llama-3.1-70b-instruct", "meta-llama/llama-3.1-8b-instruct"]}
    ],
    "native_routing": {
      "provider": {"order": ["Anthropic", "AWS Bedrock", "GCP Vertex"], "allow_fallbacks": true},
      "route": "fallback"
    },
    "settings": {
      "max_retries_per_model": 2,
      "disable_duration_seconds": 300,
      "health_window_minutes": 10,
      "skip_threshold": 0.3,
      "attempt_timeout_seconds": 60,
      "deadline_seconds": 180,
      "chain_header": "x-openrouter-chain"
    }
  }
}"#;

fn ids(chain: &tower_openrouter::fallback::Chain) -> Vec<&str> {
    chain.iter().map(|m| m.model()).collect()
}

#[test]
fn every_example_shape_loads() {
    let config = Config::from_json(FULL).unwrap();
    let chains = config.chains().unwrap();
    let d = chains.default_chain().unwrap();
    assert_eq!(d.len(), 4);
    assert_eq!(d.models()[1].timeout, Some(Duration::from_secs(25)));
    assert_eq!(d.models()[2].label.as_deref(), Some("budget-fallback"));
    for name in [
        "coding",
        "creative",
        "fast",
        "tool_calling",
        "vision",
        "long_context",
        "budget",
    ] {
        assert_eq!(chains.get(name).unwrap().len(), 3, "{name}");
    }
    assert_eq!(
        ids(chains.get("by_priority").unwrap()),
        ["anthropic/claude-3.5-sonnet", "openai/gpt-4o"]
    );
    let first = &chains.get("by_priority").unwrap().models()[0];
    assert_eq!(first.max_retries, Some(2));
    assert_eq!(first.timeout, Some(Duration::from_secs(30)));
    assert_eq!(first.disable_duration, Some(Duration::from_secs(300)));
    assert_eq!(
        ids(chains.get("tier:standard").unwrap()),
        [
            "anthropic/claude-3-haiku",
            "openai/gpt-3.5-turbo",
            "meta-llama/llama-3.1-8b-instruct",
            "anthropic/claude-3.5-sonnet",
            "openai/gpt-4-turbo"
        ]
    );
    assert_eq!(chains.get("tier:premium").unwrap().len(), 7);
    assert_eq!(
        ids(chains.get("provider:openai").unwrap()),
        [
            "openai/gpt-4-turbo",
            "openai/gpt-3.5-turbo",
            "anthropic/claude-3.5-sonnet",
            "anthropic/claude-3-haiku",
            "meta-llama/llama-3.1-70b-instruct",
            "meta-llama/llama-3.1-8b-instruct"
        ]
    );
    assert_eq!(config.settings.skip_threshold, Some(0.3));
    let routing = config
        .native_routing
        .as_ref()
        .unwrap()
        .to_routing()
        .unwrap();
    assert_eq!(routing.route(), Some("fallback"));
    assert_eq!(
        routing.provider().unwrap().order.as_deref(),
        Some(
            &[
                "Anthropic".to_owned(),
                "AWS Bedrock".into(),
                "GCP Vertex".into()
            ][..]
        )
    );
    // The whole file builds a stack.
    tower_openrouter::stack::OpenRouterLayer::from_json(FULL).unwrap();
}

#[test]
fn each_bad_config_names_its_field() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"default_chain": ["a/b"], "settings": {"skip_threshold": 1.5}}"#,
            "settings.skip_threshold",
        ),
        (
            r#"{"default_chain": ["a/b"], "settings": {"skip_treshold": 0.5}}"#,
            "settings.skip_treshold",
        ),
        (
            r#"{"default_chain": ["a/b"], "settings": {"max_retries_per_model": -1}}"#,
            "settings.max_retries_per_model",
        ),
        (
            r#"{"default_chain": ["a/b"], "settings": {"disable_duration_seconds": 0}}"#,
            "settings.disable_duration_seconds",
        ),
        (
            r#"{"default_chain": ["a/b"], "settings": {"health_window_minutes": "ten"}}"#,
            "settings.health_window_minutes",
        ),
        (
            r#"{"default_chain": ["a/b"], "settings": {"attempt_timeout_seconds": 90, "deadline_seconds": 60}}"#,
            "settings.attempt_timeout_seconds",
        ),
        (
            r#"{"chains": {"fast": [{"id": "a/b", "timeout_seconds": 400}]}}"#,
            "chains.fast[0].timeout_seconds",
        ),
        (
            r#"{"default_chain": ["a/b"], "settings": {"server_side_window": 4}}"#,
            "settings.server_side_window",
        ),
        (
            r#"{"default_chain": ["a/b"], "settings": {"chain_header": "bad header"}}"#,
            "settings.chain_header",
        ),
        (r#"{"default_chain": []}"#, "default_chain"),
        (r#"{"default_chain": ["a/b", "a/b"]}"#, "default_chain[1]"),
        (
            r#"{"default_chain": [{"id": "a/b", "timeout_seconds": -3}]}"#,
            "default_chain[0].timeout_seconds",
        ),
        (
            r#"{"default_chain": [{"model": "a/b"}]}"#,
            "default_chain[0].model",
        ),
        (r#"{"default_chain": [42]}"#, "default_chain[0]"),
        (
            r#"{"chains": {"coding": [{"id": "a/b", "label": 3}]}}"#,
            "chains.coding[0].label",
        ),
        (
            r#"{"chains": {"coding": ["a/b"]}, "task_chains": {"coding": ["c/d"]}}"#,
            "task_chains.coding",
        ),
        (
            r#"{"cost_tiers": [{"name": "budget", "models": []}]}"#,
            "cost_tiers[0].models",
        ),
        (
            r#"{"providers": [{"name": "", "models": ["a/b"]}]}"#,
            "providers[0].name",
        ),
        (
            r#"{"fallback": {"default_chain": ["a/b"], "settings": {"skip_threshold": -0.1}}}"#,
            "fallback.settings.skip_threshold",
        ),
        (r#"{"settings": {}}"#, "chain"),
        (r#"{"defualt_chain": ["a/b"]}"#, "defualt_chain"),
        (
            r#"{"default_chain": [{"id": "a/b", "disable_duration_seconds": 0}]}"#,
            "default_chain[0].disable_duration_seconds",
        ),
        (
            r#"{"default_chain": [{"id": "a/b", "disable_duration": 60}], "task_chains": {"x": [{"id": "a/b", "disable_duration": 90}]}}"#,
            "task_chains.x[0].disable_duration_seconds",
        ),
        (
            r#"{"default_chain": ["a/b"], "native_routing": {"models": ["a/1", "a/2", "a/3", "a/4"]}}"#,
            "native_routing.models",
        ),
        (
            r#"{"default_chain": ["a/b"], "native_routing": {"modles": ["a/1"]}}"#,
            "native_routing.modles",
        ),
        (
            r#"{"default_chain": ["a/b"], "native_routing": {"provider": {"allow_fallbacks": "yes"}}}"#,
            "native_routing.provider.allow_fallbacks",
        ),
    ];
    for (json, field) in cases {
        let err = Config::from_json(json).unwrap_err();
        assert_eq!(err.field(), *field, "{json}: {err}");
        assert!(err.to_string().contains(field), "{json}: {err}");
    }
}

#[cfg(feature = "mock")]
mod same_as_code {
    use std::time::Duration;

    use tower::{ServiceBuilder, ServiceExt};
    use tower_openrouter::fallback::{Chain, ChainModel, ChainName, ServedBy, UnlistedModel};
    use tower_openrouter::health::HealthConfig;
    use tower_openrouter::mock::{MockOpenRouter, Reply};
    use tower_openrouter::stack::OpenRouterLayer;

    const JSON: &str = r#"{
      "default_chain": [
        {"id": "anthropic/claude-3.5-sonnet", "timeout_seconds": 30, "label": "primary"},
        {"id": "openai/gpt-4o", "timeout_seconds": 25, "label": "secondary"},
        {"id": "openai/gpt-4o-mini", "timeout_seconds": 15, "label": "budget-fallback"}
      ],
      "task_chains": {"fast": ["anthropic/claude-3-haiku", "openai/gpt-3.5-turbo"]},
      "cost_tiers": [
        {"name": "budget", "models": ["anthropic/claude-3-haiku"]},
        {"name": "standard", "models": ["anthropic/claude-3.5-sonnet"]}
      ],
      "settings": {"max_retries_per_model": 1, "deadline_seconds": 120,
                   "attempt_timeout_seconds": 60, "consecutive_failures": 2,
                   "chain_header": "x-chain", "unlisted_model": "default_chain"}
    }"#;

    fn in_code() -> OpenRouterLayer {
        OpenRouterLayer::builder()
            .chain([
                ChainModel::new("anthropic/claude-3.5-sonnet")
                    .timeout(Duration::from_secs(30))
                    .label("primary"),
                ChainModel::new("openai/gpt-4o")
                    .timeout(Duration::from_secs(25))
                    .label("secondary"),
                ChainModel::new("openai/gpt-4o-mini")
                    .timeout(Duration::from_secs(15))
                    .label("budget-fallback"),
            ])
            .named_chain("fast", ["anthropic/claude-3-haiku", "openai/gpt-3.5-turbo"])
            .cost_tiers([
                ("budget", Chain::new(["anthropic/claude-3-haiku"])),
                ("standard", Chain::new(["anthropic/claude-3.5-sonnet"])),
            ])
            .max_retries(1)
            .deadline(Duration::from_secs(120))
            .attempt_timeout(Duration::from_secs(60))
            .health_config(HealthConfig::default().consecutive_failures(2))
            .chain_header("x-chain")
            .unlisted_model(UnlistedModel::UseDefaultChain)
            .build()
            .unwrap()
    }

    /// Runs one scripted scenario; returns what the caller saw and what the upstream got.
    async fn scenario(layer: OpenRouterLayer) -> (Vec<String>, Vec<String>) {
        let mock = MockOpenRouter::new();
        mock.model("anthropic/claude-3.5-sonnet")
            .respond(Reply::status(500));
        mock.model("openai/gpt-4o").respond(Reply::hang()).once();
        mock.model("anthropic/claude-3-haiku")
            .respond(Reply::status(429));
        let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
        let mut seen = Vec::new();
        for pick in [
            None,
            Some("fast"),
            Some("tier:standard"),
            None,
            Some("nope"),
        ] {
            let mut req = http::Request::post("http://localhost/api/v1/chat/completions")
                .body(r#"{"model":"x","messages":[]}"#.to_owned())
                .unwrap();
            match pick {
                Some("fast") => {
                    req.headers_mut().insert("x-chain", "fast".parse().unwrap());
                }
                Some(name) => {
                    req.extensions_mut().insert(ChainName::new(name));
                }
                None => {}
            }
            let line = match svc.clone().oneshot(req).await {
                Ok(resp) => {
                    let s = resp.extensions().get::<ServedBy>().unwrap();
                    let tried: Vec<String> = s
                        .attempts
                        .iter()
                        .map(|a| format!("{}#{}:{}", a.model, a.retry, a.kind()))
                        .collect();
                    format!("ok {} {:?} {:?} {tried:?}", s.model, s.label, s.chain)
                }
                Err(e) => format!("err {} {}", e.kind(), e.attempts().len()),
            };
            seen.push(line);
        }
        let upstream = mock
            .requests()
            .iter()
            .map(|r| r.model().unwrap_or("-").to_owned())
            .collect();
        (seen, upstream)
    }

    #[tokio::test(start_paused = true)]
    async fn a_chain_from_json_behaves_like_one_built_in_code() {
        let (seen_json, up_json) = scenario(OpenRouterLayer::from_json(JSON).unwrap()).await;
        let (seen_code, up_code) = scenario(in_code()).await;
        assert_eq!(seen_json, seen_code);
        assert_eq!(up_json, up_code);
        // And the scenario did what the settings say.
        assert!(
            seen_json[0].starts_with("ok openai/gpt-4o-mini Some(\"budget-fallback\") None"),
            "{}",
            seen_json[0]
        );
        assert!(
            seen_json[0].contains("openai/gpt-4o#0:attempt_timeout"),
            "{}",
            seen_json[0]
        );
        assert!(
            seen_json[4].starts_with("err unknown_chain 0"),
            "{}",
            seen_json[4]
        );
    }
}

#[test]
fn a_deadline_alone_is_followed_by_the_attempt_timeout() {
    use tower_openrouter::stack::OpenRouterLayer;
    let layer = OpenRouterLayer::from_json(
        r#"{"default_chain": ["a/b"], "settings": {"deadline_seconds": 30}}"#,
    )
    .unwrap();
    assert_eq!(layer.attempt_timeout(), Duration::from_secs(30));
    let layer = OpenRouterLayer::from_json(
        r#"{"default_chain": ["a/b"], "settings": {"deadline_seconds": 1}}"#,
    )
    .unwrap();
    assert_eq!(layer.attempt_timeout(), Duration::from_secs(1));
    // Written ones conflict, named by their keys.
    let err = Config::from_json(
        r#"{"default_chain": ["a/b"], "settings": {"deadline_seconds": 1, "max_retries_per_model": 3}}"#,
    )
    .unwrap_err();
    assert_eq!(err.field(), "settings.max_retries_per_model");
}

#[test]
fn the_file_is_checked_by_the_layers_own_rules() {
    // The health settings' own range for a success rate, (0, 1]: 0 is refused when the file
    // is read, not only when the stack is built.
    let err = Config::from_json(r#"{"default_chain": ["a/b"], "settings": {"skip_threshold": 0}}"#)
        .unwrap_err();
    assert_eq!(err.field(), "settings.skip_threshold");
    assert!(err.to_string().contains("settings.skip_threshold"), "{err}");
    // A model's limits name the list it was written in, at its written position.
    let err = Config::from_json(
        r#"{"cost_tiers": [{"name": "budget", "models": [{"id": "a/b", "priority": 2, "timeout_seconds": 400}, {"id": "c/d", "priority": 1}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.field(), "cost_tiers[0].models[0].timeout_seconds");
}

#[test]
fn config_errors_never_echo_a_rejected_value() {
    const SECRET: &str = "sk-or-v1-0123456789abcdef";
    for json in [
        format!(
            r#"{{"default_chain": ["a/b"], "settings": {{"max_retries_per_model": "{SECRET}"}}}}"#
        ),
        format!(r#"{{"default_chain": ["a/b"], "settings": {{"order": "{SECRET}"}}}}"#),
        format!(
            r#"{{"default_chain": ["a/b"], "health": {{"shared": {{"redis_url": "redis://:{SECRET}@h", "reconcile_ms": "{SECRET}"}}}}}}"#
        ),
    ] {
        let err = Config::from_json(&json).unwrap_err();
        assert!(!err.to_string().contains(SECRET), "{err}");
        assert!(!format!("{err:?}").contains(SECRET), "{err:?}");
    }
}

/// Item 7: a config error never echoes the value it rejected. A secret string (an API
/// key pasted into the wrong key) in every kind of key: numbers, integers, durations,
/// minutes, fractions, booleans, enums, lists, objects; and rejected strings in string
/// keys (header names, routes, Redis URLs whose password must never show). JSON, the
/// `fallback` wrapper, and (feature `yaml`) YAML.
#[test]
fn no_config_error_echoes_a_rejected_string() {
    const SECRET: &str = "sk-or-v1-0123456789abcdef";
    const PASSWORD: &str = "hunter2";
    let base = serde_json::json!({
        "default_chain": [{"id": "a/b", "timeout_seconds": 30, "max_retries": 1, "label": "l",
                           "priority": 1, "disable_duration_seconds": 60}, "c/d"],
        "chains": {"coding": ["a/b", "c/d"]},
        "cost_tiers": [{"name": "budget", "models": ["c/d"]}],
        "providers": [{"name": "p", "models": ["a/b"]}],
        "native_routing": {"provider": {"sort": "price", "order": ["x"], "data_collection": "deny"}},
        "settings": {"deadline_seconds": 120, "attempt_timeout_seconds": 60, "max_retries_per_model": 1,
                     "skip_threshold": 0.3, "health_window_minutes": 5, "order": "priority",
                     "unlisted_model": "try_first", "chain_header": "x-chain", "max_body_bytes": 1000000,
                     "adaptive": {"initial": 8, "min": 1, "max": 64, "backoff": 0.9}},
        "health": {"shared": {"redis_url": format!("redis://:{PASSWORD}@host"), "reconcile_ms": 1000}},
        "catalog": {"refresh_seconds": 600, "strict": false},
        "max_price": {"per_request": 0.05, "header": "x-max-price", "chains": {"coding": {"per_request": 0.01}}}
    });
    Config::from_value(base.clone()).expect("the base config is valid");
    let secret = serde_json::Value::from(SECRET);
    let mut cases: Vec<(&str, serde_json::Value)> = [
        "/default_chain",
        "/default_chain/0/timeout_seconds",
        "/default_chain/0/max_retries",
        "/default_chain/0/priority",
        "/default_chain/0/disable_duration_seconds",
        "/default_chain/0/label/x",
        "/chains",
        "/chains/coding",
        "/cost_tiers",
        "/cost_tiers/0/models",
        "/providers/0",
        "/native_routing",
        "/native_routing/models",
        "/native_routing/fallbacks",
        "/native_routing/replace_caller_fields",
        "/native_routing/provider",
        "/native_routing/provider/sort",
        "/native_routing/provider/order",
        "/native_routing/provider/data_collection",
        "/native_routing/provider/allow_fallbacks",
        "/native_routing/provider/max_price",
        "/native_routing/provider/preferred_min_throughput",
        "/settings",
        "/settings/deadline_seconds",
        "/settings/attempt_timeout_seconds",
        "/settings/first_token_timeout_seconds",
        "/settings/idle_timeout_seconds",
        "/settings/max_retries_per_model",
        "/settings/max_rate_limit_wait_seconds",
        "/settings/disable_duration_seconds",
        "/settings/health_window_minutes",
        "/settings/skip_threshold",
        "/settings/consecutive_failures",
        "/settings/order",
        "/settings/unlisted_model",
        "/settings/server_side_window",
        "/settings/max_body_bytes",
        "/settings/adaptive",
        "/settings/adaptive/initial",
        "/settings/adaptive/backoff",
        "/health",
        "/health/shared",
        "/health/shared/reconcile_ms",
        "/catalog",
        "/catalog/refresh_seconds",
        "/catalog/strict",
        "/max_price",
        "/max_price/per_request",
        "/max_price/chains",
        "/max_price/chains/coding",
        "/max_price/chains/coding/per_request",
    ]
    .into_iter()
    .map(|p| (p, secret.clone()))
    .collect();
    // Strings that string keys reject.
    let bad = |s: &str| serde_json::Value::from(s.replace("S", SECRET));
    cases.extend([
        ("/settings/chain_header", bad("not a header S")),
        ("/max_price/header", bad("not a header S")),
        (
            "/native_routing/models",
            serde_json::json!([SECRET, SECRET, SECRET, SECRET]),
        ),
        (
            "/health/shared/redis_url",
            bad(&format!("http://:{PASSWORD}@host")),
        ),
        (
            "/health/shared/redis_url",
            bad(&format!("redis://:{PASSWORD}@host:notaport")),
        ),
        (
            "/health/shared/redis_url",
            bad(&format!("redis://:{PASSWORD}@")),
        ),
        ("/health/shared/redis_url", bad(PASSWORD)),
        ("/health/shared/prefix", bad("")),
    ]);
    for (pointer, value) in cases {
        let mut doc = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match doc.pointer_mut(parent).unwrap() {
            serde_json::Value::Object(m) => {
                m.insert(key.to_owned(), value);
            }
            serde_json::Value::Array(a) => a[key.parse::<usize>().unwrap()] = value,
            other => *other = serde_json::json!({ key: value }),
        }
        let wrapped = serde_json::json!({ "fallback": doc.clone() });
        let text = doc.to_string();
        let mut errors = vec![
            Config::from_value(doc).map(|_| ()),
            Config::from_value(wrapped).map(|_| ()),
            Config::from_json(&text).map(|_| ()),
        ];
        #[cfg(feature = "yaml")]
        errors.push(Config::from_yaml(&text).map(|_| ()));
        for err in errors {
            let err = err.expect_err(pointer);
            let shown = format!("{err} {err:?} {}", err.field());
            assert!(
                !shown.contains(SECRET) && !shown.contains("0123456789abcdef"),
                "{pointer}: {shown}"
            );
            assert!(!shown.contains(PASSWORD), "{pointer}: {shown}");
        }
    }
}
