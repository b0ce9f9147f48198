//! Command-line flags and environment settings.

use std::net::IpAddr;

/// Every `settings` key of the JSON config: each is also a flag (`--deadline-seconds 30`)
/// and an environment variable (`DEADLINE_SECONDS=30`); a flag beats the variable, both
/// beat the `--config` file.
pub(crate) const SETTINGS: [&str; 18] = [
    "deadline_seconds",
    "attempt_timeout_seconds",
    "first_token_timeout_seconds",
    "idle_timeout_seconds",
    "max_retries_per_model",
    "max_rate_limit_wait_seconds",
    "disable_duration_seconds",
    "health_window_minutes",
    "skip_threshold",
    "consecutive_failures",
    "order",
    "chain_header",
    "unlisted_model",
    "allowed_models",
    "allowed_providers",
    "server_side_window",
    "max_body_bytes",
    "adaptive",
];

/// The settings that are lists: a comma-separated value (`--allowed-models
/// 'openai/*,anthropic/claude-3-haiku'`) is one.
const LIST_SETTINGS: [&str; 2] = ["allowed_models", "allowed_providers"];

#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) port: Option<u16>,
    pub(crate) listen: Option<IpAddr>,
    pub(crate) upstream: Option<String>,
    pub(crate) config: Option<String>,
    pub(crate) threads: Option<usize>,
    pub(crate) mock_fail: Vec<(String, u16)>,
    pub(crate) redis: Option<String>,
    /// `settings` keys given as flags.
    pub(crate) settings: Vec<(&'static str, String)>,
    pub(crate) header_timeout: Option<f64>,
    pub(crate) body_timeout: Option<f64>,
}

pub(crate) fn usage() -> ! {
    eprintln!(
        "usage: proxy [--port N] [--listen ADDR] [--upstream URL] [--config FILE] [--threads N]\n\
         \x20            [--header-timeout-seconds S] [--body-timeout-seconds S]\n\
         \x20            [--mock-fail MODEL=STATUS]... [--redis URL] [--SETTING VALUE]...\n\
         settings: {}",
        SETTINGS.map(|s| s.replace('_', "-")).join(", ")
    );
    std::process::exit(2)
}

pub(crate) fn parse_args() -> Args {
    parse(std::env::args().skip(1)).unwrap_or_else(|| usage())
}

fn parse(mut it: impl Iterator<Item = String>) -> Option<Args> {
    let mut args = Args::default();
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (flag, None),
        };
        if name == "-h" || name == "--help" {
            return None;
        }
        let value = inline.or_else(|| it.next())?;
        match name.as_str() {
            "--port" => args.port = Some(value.parse().ok()?),
            "--listen" => args.listen = Some(value.parse().ok()?),
            "--upstream" => args.upstream = Some(value),
            "--config" => args.config = Some(value),
            "--redis" => args.redis = Some(value),
            "--threads" => args.threads = Some(value.parse().ok()?),
            "--header-timeout-seconds" => args.header_timeout = Some(value.parse().ok()?),
            "--body-timeout-seconds" => args.body_timeout = Some(value.parse().ok()?),
            "--mock-fail" => {
                let (m, s) = value.rsplit_once('=')?;
                args.mock_fail.push((m.to_owned(), s.parse().ok()?));
            }
            other => {
                let key = other.strip_prefix("--")?.replace('-', "_");
                let key = SETTINGS.iter().find(|s| **s == key)?;
                args.settings.push((key, value));
            }
        }
    }
    Some(args)
}

pub(crate) fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// The `settings` object from flags and environment (`--deadline-seconds`,
/// `DEADLINE_SECONDS`): JSON as JSON (numbers, `{"initial": 8, "min": 1, "max": 64}` for
/// `adaptive`, `["a/b"]`), a list setting's comma-separated text as a list, anything else
/// as a string.
pub(crate) fn settings_overlay(args: &Args) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for key in SETTINGS {
        let flag = args.settings.iter().rev().find(|(k, _)| *k == key);
        let value = match flag {
            Some((_, v)) => Some(v.clone()),
            None => env(&key.to_ascii_uppercase()),
        };
        if let Some(v) = value {
            out.insert(key.to_owned(), setting_value(key, v));
        }
    }
    out
}

fn setting_value(key: &str, v: String) -> serde_json::Value {
    use serde_json::Value;
    match serde_json::from_str::<Value>(v.trim()) {
        Ok(json @ (Value::Number(_) | Value::Object(_) | Value::Array(_))) => json,
        _ if LIST_SETTINGS.contains(&key) => v
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| Value::String(m.to_owned()))
            .collect(),
        _ => Value::String(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Option<Args> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn every_setting_is_a_flag() {
        let a = args(&[
            "--deadline-seconds",
            "30",
            "--unlisted-model=reject",
            "--listen",
            "0.0.0.0",
        ])
        .unwrap();
        assert_eq!(a.listen, Some("0.0.0.0".parse().unwrap()));
        let s = settings_overlay(&a);
        assert_eq!(s["deadline_seconds"], 30);
        assert_eq!(s["unlisted_model"], "reject");
        let a = args(&[
            "--allowed-models",
            "openai/*, x/y",
            "--allowed-providers=OpenAI",
            "--adaptive",
            r#"{"initial": 8, "min": 1, "max": 64}"#,
            "--max-rate-limit-wait-seconds",
            "2.5",
        ])
        .unwrap();
        let s = settings_overlay(&a);
        assert_eq!(s["allowed_models"], serde_json::json!(["openai/*", "x/y"]));
        assert_eq!(s["allowed_providers"], serde_json::json!(["OpenAI"]));
        assert_eq!(s["adaptive"]["max"], 64);
        assert_eq!(s["max_rate_limit_wait_seconds"], 2.5);
        assert!(args(&["--no-such-setting", "1"]).is_none());
        assert!(args(&["--port"]).is_none());
    }
}
