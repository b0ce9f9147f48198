//! What a request needs from a model, read from the buffered body.
//!
//! The scan works on the raw text of a few top-level members of the [`JsonBody`] index
//! (`messages`, `input`, `prompt`, `system`, `instructions`, `tools`, ...), found in one
//! pass over the index: no `Value` tree is built and nothing is allocated. Each member is
//! walked once: strings are skipped with `memchr` (only the bytes between strings are
//! looked at one by one), and the text's byte classes are counted in one pass of lane
//! counters the compiler vectorizes (see `Classes::add`), media strings (base64 images)
//! cut out. `benches/catalog.rs` measures it on 1 KB and 100 KB chat, tools, image and
//! long-prompt bodies.

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

/// The top-level members the scan reads: the last of each (as JSON parsers read a
/// duplicated key), found in one pass over the index.
#[derive(Default)]
struct Members<'a> {
    tools: Option<&'a [u8]>,
    tool_choice: Option<&'a [u8]>,
    response_format: Option<&'a [u8]>,
    reasoning: Option<&'a [u8]>,
    reasoning_effort: Option<&'a [u8]>,
    include_reasoning: Option<&'a [u8]>,
    /// `max_tokens`, `max_completion_tokens`, `max_output_tokens`: the first that is a
    /// number counts.
    max_tokens: [Option<&'a [u8]>; 3],
    /// The members whose text is prompt (their string content is counted): `messages`,
    /// `input`, `prompt`, `system`, `instructions`; `tools` is one too.
    prompt: [Option<&'a [u8]>; 5],
}

impl<'a> Members<'a> {
    fn of(body: &'a JsonBody) -> Self {
        let mut m = Members::default();
        for (key, value) in body.members() {
            let slot = match &*key {
                b"tools" => &mut m.tools,
                b"tool_choice" => &mut m.tool_choice,
                b"response_format" => &mut m.response_format,
                b"reasoning" => &mut m.reasoning,
                b"reasoning_effort" => &mut m.reasoning_effort,
                b"include_reasoning" => &mut m.include_reasoning,
                b"max_tokens" => &mut m.max_tokens[0],
                b"max_completion_tokens" => &mut m.max_tokens[1],
                b"max_output_tokens" => &mut m.max_tokens[2],
                b"messages" => &mut m.prompt[0],
                b"input" => &mut m.prompt[1],
                b"prompt" => &mut m.prompt[2],
                b"system" => &mut m.prompt[3],
                b"instructions" => &mut m.prompt[4],
                _ => continue,
            };
            *slot = Some(value);
        }
        m
    }
}

impl Requirements {
    /// Reads what the body needs.
    ///
    /// The prompt-token estimate counts the text of `messages` (chat), `input` and
    /// `instructions` (Responses API), `prompt` (completions), `system` (messages API)
    /// and `tools` (their definitions are part of the prompt), JSON framing included
    /// (it stands in for the chat template): a token per 5.2 letters, per 1.2 digits and
    /// per 2.2 other ASCII bytes (spaces free: they join the next word), 0.6 per
    /// non-ASCII character (a `\uXXXX` escape is one character), 4 per message (a
    /// `role` key), and [`MEDIA_PART_TOKENS`] per image, audio or file part (a `type`
    /// member naming one; the string values of `url`, `data`, `file_data`, `image_url`,
    /// `file_url`, `file_id` and `video_url` members are media data or links, not text).
    /// The weights are fitted to `o200k_base` (GPT-4o): on the 13 real
    /// prompts of `tests/fixtures/prompts.json` (English, code, logs, tables, German,
    /// Chinese, Japanese, `\u`-escaped Chinese) every estimate is within 25% (worst
    /// -21%). Other tokenizer families (Claude, Llama, Gemini) count up to ~20% more
    /// on English text, so leave some headroom when a prompt is close to a limit.
    ///
    /// The cost: one pass over the prompt members' bytes, no allocation (strings skipped
    /// with `memchr`, the byte classes counted in one vectorized pass; see
    /// `benches/catalog.rs`).
    pub fn scan(body: &JsonBody) -> Self {
        let m = Members::of(body);
        let mut count = TextCount::default();
        for raw in m.prompt.into_iter().chain([m.tools]).flatten() {
            scan_value(raw, &mut count);
        }
        Requirements {
            tools: tools_needed(m.tools, m.tool_choice),
            structured_outputs: m
                .response_format
                .is_some_and(|r| memchr::memmem::find(r, b"json_schema").is_some()),
            reasoning: reasoning_needed(&m),
            input: count.media,
            media_parts: count.media_parts,
            prompt_tokens: count.tokens(),
            max_tokens: m
                .max_tokens
                .iter()
                .flatten()
                .find_map(|raw| std::str::from_utf8(raw).ok()?.trim().parse::<u64>().ok()),
        }
    }
}

fn tools_needed(tools: Option<&[u8]>, choice: Option<&[u8]>) -> bool {
    let tools = tools.is_some_and(|t| !matches!(t.trim_ascii(), b"null") && !is_empty_array(t));
    let choice = choice.is_some_and(|c| !matches!(c.trim_ascii(), b"null" | b"\"none\""));
    tools || choice
}

fn is_empty_array(raw: &[u8]) -> bool {
    raw.trim_ascii()
        .strip_prefix(b"[")
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"]"))
}

fn reasoning_needed(m: &Members<'_>) -> bool {
    if let Some(r) = m.reasoning.and_then(|v| std::str::from_utf8(v).ok()) {
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
    m.reasoning_effort
        .is_some_and(|e| !matches!(e.trim_ascii(), b"null" | b"\"none\""))
        || m.include_reasoning
            .is_some_and(|v| v.trim_ascii() == b"true")
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

/// Byte classes of the text.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
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

/// Bytes per block of [`Classes::add`]: 32 `u8` lanes per counter, the shape the compiler
/// turns into SIMD compares and byte adds.
const LANES: usize = 16;

impl Classes {
    /// Counts the classes of `bytes` in one pass: per block of [`LANES`] bytes every
    /// class is a compare and a byte add into its own lane counters (flushed every 255
    /// blocks, before a lane can overflow). A pass per class, as before, read the text
    /// six times.
    fn add(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        let Some(last) = bytes.len().checked_sub(1) else {
            return;
        };
        // Every class but the `\u` pair is counted over `bytes[..last]` beside the pair's
        // second byte (`bytes[1..]`), the last byte alone.
        let (now, next) = (&bytes[..last], &bytes[1..]);
        for (a, b) in now.chunks(255 * LANES).zip(next.chunks(255 * LANES)) {
            let mut acc = [[0u8; LANES]; 6];
            let blocks = a.len() / LANES;
            for (xa, xb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
                for j in 0..LANES {
                    let (x, y) = (xa[j], xb[j]);
                    acc[0][j] += u8::from(is_letter(x));
                    acc[1][j] += u8::from(is_digit(x));
                    acc[2][j] += u8::from(x == b' ');
                    acc[3][j] += u8::from(x >= 0x80);
                    acc[4][j] += u8::from(x >= 0xC0);
                    acc[5][j] += u8::from(x == b'\\') & u8::from(y == b'u');
                }
            }
            let sum = |lanes: &[u8; LANES]| lanes.iter().map(|&n| u64::from(n)).sum::<u64>();
            self.letters += sum(&acc[0]);
            self.digits += sum(&acc[1]);
            self.spaces += sum(&acc[2]);
            self.high += sum(&acc[3]);
            self.lead += sum(&acc[4]);
            self.unicode_escapes += sum(&acc[5]);
            let tail = blocks * LANES;
            for (&x, &y) in a[tail..].iter().zip(&b[tail..]) {
                self.add_byte(x);
                self.unicode_escapes += u64::from(x == b'\\' && y == b'u');
            }
        }
        self.add_byte(bytes[last]);
    }

    /// The single-byte classes of one byte.
    fn add_byte(&mut self, x: u8) {
        self.letters += u64::from(is_letter(x));
        self.digits += u64::from(is_digit(x));
        self.spaces += u64::from(x == b' ');
        self.high += u64::from(x >= 0x80);
        self.lead += u64::from(x >= 0xC0);
    }
}

fn is_letter(x: u8) -> bool {
    (x | 0x20).wrapping_sub(b'a') < 26
}

fn is_digit(x: u8) -> bool {
    x.wrapping_sub(b'0') < 10
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
/// at one by one. A string is a member's value when it follows that member's key and
/// colon directly; `type` values and media keys are judged on those alone.
fn scan_value(raw: &[u8], count: &mut TextCount) {
    let mut i = 0;
    // Start of the text not yet counted (media strings are cut out of it).
    let mut span = 0;
    // The key whose value comes next (cleared by any other token).
    let mut key: Option<&[u8]> = None;
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
                    expect_key = false;
                    key = Some(s);
                    if s == b"role" {
                        count.messages += 1;
                    }
                    continue;
                }
                match key.take() {
                    Some(b"type") => {
                        if let Some(m) = media_type(s) {
                            count.media = count.media.union(m);
                            count.media_parts += 1;
                        }
                    }
                    Some(k) if is_media_key(k) => {
                        count.classes.add(&raw[span..start - 1]);
                        span = i;
                    }
                    _ => {}
                }
                continue;
            }
            b'{' => {
                objects = (objects << 1) | 1;
                expect_key = true;
                key = None;
            }
            b'[' => {
                objects <<= 1;
                key = None;
            }
            b'}' | b']' => {
                objects >>= 1;
                key = None;
            }
            // A comma starts the next key inside an object, the next element in an array.
            b',' => {
                expect_key = objects & 1 == 1;
                key = None;
            }
            // The colon, whitespace and the bytes of numbers and literals.
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
