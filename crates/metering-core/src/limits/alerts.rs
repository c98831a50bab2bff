//! Budget alerts: one EventBridge event (source `bedrock-metering`, detail-type `BudgetThresholdCrossed`)
//! per threshold, budget and period. Exactly once: the request whose settlement finds a threshold crossed
//! creates the threshold's marker item under `attribute_not_exists`; only the one that created it sends the
//! event. If the event cannot be sent, the marker is deleted again, so a later request retries.

use async_trait::async_trait;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::{json, Value};

use super::store::{AlertMarker, CounterUse};
use super::{amount_json, LimitKind};

pub const EVENT_SOURCE: &str = "bedrock-metering";
pub const EVENT_DETAIL_TYPE: &str = "BudgetThresholdCrossed";

/// The port alerts go out through.
#[async_trait]
pub trait AlertPublisher: Send + Sync {
    async fn publish(&self, detail: &Value) -> Result<(), String>;
}

/// Alerts as EventBridge events on `event_bus_name`.
#[derive(Debug, Clone)]
pub struct EventBridgeAlerts {
    client: aws_sdk_eventbridge::Client,
    event_bus_name: String,
}

impl EventBridgeAlerts {
    pub fn new(sdk_config: &aws_config::SdkConfig, event_bus_name: String) -> Self {
        Self { client: aws_sdk_eventbridge::Client::new(sdk_config), event_bus_name }
    }
}

#[async_trait]
impl AlertPublisher for EventBridgeAlerts {
    async fn publish(&self, detail: &Value) -> Result<(), String> {
        let entry = PutEventsRequestEntry::builder()
            .source(EVENT_SOURCE)
            .detail_type(EVENT_DETAIL_TYPE)
            .detail(detail.to_string())
            .event_bus_name(&self.event_bus_name)
            .build();
        let output =
            self.client.put_events().entries(entry).send().await.map_err(|error| DisplayErrorContext(&error).to_string())?;
        if output.failed_entry_count() > 0 {
            let reason = output.entries().first().and_then(|entry| entry.error_message()).unwrap_or("unknown").to_owned();
            return Err(format!("EventBridge refused the event: {reason}"));
        }
        Ok(())
    }
}

/// The `detail` of one `BudgetThresholdCrossed` event.
pub fn event_detail(marker: &AlertMarker, limit: u64, used: CounterUse, request_id: &str) -> Value {
    let counter = &marker.counter;
    let kind: LimitKind = counter.kind;
    json!({
        "tenant_id": counter.scope.tenant_id(),
        "key_id": counter.scope.key_id(),
        "scope": counter.scope.name(),
        "limit": kind.as_str(),
        "threshold_percent": marker.percent,
        "limit_value": amount_json(kind, limit),
        "used": amount_json(kind, used.settled),
        "period": counter.period.label,
        "period_start": counter.period.starts_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resets_at": counter.period.resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "request_id": request_id,
    })
}
