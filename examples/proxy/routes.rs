//! What the gateway serves: each OpenRouter endpoint under `/v1` and `/api/v1`, with its
//! method; everything else is answered here (404, 405 with `Allow`), never upstream.

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

/// The endpoints, by the path after `/v1` or `/api/v1`, with the method each takes.
pub(crate) const ROUTES: [(&str, Method); 6] = [
    ("/chat/completions", Method::POST),
    ("/completions", Method::POST),
    ("/responses", Method::POST),
    ("/messages", Method::POST),
    ("/embeddings", Method::POST),
    ("/models", Method::GET),
];

/// The route a request takes (an index into [`ROUTES`]), or the answer it gets instead.
pub(crate) fn resolve(method: &Method, path: &str) -> Result<usize, Box<Response<Body>>> {
    let rest = path
        .strip_prefix("/api/v1")
        .or_else(|| path.strip_prefix("/v1"))
        .map(|r| r.strip_suffix('/').unwrap_or(r));
    let Some(i) = rest.and_then(|r| ROUTES.iter().position(|(p, _)| *p == r)) else {
        return Err(Box::new(json_error(
            StatusCode::NOT_FOUND,
            "no such endpoint; this gateway serves /v1/chat/completions, /v1/completions, /v1/responses, /v1/messages, /v1/embeddings and /v1/models (also under /api/v1)",
        )));
    };
    let allowed = &ROUTES[i].1;
    if method == allowed || (allowed == Method::GET && method == Method::HEAD) {
        return Ok(i);
    }
    let mut resp = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("this endpoint takes {allowed}"),
    );
    let allow = if allowed == Method::GET {
        "GET, HEAD"
    } else {
        allowed.as_str()
    };
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    Err(Box::new(resp))
}

/// OpenRouter's error shape for an answer the gateway gives itself. A client retry cannot
/// change it: `x-should-retry: false`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": status.as_u16(), "message": message } });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        crate::error::SHOULD_RETRY.clone(),
        HeaderValue::from_static("false"),
    );
    resp
}
