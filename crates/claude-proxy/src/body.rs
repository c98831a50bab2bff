//! The response body of every proxy answer: a whole buffer, or a stream fed through a channel by a task
//! that keeps running (and metering) when the client goes away. Works in Lambda's streaming response
//! (`lambda_http::run_with_streaming_response`) and in the local axum server alike.

use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Chunks buffered between the upstream reader and a slow client.
pub const STREAM_BUFFER_CHUNKS: usize = 64;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// A streaming body and the sender that feeds it; the body ends when every sender is dropped. A failed
/// `send` means the client has gone (its body was dropped): the sender's task decides what to do then.
pub fn channel() -> (mpsc::Sender<Bytes>, ProxyBody) {
    let (sender, chunks) = mpsc::channel(STREAM_BUFFER_CHUNKS);
    let frames = ReceiverStream::new(chunks).map(|bytes| Ok::<_, BoxError>(Frame::data(bytes)));
    (sender, StreamBody::new(frames).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_channel_body_yields_what_was_sent_then_ends() {
        let (sender, body) = channel();
        sender.send(Bytes::from_static(b"event: a\n\n")).await.unwrap();
        sender.send(Bytes::from_static(b"event: b\n\n")).await.unwrap();
        drop(sender);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"event: a\n\nevent: b\n\n");
    }

    #[tokio::test]
    async fn a_dropped_body_makes_sends_fail() {
        let (sender, body) = channel();
        drop(body);
        assert!(sender.send(Bytes::from_static(b"x")).await.is_err());
    }
}
