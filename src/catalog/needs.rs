//! What a request needs from a model, read from the buffered body.
//!
//! The scan works on the raw text of a few top-level members of the [`JsonBody`] index
//! (`messages`, `input`, `prompt`, `system`, `instructions`, `tools`, ...): no `Value`
//! tree is built, and the long strings (the prompt text, base64 images) are skipped with
//! `memchr`, so the cost is a few microseconds per 100 KB.

use memchr::memchr;

use super::model::Modalities;
use crate::JsonBody;

/// Tokens counted for one image, audio clip or file part: the real count depends on the
/// size and the model (OpenAI: 85 to ~1,500 per image); a middle figure keeps the
/// context check from ignoring media altogether.
pub const MEDIA_PART_TOKENS: u64 = 1_000;

/// Tokens of the chat template per message (role markers, separators).
const MESSAGE_OVERHEAD_TOKENS: u64 = 4;

/// What a request needs from the model that serves it. From [`Requirements::scan`].
///
/// ```
/// use bytes::Bytes;
/// use tower_openrouter::JsonBody;
/// use tower_openrouter::catalog::{Modalities, Requirements};
///
/// let body = JsonBody::parse(Bytes::from_static(br#"{"model":"a/b","max_tokens":500,
///   "tools":[{"type":"function","function":{"name":"f"}}],
///   "messages":[{"role":"user","content":[{"type":"text","text":"What is in this picture?"},
///     {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}"#))?;
/// let needs = Requirements::scan(&body);
/// assert!(needs.tools);
/// assert!(needs.input.contains(Modalities::IMAGE));
/// assert_eq!(needs.max_tokens, Some(500));
/// assert!(needs.prompt_tokens > 1_000); // the text, the tool and one image
/// # Ok::<(), tower_openrouter::Error>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// `tools` (non-empty) or `tool_choice` other than `"none"`: the model must list
    /// `tools` in its `supported_parameters`.
    pub tools: bool,
    /// `response_format` of type `json_schema`: the model must list `structured_outputs`.
    pub structured_outputs: bool,
    /// `reasoning` (not disabled), `reasoning_effort` or `include_reasoning: true`: the
    /// model must list `reasoning`.
    pub reasoning: bool,
    /// Input modalities other than text found in content parts (image, audio, file,
    /// video).
    pub input: Modalities,
    /// How many media parts (images, audio, files) the prompt has.
    pub media_parts: u32,
    /// The estimated prompt tokens: see [`Requirements::scan`].
    pub prompt_tokens: u64,
    /// `max_tokens` (or `max_completion_tokens`, `max_output_tokens`).
    pub max_tokens: Option<u64>,
}

/// Members whose text is prompt (their string content is counted).
const PROMPT_KEYS: [&str; 6] = [
    "messages",
    "input",
    "prompt",
    "system",
    "instructions",
    "tools",
];

impl Requirements {
    /// Reads what the body needs.
    ///
    /// The prompt-token estimate counts the text of `messages` (chat), `input` and
    /// `instructions` (Responses API), `prompt` (completions), `system` (messages API)
    /// and `tools` (their definitions are part of the prompt), JSON framing included
    /// (it stands in for the chat template): a token per 5.2 letters, per 1.2 digits and
    /// per 2.2 other ASCII bytes (spaces free: they join the next word), 0.6 per
    /// non-ASCII character (a `\uXXXX` escape is one character), 4 per message, and
    /// [`MEDIA_PART_TOKENS`] per image, audio or file part (their base64 data and URLs
    /// are not text). The weights are fitted to `o200k_base` (GPT-4o): on the 13 real
    /// prompts of `tests/fixtures/prompts.json` (English, code, logs, tables, German,
    /// Chinese, Japanese, `\u`-escaped Chinese) every estimate is within 25% (worst
    /// -21%). Other tokenizer families (Claude, Llama, Gemini) count up to ~20% more
    /// on English text, so leave some headroom when a prompt is close to a limit.
    pub fn scan(body: &JsonBody) -> Self {
        let mut needs = Requirements {
            tools: tools_needed(body),
            structured_outputs: body
                .raw_bytes("response_format")
                .is_some_and(|r| memchr::memmem::find(r, b"json_schema").is_some()),
            reasoning: reasoning_needed(body),
            max_tokens: ["max_tokens", "max_completion_tokens", "max_output_tokens"]
                .iter()
                .find_map(|k| body.raw(k)?.trim().parse::<u64>().ok()),
            ..Requirements::default()
        };
        let mut count = TextCount::default();
        for key in PROMPT_KEYS {
            if let Some(raw) = body.raw_bytes(key) {
                scan_value(raw, &mut count);
            }
        }
        needs.input = count.media;
        needs.media_parts = count.media_parts;
        needs.prompt_tokens = count.tokens();
        needs
    }
}

fn tools_needed(body: &JsonBody) -> bool {
    let tools = body
        .raw("tools")
        .is_some_and(|t| !matches!(t.trim(), "[]" | "null") && !is_empty_array(t));
    let choice = body
        .raw("tool_choice")
        .is_some_and(|c| !matches!(c.trim(), "null" | "\"none\""));
    tools || choice
}

fn is_empty_array(raw: &str) -> bool {
    let t = raw.trim();
    t.starts_with('[') && t[1..].trim_start().starts_with(']')
}

fn reasoning_needed(body: &JsonBody) -> bool {
    if let Some(r) = body.raw("reasoning") {
        #[derive(serde::Deserialize)]
        struct Reasoning<'a> {
            enabled: Option<bool>,
            #[serde(borrow)]
            effort: Option<&'a str>,
        }
        let off = match serde_json::from_str::<Option<Reasoning<'_>>>(r) {
            Ok(None) => true,
            Ok(Some(r)) => r.enabled == Some(false) || r.effort == Some("none"),
            // Not an object (e.g. `false`): on only when it is `true`.
            Err(_) => r.trim() != "true",
        };
        if !off {
            return true;
        }
    }
    let on = |k: &str| body.raw(k).is_some_and(|v| v.trim() == "true");
    body.raw("reasoning_effort")
        .is_some_and(|e| !matches!(e.trim(), "null" | "\"none\""))
        || on("include_reasoning")
}

/// Text and media found in the prompt members.
#[derive(Default)]
struct TextCount {
    /// Byte classes of the text (media strings left out).
    classes: Classes,
    messages: u64,
    media: Modalities,
    media_parts: u32,
}

/// Byte classes of the text, counted in one vectorizable pass per span.
#[derive(Default, Clone, Copy)]
struct Classes {
    len: u64,
    letters: u64,
    digits: u64,
    spaces: u64,
    /// Bytes >= 0x80 (part of a multi-byte UTF-8 character).
    high: u64,
    /// Bytes >= 0xC0 (the first byte of a multi-byte character).
    lead: u64,
    /// `\u` pairs (a `\uXXXX` escape: 6 bytes for one character).
    unicode_escapes: u64,
}

impl Classes {
    /// Counts the classes of `bytes`, one pass per class (see [`count`]).
    fn add(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.letters += count(bytes, bytes, |b, _| (b | 0x20).wrapping_sub(b'a') < 26);
        self.digits += count(bytes, bytes, |b, _| b.wrapping_sub(b'0') < 10);
        self.spaces += count(bytes, bytes, |b, _| b == b' ');
        self.high += count(bytes, bytes, |b, _| b >= 0x80);
        self.lead += count(bytes, bytes, |b, _| b >= 0xC0);
        if let Some(next) = bytes.get(1..) {
            self.unicode_escapes += count(bytes, next, |b, n| b == b'\\' && n == b'u');
        }
    }
}

/// How many positions `i < min(a.len(), b.len())` satisfy `f(a[i], b[i])`. Blocks of 32
/// per-lane `u8` counters (flushed before they can overflow) are the shape the compiler
/// turns into SIMD compares and byte adds, about 16-32 bytes per instruction.
fn count(a: &[u8], b: &[u8], f: impl Fn(u8, u8) -> bool) -> u64 {
    const LANES: usize = 32;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut total = 0u64;
    for (ca, cb) in a.chunks(255 * LANES).zip(b.chunks(255 * LANES)) {
        let mut acc = [0u8; LANES];
        let blocks = ca.len() / LANES;
        for k in 0..blocks {
            let xa = &ca[k * LANES..(k + 1) * LANES];
            let xb = &cb[k * LANES..(k + 1) * LANES];
            for j in 0..LANES {
                acc[j] += u8::from(f(xa[j], xb[j]));
            }
        }
        total += acc.iter().map(|&x| u64::from(x)).sum::<u64>();
        let tail = blocks * LANES;
        total += ca[tail..]
            .iter()
            .zip(&cb[tail..])
            .filter(|(&x, &y)| f(x, y))
            .count() as u64;
    }
    total
}

// Weights of the estimate, fitted on tests/fixtures/prompts.json against o200k_base:
// English words run about 5 letters per token (the space before a word joins it), digits
// tokenize in ones and twos, punctuation and JSON framing about 2 bytes per token, CJK
// characters about 0.6 tokens each.
const LETTERS_PER_TOKEN: f64 = 5.2;
const DIGITS_PER_TOKEN: f64 = 1.2;
const OTHER_PER_TOKEN: f64 = 2.2;
const TOKENS_PER_WIDE_CHAR: f64 = 0.6;

impl TextCount {
    fn tokens(&self) -> u64 {
        let c = self.classes;
        // A `\uXXXX` escape is one character: its 6 bytes leave the ASCII classes (the
        // `u` and about one hex digit in four are letters, e.g. CJK's `\u4f60`).
        let esc = c.unicode_escapes;
        let letters = c.letters.saturating_sub(2 * esc);
        let digits = c.digits.saturating_sub(3 * esc);
        let other = c
            .len
            .saturating_sub(c.letters + c.digits + c.spaces + c.high + esc);
        let text = letters as f64 / LETTERS_PER_TOKEN
            + digits as f64 / DIGITS_PER_TOKEN
            + other as f64 / OTHER_PER_TOKEN
            + (c.lead + esc) as f64 * TOKENS_PER_WIDE_CHAR;
        text.ceil() as u64
            + self.messages * MESSAGE_OVERHEAD_TOKENS
            + u64::from(self.media_parts) * MEDIA_PART_TOKENS
    }
}

/// Content-part `type`s that carry media, and the modality each needs.
fn media_type(ty: &[u8]) -> Option<Modalities> {
    Some(match ty {
        b"image_url" | b"input_image" | b"image" => Modalities::IMAGE,
        b"input_audio" | b"audio" => Modalities::AUDIO,
        b"file" | b"input_file" | b"document" => Modalities::FILE,
        b"video_url" | b"input_video" | b"video" => Modalities::VIDEO,
        _ => return None,
    })
}

/// Keys whose string value is media data or a link to it, not prompt text.
fn is_media_key(key: &[u8]) -> bool {
    matches!(
        key,
        b"url" | b"data" | b"file_data" | b"image_url" | b"file_url" | b"file_id" | b"video_url"
    )
}

/// Walks one raw JSON value (valid JSON: it came out of the index), counting text and
/// media. Strings are skipped with `memchr`; only the bytes between strings are looked
/// at one by one.
fn scan_value(raw: &[u8], count: &mut TextCount) {
    let mut i = 0;
    // Start of the text not yet counted (media strings are cut out of it).
    let mut span = 0;
    // The key most recently read, for the string value that follows it.
    let mut key: &[u8] = b"";
    let mut expect_key = false;
    // Which open containers are objects (bit set) or arrays, innermost in bit 0.
    // serde_json nests at most 128 levels, so 128 bits are enough.
    let mut objects: u128 = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                let start = i + 1;
                let end = string_end(raw, start);
                let s = &raw[start..end];
                i = end + 1;
                if expect_key {
                    key = s;
                    expect_key = false;
                    if key == b"role" {
                        count.messages += 1;
                    }
                } else if key == b"type" {
                    if let Some(m) = media_type(s) {
                        count.media = count.media.union(m);
                        count.media_parts += 1;
                    }
                } else if is_media_key(key) {
                    count.classes.add(&raw[span..start - 1]);
                    span = i;
                }
                continue;
            }
            b'{' => {
                objects = (objects << 1) | 1;
                expect_key = true;
            }
            b'[' => objects <<= 1,
            b'}' | b']' => objects >>= 1,
            // A comma starts the next key inside an object, the next element in an array.
            b',' => expect_key = objects & 1 == 1,
            _ => {}
        }
        i += 1;
    }
    count.classes.add(&raw[span.min(raw.len())..]);
}

/// The index of the closing quote of the string whose first byte (after the opening
/// quote) is at `start`: the next `"` not escaped (preceded by an even number of
/// backslashes), so escapes do not stop the `memchr`.
fn string_end(raw: &[u8], mut start: usize) -> usize {
    while let Some(off) = memchr(b'"', &raw[start..]) {
        let at = start + off;
        let backslashes = raw[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return at;
        }
        start = at + 1;
    }
    raw.len()
}
