//! The Responses API shape (`POST /api/v1/responses`) of a scripted success: a `response`
//! object, or its event stream (`response.created`, the output item and content part,
//! `response.output_text.delta` per chunk, `response.completed`).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::body::Step;
use super::render::{
    json_response, q, status_message, stream_http_response, Ctx, Outcome, CREATED,
};
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
    let opts = leaf.stream;
    let mut steps = Vec::with_capacity(chunks.len() + 8);
    let mut seq = 0u32;
    let mut event = |steps: &mut Vec<Step>, extra: Duration, name: &str, data: String| {
        let wait = opts.chunk_delay.saturating_add(extra);
        if !wait.is_zero() {
            steps.push(Step::Wait(wait));
        }
        // `sequence_number` goes first after `type`, as OpenAI writes it.
        let data = data.replacen(',', &format!(r#","sequence_number":{seq},"#), 1);
        seq += 1;
        steps.push(Step::Data(Bytes::from(format!(
            "event: {name}\ndata: {data}\n\n"
        ))));
    };
    let item = format!("msg_mock_{}", ctx.call);
    let created = response(leaf, ctx, None);
    event(
        &mut steps,
        Duration::ZERO,
        "response.created",
        format!(r#"{{"type":"response.created","response":{created}}}"#),
    );
    event(
        &mut steps,
        Duration::ZERO,
        "response.output_item.added",
        format!(
            r#"{{"type":"response.output_item.added","output_index":0,"item":{{"type":"message","id":"{item}","status":"in_progress","role":"assistant","content":[]}}}}"#
        ),
    );
    event(
        &mut steps,
        Duration::ZERO,
        "response.content_part.added",
        format!(
            r#"{{"type":"response.content_part.added","item_id":"{item}","output_index":0,"content_index":0,"part":{{"type":"output_text","text":"","annotations":[]}}}}"#
        ),
    );
    let cut_at = opts.cut.map(|c| match c {
        Cut::Error(n) | Cut::Stall(n) | Cut::Abort(n) => n.min(chunks.len()),
    });
    for i in 0..=chunks.len() {
        let extra = if i == 0 {
            opts.first_token_delay
        } else {
            Duration::ZERO
        };
        if cut_at == Some(i) {
            match opts.cut {
                Some(Cut::Error(_)) => event(
                    &mut steps,
                    extra,
                    "response.failed",
                    format!(
                        r#"{{"type":"response.failed","response":{{"id":"resp_mock_{}","object":"response","status":"failed","error":{{"code":"server_error","message":{}}}}}}}"#,
                        ctx.call,
                        q(&status_message(502, ctx.model))
                    ),
                ),
                Some(Cut::Stall(_)) => steps.push(Step::Stall),
                _ => steps.push(Step::Abort),
            }
            return Outcome::Respond(stream_http_response(steps));
        }
        let Some(chunk) = chunks.get(i) else { break };
        event(
            &mut steps,
            extra,
            "response.output_text.delta",
            format!(
                r#"{{"type":"response.output_text.delta","item_id":"{item}","output_index":0,"content_index":0,"delta":{}}}"#,
                q(chunk)
            ),
        );
    }
    let done = response(leaf, ctx, Some(&chunks.concat()));
    event(
        &mut steps,
        Duration::ZERO,
        "response.completed",
        format!(r#"{{"type":"response.completed","response":{done}}}"#),
    );
    Outcome::Respond(stream_http_response(steps))
}
