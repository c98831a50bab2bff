//! The `ttl` that `DynamoUsageCounters` writes on each counter item, exactly: the end of the day +
//! `USAGE_DAILY_TTL_DAYS`, the end of the ISO week (Monday + 7 days) + `USAGE_WEEKLY_TTL_DAYS`, whatever
//! weekday the request fell on. The SDK client talks to a one-connection HTTP listener on 127.0.0.1 that
//! keeps the `TransactWriteItems` body and answers `{}`; the end-to-end test `test_chat.py` checks the same
//! items in the moto table, but only on the day it runs.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use chrono::NaiveDate;
use metering_core::counters::{CounterBatch, DynamoUsageCounters, UsageCounters};
use metering_core::usage::{RequestType, TokenCounts};
use serde_json::Value;

const DAY: i64 = 86_400;
const DAILY_TTL: Duration = Duration::from_secs(90 * DAY as u64);
const WEEKLY_TTL: Duration = Duration::from_secs(400 * DAY as u64);

/// Accepts one request, returns its body; answers 200 `{}` (an empty TransactWriteItems output).
fn capture_one_request(listener: TcpListener) -> Vec<u8> {
    let (mut socket, _) = listener.accept().unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let body_start = loop {
        let read = socket.read(&mut buffer).unwrap();
        assert!(read > 0, "the connection closed before the headers ended");
        received.extend_from_slice(&buffer[..read]);
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map(|value| value.trim().parse().unwrap())
        .expect("a content-length");
    while received.len() < body_start + length {
        let read = socket.read(&mut buffer).unwrap();
        assert!(read > 0, "the connection closed before the body ended");
        received.extend_from_slice(&buffer[..read]);
    }
    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    socket.write_all(answer.as_bytes()).unwrap();
    received[body_start..body_start + length].to_vec()
}

/// The `ttl` of the day item and of the week item that one batch of `day` writes.
async fn ttls_written_for(day: NaiveDate) -> (i64, i64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let capture = std::thread::spawn(move || capture_one_request(listener));
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
    let body: Value = serde_json::from_slice(&capture.join().unwrap()).unwrap();
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
