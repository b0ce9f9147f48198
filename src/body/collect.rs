//! [`Collected`]: the bytes of a body read so far, for every layer that reads one (the
//! request buffering here, the classify layer's response reads).

use bytes::{Bytes, BytesMut};

/// Bytes read from a body so far: one chunk is kept as it is (no copy), more are joined
/// into one buffer.
///
/// Most bodies arrive in one chunk, so the common case never allocates; the second chunk
/// allocates once for the larger of `expected` and twice what has come, so a body of many
/// chunks is not copied over and over.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    chunks: Chunks,
    /// The size the caller expects (`Content-Length`, a size hint), `0` when unknown.
    expected: usize,
}

/// An enum rather than two fields: it lives in the classify future of every request, whose
/// size is copied when the future moves.
#[derive(Debug)]
enum Chunks {
    /// At most one chunk so far (empty until the first non-empty one comes), as it came.
    One(Bytes),
    /// Two chunks or more, joined.
    Joined(BytesMut),
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks::One(Bytes::new())
    }
}

impl Collected {
    /// An empty collection that expects `expected` bytes in all (`0` when unknown).
    pub(crate) fn with_expected(expected: usize) -> Self {
        Collected {
            chunks: Chunks::default(),
            expected,
        }
    }

    /// Bytes collected so far.
    pub(crate) fn len(&self) -> usize {
        match &self.chunks {
            Chunks::One(b) => b.len(),
            Chunks::Joined(m) => m.len(),
        }
    }

    /// Adds one chunk, kept by reference count while it is the only one. (`Bytes`, not any
    /// `Buf`: the classify layer calls this on every response, and a generic chunk costs
    /// a call into `copy_to_bytes` there.)
    pub(crate) fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &mut self.chunks {
            Chunks::Joined(m) => m.extend_from_slice(&data),
            Chunks::One(first) if first.is_empty() => *first = data,
            Chunks::One(first) => {
                let len = first.len() + data.len();
                let mut m = BytesMut::with_capacity(self.expected.max(len * 2));
                m.extend_from_slice(first);
                m.extend_from_slice(&data);
                self.chunks = Chunks::Joined(m);
            }
        }
    }

    /// The bytes, in one piece.
    pub(crate) fn freeze(self) -> Bytes {
        match self.chunks {
            Chunks::One(b) => b,
            Chunks::Joined(m) => m.freeze(),
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
