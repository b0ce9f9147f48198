//! Running several gateways as one fleet: `--redis URL` (or `REDIS_URL`) shares model
//! health across them through Redis (feature `redis`), and `GET /health` says whether
//! sharing is on and connected.

use std::sync::Arc;

use axum::body::Body;
use http::{header, Response, StatusCode};
use tower_openrouter::health::{HealthStore, HealthTracker};

use crate::args::{env, Args};

/// The store the gateway's tracker shares health through, when `--redis` / `REDIS_URL`
/// is set. Connecting reads the fleet's trips in force before the gateway serves; a Redis
/// that is down is no error (the gateway runs on local health and keeps reconnecting).
pub(crate) async fn health_store(
    args: &Args,
) -> Result<Option<Arc<dyn HealthStore>>, Box<dyn std::error::Error>> {
    let Some(url) = args.redis.clone().or_else(|| env("REDIS_URL")) else {
        return Ok(None);
    };
    connect(url).await
}

#[cfg(feature = "redis")]
async fn connect(url: String) -> Result<Option<Arc<dyn HealthStore>>, Box<dyn std::error::Error>> {
    use tower_openrouter::health::{RedisHealthStore, RedisStoreConfig};
    let mut config = RedisStoreConfig::new(url);
    if let Some(prefix) = env("REDIS_PREFIX") {
        config = config.prefix(prefix);
    }
    let store = RedisHealthStore::connect(config)
        .await
        .map_err(|e| format!("--redis: {e}"))?;
    Ok(Some(store.into_store()))
}

#[cfg(not(feature = "redis"))]
async fn connect(_url: String) -> Result<Option<Arc<dyn HealthStore>>, Box<dyn std::error::Error>> {
    Err("--redis needs the `redis` feature: cargo run --release --features redis --example proxy -- --redis URL".into())
}

/// `GET /health`: `{"status": "ok", "shared_health": {"enabled", "backend", "connected",
/// "target"}, "cooling_down": [model ids], "models": [..]}` (the target without
/// credentials; `models`: every model's [`ModelHealth`](tower_openrouter::health::ModelHealth),
/// state, success rate, trips, `cooldown_remaining` in seconds).
pub(crate) fn health_response(tracker: &HealthTracker) -> Response<Body> {
    let shared = match tracker.store() {
        Some(store) => {
            let s = store.status();
            serde_json::json!({
                "enabled": true,
                "backend": s.backend,
                "connected": s.connected,
                "target": s.target,
            })
        }
        None => serde_json::json!({ "enabled": false }),
    };
    let models = tracker.snapshot();
    let cooling: Vec<String> = models
        .iter()
        .filter(|h| h.cooldown_until.is_some())
        .map(|h| h.model.to_string())
        .collect();
    let body = serde_json::json!({
        "status": "ok",
        "shared_health": shared,
        "cooling_down": cooling,
        "models": models,
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower_openrouter::health::HealthConfig;

    async fn json(resp: Response<Body>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn health_says_sharing_is_off_without_redis() {
        let tracker = HealthTracker::new(
            HealthConfig::default()
                .consecutive_failures(1)
                .cooldown(std::time::Duration::from_secs(15))
                .jitter(0.0),
        );
        let err = tower_openrouter::Error::new(tower_openrouter::ErrorKind::ProviderError);
        tracker.record("a/b", Err(&err));
        tokio::time::advance(std::time::Duration::from_millis(2_500)).await;
        let v = json(health_response(&tracker)).await;
        assert_eq!(
            v,
            serde_json::json!({
                "status": "ok",
                "shared_health": {"enabled": false},
                "cooling_down": ["a/b"],
                "models": [{
                    "model": "a/b",
                    "state": "open",
                    "success_rate": 0.0,
                    "calls": 1,
                    "failures": 1,
                    "consecutive_failures": 1,
                    "trips": 1,
                    "cooldown_remaining": 12.5,
                }],
            })
        );
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn health_shows_the_store_without_its_password() {
        // Nothing listens on port 9 of loopback: the store starts, disconnected.
        let store = tower_openrouter::health::RedisHealthStore::spawn(
            tower_openrouter::health::RedisStoreConfig::new("redis://:hunter2@127.0.0.1:9/0"),
        )
        .unwrap();
        let tracker = HealthTracker::with_store(HealthConfig::default(), store.into_store());
        let v = json(health_response(&tracker)).await;
        assert_eq!(
            v["shared_health"],
            serde_json::json!({"enabled": true, "backend": "redis", "connected": false, "target": "redis://***@127.0.0.1:9/0"})
        );
        assert!(!v.to_string().contains("hunter2"));
    }
}
