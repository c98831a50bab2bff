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

use bytes::Bytes;
use metering_core::usage::RequestType;
use metering_core::ApiError;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::anthropic::ChunkSource;
use crate::anthropic_error::error_event;
use crate::bedrock::{self, EventSource};
use crate::body::{channel, ProxyBody};
use crate::in_flight::InFlightGuard;
use crate::proxy::Meter;
use crate::sse::{encode_event, SseParser, UsageTap};

/// Bedrock adds its own metrics to the last event; the Anthropic API has no such field.
const BEDROCK_METRICS_FIELD: &str = "amazon-bedrock-invocationMetrics";

pub enum StreamSource {
    /// Anthropic's server-sent events, forwarded byte for byte.
    AnthropicSse(Box<dyn ChunkSource>),
    /// Bedrock's stream events (one JSON each), written as server-sent events.
    BedrockEvents(Box<dyn EventSource>),
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

/// Sends to the client until it is gone, then only notes that it is.
struct Forwarder {
    sender: mpsc::Sender<Bytes>,
    client_gone: bool,
    request_id: String,
}

impl Forwarder {
    async fn send(&mut self, bytes: Bytes) {
        if self.client_gone {
            return;
        }
        if self.sender.send(bytes).await.is_err() {
            self.client_gone = true;
            tracing::info!(request_id = %self.request_id, "client disconnected mid-stream");
        }
    }
}

/// Starts the stream task and returns the client's body.
pub fn spawn_stream(
    source: StreamSource,
    meter: Meter,
    request_type: RequestType,
    model_id: String,
    guard: InFlightGuard,
    on_client_disconnect: ClientDisconnect,
) -> ProxyBody {
    let (sender, body) = channel();
    let request_id = meter.request_id().to_owned();
    tokio::spawn(async move {
        let _in_flight = guard;
        let mut forwarder = Forwarder { sender, client_gone: false, request_id: request_id.clone() };
        let mut tap = UsageTap::default();
        let mut error_sent = false;
        let abort = |forwarder: &Forwarder| forwarder.client_gone && on_client_disconnect == ClientDisconnect::Abort;
        match source {
            StreamSource::AnthropicSse(mut chunks) => {
                let mut parser = SseParser::default();
                while let Some(chunk) = chunks.next_chunk().await {
                    if abort(&forwarder) {
                        tracing::info!(request_id = %request_id, "ON_CLIENT_DISCONNECT=abort: closing Anthropic's stream");
                        break;
                    }
                    match chunk {
                        Ok(bytes) => {
                            parser.feed(&bytes, |event, data| tap.observe(event, data));
                            forwarder.send(bytes).await;
                        }
                        Err(error) => {
                            tracing::warn!(request_id = %request_id, %error, "Anthropic's stream broke off");
                            let error = ApiError::from(error);
                            forwarder.send(Bytes::from(error_event(&error, &request_id))).await;
                            error_sent = true;
                            break;
                        }
                    }
                }
            }
            StreamSource::BedrockEvents(mut events) => {
                while let Some(event) = events.next_event().await {
                    if abort(&forwarder) {
                        tracing::info!(request_id = %request_id, "ON_CLIENT_DISCONNECT=abort: closing Bedrock's stream");
                        break;
                    }
                    match event {
                        Ok(json) => {
                            let Some((event_type, data)) = bedrock_event_as_sse(&json) else {
                                tracing::warn!(request_id = %request_id, "skipping a Bedrock stream event that is not JSON");
                                continue;
                            };
                            tap.observe_value(&event_type, &data);
                            forwarder.send(Bytes::from(encode_event(&event_type, &data.to_string()))).await;
                        }
                        Err(error) => {
                            tracing::warn!(request_id = %request_id, %error, "Bedrock's stream broke off");
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
            tracing::warn!(request_id = %request_id, "the upstream stream ended before message_stop");
            let error = ApiError::Upstream("the upstream stream ended before message_stop".into());
            forwarder.send(Bytes::from(error_event(&error, &request_id))).await;
        }
        if !tap.saw_message_start {
            tracing::warn!(request_id = %request_id, "stream ended before message_start; nothing to meter");
        } else if tap.saw_message_stop {
            meter.record(request_type, &model_id, tap.tokens());
        } else {
            tracing::warn!(request_id = %request_id, delivered_chars = tap.delivered_chars, "incomplete stream; metering an estimate");
            meter.record_estimated(request_type, &model_id, tap.estimated_tokens());
        }
    });
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
}
