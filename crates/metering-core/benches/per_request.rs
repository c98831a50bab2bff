//! Micro-benchmarks of the pure per-request work of `POST /bedrock/chat` (`scripts/bench micro`): the body
//! parsed and validated, the usage event built, and its usage line serialised. Goal: <= 20 us per request.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use metering_core::chat::ChatRequest;
use metering_core::usage::{RequestType, TokenCounts, UsageEvent};

const CHAT_BODY: &[u8] =
    br#"{"prompt": "Summarise the benefits of metering every token per tenant in a multi-tenant gateway.", "max_tokens": 256}"#;

fn usage_event(request_id: &str) -> UsageEvent {
    UsageEvent {
        received_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).single().unwrap_or_default(),
        request_id: request_id.to_owned(),
        tenant_id: "bench-tenant".to_owned(),
        user_id: "5f1c2a4e-1111-4c2b-9d3e-000000000001".to_owned(),
        model_id: "anthropic.claude-3-haiku-20240307-v1:0".to_owned(),
        request_type: RequestType::Bedrock,
        tokens: TokenCounts { input_tokens: 21, output_tokens: 48, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
        latency_ms: 52,
        usage_estimated: false,
        client_user_id: None,
        requested_model_id: None,
    }
}

fn chat_request_to_usage_line(c: &mut Criterion) {
    let mut group = c.benchmark_group("chat");
    group.throughput(Throughput::Elements(1));
    group.bench_function("request parse -> usage line", |b| {
        b.iter(|| {
            let request = ChatRequest::parse(black_box(CHAT_BODY)).map(|request| request.prompt.len());
            let event = usage_event("0b5f2d3c-7a4e-4c1b-9f0e-2d8c6b1a4e97");
            black_box((request.ok(), event.to_record(None).to_line()))
        });
    });
    group.bench_function("usage line serialisation", |b| {
        let event = usage_event("0b5f2d3c-7a4e-4c1b-9f0e-2d8c6b1a4e97");
        b.iter(|| black_box(black_box(&event).to_record(None).to_line()));
    });
    group.finish();
}

criterion_group!(benches, chat_request_to_usage_line);
criterion_main!(benches);
