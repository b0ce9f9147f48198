//! An incremental `text/event-stream` parser that reports where each event starts.

/// Longest line kept, in bytes; the rest of a longer line is dropped (its bytes still
/// count for offsets).
const MAX_LINE: usize = 16 * 1024 * 1024;

/// One dispatched event. Borrowed from the parser: copy what you keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` name, empty when the event had none (a plain `message`).
    pub name: &'a [u8],
    /// The `data:` lines joined with `\n`.
    pub data: &'a [u8],
    /// Offset in the stream of the first byte of the event's block (its first line, which
    /// may be a comment), so a caller can cut the raw bytes just before it.
    pub start: u64,
}

/// An incremental Server-Sent Events parser (the WHATWG "interpreting an event stream"
/// rules): feed it the body's chunks as they come, split anywhere; it calls you back for
/// each complete event. Lines end with LF, CRLF or CR (a CRLF split across chunks is
/// one line end); comment lines (`: OPENROUTER PROCESSING`) and `id`/`retry` fields are
/// skipped; a leading byte-order mark is ignored.
///
/// Unlike a browser, [`finish`](SseParser::finish) dispatches an event the stream ended in
/// the middle of (so `data: [DONE]` without its blank line still counts).
///
/// It only reads: the bytes a caller forwards stay the upstream's own. Complete lines are
/// read in place; only a line split across chunks is copied.
///
/// ```
/// use tower_openrouter::stream::SseParser;
///
/// let mut parser = SseParser::new();
/// let mut seen = Vec::new();
/// for chunk in [&b": OPENROUTER PROCESSING\r\n\r\nda"[..], b"ta: {\"a\":1}\r", b"\n\r\ndata: [DONE]\n\n"] {
///     parser.feed(chunk, |ev| seen.push((String::from_utf8_lossy(ev.data).into_owned(), ev.start)));
/// }
/// assert_eq!(seen, [("{\"a\":1}".to_string(), 27), ("[DONE]".to_string(), 44)]);
/// ```
#[derive(Debug, Default, Clone)]
pub struct SseParser {
    /// Bytes fed so far.
    pos: u64,
    /// A line split across chunks.
    line: Vec<u8>,
    /// Stream offset of the line being buffered.
    line_start: u64,
    /// The last chunk ended in CR: an LF at the start of the next one ends nothing.
    pending_cr: bool,
    /// Data lines of the current event, each followed by `\n`.
    data: Vec<u8>,
    /// The current event's name.
    name: Vec<u8>,
    /// Offset of the current block's first line.
    block_start: Option<u64>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes fed so far (the offset the next chunk starts at).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Offset up to which every event is complete: the bytes from here on belong to an
    /// event (or comment block) whose blank line has not come yet.
    pub fn complete_up_to(&self) -> u64 {
        match self.block_start {
            Some(start) => start,
            None if !self.line.is_empty() => self.line_start,
            None => self.pos,
        }
    }

    /// Feeds the next chunk; `on_event` is called for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        // An empty chunk says nothing about the byte after a CR: keep the flag for the
        // next one, or a CR, an empty chunk and an LF would count as two line ends.
        if chunk.is_empty() {
            return;
        }
        let base = self.pos;
        self.pos += chunk.len() as u64;
        let mut i = 0;
        if std::mem::take(&mut self.pending_cr) && chunk[0] == b'\n' {
            i = 1;
        }
        while i < chunk.len() {
            match memchr::memchr2(b'\n', b'\r', &chunk[i..]) {
                None => {
                    self.buffer(&chunk[i..], base + i as u64);
                    break;
                }
                Some(j) => {
                    let end = i + j;
                    if self.line.is_empty() {
                        self.process_line(&chunk[i..end], base + i as u64, &mut on_event);
                    } else {
                        self.buffer(&chunk[i..end], base + i as u64);
                        let line = std::mem::take(&mut self.line);
                        self.process_line(&line, self.line_start, &mut on_event);
                        self.line = line;
                        self.line.clear();
                    }
                    i = end + 1;
                    if chunk[end] == b'\r' {
                        match chunk.get(end + 1) {
                            Some(b'\n') => i += 1,
                            Some(_) => {}
                            None => self.pending_cr = true,
                        }
                    }
                }
            }
        }
    }

    /// The stream ended: dispatches a last event left without its blank line.
    pub fn finish(&mut self, mut on_event: impl FnMut(Event<'_>)) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, self.line_start, &mut on_event);
        }
        self.process_line(b"", self.pos, &mut on_event);
    }

    fn buffer(&mut self, bytes: &[u8], at: u64) {
        if self.line.is_empty() {
            self.line_start = at;
        }
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn process_line(&mut self, mut line: &[u8], start: u64, on_event: &mut impl FnMut(Event<'_>)) {
        // A line read in place is cut where a buffered one stops growing, so the limit
        // holds the same whether the line came whole or split.
        line = &line[..line.len().min(MAX_LINE)];
        if start == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if !self.data.is_empty() {
                let data = &self.data[..self.data.len() - 1];
                on_event(Event {
                    name: &self.name,
                    data,
                    start: self.block_start.unwrap_or(start),
                });
            }
            self.data.clear();
            self.name.clear();
            self.block_start = None;
            return;
        }
        if self.block_start.is_none() {
            self.block_start = Some(start);
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
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
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(String, String, u64)> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut push = |e: Event<'_>| {
            out.push((
                String::from_utf8_lossy(e.name).into_owned(),
                String::from_utf8_lossy(e.data).into_owned(),
                e.start,
            ))
        };
        for c in chunks {
            p.feed(c, &mut push);
        }
        p.finish(&mut push);
        out
    }

    #[test]
    fn multi_line_named_events_and_comments() {
        let got = events(&[
            b"\xEF\xBB\xBF: keep-alive\n\nevent: error\ndata: {\"a\":\ndata:1}\nid: 3\nretry: 10\n\n",
            b"data\n\ndata:\n\n",
        ]);
        assert_eq!(
            got,
            [
                ("error".into(), "{\"a\":\n1}".into(), 17),
                (String::new(), String::new(), 67),
                (String::new(), String::new(), 73),
            ]
        );
    }

    #[test]
    fn cr_split_from_lf_is_one_line_end() {
        assert_eq!(
            events(&[b"data: a\r", b"\ndata: b\r\r", b"data: c\n\n"]),
            [
                (String::new(), "a\nb".into(), 0),
                (String::new(), "c".into(), 18)
            ]
        );
    }

    #[test]
    fn an_empty_chunk_after_a_cr_keeps_the_crlf_one_line_end() {
        let whole = events(&[b"data: a\r\ndata: b\n\n"]);
        assert_eq!(whole, [(String::new(), "a\nb".into(), 0)]);
        assert_eq!(events(&[b"data: a\r", b"", b"\ndata: b\n\n"]), whole);
        assert_eq!(
            events(&[b"data: a\r", b"", b"", b"\n", b"", b"data: b\n\n"]),
            whole
        );
    }

    #[test]
    fn the_line_limit_is_the_same_whole_or_split() {
        let mut line = b"data: ".to_vec();
        line.resize(MAX_LINE + 100, b'x');
        let stream = [&line[..], b"\n\n"].concat();
        let whole = events(&[&stream]);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].1.len(), MAX_LINE - "data: ".len());
        let (a, b) = stream.split_at(1000);
        assert_eq!(events(&[a, b]), whole);
        let (a, b) = stream.split_at(MAX_LINE + 50);
        assert_eq!(events(&[a, b]), whole);
    }

    #[test]
    fn unterminated_last_event_is_dispatched_at_finish() {
        assert_eq!(
            events(&[b"data: x\n\ndata: [DO", b"NE]"]),
            [
                (String::new(), "x".into(), 0),
                (String::new(), "[DONE]".into(), 9)
            ]
        );
        assert!(events(&[b": only a comment"]).is_empty());
    }
}
