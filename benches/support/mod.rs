//! What `benches/stack.rs` and `benches/instructions.rs` both send and answer: a chat
//! completion request of a given size and an in-process client answering a canned
//! OpenRouter success. (A folder with `mod.rs`, so Cargo does not take it for a bench.)

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, Service};

/// The canned OpenRouter chat-completion success of [`client`].
pub const SUCCESS: &[u8] = br#"{"id":"gen-1","object":"chat.completion","created":1700000000,"model":"openai/gpt-4o-mini","provider":"OpenAI","choices":[{"index":0,"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null}}],"usage":{"prompt_tokens":10,"completion_tokens":9,"total_tokens":19,"cost":0.00042}}"#;

/// A chat-completion body of about `size` bytes.
pub fn body(size: usize) -> Bytes {
    let head = r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":""#;
    let tail = r#""}],"temperature":0.2,"max_tokens":256}"#;
    let fill = size.saturating_sub(head.len() + tail.len());
    let mut s = String::with_capacity(size);
    s.push_str(head);
    s.extend(std::iter::repeat_n('a', fill));
    s.push_str(tail);
    Bytes::from(s)
}

/// The request of `body`, as a client sends it.
pub fn request_of(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1/api/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-or-bench")
        .body(Full::new(body.clone()))
        .unwrap()
}

/// A bare in-process client answering every request with [`SUCCESS`].
pub fn client() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(SUCCESS)))
                .unwrap(),
        )
    })
}
