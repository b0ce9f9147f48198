//! What a request needs: the requirement scan and the prompt-token estimate.

use bytes::Bytes;
use tower_openrouter::catalog::{Modalities, Requirements, MEDIA_PART_TOKENS};
use tower_openrouter::JsonBody;

fn scan(body: &str) -> Requirements {
    Requirements::scan(&JsonBody::parse(Bytes::from(body.to_owned())).unwrap())
}

#[test]
fn prompt_estimate_is_within_25_percent_of_real_token_counts() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/prompts.json")).unwrap();
    let prompts = fixture["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 13);
    let mut worst = (0.0f64, String::new());
    for p in prompts {
        let name = p["name"].as_str().unwrap();
        let real = p["tokens"].as_u64().unwrap() as f64;
        let est = scan(p["body"].as_str().unwrap()).prompt_tokens as f64;
        let err = (est - real) / real;
        eprintln!(
            "{name:>20}: real {real:>5} estimated {est:>5} ({:+.0}%)",
            err * 100.0
        );
        if err.abs() > worst.0.abs() {
            worst = (err, name.to_owned());
        }
    }
    assert!(worst.0.abs() <= 0.25, "worst: {worst:?}");
}

#[test]
fn tools_and_tool_choice() {
    assert!(
        scan(
            r#"{"model":"a","tools":[{"type":"function","function":{"name":"f"}}],"messages":[]}"#
        )
        .tools
    );
    assert!(!scan(r#"{"model":"a","tools":[ ],"messages":[]}"#).tools);
    assert!(!scan(r#"{"model":"a","tools":null,"messages":[]}"#).tools);
    assert!(scan(r#"{"model":"a","tool_choice":"required","messages":[]}"#).tools);
    assert!(!scan(r#"{"model":"a","tool_choice":"none","messages":[]}"#).tools);
    assert!(!scan(r#"{"model":"a","messages":[{"role":"user","content":"tools"}]}"#).tools);
}

#[test]
fn structured_outputs_and_reasoning() {
    let s = scan(
        r#"{"model":"a","response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}},"messages":[]}"#,
    );
    assert!(s.structured_outputs);
    assert!(
        !scan(r#"{"model":"a","response_format":{"type":"json_object"},"messages":[]}"#)
            .structured_outputs
    );
    assert!(scan(r#"{"model":"a","reasoning":{"effort":"high"},"messages":[]}"#).reasoning);
    assert!(scan(r#"{"model":"a","reasoning":{"max_tokens":2000},"messages":[]}"#).reasoning);
    assert!(!scan(r#"{"model":"a","reasoning":{"enabled":false},"messages":[]}"#).reasoning);
    assert!(!scan(r#"{"model":"a","reasoning":{"effort":"none"},"messages":[]}"#).reasoning);
    assert!(!scan(r#"{"model":"a","reasoning":null,"messages":[]}"#).reasoning);
    assert!(scan(r#"{"model":"a","reasoning_effort":"low","messages":[]}"#).reasoning);
    assert!(scan(r#"{"model":"a","include_reasoning":true,"messages":[]}"#).reasoning);
    assert!(!scan(r#"{"model":"a","include_reasoning":false,"messages":[]}"#).reasoning);
}

#[test]
fn media_parts_are_modalities_and_their_data_is_not_text() {
    let data = "A".repeat(400_000);
    let body = format!(
        r#"{{"model":"a","messages":[{{"role":"user","content":[{{"type":"text","text":"Describe these."}},
        {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}"}}}},
        {{"type":"input_audio","input_audio":{{"data":"{data}","format":"wav"}}}},
        {{"type":"file","file":{{"filename":"a.pdf","file_data":"data:application/pdf;base64,{data}"}}}}]}}]}}"#
    );
    let s = scan(&body);
    assert_eq!(
        s.input,
        Modalities::IMAGE
            .union(Modalities::AUDIO)
            .union(Modalities::FILE)
    );
    assert_eq!(s.media_parts, 3);
    // Three media parts and a few dozen tokens of text and structure, not 300k tokens of base64.
    assert!(
        s.prompt_tokens >= 3 * MEDIA_PART_TOKENS && s.prompt_tokens < 3 * MEDIA_PART_TOKENS + 120,
        "{}",
        s.prompt_tokens
    );
}

#[test]
fn anthropic_and_responses_shapes() {
    let m = scan(
        r#"{"model":"a","system":"Be brief.","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},{"type":"document","source":{"type":"url","url":"https://x/y.pdf"}}]}],"max_tokens":1024}"#,
    );
    assert_eq!(m.input, Modalities::IMAGE.union(Modalities::FILE));
    assert_eq!(m.max_tokens, Some(1024));
    let r = scan(
        r#"{"model":"a","input":[{"role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_image","image_url":"data:image/png;base64,AAAA"}]}],"max_output_tokens":300}"#,
    );
    assert_eq!(r.input, Modalities::IMAGE);
    assert_eq!(r.max_tokens, Some(300));
    // A string `"type"` inside text is text, not a part.
    let t = scan(r#"{"model":"a","messages":[{"role":"user","content":"the type is image_url"}]}"#);
    assert_eq!(t.input, Modalities::empty());
}

#[test]
fn max_tokens_spellings() {
    assert_eq!(
        scan(r#"{"model":"a","max_completion_tokens":77}"#).max_tokens,
        Some(77)
    );
    assert_eq!(scan(r#"{"model":"a","max_tokens":null}"#).max_tokens, None);
    assert_eq!(scan(r#"{"model":"a"}"#), Requirements::default());
}
