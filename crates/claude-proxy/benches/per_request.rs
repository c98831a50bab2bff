//! Micro-benchmarks of the pure per-request work of `POST /v1/messages` (`scripts/bench micro`): the request
//! inspected (gateway key hashed, body fields read, client user, upstream headers), a plain answer's usage,
//! and the SSE usage tap per event. Goals: <= 20 us per plain request, <= 2 us per SSE event.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::fmt::Write as _;

use std::hint::black_box;

use bytes::Bytes;
use claude_proxy::anthropic::upstream_headers;
use claude_proxy::api_keys::hash_key;
use claude_proxy::config::CredentialMode;
use claude_proxy::request::{client_user, MessagesBody, ProxyRequest};
use claude_proxy::sse::{usage_of_message_json, SseParser, UsageTap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

const GATEWAY_KEY: &str = "bmk_0123456789abcdef_abababababababababababababababababababababababababababababababab";

/// The benchmark's request (`scripts/bench proxy`), and one shaped like Claude Code's: a long system prompt,
/// tool definitions and a conversation, about 40 KB.
fn bodies() -> Vec<(&'static str, Bytes)> {
    let small = json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 64, "stream": false,
        "messages": [{"role": "user", "content": "Summarise the benefits of metering every token per tenant in a multi-tenant gateway."}]});
    let tools: Vec<Value> = (0..16)
        .map(|index| json!({"name": format!("tool_{index}"), "description": "Reads a file from the workspace. ".repeat(20),
            "input_schema": {"type": "object", "properties": {"path": {"type": "string", "description": "absolute path"}}, "required": ["path"]}}))
        .collect();
    let messages: Vec<Value> = (0..20)
        .map(|turn| json!({"role": if turn % 2 == 0 { "user" } else { "assistant" },
            "content": [{"type": "text", "text": "Let us look at the metering code and the usage line written per request. ".repeat(12)}]}))
        .collect();
    let claude_code = json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 32000, "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude. ".repeat(100)}],
        "tools": tools, "messages": messages,
        "metadata": {"user_id": "user_3f9a6c_account_7c1e2d4f-aaaa-bbbb-cccc-000000000001_session_0b2d9e8f-1111-2222-3333-444444444444"}});
    vec![("bench body", Bytes::from(small.to_string())), ("Claude Code body", Bytes::from(claude_code.to_string()))]
}

fn client_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static(GATEWAY_KEY));
    headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("user-agent", HeaderValue::from_static("claude-cli/2.0.0 (external, cli)"));
    headers
}

fn proxy_body_inspection(c: &mut Criterion) {
    let mut group = c.benchmark_group("proxy request inspection");
    group.throughput(Throughput::Elements(1));
    for (name, body) in bodies() {
        let request = ProxyRequest { request_id: "r".into(), headers: client_headers(), query: None, body };
        group.bench_with_input(BenchmarkId::from_parameter(name), &request, |b, request| {
            b.iter(|| {
                let key_hash = request.gateway_key(CredentialMode::Managed).map(hash_key);
                let body = MessagesBody::parse(black_box(&request.body)).ok();
                let user = body.as_ref().and_then(|body| client_user(body, request));
                let headers = upstream_headers(&request.headers, CredentialMode::Managed, Some("sk-ant-provider"));
                black_box((key_hash, body.map(|body| body.stream), user, headers.len()))
            });
        });
    }
    group.finish();
}

fn plain_answer_usage(c: &mut Criterion) {
    let answer = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "fake-anthropic says: metering every token per tenant. ".repeat(20)}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 21, "output_tokens": 230, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
    .to_string();
    let mut group = c.benchmark_group("proxy plain answer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("usage of the answer", |b| {
        b.iter(|| black_box(usage_of_message_json(black_box(answer.as_bytes()))));
    });
    group.finish();
}

/// A streamed answer as the Anthropic API writes it: `deltas` text deltas between the usual frame events.
fn stream(deltas: usize) -> (Vec<u8>, u64) {
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 21, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for index in 0..deltas {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!(" word{index}")}}),
        ));
    }
    events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": deltas}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let count = events.len() as u64;
    let text = events.iter().fold(String::new(), |mut text, (event, data)| {
        let _ = write!(text, "event: {event}\ndata: {data}\n\n");
        text
    });
    (text.into_bytes(), count)
}

fn sse_usage_tap(c: &mut Criterion) {
    let (bytes, events) = stream(64);
    // Chunks as they come off a connection: a few events each, cut anywhere.
    let chunks: Vec<&[u8]> = bytes.chunks(700).collect();
    let mut group = c.benchmark_group("sse usage tap");
    group.throughput(Throughput::Elements(events));
    group.bench_function("per event (64-delta stream, 700-byte chunks)", |b| {
        b.iter(|| {
            let mut parser = SseParser::default();
            let mut tap = UsageTap::default();
            for chunk in &chunks {
                parser.feed(black_box(chunk), |event, data| tap.observe(event, data));
            }
            black_box(tap.tokens())
        });
    });
    group.finish();
}

criterion_group!(benches, proxy_body_inspection, plain_answer_usage, sse_usage_tap);
criterion_main!(benches);
