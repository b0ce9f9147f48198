//! The Responses API shape (`POST /api/v1/responses`) of a scripted success: a `response`
//! object, or its event stream (`response.created`, the output item and content part,
//! `response.output_text.delta` per chunk, `response.completed`).

use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::render::{json_response, q, status_message, Ctx, Outcome, StreamSteps, CREATED};
use super::reply::{Cut, Leaf};

/// The `response` object, `completed` with `text` or `in_progress` with no output.
fn response(leaf: &Leaf, ctx: &Ctx<'_>, text: Option<&str>) -> String {
    let model = q(leaf.served_name(ctx));
    let (status, output) = match text {
        Some(t) => (
            "completed",
            format!(
                r#"[{{"type":"message","id":"msg_mock_{}","status":"completed","role":"assistant","content":[{{"type":"output_text","text":{},"annotations":[]}}]}}]"#,
                ctx.call,
                q(t)
            ),
        ),
        None => ("in_progress", "[]".to_owned()),
    };
    format!(
        r#"{{"id":"resp_mock_{}","object":"response","created_at":{CREATED},"model":{model},"provider":{},"status":"{status}","output":{output},"usage":{{"input_tokens":{},"output_tokens":{},"total_tokens":{},"cost":{}}}}}"#,
        ctx.call,
        q(leaf.provider_label()),
        leaf.usage.prompt,
        leaf.usage.completion,
        leaf.usage.prompt + leaf.usage.completion,
        leaf.usage.cost
    )
}

/// A non-stream success.
pub(crate) fn success(leaf: &Leaf, ctx: &Ctx<'_>, chunks: &[String]) -> Outcome {
    match leaf.stream.cut {
        None => Outcome::Respond(json_response(
            StatusCode::OK,
            response(leaf, ctx, Some(&chunks.concat())),
        )),
        Some(Cut::Stall(_)) => Outcome::Hang,
        Some(Cut::Abort(_)) => Outcome::Disconnect,
        Some(Cut::Error(_)) => Outcome::Respond(json_response(
            StatusCode::BAD_GATEWAY,
            format!(
                r#"{{"error":{{"code":502,"message":{}}}}}"#,
                q(&status_message(502, ctx.model))
            ),
        )),
    }
}

/// A streamed success (cut where the script says).
pub(crate) fn stream(leaf: &Leaf, ctx: &Ctx<'_>, chunks: &[String]) -> Outcome {
    let mut out = StreamSteps::new(leaf.stream, chunks.len() + 8);
    let seq = Cell::new(0u32);
    let item = format!("msg_mock_{}", ctx.call);
    let created = response(leaf, ctx, None);
    let opening = [
        (
            "response.created",
            format!(r#"{{"type":"response.created","response":{created}}}"#),
        ),
        (
            "response.output_item.added",
            format!(
                r#"{{"type":"response.output_item.added","output_index":0,"item":{{"type":"message","id":"{item}","status":"in_progress","role":"assistant","content":[]}}}}"#
            ),
        ),
        (
            "response.content_part.added",
            format!(
                r#"{{"type":"response.content_part.added","item_id":"{item}","output_index":0,"content_index":0,"part":{{"type":"output_text","text":"","annotations":[]}}}}"#
            ),
        ),
    ];
    for (name, data) in opening {
        out.event(Duration::ZERO, event(&seq, name, &data));
    }
    let finished = out.contents(
        chunks,
        |chunk| {
            let delta = format!(
                r#"{{"type":"response.output_text.delta","item_id":"{item}","output_index":0,"content_index":0,"delta":{}}}"#,
                q(chunk)
            );
            event(&seq, "response.output_text.delta", &delta)
        },
        || {
            let failed = format!(
                r#"{{"type":"response.failed","response":{{"id":"resp_mock_{}","object":"response","status":"failed","error":{{"code":"server_error","message":{}}}}}}}"#,
                ctx.call,
                q(&status_message(502, ctx.model))
            );
            event(&seq, "response.failed", &failed)
        },
    );
    if finished {
        let done = response(leaf, ctx, Some(&chunks.concat()));
        let completed = format!(r#"{{"type":"response.completed","response":{done}}}"#);
        out.event(
            Duration::ZERO,
            event(&seq, "response.completed", &completed),
        );
    }
    Outcome::Respond(out.into_response())
}

/// One named event, numbered: `sequence_number` goes first after `type`, as OpenAI writes it.
fn event(seq: &Cell<u32>, name: &str, data: &str) -> Bytes {
    let n = seq.get();
    seq.set(n + 1);
    let data = data.replacen(',', &format!(r#","sequence_number":{n},"#), 1);
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}
