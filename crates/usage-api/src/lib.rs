//! The usage Lambda: `GET /v1/usage/me`, `GET /v1/usage/{tenant_id}`, `GET /v1/usage` (admins) behind the
//! Cognito authorizer, and the `/ui` dashboard outside it. The handler parses, asks the core for the report,
//! and maps the result; the local API server mounts the same handler.

use std::sync::Arc;

use api_gateway_lambda::error_envelope::no_such_route;
use api_gateway_lambda::{with_gateway_layers, JsonError, RequestBody, VerifiedClaims};
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use chrono::{NaiveDate, Utc};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Uri};
use metering_core::counters::dynamodb_client;
use metering_core::limits::service::LimitsService;
use metering_core::tenant_registry::{tenant_registry_on_aws, TenantRegistry};
use metering_core::usage_config::{DashboardConfig, UsageApiConfig};
use metering_core::usage_report::access::{may_list_tenants, readable_tenant};
use metering_core::usage_report::{Answer, DynamoUsageReader, UsageReports};
use metering_core::ApiError;
use percent_encoding::percent_decode_str;
use serde::Serialize;

pub(crate) mod dashboard;
pub(crate) mod limits;
pub(crate) mod params;

use dashboard::Asset;
use params::{ListQuery, ReportQuery};

pub use metering_core::usage_report::{ITEMS_READ_HEADER, QUERIES_HEADER};

type Clock = Arc<dyn Fn() -> NaiveDate + Send + Sync>;

#[derive(Clone)]
pub struct UsageHandler {
    reports: UsageReports,
    admin_group: String,
    dashboard: DashboardConfig,
    tenants: Arc<dyn TenantRegistry>,
    today: Clock,
    limits: Option<LimitsService>,
}

impl UsageHandler {
    pub fn new(reports: UsageReports, admin_group: String, dashboard: DashboardConfig, tenants: Arc<dyn TenantRegistry>) -> Self {
        Self { reports, admin_group, dashboard, tenants, today: Arc::new(|| Utc::now().date_naive()), limits: None }
    }

    /// Serves `/v1/limits...` from `limits` (its store and clock; a change clears its cache).
    pub fn with_limits(mut self, limits: LimitsService) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Replaces the UTC clock (tests fix "today").
    pub fn with_today(mut self, today: impl Fn() -> NaiveDate + Send + Sync + 'static) -> Self {
        self.today = Arc::new(today);
        self
    }

    /// The routes behind the Cognito authorizer, without fallback or layers (the local server merges them).
    /// Paths match exactly and case-sensitively; a tenant segment is one non-empty path segment.
    pub fn authorized_routes(&self) -> Router {
        let use_get = || async { JsonError(ApiError::MethodNotAllowed("use GET".into())) };
        Router::new()
            .route("/v1/usage", get(all_tenants).fallback(use_get))
            .route("/v1/usage/me", get(own_usage).fallback(use_get))
            .route("/v1/usage/{tenant_id}", get(tenant_usage).fallback(use_get))
            // The limits routes check the method after the identity, as they always have.
            .route("/v1/limits/me", any(own_limits))
            .route("/v1/limits/{tenant_id}", any(tenant_limits))
            .with_state(self.clone())
    }

    /// The dashboard's routes, outside the authorizer.
    pub fn dashboard_routes(&self) -> Router {
        let use_get = || async { JsonError(ApiError::MethodNotAllowed("use GET".into())) };
        let asset = |asset: Asset| {
            get(move |State(handler): State<UsageHandler>| async move {
                dashboard::response(asset, &handler.dashboard, &handler.admin_group)
            })
            .fallback(use_get)
        };
        let file = |State(handler): State<UsageHandler>, Path(file): Path<String>| async move {
            let asset = Asset::of_file(&file).ok_or_else(|| JsonError(ApiError::NotFound("no such route".into())))?;
            dashboard::response(asset, &handler.dashboard, &handler.admin_group)
        };
        Router::new()
            .route("/ui", asset(Asset::Page))
            .route("/ui/", asset(Asset::PageWithSlash))
            .route("/ui/{file}", get(file).fallback(use_get))
            .with_state(self.clone())
    }

    /// The function's `Router`: every route, the project's 404, and the shared layers.
    pub fn router(&self) -> Router {
        with_gateway_layers(self.authorized_routes().merge(self.dashboard_routes()).fallback(no_such_route))
    }

    fn limits_service(&self) -> Result<&LimitsService, ApiError> {
        self.limits.as_ref().ok_or_else(|| ApiError::NotFound("limits are not served here".into()))
    }

    async fn tenant_report(&self, tenant_id: &str, query: ReportQuery, today: NaiveDate) -> Result<JsonAnswer, ApiError> {
        json_answer(self.reports.tenant_report(tenant_id, query.period, query.filter, today).await?)
    }
}

/// `GET /v1/usage/me`: the caller's tenant.
async fn own_usage(
    State(handler): State<UsageHandler>,
    claims: VerifiedClaims,
    RawQuery(query): RawQuery,
) -> Result<Response, JsonError> {
    let identity = claims.admitted(handler.tenants.as_ref()).await?;
    let today = (handler.today)();
    let answer = handler.tenant_report(&identity.tenant_id, ReportQuery::parse(query.as_deref(), today)?, today).await?;
    Ok(report_response(answer))
}

/// `GET /v1/usage/{tenant_id}`: the caller's own tenant, or any tenant for the admin group.
async fn tenant_usage(
    State(handler): State<UsageHandler>,
    claims: VerifiedClaims,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, JsonError> {
    let identity = claims.admitted(handler.tenants.as_ref()).await?;
    let today = (handler.today)();
    let tenant_id = readable_tenant(&identity, &tenant_segment(&uri), &handler.admin_group)?;
    let answer = handler.tenant_report(&tenant_id, ReportQuery::parse(query.as_deref(), today)?, today).await?;
    Ok(report_response(answer))
}

/// `GET /v1/usage`: every tenant's usage, ranked (admins).
async fn all_tenants(
    State(handler): State<UsageHandler>,
    claims: VerifiedClaims,
    RawQuery(query): RawQuery,
) -> Result<Response, JsonError> {
    let identity = claims.admitted(handler.tenants.as_ref()).await?;
    may_list_tenants(&identity, &handler.admin_group)?;
    let today = (handler.today)();
    let ListQuery { cursor, limit } = ListQuery::parse(query.as_deref(), today)?;
    Ok(report_response(json_answer(handler.reports.tenant_ranking(cursor, limit, today).await.map_err(ApiError::from)?)?))
}

/// `GET /v1/limits/me`.
async fn own_limits(State(handler): State<UsageHandler>, method: Method, claims: VerifiedClaims) -> Result<Response, JsonError> {
    let limits = handler.limits_service()?;
    let identity = claims.admitted(handler.tenants.as_ref()).await?;
    Ok(limits::json_response(&limits::own_limits(limits, &identity, &method).await?))
}

/// `GET|PUT|DELETE /v1/limits/{tenant_id}` (admins).
async fn tenant_limits(
    State(handler): State<UsageHandler>,
    method: Method,
    claims: VerifiedClaims,
    uri: Uri,
    RequestBody(body): RequestBody,
) -> Result<Response, JsonError> {
    let limits = handler.limits_service()?;
    let identity = claims.admitted(handler.tenants.as_ref()).await?;
    // As sent: `limits::tenant_limits` decodes it, once.
    let answer = limits::tenant_limits(limits, &identity, &handler.admin_group, &method, raw_segment(&uri), &body).await?;
    Ok(limits::json_response(&answer))
}

/// The `{tenant_id}` segment decoded exactly once: `%42` is `B`; `B%2F..` is `B/..`, which no tenant id can
/// be; `%2542` is `%42`.
fn tenant_segment(uri: &Uri) -> String {
    percent_decode_str(raw_segment(uri)).decode_utf8_lossy().into_owned()
}

/// The `{tenant_id}` segment as sent, still percent-encoded (the routes have it last).
fn raw_segment(uri: &Uri) -> &str {
    api_gateway_lambda::extract::raw_last_segment(uri)
}

/// Wires the handler to the DynamoDB usage table from one shared SDK config (the Lambda and the local server).
pub fn usage_handler_on_aws(config: UsageApiConfig, sdk_config: &aws_config::SdkConfig) -> UsageHandler {
    let reader = DynamoUsageReader::new(dynamodb_client(sdk_config), config.usage_table_name.clone());
    let tenants = tenant_registry_on_aws(sdk_config, config.usage_table_name.clone());
    let pricing = Arc::new(config.pricing);
    // The usage function reads and sets limits; it never enforces them, so it sends no alerts.
    let limits_config = metering_core::limits::config::LimitsConfig { event_bus_name: None, ..Default::default() };
    let limits = metering_core::chat::limits_service_on_aws(
        &limits_config,
        sdk_config,
        config.usage_table_name.clone(),
        Arc::clone(&pricing),
        Arc::new(metering_core::usage::StdoutUsageLog),
    );
    let reports = UsageReports::new(Arc::new(reader), pricing, config.retention).with_concurrency(config.query_concurrency);
    UsageHandler::new(reports, config.admin_group, config.dashboard, tenants).with_limits(limits)
}

type JsonAnswer = Answer<String>;

fn json_answer<T: Serialize>(answer: Answer<T>) -> Result<JsonAnswer, ApiError> {
    let body = serde_json::to_string(&answer.report)
        .map_err(|error| ApiError::Internal(format!("could not encode the report: {error}")))?;
    Ok(Answer { report: body, stats: answer.stats })
}

fn report_response(answer: JsonAnswer) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        // Usage is private to the caller: no shared cache may keep it.
        (CACHE_CONTROL, HeaderValue::from_static("private, no-store")),
        (HeaderName::from_static(ITEMS_READ_HEADER), HeaderValue::from(answer.stats.items_read)),
        (HeaderName::from_static(QUERIES_HEADER), HeaderValue::from(answer.stats.queries)),
    ];
    tracing::info!(items_read = answer.stats.items_read, queries = answer.stats.queries, "usage report served");
    (headers, answer.report).into_response()
}
