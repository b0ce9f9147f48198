//! Oracle for [`SseParser`]: a plain reference parser (the WHATWG "interpreting an event
//! stream" rules, run over the whole stream at once, written for clarity, not speed) must
//! see the same events as `SseParser` fed the same bytes in arbitrary chunks, empty
//! chunks included, after every chunk and at the end.
//!
//! Shared by the fuzz target `sse` and the stable property test `tests/fuzz_oracles.rs`.

use tower_openrouter::stream::SseParser;

/// The parser's line limit (`MAX_LINE` in `src/stream/sse.rs`): longer lines are cut.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// An event: name, data, offset of its block's first line.
pub type Ev = (Vec<u8>, Vec<u8>, u64);

/// Fuzz entry: the first byte says how many cut points follow (each one byte, scaled to
/// the stream); the rest is the stream.
pub fn fuzz(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize % 16).min(rest.len());
    let (cuts, stream) = rest.split_at(n);
    let cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| c as usize * (stream.len() + 1) / 256)
        .collect();
    check(stream, &cuts);
}

/// Cuts `stream` at `points` (each taken modulo `len + 1`, then sorted): a point given
/// twice, or one at either end, makes an empty chunk.
pub fn split<'a>(stream: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for c in cuts {
        out.push(&stream[last..c]);
        last = c;
    }
    out.push(&stream[last..]);
    out
}

/// The check: the parser fed `stream` cut at `points` agrees with the reference after
/// every chunk (events so far, [`SseParser::position`], [`SseParser::complete_up_to`])
/// and after [`SseParser::finish`]. Panics on a difference.
pub fn check(stream: &[u8], points: &[usize]) {
    let chunks = split(stream, points);
    let shown = Shown(&chunks);
    let mut parser = SseParser::new();
    let mut got: Vec<Ev> = Vec::new();
    let mut fed = 0usize;
    for chunk in &chunks {
        parser.feed(chunk, |e| {
            got.push((e.name.to_vec(), e.data.to_vec(), e.start));
        });
        fed += chunk.len();
        let prefix = Reference::run(&stream[..fed]);
        assert_eq!(parser.position(), fed as u64, "position, chunks {shown}");
        assert_eq!(
            got, prefix.events,
            "events after {fed} bytes, chunks {shown}"
        );
        assert_eq!(
            parser.complete_up_to(),
            prefix.complete_up_to(),
            "complete_up_to after {fed} bytes, chunks {shown}"
        );
    }
    parser.finish(|e| got.push((e.name.to_vec(), e.data.to_vec(), e.start)));
    let mut whole = Reference::run(stream);
    whole.finish();
    assert_eq!(got, whole.events, "events at the end, chunks {shown}");
}

/// Chunks as escaped text, for a readable failure.
struct Shown<'a>(&'a [&'a [u8]]);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0 {
            write!(f, "[b\"{}\"] ", c.escape_ascii())?;
        }
        Ok(())
    }
}

/// The reference: lines split over the whole input, then each line interpreted.
#[derive(Default)]
pub struct Reference {
    /// Events dispatched so far.
    pub events: Vec<Ev>,
    data: Vec<u8>,
    name: Vec<u8>,
    /// Offset of the first line of the block not dispatched yet.
    block_start: Option<u64>,
    /// The last line when the input ended in its middle: offset and bytes.
    partial: Option<(u64, Vec<u8>)>,
    len: u64,
}

impl Reference {
    /// Interprets every complete line of `input` (a line ends at LF, CRLF or CR; a CR
    /// at the very end ends its line too: what follows cannot make it two).
    pub fn run(input: &[u8]) -> Reference {
        let mut r = Reference {
            len: input.len() as u64,
            ..Reference::default()
        };
        let mut start = 0;
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\n' | b'\r' => {
                    r.line(&input[start..i], start as u64);
                    i += if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    start = i;
                }
                _ => i += 1,
            }
        }
        if start < input.len() {
            r.partial = Some((start as u64, input[start..].to_vec()));
        }
        r
    }

    /// The stream ended: its last line, then a blank line (this parser dispatches an
    /// event left without its blank line, unlike a browser).
    pub fn finish(&mut self) {
        if let Some((at, line)) = self.partial.take() {
            self.line(&line, at);
        }
        self.line(b"", self.len);
    }

    /// Where the bytes not yet part of a complete event start.
    pub fn complete_up_to(&self) -> u64 {
        self.block_start
            .or(self.partial.as_ref().map(|(at, _)| *at))
            .unwrap_or(self.len)
    }

    fn line(&mut self, line: &[u8], at: u64) {
        let mut line = &line[..line.len().min(MAX_LINE)];
        if at == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if !self.data.is_empty() {
                self.data.pop(); // the last data line's `\n`
                self.events.push((
                    std::mem::take(&mut self.name),
                    std::mem::take(&mut self.data),
                    self.block_start.unwrap_or(at),
                ));
            }
            self.data.clear();
            self.name.clear();
            self.block_start = None;
            return;
        }
        self.block_start.get_or_insert(at);
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => self.name = value.to_vec(),
            _ => {}
        }
    }
}
