//! The fake Bedrock's own record of what it served: request metadata checked as Bedrock checks it, and one
//! model invocation log record per successful call, in Bedrock's documented log format (schemaType
//! `ModelInvocationLog`), so `scripts/reconcile --with-bedrock-logs` runs the whole path offline.
//!
//! - Converse/ConverseStream carry `requestMetadata` in the body, InvokeModel(WithResponseStream) the
//!   `X-Amzn-Bedrock-Request-Metadata` header (a JSON object of strings). Bedrock's limits: at most 16 pairs,
//!   keys 1-256 and values 0-256 characters of `[a-zA-Z0-9\s._:/=+$@-]`; anything else is a 400
//!   `ValidationException` and nothing is served or recorded.
//! - Records go to memory (`GET /fake/invocation-logs` lists them) and, when a bucket is set, to S3 (moto
//!   locally) as Bedrock delivers them: `<prefix>AWSLogs/<account>/BedrockModelInvocationLogs/<region>/
//!   YYYY/MM/DD/HH/<file>`, one JSON record per line. Bedrock gzips and batches its files; the fake writes
//!   one uncompressed `.json` object per call, in the background like Bedrock's delivery (readers accept
//!   both).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use metering_core::bedrock_metadata::{is_valid_key, is_valid_value, MAX_PAIRS};
use serde_json::{json, Value};

use crate::fake_bedrock::aws_error;

pub const ACCOUNT_ID: &str = "123456789012";
pub const REQUEST_METADATA_HEADER: &str = "x-amzn-bedrock-request-metadata";

/// Where the records go besides memory.
#[derive(Debug, Clone)]
pub struct InvocationLogBucket {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    /// Key prefix, e.g. `bedrock-invocation-logs/`.
    pub prefix: String,
    pub region: String,
}

/// The invocation records of this fake (shared by every route).
#[derive(Debug, Clone, Default)]
pub struct InvocationLog {
    records: Arc<Mutex<Vec<Value>>>,
    bucket: Option<InvocationLogBucket>,
}

/// One served call, as the record needs it.
pub struct Invocation<'a> {
    pub operation: &'static str,
    pub model_id: &'a str,
    pub metadata: Option<BTreeMap<String, String>>,
    pub input_body: &'a Value,
    pub input_tokens: u64,
    /// Prompt cache tokens (`cacheReadInputTokenCount`, `cacheWriteInputTokenCount`), when any.
    pub cache_read_input_tokens: u64,
    pub cache_write_input_tokens: u64,
    pub output_body: Value,
    pub output_tokens: u64,
}

impl InvocationLog {
    pub fn with_bucket(bucket: InvocationLogBucket) -> Self {
        Self { records: Arc::default(), bucket: Some(bucket) }
    }

    fn region(&self) -> &str {
        self.bucket.as_ref().map_or("us-east-1", |bucket| bucket.region.as_str())
    }

    /// Records one served call (in memory, then in the bucket when set).
    pub fn record(&self, invocation: Invocation<'_>) {
        let now = Utc::now();
        let record = invocation_record(&invocation, now, self.region());
        if let Ok(mut records) = self.records.lock() {
            records.push(record.clone());
        }
        if let Some(bucket) = self.bucket.clone() {
            // Delivered in the background, as Bedrock delivers its logs: the answer never waits for S3 (a
            // frozen moto must not hold the fake's answers).
            tokio::spawn(async move { deliver(&bucket, &record, now).await });
        }
    }

    fn all(&self) -> Vec<Value> {
        self.records.lock().map(|records| records.clone()).unwrap_or_default()
    }
}

async fn deliver(bucket: &InvocationLogBucket, record: &Value, now: DateTime<Utc>) {
    let key = format!(
        "{}AWSLogs/{ACCOUNT_ID}/BedrockModelInvocationLogs/{}/{}/{}_{}.json",
        bucket.prefix,
        bucket.region,
        now.format("%Y/%m/%d/%H"),
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        uuid::Uuid::new_v4().simple()
    );
    let body = format!("{record}\n").into_bytes();
    if let Err(error) = bucket.client.put_object().bucket(&bucket.bucket).key(&key).body(body.into()).send().await {
        tracing::error!(error = %aws_sdk_s3::error::DisplayErrorContext(&error), key, "could not write an invocation record");
    }
}

/// A record in Bedrock's model invocation log format.
pub fn invocation_record(invocation: &Invocation<'_>, now: DateTime<Utc>, region: &str) -> Value {
    let mut record = json!({
        "schemaType": "ModelInvocationLog",
        "schemaVersion": "1.0",
        "timestamp": now.to_rfc3339_opts(SecondsFormat::Secs, true),
        "accountId": ACCOUNT_ID,
        "identity": {"arn": format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/local-gateway/local")},
        "region": region,
        "requestId": uuid::Uuid::new_v4().to_string(),
        "operation": invocation.operation,
        "modelId": invocation.model_id,
        "input": {
            "inputContentType": "application/json",
            "inputBodyJson": invocation.input_body,
            "inputTokenCount": invocation.input_tokens,
        },
        "output": {
            "outputContentType": "application/json",
            "outputBodyJson": invocation.output_body,
            "outputTokenCount": invocation.output_tokens,
        },
    });
    if invocation.cache_read_input_tokens > 0 || invocation.cache_write_input_tokens > 0 {
        record["input"]["cacheReadInputTokenCount"] = json!(invocation.cache_read_input_tokens);
        record["input"]["cacheWriteInputTokenCount"] = json!(invocation.cache_write_input_tokens);
    }
    if let Some(metadata) = &invocation.metadata {
        record["requestMetadata"] = json!(metadata);
    }
    record
}

fn metadata_refused(message: String) -> Response {
    aws_error(StatusCode::BAD_REQUEST, "ValidationException", &message)
}

/// Checks request metadata as Bedrock does: a JSON object of at most 16 string pairs within the limits.
pub fn check_request_metadata(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Some(pairs) = value.as_object() else {
        return Err(
            "1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: must be a map of strings"
                .into(),
        );
    };
    if pairs.len() > MAX_PAIRS {
        return Err(format!(
            "1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: Member must have length less than or equal to {MAX_PAIRS}"
        ));
    }
    let mut checked = BTreeMap::new();
    for (key, value) in pairs {
        let Some(text) = value.as_str() else {
            return Err(format!(
                "1 validation error detected: Value at 'requestMetadata.{key}' failed to satisfy constraint: must be a string"
            ));
        };
        if !is_valid_key(key) {
            return Err("1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 256, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: [a-zA-Z0-9\\s._:/=+$@-]{1,256}]".into());
        }
        if !is_valid_value(text) {
            return Err("1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: Map values must satisfy constraint: [Member must have length less than or equal to 256, Member must satisfy regular expression pattern: [a-zA-Z0-9\\s._:/=+$@-]{0,256}]".into());
        }
        checked.insert(key.clone(), text.to_owned());
    }
    Ok(checked)
}

/// The metadata of a Converse body (`requestMetadata`), or the 400 Bedrock answers.
pub fn converse_metadata(body: &Value) -> Result<Option<BTreeMap<String, String>>, Response> {
    match body.get("requestMetadata") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => check_request_metadata(value).map(Some).map_err(metadata_refused),
    }
}

/// The metadata of an InvokeModel call (`X-Amzn-Bedrock-Request-Metadata`), or the 400 Bedrock answers.
pub fn invoke_metadata(headers: &HeaderMap) -> Result<Option<BTreeMap<String, String>>, Response> {
    let Some(header) = headers.get(REQUEST_METADATA_HEADER) else { return Ok(None) };
    let parsed = header
        .to_str()
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .ok_or_else(|| metadata_refused("X-Amzn-Bedrock-Request-Metadata must be a JSON object of strings".into()))?;
    check_request_metadata(&parsed).map(Some).map_err(metadata_refused)
}

pub fn router(log: InvocationLog) -> Router {
    Router::new().route("/fake/invocation-logs", get(list)).with_state(log)
}

async fn list(State(log): State<InvocationLog>) -> Json<Value> {
    Json(json!({"records": log.all()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_within_bedrocks_limits_is_accepted() {
        let checked = check_request_metadata(&json!({"tenant_id": "acme", "request_id": "r-1", "empty": ""})).unwrap();
        assert_eq!(checked["tenant_id"], "acme");
    }

    #[test]
    fn metadata_beyond_bedrocks_limits_is_refused() {
        let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(check_request_metadata(&Value::Object(many)).unwrap_err().contains("less than or equal to 16"));
        assert!(check_request_metadata(&json!({"tenant_id": "acme#eu"})).unwrap_err().contains("Map values"));
        assert!(check_request_metadata(&json!({"tenant_id": "x".repeat(257)})).unwrap_err().contains("Map values"));
        assert!(check_request_metadata(&json!({"": "x"})).unwrap_err().contains("Map keys"));
        assert!(check_request_metadata(&json!({"tenant_id": 5})).unwrap_err().contains("must be a string"));
        assert!(check_request_metadata(&json!(["x"])).is_err());
    }

    #[test]
    fn a_record_has_bedrocks_log_shape() {
        let body = json!({"messages": []});
        let invocation = Invocation {
            operation: "Converse",
            model_id: "m",
            metadata: Some(BTreeMap::from([("tenant_id".to_owned(), "acme".to_owned())])),
            input_body: &body,
            input_tokens: 3,
            cache_read_input_tokens: 0,
            cache_write_input_tokens: 0,
            output_body: json!({}),
            output_tokens: 5,
        };
        let record = invocation_record(&invocation, Utc::now(), "us-east-1");
        assert_eq!(record["schemaType"], "ModelInvocationLog");
        assert_eq!(record["input"]["inputTokenCount"], 3);
        assert_eq!(record["output"]["outputTokenCount"], 5);
        assert_eq!(record["requestMetadata"]["tenant_id"], "acme");
    }
}
