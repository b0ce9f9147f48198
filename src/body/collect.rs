//! [`Collected`]: the bytes of a body read so far, for every layer that reads one (the
//! request buffering here, the classify layer's response reads).

use bytes::{Buf, BufMut as _, Bytes, BytesMut};

/// Bytes read from a body so far: one chunk is kept as it is (no copy), more are joined
/// into one buffer.
///
/// Most bodies arrive in one chunk, so the common case never allocates; the second chunk
/// allocates once for `expected` bytes (or twice what has come, when more has come than
/// expected), so a body of many chunks is not copied over and over.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// The only chunk so far (empty until the first non-empty one comes).
    first: Bytes,
    /// Every chunk so far, once a second one came.
    more: Option<BytesMut>,
    /// The size the caller expects (`Content-Length`, a size hint), `0` when unknown.
    expected: usize,
}

impl Collected {
    /// An empty collection that expects `expected` bytes in all (`0` when unknown).
    pub(crate) fn with_expected(expected: usize) -> Self {
        Collected {
            first: Bytes::new(),
            more: None,
            expected,
        }
    }

    /// Bytes collected so far.
    pub(crate) fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    /// Adds one chunk. A `Bytes` chunk is kept by reference count while it is the only one.
    pub(crate) fn push(&mut self, mut data: impl Buf) {
        let n = data.remaining();
        if n == 0 {
            return;
        }
        match &mut self.more {
            Some(m) => m.put(data),
            None if self.first.is_empty() => self.first = data.copy_to_bytes(n),
            None => {
                let len = self.first.len() + n;
                let mut m = BytesMut::with_capacity(self.expected.max(len * 2));
                m.extend_from_slice(&self.first);
                m.put(data);
                self.first = Bytes::new();
                self.more = Some(m);
            }
        }
    }

    /// The bytes, in one piece.
    pub(crate) fn freeze(self) -> Bytes {
        match self.more {
            Some(m) => m.freeze(),
            None => self.first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_is_not_copied() {
        let b = Bytes::from_static(b"{\"model\":\"a/b\"}");
        let mut c = Collected::default();
        c.push(Bytes::new());
        c.push(b.clone());
        c.push(Bytes::new());
        assert_eq!(c.len(), b.len());
        let got = c.freeze();
        assert_eq!(got.as_ptr(), b.as_ptr());
    }

    #[test]
    fn more_chunks_are_joined_in_order() {
        let mut c = Collected::with_expected(9);
        for part in ["abc", "def", "ghi"] {
            c.push(Bytes::from_static(part.as_bytes()));
        }
        assert_eq!(c.len(), 9);
        assert_eq!(c.freeze(), Bytes::from_static(b"abcdefghi"));
        assert_eq!(Collected::default().freeze(), Bytes::new());
    }
}
