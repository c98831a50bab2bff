//! Streamed answers: a task reads the upstream stream, forwards it to the client as server-sent events and
//! reads the usage out of it. When the client hangs up, the task keeps reading to the end — the upstream
//! goes on generating (and billing) regardless — so the usage line holds what was generated.

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
            tracing::info!(request_id = %self.request_id, "client disconnected mid-stream; reading the rest for metering");
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
) -> ProxyBody {
    let (sender, body) = channel();
    let request_id = meter.request_id().to_owned();
    tokio::spawn(async move {
        let _in_flight = guard;
        let mut forwarder = Forwarder { sender, client_gone: false, request_id: request_id.clone() };
        let mut tap = UsageTap::default();
        match source {
            StreamSource::AnthropicSse(mut chunks) => {
                let mut parser = SseParser::default();
                while let Some(chunk) = chunks.next_chunk().await {
                    match chunk {
                        Ok(bytes) => {
                            parser.feed(&bytes, |event, data| tap.observe(event, data));
                            forwarder.send(bytes).await;
                        }
                        Err(error) => {
                            tracing::warn!(request_id = %request_id, %error, "Anthropic's stream broke off");
                            let error = ApiError::from(error);
                            forwarder.send(Bytes::from(error_event(&error, &request_id))).await;
                            break;
                        }
                    }
                }
            }
            StreamSource::BedrockEvents(mut events) => {
                while let Some(event) = events.next_event().await {
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
                            break;
                        }
                    }
                }
            }
        }
        if tap.saw_message_start {
            if !tap.saw_message_stop {
                tracing::warn!(request_id = %request_id, "stream ended before message_stop; metering what was reported");
            }
            meter.record(request_type, &model_id, tap.tokens());
        } else {
            tracing::warn!(request_id = %request_id, "stream ended before message_start; nothing to meter");
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
