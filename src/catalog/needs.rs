//! What a request needs from a model, read from the buffered body.
//!
//! The scan works on the raw text of a few top-level members of the [`JsonBody`] index
//! (`messages`, `input`, `prompt`, `system`, `instructions`, `tools`, ...), found in one
//! pass over the index: no `Value` tree is built and nothing is allocated. Each member is
//! walked once: strings are skipped 8 bytes at a time, then with `memchr` (only the bytes
//! between strings are looked at one by one), and the text's byte classes are counted in
//! one pass of lane counters the compiler vectorizes (see `Classes::add`; text over 16 KB
//! is sampled), media strings (base64 images) cut out; `tools` is counted whole, without
//! a walk. `benches/catalog.rs` measures it on 1 KB and 100 KB chat, tools, image and
//! long-prompt bodies: 0.2 to 0.5 µs at 1 KB, 2.9 to 12.2 µs at 100 KB (medians).

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
    /// `tools` is all text: its `type`s and `url`s are schemas, not media.
    /// The weights are fitted to `o200k_base` (GPT-4o): on the 13 real
    /// prompts of `tests/fixtures/prompts.json` (English, code, logs, tables, German,
    /// Chinese, Japanese, `\u`-escaped Chinese) every estimate is within 25% (worst
    /// -21%). Other tokenizer families (Claude, Llama, Gemini) count up to ~20% more
    /// on English text, so leave some headroom when a prompt is close to a limit.
    ///
    /// A stretch of text over 16 KB (between media strings) is sampled: its first 4 KB
    /// are counted byte by byte, then 16 bytes of every 64, scaled to its length; on
    /// long prompts made of the fixture's texts (20 KB to 500 KB, plain or `\u`-escaped)
    /// the sampled estimate is within 2.2% of the exact count.
    ///
    /// The cost: one pass over the prompt members' bytes, no allocation (strings skipped
    /// 8 bytes at a time, then with `memchr`, the byte classes counted in one vectorized
    /// pass); at most about 1 µs for a 1 KB body and 15 µs for 100 KB (see
    /// `benches/catalog.rs`).
    pub fn scan(body: &JsonBody) -> Self {
        let m = Members::of(body);
        let mut count = TextCount::default();
        for raw in m.prompt.into_iter().flatten() {
            scan_value(raw, &mut count);
        }
        // Tool definitions are text through and through (a `"type": "image"` or a `url`
        // there is a schema, not a picture): counted whole, no walk.
        if let Some(tools) = m.tools {
            count.classes.add(tools);
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

/// Bytes per block of [`Classes::count`]: 16 `u8` lanes per counter (one SSE2
/// register, x86-64's baseline), the shape the compiler turns into SIMD compares and
/// byte adds.
const LANES: usize = 16;

/// Spans up to this long are counted byte by byte; [`Classes::add`] samples longer ones.
const EXACT_UP_TO: usize = 16 * 1024;
/// A sampled span's first bytes, counted whole.
const SAMPLED_HEAD: usize = 4 * 1024;
/// After the head, one block of [`LANES`] bytes in every `SAMPLE_STRIDE` is counted (a
/// quarter of the text), and the counts scaled to the rest's length.
const SAMPLE_STRIDE: usize = 4 * LANES;

impl Classes {
    /// Counts the classes of `bytes`: exactly up to [`EXACT_UP_TO`] bytes; of a longer
    /// span, the first [`SAMPLED_HEAD`] bytes exactly and a quarter of the rest (16 bytes
    /// of every 64), scaled to the rest's length. Prompt text changes kind (prose, code,
    /// another script) over lines and paragraphs, not in step with a 64-byte period, so
    /// the sample keeps the estimate within about 2% of the exact count (see
    /// `tests/catalog_needs_props.rs`) at less than half the cost on a 100 KB prompt.
    fn add(&mut self, bytes: &[u8]) {
        if bytes.len() <= EXACT_UP_TO {
            self.len += bytes.len() as u64;
            return self.count::<LANES>(bytes);
        }
        let (head, rest) = bytes.split_at(SAMPLED_HEAD);
        self.len += bytes.len() as u64;
        self.count::<LANES>(head);
        let mut sample = Classes::default();
        sample.count::<SAMPLE_STRIDE>(rest);
        let (whole, counted) = (rest.len() as u64, sample.len.max(1));
        let scale = |n: u64| (u128::from(n) * u128::from(whole) / u128::from(counted)) as u64;
        self.letters += scale(sample.letters);
        self.digits += scale(sample.digits);
        self.spaces += scale(sample.spaces);
        self.high += scale(sample.high);
        self.lead += scale(sample.lead);
        self.unicode_escapes += scale(sample.unicode_escapes);
    }

    /// Counts the classes of the first [`LANES`] bytes of every `STRIDE` of `bytes` (all
    /// of them when `STRIDE` is `LANES`), adding how many bytes it looked at to `len`
    /// when sampling. One pass: per block every class is a compare and a byte add into
    /// its own lane counters (flushed every 255 blocks, before a lane can overflow).
    fn count<const STRIDE: usize>(&mut self, bytes: &[u8]) {
        let Some(last) = bytes.len().checked_sub(1) else {
            return;
        };
        // Every class but the `\u` pair is counted over `bytes[..last]` beside the pair's
        // second byte (`bytes[1..]`), the last byte alone.
        let (now, next) = (&bytes[..last], &bytes[1..]);
        for (a, b) in now.chunks(255 * STRIDE).zip(next.chunks(255 * STRIDE)) {
            let mut acc = [[0u8; LANES]; 6];
            let blocks = a.len() / STRIDE;
            for (xa, xb) in a.chunks_exact(STRIDE).zip(b.chunks_exact(STRIDE)) {
                let (xa, xb) = (&xa[..LANES], &xb[..LANES]);
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
            self.letters += sum(&acc[0]);
            self.digits += sum(&acc[1]);
            self.spaces += sum(&acc[2]);
            self.high += sum(&acc[3]);
            self.lead += sum(&acc[4]);
            self.unicode_escapes += sum(&acc[5]);
            // The bytes after the last whole stride: all of them, or (sampling) the
            // first block's worth.
            let tail = blocks * STRIDE;
            let end = a.len().min(tail + LANES);
            for (&x, &y) in a[tail..end].iter().zip(&b[tail..end]) {
                self.add_byte(x);
                self.unicode_escapes += u64::from(x == b'\\' && y == b'u');
            }
            if STRIDE != LANES {
                self.len += (blocks * LANES + end - tail) as u64;
            }
        }
        self.add_byte(bytes[last]);
        if STRIDE != LANES {
            self.len += 1;
        }
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

/// The sum of 16 byte lanes, 8 at a time in a `u64` (the compiler leaves a plain sum of
/// the bytes scalar, and it is paid once per span and 4 KB).
fn sum(lanes: &[u8; LANES]) -> u64 {
    const BYTES: u64 = 0x00FF_00FF_00FF_00FF;
    const PAIRS: u64 = 0x0001_0001_0001_0001;
    let mut total = 0;
    for half in lanes.chunks_exact(8) {
        let mut w = [0; 8];
        w.copy_from_slice(half);
        let w = u64::from_le_bytes(w);
        // Adjacent bytes summed into four 16-bit lanes (at most 510 each), then the four
        // summed into the top lane by the multiply (at most 2,040: no carry out).
        let pairs = (w & BYTES) + ((w >> 8) & BYTES);
        total += pairs.wrapping_mul(PAIRS) >> 48;
    }
    total
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
    while let Some(&b) = raw.get(i) {
        // Strings first: most of the tokens (and a branch the CPU learns, where the
        // `match` below is a jump table).
        if b == b'"' {
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
                // The colon (after any whitespace) is the key's: the value comes next.
                while let Some(&c) = raw.get(i) {
                    i += 1;
                    if c == b':' {
                        break;
                    }
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
        match b {
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
/// backslashes), so escapes do not stop the `memchr`. Keys and short values end within
/// 16 bytes: those are looked at 8 at a time first ([`first_quote`]), cheaper than a
/// `memchr` call.
fn string_end(raw: &[u8], mut start: usize) -> usize {
    for _ in 0..2 {
        let Some(word) = raw.get(start..start + 8) else {
            break;
        };
        let mut w = [0; 8];
        w.copy_from_slice(word);
        match first_quote(w) {
            Some(Some(at)) => return start + at,
            Some(None) => start += 8,
            None => break,
        }
    }
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

/// In 8 bytes of a string: `Some(Some(i))` when byte `i` is the first `"` and no
/// backslash comes before it (so it closes the string), `Some(None)` when there is
/// neither, `None` when a backslash comes first (escapes: left to the `memchr` loop).
fn first_quote(word: [u8; 8]) -> Option<Option<usize>> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // The high bit of each byte equal to `b` (and maybe of bytes above a match, so only
    // the lowest flag counts).
    let eq = |w: u64, b: u8| {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let w = u64::from_le_bytes(word);
    let (quote, backslash) = (eq(w, b'"'), eq(w, b'\\'));
    match (quote, backslash) {
        (0, 0) => Some(None),
        (q, b) if q != 0 && (b == 0 || q.trailing_zeros() < b.trailing_zeros()) => {
            Some(Some(q.trailing_zeros() as usize / 8))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{first_quote, string_end, sum};

    #[test]
    fn lane_sums_are_exact_up_to_full_lanes() {
        assert_eq!(sum(&[0; 16]), 0);
        assert_eq!(sum(&[255; 16]), 16 * 255);
        let lanes: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(
            sum(&lanes),
            lanes.iter().map(|&n| u64::from(n)).sum::<u64>()
        );
    }

    #[test]
    fn a_string_ends_at_its_first_unescaped_quote() {
        // `raw` starts after the opening quote; the closing one is at `end`.
        let cases: &[(&[u8], usize)] = &[
            (br#"""#, 0),
            (br#"role""#, 4),
            (br#"1234567""#, 7),
            (br#"12345678""#, 8),
            (br#"123456789abcdef""#, 15),
            (br#"123456789abcdefg""#, 16),
            (br#"123456789abcdefgh"x"#, 17),
            (br#"a\"b""#, 4),
            (br#"1234567\"89""#, 11),
            (br#"12345678\"9""#, 11),
            (br#"a\\""#, 3),
            (br#"a\\\"b""#, 6),
            (br#"1234567\\"x"#, 9),
            (b"no end", 6),
        ];
        for &(raw, end) in cases {
            assert_eq!(
                string_end(raw, 0),
                end,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn first_quote_flags_only_a_quote_before_any_backslash() {
        assert_eq!(first_quote(*b"abcdefgh"), Some(None));
        assert_eq!(first_quote(*b"ab\"defgh"), Some(Some(2)));
        assert_eq!(first_quote(*b"ab\"d\\fgh"), Some(Some(2)));
        assert_eq!(first_quote(*b"a\\\"defgh"), None);
        // A byte one above `"` (`#`) or below (`!`) is no match.
        assert_eq!(first_quote(*b"#!#!#!#\""), Some(Some(7)));
    }
}
