//! The YAML config (feature `yaml`): the seeds' settings file loads as it is, means exactly
//! what the same JSON means, builds a stack that behaves the same, and every bad input is
//! a `ConfigError` naming the key's path (or the line of a syntax error).
#![cfg(feature = "yaml")]

use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::config::Config;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::{OpenRouterLayer, ServedBy};

/// CONFIG-EXAMPLES.md's settings file, comments and all.
const SEEDS: &str = "
fallback:
  default_chain:
    - anthropic/claude-3.5-sonnet
    - openai/gpt-4-turbo
    - meta-llama/llama-3.1-70b-instruct
  task_chains:
    coding: [anthropic/claude-3.5-sonnet, deepseek/deepseek-coder]
    fast:   [anthropic/claude-3-haiku, openai/gpt-3.5-turbo]
  settings:
    max_retries_per_model: 2
    disable_duration_seconds: 300     # how long a failing model is skipped
    health_window_minutes: 10         # window for the success rate
    skip_threshold: 0.3               # skip a model whose success rate is below this
";

const SEEDS_JSON: &str = r#"{"fallback": {
  "default_chain": ["anthropic/claude-3.5-sonnet", "openai/gpt-4-turbo", "meta-llama/llama-3.1-70b-instruct"],
  "task_chains": {
    "coding": ["anthropic/claude-3.5-sonnet", "deepseek/deepseek-coder"],
    "fast": ["anthropic/claude-3-haiku", "openai/gpt-3.5-turbo"]
  },
  "settings": {"max_retries_per_model": 2, "disable_duration_seconds": 300,
               "health_window_minutes": 10, "skip_threshold": 0.3}
}}"#;

/// Every other shape: per-model objects, tiers, providers, native routing, anchors.
const SHAPES: &str = r#"
models:
  sonnet: &sonnet {id: anthropic/claude-3.5-sonnet, timeout_seconds: 30, label: primary}
default_chain:
  - *sonnet
  - {id: openai/gpt-4o, timeout: 25, label: secondary}
  - id: openai/gpt-4o-mini
    timeout_seconds: 15.5
    label: budget-fallback
chains:
  by_priority:
    - {id: openai/gpt-4o, priority: 2, max_retries: 2, disable_duration: 300}
    - {id: anthropic/claude-3.5-sonnet, priority: 1}
cost_tiers:
  - name: budget
    models: [anthropic/claude-3-haiku, openai/gpt-3.5-turbo]
  - {name: standard, models: [anthropic/claude-3.5-sonnet]}
providers:
  - {name: openai, models: [openai/gpt-4-turbo, openai/gpt-3.5-turbo]}
native_routing:
  provider: {order: [Anthropic, AWS Bedrock], allow_fallbacks: true}
  route: fallback
settings:
  deadline_seconds: 180
  attempt_timeout_seconds: 60
  chain_header: x-openrouter-chain
  order: health
"#;

const SHAPES_JSON: &str = r#"{
  "default_chain": [
    {"id": "anthropic/claude-3.5-sonnet", "timeout_seconds": 30, "label": "primary"},
    {"id": "openai/gpt-4o", "timeout_seconds": 25, "label": "secondary"},
    {"id": "openai/gpt-4o-mini", "timeout_seconds": 15.5, "label": "budget-fallback"}
  ],
  "chains": {"by_priority": [
    {"id": "openai/gpt-4o", "priority": 2, "max_retries": 2, "disable_duration_seconds": 300},
    {"id": "anthropic/claude-3.5-sonnet", "priority": 1}
  ]},
  "cost_tiers": [
    {"name": "budget", "models": ["anthropic/claude-3-haiku", "openai/gpt-3.5-turbo"]},
    {"name": "standard", "models": ["anthropic/claude-3.5-sonnet"]}
  ],
  "providers": [{"name": "openai", "models": ["openai/gpt-4-turbo", "openai/gpt-3.5-turbo"]}],
  "native_routing": {"provider": {"order": ["Anthropic", "AWS Bedrock"], "allow_fallbacks": true}, "route": "fallback"},
  "settings": {"deadline_seconds": 180, "attempt_timeout_seconds": 60,
               "chain_header": "x-openrouter-chain", "order": "health"}
}"#;

#[test]
fn the_seeds_file_loads_as_it_is_and_means_what_the_json_means() {
    let yaml = Config::from_yaml(SEEDS).unwrap();
    assert_eq!(yaml, Config::from_json(SEEDS_JSON).unwrap());
    let chains = yaml.chains().unwrap();
    let coding: Vec<_> = chains
        .get("coding")
        .unwrap()
        .iter()
        .map(|m| m.model().to_owned())
        .collect();
    assert_eq!(
        coding,
        ["anthropic/claude-3.5-sonnet", "deepseek/deepseek-coder"]
    );
    assert_eq!(yaml.settings.skip_threshold, Some(0.3));
    assert_eq!(yaml.settings.disable_duration_seconds, Some(300.0));
}

#[test]
fn every_shape_and_anchors_mean_what_the_json_means() {
    // `models:` holds only the anchor; it is no key of the config, so drop it first.
    let yaml = SHAPES.replacen(
        "models:\n  sonnet: &sonnet",
        "default_chain_anchor: &sonnet",
        1,
    );
    let err = Config::from_yaml(&yaml).unwrap_err();
    assert_eq!(
        err.field(),
        "default_chain_anchor",
        "unknown keys are errors: {err}"
    );
    // The anchor defined inline on first use instead.
    let yaml = SHAPES
        .replace("models:\n  sonnet: &sonnet {id: anthropic/claude-3.5-sonnet, timeout_seconds: 30, label: primary}\n", "")
        .replace("  - *sonnet\n", "  - &sonnet {id: anthropic/claude-3.5-sonnet, timeout_seconds: 30, label: primary}\n");
    let config = Config::from_yaml(&yaml).unwrap();
    assert_eq!(config, Config::from_json(SHAPES_JSON).unwrap());
    // An alias is a copy of its anchor.
    let config = Config::from_yaml("chains:\n  x: [&m openai/gpt-4o]\n  y: [*m]\n").unwrap();
    assert_eq!(config.chains["y"][0].id, "openai/gpt-4o");
}

#[test]
fn bad_values_name_their_path() {
    let cases: &[(&str, &str)] = &[
        ("fallback:\n  default_chain: [a/b]\n  settings: {skip_threshold: 1.5}\n", "fallback.settings.skip_threshold"),
        ("default_chain: [a/b]\nsettings: {max_retry: 2}\n", "settings.max_retry"),
        ("default_chain: [a/b]\nchains:\n  coding:\n    - a/b\n    - {id: c/d, timeout_seconds: -1}\n", "chains.coding[1].timeout_seconds"),
        ("default_chain: [a/b]\nsettings: {deadline_seconds: .inf}\n", "settings.deadline_seconds"),
        ("default_chain: [a/b]\nsettings: {max_retries_per_model: two}\n", "settings.max_retries_per_model"),
        ("default_chain: []\n", "default_chain"),
        ("default_chain: [a/b]\nsettings: {[x]: 1}\n", "settings"),
    ];
    for (yaml, field) in cases {
        let err = Config::from_yaml(yaml).expect_err(yaml);
        assert_eq!(err.field(), *field, "{yaml}: {err}");
    }
}

#[test]
fn documents_that_are_not_one_config_are_errors() {
    let syntax = Config::from_yaml("default_chain: [a/b\nsettings: {}\n").unwrap_err();
    assert_eq!(syntax.field(), "");
    assert!(syntax.message().contains("not valid YAML"), "{syntax}");
    assert!(syntax.message().contains("line"), "{syntax}");

    assert!(Config::from_yaml("")
        .unwrap_err()
        .message()
        .contains("empty"));
    assert!(
        Config::from_yaml("default_chain: [a/b]\n---\ndefault_chain: [c/d]\n")
            .unwrap_err()
            .message()
            .contains("2 documents")
    );
    // A scalar or a list is no settings file.
    assert!(Config::from_yaml("just text").is_err());
    assert!(Config::from_yaml("- a/b").is_err());
}

#[test]
fn from_file_reads_yaml_by_extension() {
    let dir = std::env::temp_dir().join(format!("tower-openrouter-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["fallback-config.yaml", "fallback-config.yml"] {
        let path = dir.join(name);
        std::fs::write(&path, SEEDS).unwrap();
        assert_eq!(
            Config::from_file(&path).unwrap(),
            Config::from_json(SEEDS_JSON).unwrap()
        );
    }
    let json = dir.join("fallback-config.json");
    std::fs::write(&json, SEEDS_JSON).unwrap();
    assert!(Config::from_file(&json).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_yaml_stack_behaves_like_the_json_one() {
    let mock = MockOpenRouter::new();
    mock.model("anthropic/claude-3.5-sonnet")
        .respond(Reply::status(429).retry_after(30));
    let yaml = format!("{SEEDS}    attempt_timeout_seconds: 30\n    deadline_seconds: 60\n");
    for layer in [
        OpenRouterLayer::from_yaml(&yaml).unwrap(),
        OpenRouterLayer::from_json(SEEDS_JSON).unwrap(),
    ] {
        mock.reset();
        let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
        let req = http::Request::post("https://openrouter.ai/api/v1/chat/completions")
            .header("content-type", "application/json")
            .body(r#"{"model":"anthropic/claude-3.5-sonnet","messages":[]}"#.to_string())
            .unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        let served = resp.extensions().get::<ServedBy>().unwrap();
        assert_eq!(&*served.model, "openai/gpt-4-turbo");
        assert_eq!(mock.calls("anthropic/claude-3.5-sonnet"), 1);
        assert_eq!(mock.calls("openai/gpt-4-turbo"), 1);
    }
}
