//! The `ttl` that `DynamoUsageCounters` writes on each counter item, exactly: the end of the day +
//! `USAGE_DAILY_TTL_DAYS`, the end of the ISO week (Monday + 7 days) + `USAGE_WEEKLY_TTL_DAYS`, whatever
//! weekday the request fell on. The SDK client talks to an HTTP listener on 127.0.0.1 (`listener`) that
//! keeps the `TransactWriteItems` body and answers `{}`; the end-to-end test `test_chat.py` checks the same
//! items in the moto table, but only on the day it runs.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

mod listener;

use std::time::Duration;

use chrono::NaiveDate;
use metering_core::counters::{CounterBatch, DynamoUsageCounters, UsageCounters};
use metering_core::usage::{RequestType, TokenCounts};
use serde_json::Value;

const DAY: i64 = 86_400;
const DAILY_TTL: Duration = Duration::from_secs(90 * DAY as u64);
const WEEKLY_TTL: Duration = Duration::from_secs(400 * DAY as u64);

/// The `ttl` of the day item and of the week item that one batch of `day` writes.
async fn ttls_written_for(day: NaiveDate) -> (i64, i64) {
    let (address, received) = listener::serve(listener::CannedResponse {
        status_line: "HTTP/1.1 200 OK",
        headers: vec![("content-type", "application/x-amz-json-1.0")],
        body: "{}",
    });
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(format!("http://{address}"))
        .build();
    let counters = DynamoUsageCounters::new(aws_sdk_dynamodb::Client::from_conf(config), "usage".into(), DAILY_TTL, WEEKLY_TTL);
    let batch = CounterBatch {
        batch_id: "batch-1".into(),
        tenant_id: "acme".into(),
        request_type: RequestType::Bedrock,
        model_id: "m".into(),
        day,
        tokens: TokenCounts { input_tokens: 1, output_tokens: 2, ..Default::default() },
        request_ids: vec!["r-1".into()],
    };
    counters.add(&batch).await.unwrap();
    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "one TransactWriteItems call");
    let body: Value = serde_json::from_slice(&bodies[0]).unwrap();
    let ttl_of = |prefix: &str| -> i64 {
        let items = body["TransactItems"].as_array().unwrap();
        let update = items
            .iter()
            .filter_map(|item| item.get("Update"))
            .find(|update| update["Key"]["sk"]["S"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} update in {body}"));
        update["ExpressionAttributeValues"][":ttl"]["N"].as_str().unwrap().parse().unwrap()
    };
    (ttl_of("DAY#"), ttl_of("WEEK#"))
}

fn midnight(day: &str) -> i64 {
    NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

#[tokio::test]
async fn a_week_item_expires_from_the_end_of_its_iso_week_whatever_the_request_day() {
    // GIVEN requests on the Monday, the Wednesday and the Sunday of the week of Monday 2026-11-23
    for day in ["2026-11-23", "2026-11-25", "2026-11-29"] {
        // WHEN their counters are written
        let (day_ttl, week_ttl) = ttls_written_for(NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap()).await;
        // THEN the day item lives 90 days past the end of its day, the week item 400 days past Sunday's end
        assert_eq!(day_ttl, midnight(day) + DAY + 90 * DAY, "day item of {day}");
        assert_eq!(week_ttl, midnight("2026-11-30") + 400 * DAY, "week item of {day}");
    }
}

#[tokio::test]
async fn a_week_that_spans_new_year_counts_from_its_monday_in_the_old_year() {
    // 2027-01-01 is a Friday of ISO week 2026-W53, which began on Monday 2026-12-28.
    let (_, week_ttl) = ttls_written_for(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()).await;
    assert_eq!(week_ttl, midnight("2027-01-04") + 400 * DAY);
}
