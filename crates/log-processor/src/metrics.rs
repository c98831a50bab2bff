//! The export's CloudWatch metrics, as CloudWatch embedded metric format (EMF) lines on stdout: Lambda sends
//! stdout to the function's log group, where CloudWatch turns each such line into metric values — no
//! PutMetricData call, no extra permission. The alarms of `infra/lib/analytics/alarms.ts` watch them.

use serde_json::{json, Value};

/// The namespace of the alarms (keep in step with `infra/lib/analytics/alarms.ts`).
pub const NAMESPACE: &str = "BedrockMetering/LogExport";

/// One EMF line with `metrics` (name, count), stamped `timestamp_ms`.
pub fn emf_line(metrics: &[(&str, u64)], timestamp_ms: i64) -> String {
    let definitions: Vec<Value> = metrics.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect();
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [[]], "Metrics": definitions}],
        },
    });
    if let Some(object) = line.as_object_mut() {
        for (name, value) in metrics {
            object.insert((*name).to_owned(), json!(value));
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_names_each_metric_and_carries_its_value() {
        let line: Value = serde_json::from_str(&emf_line(&[("SkippedMalformed", 3), ("DaysExported", 1)], 42)).unwrap();
        assert_eq!(line["SkippedMalformed"], 3);
        assert_eq!(line["_aws"]["Timestamp"], 42);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Metrics"][1]["Name"], "DaysExported");
    }
}
