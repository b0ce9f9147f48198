//! A response body that yields scripted chunks at once (and a read error where asked).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

pub struct Chunks {
    frames: VecDeque<Result<Frame<Bytes>, std::io::Error>>,
}

impl Chunks {
    pub fn new(chunks: &[&[u8]]) -> Self {
        Self::from_bytes(chunks.iter().map(|c| Bytes::copy_from_slice(c)))
    }

    pub fn from_bytes(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Chunks {
            frames: chunks.into_iter().map(|b| Ok(Frame::data(b))).collect(),
        }
    }

    /// Ends with a connection reset instead of the end of the body.
    pub fn then_error(mut self) -> Self {
        self.frames.push_back(Err(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        self
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.frames.pop_front())
    }
}
