//! Streamed answers: a task reads the upstream stream, forwards it to the client as server-sent events and
//! reads the usage out of it.
//! - A stream that ends without `message_stop` (cut, or broken off) ends for the client with an
//!   `event: error`, and is metered from what it delivered: input as reported, output as the larger of the
//!   reported count and the estimate of the content seen (`sse::estimate_tokens`); the line says
//!   `usage_estimated: true`.
//! - When the client hangs up, by default (`ON_CLIENT_DISCONNECT=finish`) the task keeps reading to the end
//!   — the upstream goes on generating (and billing) regardless — so the usage line is exact. With
//!   `ON_CLIENT_DISCONNECT=abort` it stops reading, which closes the upstream connection (the upstream stops
//!   generating), and meters an estimate.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use metering_core::usage::RequestType;
use metering_core::ApiError;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::anthropic::ChunkStream;
use crate::anthropic_error::error_event;
use crate::bedrock::{self, EventStream};
use crate::body::{channel, ProxyBody};
use crate::in_flight::InFlightGuard;
use crate::proxy::Meter;
use crate::sse::{encode_event, SseParser, UsageTap};

/// Bedrock adds its own metrics to the last event; the Anthropic API has no such field.
const BEDROCK_METRICS_FIELD: &str = "amazon-bedrock-invocationMetrics";

pub enum StreamSource {
    /// Anthropic's server-sent events, forwarded byte for byte.
    AnthropicSse(ChunkStream),
    /// Bedrock's stream events (one JSON each), written as server-sent events.
    BedrockEvents(EventStream),
}

impl StreamSource {
    fn upstream(&self) -> &'static str {
        match self {
            Self::AnthropicSse(_) => "anthropic",
            Self::BedrockEvents(_) => "bedrock",
        }
    }
}

/// What a stream does when its client hangs up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientDisconnect {
    /// Read the upstream to its end: exact usage (the default).
    #[default]
    Finish,
    /// Stop reading, which closes the upstream connection: saves tokens, usage estimated.
    Abort,
}

impl ClientDisconnect {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "finish" => Some(Self::Finish),
            "abort" => Some(Self::Abort),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finish => "finish",
            Self::Abort => "abort",
        }
    }
}

/// Longest stretch of a stream read before `message_start` while deciding whether to commit to it
/// (`message_start` is Anthropic's first event, well under a kilobyte).
pub const PEEK_MAX_BYTES: usize = 64 * 1024;

/// What the first events of a `200` stream say, read before the stream is committed to the client.
pub enum Peeked {
    /// Commit: the stream, whole again (what was read first, then the rest).
    Committed(ChunkStream),
    /// The stream opened with an `event: error` before `message_start` (its `error.type` and its data):
    /// nothing was generated, so the answer can still come from elsewhere. `stream` is the stream whole
    /// again, to pass it on as it came when it does not.
    EarlyError { error_type: String, data: String, stream: ChunkStream },
}

/// Reads a `200` stream until `message_start` or a first `error` event, bounded by `max_bytes` and `limit`
/// (a silent upstream cannot hold the answer longer than its own timeout). Anything but an error before
/// `message_start` (the start itself, a cut, a broken read, a limit reached) commits the stream as it is.
pub async fn peek_first_event(mut chunks: ChunkStream, max_bytes: usize, limit: Duration) -> Peeked {
    let mut read = Vec::new();
    let mut parser = SseParser::default();
    let mut tap = UsageTap::default();
    let mut early_error = None;
    let mut bytes_read = 0;
    let reading = async {
        while let Some(chunk) = chunks.next().await {
            let Ok(bytes) = &chunk else {
                read.push(chunk);
                return;
            };
            bytes_read += bytes.len();
            parser.feed(bytes, |event, data| {
                let undecided = tap.error.is_none() && !tap.saw_message_start;
                if !undecided {
                    // Decided: the events after it in this chunk are the stream task's to read (its tap reads
                    // the whole stream again), not parsed twice here.
                    return;
                }
                tap.observe(event, data);
                if !tap.saw_message_start {
                    if let Some(error_type) = &tap.error {
                        early_error = Some((error_type.clone(), data.to_owned()));
                    }
                }
            });
            read.push(chunk);
            if tap.saw_message_start || early_error.is_some() || bytes_read > max_bytes {
                return;
            }
        }
    };
    if tokio::time::timeout(limit, reading).await.is_err() {
        tracing::warn!(bytes_read, "no message_start within the upstream timeout; committing the stream as it is");
    }
    let stream = stream::iter(read).chain(chunks).boxed();
    match early_error {
        Some((error_type, data)) => Peeked::EarlyError { error_type, data, stream },
        None => Peeked::Committed(stream),
    }
}

/// Sends to the client until it is gone, then only notes that it is.
struct Forwarder {
    sender: mpsc::Sender<Bytes>,
    client_gone: bool,
}

impl Forwarder {
    async fn send(&mut self, bytes: Bytes) {
        if self.client_gone {
            return;
        }
        if self.sender.send(bytes).await.is_err() {
            self.client_gone = true;
            tracing::info!("client disconnected mid-stream");
        }
    }
}

/// Starts the stream task and returns the client's body. The task runs in a span of its own (request,
/// tenant, key, upstream), so its log lines say which stream they belong to.
pub fn spawn_stream(
    source: StreamSource,
    meter: Meter,
    request_type: RequestType,
    model_id: String,
    guard: InFlightGuard,
    on_client_disconnect: ClientDisconnect,
) -> ProxyBody {
    let (sender, body) = channel();
    let span = tracing::info_span!(
        "proxy_stream",
        request_id = %meter.request_id(),
        tenant_id = %meter.tenant_id(),
        key_id = %meter.key_id(),
        upstream = source.upstream(),
        model_id = %model_id,
    );
    let task = async move {
        let _in_flight = guard;
        let request_id = meter.request_id().to_owned();
        let mut forwarder = Forwarder { sender, client_gone: false };
        let mut tap = UsageTap::default();
        let mut error_sent = false;
        let abort = |forwarder: &Forwarder| forwarder.client_gone && on_client_disconnect == ClientDisconnect::Abort;
        match source {
            StreamSource::AnthropicSse(mut chunks) => {
                let mut parser = SseParser::default();
                while let Some(chunk) = chunks.next().await {
                    if abort(&forwarder) {
                        tracing::info!("ON_CLIENT_DISCONNECT=abort: closing Anthropic's stream");
                        break;
                    }
                    match chunk {
                        Ok(bytes) => {
                            parser.feed(&bytes, |event, data| tap.observe(event, data));
                            forwarder.send(bytes).await;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Anthropic's stream broke off");
                            let error = ApiError::from(error);
                            forwarder.send(Bytes::from(error_event(&error, &request_id))).await;
                            error_sent = true;
                            break;
                        }
                    }
                }
            }
            StreamSource::BedrockEvents(mut events) => {
                while let Some(event) = events.next().await {
                    if abort(&forwarder) {
                        tracing::info!("ON_CLIENT_DISCONNECT=abort: closing Bedrock's stream");
                        break;
                    }
                    match event {
                        Ok(json) => {
                            let Some((event_type, data)) = bedrock_event_as_sse(&json) else {
                                tracing::warn!("skipping a Bedrock stream event that is not JSON");
                                continue;
                            };
                            tap.observe_value(&event_type, &data);
                            forwarder.send(Bytes::from(encode_event(&event_type, &data.to_string()))).await;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Bedrock's stream broke off");
                            let error = bedrock::api_error(error, &model_id);
                            forwarder.send(Bytes::from(error_event(&error, &request_id))).await;
                            error_sent = true;
                            break;
                        }
                    }
                }
            }
        }
        // The upstream's own `event: error` counts as the error the client gets.
        if !tap.saw_message_stop && !error_sent && tap.error.is_none() && !forwarder.client_gone {
            tracing::warn!("the upstream stream ended before message_stop");
            let error = ApiError::Upstream("the upstream stream ended before message_stop".into());
            forwarder.send(Bytes::from(error_event(&error, &request_id))).await;
        }
        if !tap.saw_message_start {
            tracing::warn!("stream ended before message_start; nothing to meter");
        } else if tap.saw_message_stop {
            meter.record(request_type, &model_id, tap.tokens());
        } else {
            tracing::warn!(delivered_chars = tap.delivered_chars, "incomplete stream; metering an estimate");
            meter.record_estimated(request_type, &model_id, tap.estimated_tokens());
        }
    };
    tokio::spawn(task.instrument(span));
    body
}

/// The event type and data of one Bedrock stream event, without Bedrock's own metrics.
fn bedrock_event_as_sse(json: &[u8]) -> Option<(String, Value)> {
    let mut value: Value = serde_json::from_slice(json).ok()?;
    let event_type = value.get("type")?.as_str()?.to_owned();
    if let Some(fields) = value.as_object_mut() {
        fields.remove(BEDROCK_METRICS_FIELD);
    }
    Some((event_type, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anthropic::UpstreamError;

    #[test]
    fn bedrock_events_become_anthropic_events_without_bedrock_metrics() {
        let (event_type, data) = bedrock_event_as_sse(
            br#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3,"outputTokenCount":5}}"#,
        )
        .unwrap();
        assert_eq!(event_type, "message_stop");
        assert_eq!(encode_event(&event_type, &data.to_string()), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert!(bedrock_event_as_sse(b"not json").is_none());
    }

    const MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
    const PING: &str = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
    const OVERLOADED: &str =
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    const DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n";

    fn chunks(parts: &[&'static str]) -> ChunkStream {
        stream::iter(parts.iter().map(|part| Ok(Bytes::from_static(part.as_bytes()))).collect::<Vec<_>>()).boxed()
    }

    async fn text_of(stream: ChunkStream) -> String {
        let parts: Vec<_> = stream.map(|chunk| chunk.unwrap()).collect().await;
        String::from_utf8(parts.concat()).unwrap()
    }

    const LIMIT: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn an_error_event_before_message_start_is_an_early_error_and_the_stream_stays_whole() {
        // GIVEN a 200 stream that opens with a ping, then Anthropic's overloaded error (split mid-event)
        let (head, tail) = OVERLOADED.split_at(20);
        let peeked = peek_first_event(chunks(&[PING, head, tail]), PEEK_MAX_BYTES, LIMIT).await;
        // THEN it is an early error with its type and data, and the stream can still be passed on as it came
        let Peeked::EarlyError { error_type, data, stream } = peeked else { panic!("expected an early error") };
        assert_eq!(error_type, "overloaded_error");
        assert_eq!(serde_json::from_str::<Value>(&data).unwrap()["error"]["message"], "Overloaded");
        assert_eq!(text_of(stream).await, format!("{PING}{OVERLOADED}"));
    }

    #[tokio::test]
    async fn a_stream_that_starts_is_committed_byte_for_byte_whatever_follows() {
        for parts in [vec![MESSAGE_START, DELTA, OVERLOADED], vec![PING, MESSAGE_START], vec![DELTA], vec![]] {
            let expected = parts.concat();
            let Peeked::Committed(stream) = peek_first_event(chunks(&parts), PEEK_MAX_BYTES, LIMIT).await else {
                panic!("{parts:?} must be committed")
            };
            assert_eq!(text_of(stream).await, expected);
        }
    }

    #[tokio::test]
    async fn the_peek_stops_reading_at_message_start() {
        // GIVEN a stream whose events after message_start never come
        let silent_after_start = chunks(&[MESSAGE_START]).chain(stream::pending()).boxed();
        // THEN the peek returns at message_start, not at the limit
        let peeked = tokio::time::timeout(Duration::from_secs(5), peek_first_event(silent_after_start, PEEK_MAX_BYTES, LIMIT));
        assert!(matches!(peeked.await, Ok(Peeked::Committed(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_is_committed_at_the_time_limit() {
        // GIVEN a stream that sends a ping, then nothing
        let silent = chunks(&[PING]).chain(stream::pending()).boxed();
        let started = tokio::time::Instant::now();
        let Peeked::Committed(stream) = peek_first_event(silent, PEEK_MAX_BYTES, Duration::from_secs(30)).await else {
            panic!("a silent upstream is committed")
        };
        // THEN the peek gave up at the limit, and what it read is still the stream's first chunk
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let first = stream.boxed().next().await.unwrap().unwrap();
        assert_eq!(&first[..], PING.as_bytes());
    }

    #[tokio::test]
    async fn an_error_past_the_byte_limit_is_not_peeked_at() {
        let pings = [PING; 8];
        let mut parts = pings.to_vec();
        parts.push(OVERLOADED);
        let limit = PING.len() * 4;
        let Peeked::Committed(stream) = peek_first_event(chunks(&parts), limit, LIMIT).await else {
            panic!("past the byte limit the stream is committed")
        };
        assert_eq!(text_of(stream).await, parts.concat());
        // AND within the limit the same error is an early error
        assert!(matches!(peek_first_event(chunks(&parts), PEEK_MAX_BYTES, LIMIT).await, Peeked::EarlyError { .. }));
    }

    #[tokio::test]
    async fn a_broken_read_before_message_start_is_committed_with_its_error() {
        let broken = stream::iter([Ok(Bytes::from_static(PING.as_bytes())), Err(UpstreamError::Body("reset".into()))]).boxed();
        let Peeked::Committed(stream) = peek_first_event(broken, PEEK_MAX_BYTES, LIMIT).await else { panic!("committed") };
        let items: Vec<_> = stream.collect().await;
        assert!(matches!(&items[..], [Ok(_), Err(UpstreamError::Body(_))]));
    }
}
