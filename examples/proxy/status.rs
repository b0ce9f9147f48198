//! `GET /metrics`: the Prometheus text of every metric the stack records
//! ([`tower_openrouter::observe`]), from the exporter installed at start-up. (`GET
//! /health` is in `fleet.rs`.)

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http::header;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the Prometheus recorder for this process (once) and describes the metrics.
#[cfg(feature = "metrics")]
pub(crate) fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    tower_openrouter::observe::describe_metrics();
    Ok(handle)
}

/// `/metrics`, with a handle (none: no route).
pub(crate) fn routes(metrics: Option<PrometheusHandle>) -> Router {
    match metrics {
        Some(handle) => Router::new().route("/metrics", get(move || prometheus(handle.clone()))),
        None => Router::new(),
    }
}

async fn prometheus(handle: PrometheusHandle) -> impl IntoResponse {
    // Upkeep (draining histogram buckets) on scrape: no background task needed.
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: axum::Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    use super::*;

    #[tokio::test]
    async fn no_metrics_route_without_a_recorder() {
        assert_eq!(get(routes(None), "/metrics").await.0, StatusCode::NOT_FOUND);
    }

    #[cfg(feature = "metrics")]
    #[tokio::test(start_paused = true)]
    async fn metrics_is_the_prometheus_text_of_the_stack() {
        use tower::Layer;
        use tower_openrouter::mock::{MockOpenRouter, Reply};
        use tower_openrouter::OpenRouterLayer;

        // The process-wide recorder: models of their own, so other tests cannot count here.
        let handle = install_metrics().expect("the only test that installs it");
        let mock = MockOpenRouter::new();
        mock.model("status/primary").respond(Reply::status(503));
        let layer = OpenRouterLayer::builder()
            .chain(["status/primary", "status/secondary"])
            .build()
            .unwrap();
        let req = Request::post("http://localhost/api/v1/chat/completions")
            .body(r#"{"model":"status/primary","messages":[]}"#.to_string())
            .unwrap();
        layer.layer(mock).oneshot(req).await.unwrap();
        let (status, text) = get(routes(Some(handle)), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for line in [
            r#"openrouter_fallbacks{from="status/primary",to="status/secondary"} 1"#,
            r#"openrouter_attempts{gen_ai_request_model="status/primary",outcome="model_unavailable"} 1"#,
            r#"openrouter_attempts{gen_ai_request_model="status/secondary",outcome="success"} 1"#,
            "# TYPE gen_ai_client_operation_duration summary",
            "# HELP openrouter_fallbacks Moves down the model chain",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
