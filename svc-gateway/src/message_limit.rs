//! Enforces `MAX_MESSAGE_BYTES` on a request body while it streams through.
//!
//! Only the 5-byte gRPC message prefixes are read (flag + big-endian length);
//! payloads pass untouched. The first prefix declaring a message over the
//! limit ends the body with an error and tells the caller, which answers
//! `RESOURCE_EXHAUSTED` instead of waiting for the upstream.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tonic::Status;

/// Tracks message boundaries across arbitrarily split data frames.
#[derive(Debug, Default)]
struct PrefixReader {
    prefix: [u8; 5],
    prefix_filled: usize,
    payload_left: usize,
}

impl PrefixReader {
    /// `Err(declared)` for the first message longer than `limit`.
    fn feed(&mut self, mut chunk: &[u8], limit: usize) -> Result<(), usize> {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(chunk.len());
                self.payload_left -= skip;
                chunk = &chunk[skip..];
                continue;
            }
            let take = (5 - self.prefix_filled).min(chunk.len());
            self.prefix[self.prefix_filled..self.prefix_filled + take].copy_from_slice(&chunk[..take]);
            self.prefix_filled += take;
            chunk = &chunk[take..];
            if self.prefix_filled == 5 {
                let declared =
                    u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]) as usize;
                if declared > limit {
                    return Err(declared);
                }
                self.payload_left = declared;
                self.prefix_filled = 0;
            }
        }
        Ok(())
    }
}

/// A request body that fails on the first oversized message.
pub struct LimitedMessages<B> {
    inner: B,
    limit: usize,
    reader: PrefixReader,
    oversized: Option<oneshot::Sender<usize>>,
    failed: bool,
}

impl<B> LimitedMessages<B> {
    /// The wrapped body, and a receiver that fires with the declared length
    /// if a message over `limit` shows up.
    pub fn new(inner: B, limit: usize) -> (Self, oneshot::Receiver<usize>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner,
                limit,
                reader: PrefixReader::default(),
                oversized: Some(tx),
                failed: false,
            },
            rx,
        )
    }
}

impl<B> Body for LimitedMessages<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(declared) = this.reader.feed(data, this.limit)
        {
            this.failed = true;
            if let Some(tx) = this.oversized.take() {
                let _ = tx.send(declared);
            }
            return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                "request message larger than {} bytes",
                this.limit
            )))));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(len as u32).to_be_bytes());
        framed.extend(std::iter::repeat_n(7u8, len));
        framed
    }

    #[test]
    fn finds_boundaries_across_any_split() {
        let mut stream = message(3);
        stream.extend(message(10));
        stream.extend(message(0));
        stream.extend(message(11));
        for split in 1..stream.len() {
            let mut reader = PrefixReader::default();
            let mut outcome = Ok(());
            for chunk in stream.chunks(split) {
                outcome = reader.feed(chunk, 10);
                if outcome.is_err() {
                    break;
                }
            }
            assert_eq!(outcome, Err(11), "split {split}");
        }
    }

    #[tokio::test]
    async fn passes_small_messages_untouched_and_signals_large_ones() {
        let small = message(10);
        let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from(small.clone())));
        let (limited, mut signal) = LimitedMessages::new(body, 10);
        let collected = limited.collect().await.expect("within the limit").to_bytes();
        assert_eq!(collected.as_ref(), small.as_slice());
        assert!(signal.try_recv().is_err());

        let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from(message(11))));
        let (limited, signal) = LimitedMessages::new(body, 10);
        let error = limited.collect().await.expect_err("over the limit");
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        assert_eq!(signal.await.expect("signalled"), 11);
    }
}
