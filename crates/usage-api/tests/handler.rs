//! The usage handler fed with API Gateway events (`events/usage-*.json`), over an in-memory reader.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Bytes;
use chrono::NaiveDate;
use http_body_util::BodyExt;
use lambda_http::tower::ServiceExt;
use metering_core::counters::PeriodKind;
use metering_core::pricing::PricingTable;
use metering_core::usage::{RequestType, TokenCounts};
use metering_core::usage_config::DashboardConfig;
use metering_core::usage_report::aggregate::CounterRow;
use metering_core::usage_report::{CounterRead, CounterRetention, ReadStats, UsageReadError, UsageReader, UsageReports};
use serde_json::{json, Value};
use usage_api::{UsageHandler, ITEMS_READ_HEADER};

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";

#[derive(Default)]
struct MemoryReader {
    rows: Vec<(PeriodKind, CounterRow)>,
    tenants_asked: Mutex<Vec<String>>,
}

#[async_trait]
impl UsageReader for MemoryReader {
    async fn tenant_counters(
        &self,
        tenant_id: &str,
        kind: PeriodKind,
        first: &str,
        last: &str,
        request_type: Option<RequestType>,
    ) -> Result<CounterRead, UsageReadError> {
        self.tenants_asked.lock().unwrap().push(tenant_id.to_owned());
        let rows: Vec<CounterRow> = self
            .rows
            .iter()
            .filter(|(row_kind, row)| {
                *row_kind == kind
                    && row.tenant_id == tenant_id
                    && (first..=last).contains(&row.period.as_str())
                    && request_type.is_none_or(|wanted| wanted.as_str() == row.request_type)
            })
            .map(|(_, row)| row.clone())
            .collect();
        Ok(CounterRead { stats: ReadStats { items_read: rows.len() as u64, queries: 1 }, rows })
    }

    async fn day_counters_of_all_tenants(
        &self,
        day: &str,
        _request_type: Option<RequestType>,
    ) -> Result<CounterRead, UsageReadError> {
        let rows: Vec<CounterRow> = self
            .rows
            .iter()
            .filter(|(kind, row)| *kind == PeriodKind::Day && row.period == day)
            .map(|(_, row)| row.clone())
            .collect();
        Ok(CounterRead { stats: ReadStats { items_read: rows.len() as u64, queries: 1 }, rows })
    }
}

fn row(tenant: &str, period: &str, input: u64, output: u64, requests: u64) -> CounterRow {
    CounterRow {
        tenant_id: tenant.into(),
        period: period.into(),
        request_type: "bedrock".into(),
        model_id: HAIKU.into(),
        tokens: TokenCounts { input_tokens: input, output_tokens: output, ..TokenCounts::default() },
        total_tokens: input + output,
        requests,
    }
}

fn handler() -> (UsageHandler, Arc<MemoryReader>) {
    let reader = Arc::new(MemoryReader {
        rows: vec![
            (PeriodKind::Day, row("demo-tenant", "2026-11-20", 10, 20, 2)),
            (PeriodKind::Day, row("demo-tenant", "2026-11-23", 1, 2, 1)),
            (PeriodKind::Week, row("demo-tenant", "2026-W47", 10, 20, 2)),
            (PeriodKind::Week, row("demo-tenant", "2026-W48", 1, 2, 1)),
            (PeriodKind::Day, row("globex", "2026-11-22", 500, 500, 9)),
            (PeriodKind::Day, row("initech", "2026-11-21", 5, 5, 1)),
        ],
        ..MemoryReader::default()
    });
    let reports = UsageReports::new(reader.clone(), Arc::new(PricingTable::builtin()), CounterRetention::default());
    let dashboard = DashboardConfig {
        cognito_endpoint: "https://cognito-idp.us-east-1.amazonaws.com/".into(),
        cognito_client_id: Some("4example1clientid2345678".into()),
        region: "us-east-1".into(),
    };
    let tenants = Arc::new(metering_core::tenant_registry::InMemoryTenantRegistry::default());
    let handler = UsageHandler::new(reports, "admin".into(), dashboard, tenants)
        .with_today(|| NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
    (handler, reader)
}

fn event(name: &str) -> Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn with_path_and_query(mut event: Value, path: &str, query: &[(&str, &str)]) -> Value {
    event["path"] = json!(path);
    if query.is_empty() {
        event["queryStringParameters"] = Value::Null;
        event["multiValueQueryStringParameters"] = Value::Null;
    } else {
        let mut multi = serde_json::Map::new();
        for (name, value) in query {
            multi.entry(name.to_string()).or_insert_with(|| json!([])).as_array_mut().unwrap().push(json!(value));
        }
        event["queryStringParameters"] =
            json!(query.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>());
        event["multiValueQueryStringParameters"] = Value::Object(multi);
    }
    event
}

/// The function's answer to an event: lambda_http's request (the stage left out of the path, as in the
/// function) through the `Router` and the shared layers.
async fn call(handler: &UsageHandler, event: &Value) -> (http::Response<Bytes>, Value) {
    api_gateway_lambda::layers::serve_paths_without_stage();
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let (parts, body) = handler.router().oneshot(request).await.unwrap().into_parts();
    let response = http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes());
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response, body)
}

#[tokio::test]
async fn me_answers_the_callers_tenant_with_every_day() {
    let (handler, _) = handler();
    let (response, body) = call(&handler, &event("usage-me.json")).await;
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    assert_eq!(response.headers()["x-request-id"], event("usage-me.json")["requestContext"]["requestId"].as_str().unwrap());
    assert_eq!(response.headers()[ITEMS_READ_HEADER], "4");
    assert_eq!(body["tenant_id"], "demo-tenant");
    assert_eq!(
        (body["period_days"].as_u64(), body["from"].as_str(), body["to"].as_str()),
        (Some(30), Some("2026-10-25"), Some("2026-11-23"))
    );
    assert_eq!(body["request_type"], "bedrock");
    assert_eq!(body["daily_stats"].as_object().unwrap().len(), 30);
    assert_eq!(body["daily_stats"]["2026-11-20"], json!({"input_tokens": 10, "output_tokens": 20, "requests": 2}));
    assert_eq!(body["daily_stats"]["2026-11-21"], json!({"input_tokens": 0, "output_tokens": 0, "requests": 0}));
    assert_eq!(body["weekly_stats"]["2026-W48"]["requests"], 1);
    let summary = &body["summary"];
    assert_eq!((summary["total_input_tokens"].as_u64(), summary["total_output_tokens"].as_u64()), (Some(11), Some(22)));
    assert_eq!((summary["total_tokens"].as_u64(), summary["total_requests"].as_u64()), (Some(33), Some(3)));
    assert!(summary["estimated_cost_usd"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_tenant_cannot_tell_another_tenant_from_a_missing_one() {
    let (handler, reader) = handler();
    let mut tenant_user = event("usage-tenant.json");
    tenant_user["requestContext"]["authorizer"]["claims"] =
        event("usage-me.json")["requestContext"]["authorizer"]["claims"].clone();
    let mut answers = Vec::new();
    for path in
        ["/v1/usage/globex", "/v1/usage/no-such-tenant", "/v1/usage/GLOBEX", "/v1/usage/%67lobex", "/v1/usage/globex%2F.."]
    {
        let (response, body) = call(&handler, &with_path_and_query(tenant_user.clone(), path, &[])).await;
        assert_eq!(response.status(), 403, "{path}: {body}");
        answers.push(body);
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "{answers:?}");
    assert!(reader.tenants_asked.lock().unwrap().is_empty(), "nothing was read for a refused request");
    // The own tenant through the {tenant_id} route, percent-encoded or not, is allowed.
    let (response, body) = call(&handler, &with_path_and_query(tenant_user, "/v1/usage/demo-%74enant", &[])).await;
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(body["tenant_id"], "demo-tenant");
}

#[tokio::test]
async fn an_admin_reads_any_tenant_and_lists_them_all_in_pages() {
    let (handler, _) = handler();
    let (response, body) = call(&handler, &event("usage-tenant.json")).await;
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(body["summary"]["total_tokens"], 1000);

    let (response, first) = call(&handler, &event("usage-list.json")).await;
    assert_eq!(response.status(), 200, "{first}");
    assert_eq!(first["tenant_count"], 3);
    let ids: Vec<&str> = first["tenants"].as_array().unwrap().iter().map(|t| t["tenant_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["globex", "demo-tenant"]);
    let cursor = first["next"].as_str().unwrap();
    let next_page = with_path_and_query(event("usage-list.json"), "/v1/usage", &[("cursor", cursor), ("limit", "2")]);
    let (response, second) = call(&handler, &next_page).await;
    assert_eq!(response.status(), 200, "{second}");
    assert_eq!(second["tenants"][0]["tenant_id"], "initech");
    assert_eq!(second["next"], Value::Null);
    assert_eq!(response.headers()[ITEMS_READ_HEADER], "4", "one item per tenant, day and model");
    assert_eq!(response.headers()["x-usage-queries"], "7");
}

#[tokio::test]
async fn a_non_admin_may_not_list_tenants() {
    let (handler, _) = handler();
    let mut list = event("usage-list.json");
    list["requestContext"]["authorizer"]["claims"] = event("usage-me.json")["requestContext"]["authorizer"]["claims"].clone();
    let (response, body) = call(&handler, &list).await;
    assert_eq!(response.status(), 403);
    assert_eq!(body["error"]["type"], "permission_error");
}

#[tokio::test]
async fn bad_parameters_are_400_with_the_error_json() {
    let (handler, _) = handler();
    let cases: [(&str, &[(&str, &str)]); 7] = [
        ("/v1/usage/me", &[("days", "0")]),
        ("/v1/usage/me", &[("days", "367")]),
        ("/v1/usage/me", &[("days", "week")]),
        ("/v1/usage/me", &[("request_type", "openai")]),
        ("/v1/usage/me", &[("tenant_id", "globex")]),
        ("/v1/usage", &[("cursor", "not-a-cursor")]),
        ("/v1/usage", &[("limit", "0")]),
    ];
    for (path, query) in cases {
        let (response, body) = call(&handler, &with_path_and_query(event("usage-list.json"), path, query)).await;
        assert_eq!(response.status(), 400, "{path} {query:?}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn usage_routes_need_the_authorizers_claims() {
    let (handler, _) = handler();
    let anonymous = with_path_and_query(event("usage-ui.json"), "/v1/usage/me", &[]);
    let (response, body) = call(&handler, &anonymous).await;
    assert_eq!(response.status(), 401);
    assert_eq!(body["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn the_dashboard_is_served_without_claims() {
    let (handler, _) = handler();
    let (response, _) = call(&handler, &event("usage-ui.json")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = response.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("connect-src 'self' https://cognito-idp.us-east-1.amazonaws.com;"), "{policy}");
    let (response, config) = call(&handler, &with_path_and_query(event("usage-ui.json"), "/ui/config.json", &[])).await;
    assert_eq!(response.status(), 200);
    assert_eq!(config["cognito_client_id"], "4example1clientid2345678");
    assert_eq!(config["admin_group"], "admin");
    for asset in ["/ui/app.js", "/ui/app.css"] {
        let (response, _) = call(&handler, &with_path_and_query(event("usage-ui.json"), asset, &[])).await;
        assert_eq!(response.status(), 200, "{asset}");
    }
}

#[tokio::test]
async fn unknown_routes_are_404_and_other_methods_405() {
    let (handler, _) = handler();
    for path in ["/v1/usage/a/b", "/v1/usages", "/V1/USAGE/me", "/ui/secret"] {
        let (response, body) = call(&handler, &with_path_and_query(event("usage-me.json"), path, &[])).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(body["error"]["type"], "not_found_error");
    }
    let mut post = event("usage-me.json");
    post["httpMethod"] = json!("POST");
    let (response, _) = call(&handler, &post).await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn paths_route_exactly_and_anything_else_is_the_projects_404() {
    let (handler, _) = handler();
    // (`/v1/usage/me/../b` is not here: lambda_http's URI resolves dot segments, so it is `/v1/usage/b`, read
    // under the same access rule; the local server answers it 404, tests/e2e/test_usage_api.py.)
    for unknown in [
        "/",
        "/v1/usage/",
        "/v1/usage/a/b",
        "/V1/USAGE/me",
        "//v1/usage/a",
        "/v1/usages",
        "/ui/x",
        "/v1/limits/",
        "/v1/limits/a/b",
        "/v1/limits",
        "/prod/v1/usage/me",
        "/v1/usage/me/",
    ] {
        let (response, body) = call(&handler, &with_path_and_query(event("usage-me.json"), unknown, &[])).await;
        assert_eq!(response.status(), 404, "{unknown}: {body}");
        assert_eq!(body["error"]["type"], "not_found_error", "{unknown}");
        assert_eq!(response.headers()["x-request-id"], "d1f0c2aa-0000-4000-8000-000000000098", "{unknown}");
    }
}

#[tokio::test]
async fn a_non_get_on_a_usage_route_is_the_projects_405() {
    let (handler, _) = handler();
    for path in ["/v1/usage", "/v1/usage/me", "/v1/usage/acme", "/ui"] {
        let mut post = with_path_and_query(event("usage-me.json"), path, &[]);
        post["httpMethod"] = json!("POST");
        let (response, body) = call(&handler, &post).await;
        assert_eq!(response.status(), 405, "{path}: {body}");
        assert_eq!(body["error"]["type"], "method_not_allowed", "{path}");
    }
}

#[tokio::test]
async fn the_tenant_segment_is_percent_decoded_exactly_once() {
    // GIVEN an admin (events/usage-tenant.json reads `globex`)
    let (handler, _) = handler();
    // WHEN the segment is encoded once, THEN it is `globex`
    let (response, body) = call(&handler, &with_path_and_query(event("usage-tenant.json"), "/v1/usage/%67lobex", &[])).await;
    assert_eq!((response.status().as_u16(), body["tenant_id"].as_str()), (200, Some("globex")), "{body}");
    // WHEN it is encoded twice, THEN it is `%67lobex`, which no tenant id can be
    let (response, body) = call(&handler, &with_path_and_query(event("usage-tenant.json"), "/v1/usage/%2567lobex", &[])).await;
    assert_eq!(response.status(), 400, "{body}");
    let (response, body) = call(&handler, &with_path_and_query(event("usage-tenant.json"), "/v1/usage/globex%2F..", &[])).await;
    assert_eq!(response.status(), 400, "{body}");
}
