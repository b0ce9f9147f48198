//! The fuzz targets' oracles (`fuzz/oracles/*.rs`), run on stable by proptest with a
//! bounded number of cases: the body rewriter against serde_json, the SSE parser against
//! a reference parser under arbitrary chunking, the classifier's purity. The coverage-
//! guided runs (`cargo +nightly fuzz run body`, see the README) explore far more; what
//! they find lands here as a regression case.

#[path = "../fuzz/oracles/body.rs"]
mod body;
#[path = "../fuzz/oracles/classify.rs"]
mod classify;
#[path = "../fuzz/oracles/sse.rs"]
mod sse;

use proptest::prelude::*;

/// JSON-ish text: valid pieces (escaped keys, surrogates, nesting, big numbers, both
/// `model` and `stream` in every type) glued with a little noise, so both the valid and
/// the rejected paths are taken.
fn json_piece() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\t",
        "\"model\"",
        "\"mod\\u0065l\"",
        "\"stream\"",
        "\"models\"",
        "\"messages\"",
        "\"a\"",
        "\"q\\\"\"",
        "\"\\ud83d\\ude00\"",
        "\"\\udc00\"",
        "\"\\ud800\"",
        "\"x/y\"",
        "\"\"",
        "true",
        "false",
        "null",
        "0",
        "-1.5e3",
        "1e400",
        "12345678901234567890",
        "[[[[[[[[",
        "]]]]]]]]",
        "{\"model\":1}",
        "\"\u{e9}\"",
        "\"\\n\\t\\\\\"",
        "\u{feff}",
        "\\",
        "\"",
    ])
    .prop_map(str::to_owned)
}

fn body_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // An object of members.
        prop::collection::vec((json_piece(), json_piece()), 0..6).prop_map(|members| {
            let inner: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", inner.join(",")).into_bytes()
        }),
        // Well-formed bodies with duplicate and typed `model` / `stream`.
        (
            prop::sample::select(vec!["\"a/b\"", "1", "null", "[\"x\"]", "\"\\udc00\""]),
            prop::sample::select(vec![
                "",
                ",\"stream\":true",
                ",\"stream\":\"yes\"",
                ",\"model\":\"c\""
            ]),
            "[ \\n]{0,2}",
        )
            .prop_map(|(m, extra, ws)| format!(
                "{ws}{{{ws}\"model\"{ws}:{ws}{m}{extra}}}{ws}"
            )
            .into_bytes()),
        // Noise.
        prop::collection::vec(json_piece(), 0..12).prop_map(|p| p.concat().into_bytes()),
        // Deeper than serde_json's recursion limit.
        (129usize..200).prop_map(|d| format!(
            "{{\"model\":\"a\",\"x\":{}{}}}",
            "[".repeat(d),
            "]".repeat(d)
        )
        .into_bytes()),
    ]
}

fn edit() -> impl Strategy<Value = body::EditSpec> {
    let key = prop::sample::select(body::KEYS.to_vec()).prop_map(str::to_owned);
    let raw = prop::sample::select(vec![
        "1",
        "\"s\"",
        "{\"model\":[]}",
        "[ ]",
        "null",
        "{",
        "1e400",
    ]);
    prop_oneof![
        (key.clone(), raw).prop_map(|(k, v)| body::EditSpec::Set(k, v.to_owned())),
        (key.clone(), "\\PC{0,6}").prop_map(|(k, v)| body::EditSpec::SetString(k, v)),
        key.prop_map(body::EditSpec::Remove),
    ]
}

/// SSE-shaped bytes: fields, comments, a byte-order mark, and every line end, LF, CRLF
/// and CR, so cuts fall between a CR and its LF.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        &b"data: "[..],
        b"data:",
        b"data",
        b"event: ",
        b"event:error",
        b"id: 1",
        b"retry: 5",
        b": OPENROUTER PROCESSING",
        b":",
        b"x",
        b"{\"a\":1}",
        b"[DONE]",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"\r\r",
        b"\xEF\xBB\xBF",
        b"\xEF",
        b"\xc3\xa9",
    ]);
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

/// Error bodies in OpenRouter's shapes, some quoting a key.
fn error_body() -> impl Strategy<Value = Vec<u8>> {
    let code = prop::sample::select(vec![
        "400",
        "401",
        "\"402\"",
        "404",
        "429",
        "503",
        "529",
        "200",
        "\"rate_limit_exceeded\"",
        "null",
        "7e9",
    ]);
    let message = prop::sample::select(vec![
        "Rate limit exceeded",
        "Invalid API key provided: Bearer sk-or-v1-0123456789abcdef",
        "No endpoints found matching your data policy",
        "context length exceeded",
        "x_sk-or-v1-abc",
        "",
    ]);
    let metadata = prop::sample::select(vec![
        "",
        ",\"metadata\":{\"raw\":\"upstream said: sk-or-v1-fff\",\"provider_name\":\"P\"}",
        ",\"metadata\":{\"raw\":{\"key\":\"sk-or-v1-obj\"},\"error_type\":\"provider_overloaded\"}",
        ",\"metadata\":{\"headers\":{\"Retry-After\":\"3\"},\"retry_after_seconds\":9}",
        ",\"availability\":{\"retryable\":false,\"retry_after\":2,\"code\":\"sk-or-v1-c\"}",
    ]);
    let shape = prop::sample::select(vec![
        "{\"error\":E}",
        "{\"error\":\"M\"}",
        "{\"choices\":[{\"finish_reason\":\"error\",\"error\":E}]}",
        "{\"choices\":[{\"finish_reason\":\"stop\"}],\"error\":null}",
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"M\"}}",
        "{\"error\":E,\"error\":null}",
        // Malformed neighbours of a real error.
        "{\"error\":E,\"choices\":5}",
        "{\"choices\":[{\"finish_reason\":1},{\"finish_reason\":\"error\",\"error\":E}]}",
        "{\"choices\":[7,{\"finish_reason\":\"error\"}]}",
    ]);
    (shape, code, message, metadata).prop_map(|(shape, code, message, metadata)| {
        let e = format!("{{\"code\":{code},\"message\":\"{message}\"{metadata}}}");
        shape.replace('E', &e).replace('M', message).into_bytes()
    })
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop::sample::select(classify::HEADERS.to_vec()).prop_map(str::to_owned);
    let value = prop::sample::select(vec![
        &b"3"[..],
        b"0",
        b"120",
        b"-1",
        b"1e3",
        b"Wed, 21 Oct 2015 07:28:00 GMT",
        b"99999999999999",
        b"1700000000",
        b"text/event-stream",
        b"\x80",
    ]);
    (name, value.prop_map(<[u8]>::to_vec))
}

/// What the coverage-guided runs found, replayed (`fuzz/artifacts/...`): each was an
/// oracle too strict, now documented in it.
#[test]
fn fuzz_findings() {
    // Two `stream` keys, the first a string: refused, though `Value` sees only the last.
    body::fuzz(b"{\"model\":\"a/b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":\"a/b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}\xffc/\x01\xffc/t\":\"h:true}\xffc/\x01\xffc/t\":\"hi\"");
    // A 200 whose error the probe reads past an invalid UTF-8 byte serde_json refuses.
    // A 200 whose failed choice sits beside a malformed one (or whose error sits beside
    // a malformed `choices`) is still an error, never a success.
    use tower_openrouter::classify::{ClassifyOutcome, Outcome};
    let classifier = tower_openrouter::OpenRouterClassifier::new();
    for body in [
        &br#"{"choices":[{"finish_reason":1},{"finish_reason":"error","error":{"code":502,"message":"x"}}]}"#[..],
        br#"{"choices":[7,{"finish_reason":"error"}]}"#,
        br#"{"error":{"code":429,"message":"x"},"choices":5}"#,
    ] {
        let headers = http::HeaderMap::new();
        let status = http::StatusCode::OK;
        let v = classifier.classify(Outcome::Response { status, headers: &headers, body });
        assert!(v.is_some(), "{}", body.escape_ascii());
    }
    // Arrays are not error objects, whatever their elements are.
    for body in [
        &br#"["error","error"]"#[..],
        br#" [{"code":502,"message":"x"}]"#,
        br#"{"choices":[["error",{"code":502,"message":"x"}]]}"#,
    ] {
        let headers = http::HeaderMap::new();
        let status = http::StatusCode::OK;
        let v = classifier.classify(Outcome::Response {
            status,
            headers: &headers,
            body,
        });
        assert!(v.is_none(), "{}: {v:?}", body.escape_ascii());
    }
    // A choice with its `error` key twice: outside the oracle, like a duplicated
    // top-level `error`.
    classify::fuzz(b"\x00\xa5}   {\"cx\x00\xff{\"choices\":[{\"finish_reason\":\"error\",\"error\":\"error\",\"error\":{\"code\":756,\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\"message\":\"x\"}}]}");
    classify::fuzz(b"\x00\xa5\xff{i\x01\xc8\xff{\"choices\":[{\"finish_reason\":\"error\",\"ason\":\"er\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcdror\",\"error\":{\"code\":514,\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\"message\":\"x\"}}]}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn body_rewriter_agrees_with_serde_json(
        body in body_text(),
        model in "\\PC{0,8}",
        edits in prop::collection::vec(edit(), 0..4),
    ) {
        body::check(&body, &model, &edits);
    }

    #[test]
    fn sse_parser_agrees_with_the_reference_under_any_chunking(
        stream in sse_stream(),
        cuts in prop::collection::vec((0usize..64, any::<bool>()), 0..8),
    ) {
        // Small cut points, some given twice: empty chunks land anywhere, right after a
        // CR included.
        let cuts: Vec<usize> = cuts.iter().flat_map(|&(c, twice)| [c].repeat(1 + usize::from(twice))).collect();
        sse::check(&stream, &cuts);
    }

    #[test]
    fn classifier_is_a_pure_function_of_its_input(
        status in prop_oneof![
            prop::sample::select(vec![200u16, 201, 400, 401, 402, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504, 524, 529, 302]),
            any::<u16>(),
        ],
        headers in prop::collection::vec(header(), 0..3),
        body in prop_oneof![error_body(), prop::collection::vec(any::<u8>(), 0..64)],
    ) {
        classify::check(status, &headers, &body);
    }

    /// The fuzz targets' own byte decoders, on arbitrary bytes.
    #[test]
    fn fuzz_entries_take_any_bytes(data in prop::collection::vec(any::<u8>(), 0..96)) {
        body::fuzz(&data);
        sse::fuzz(&data);
        classify::fuzz(&data);
    }
}
