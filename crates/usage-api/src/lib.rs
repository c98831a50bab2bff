//! The usage Lambda: `GET /v1/usage/me`, `GET /v1/usage/{tenant_id}`, `GET /v1/usage` (admins) behind the
//! Cognito authorizer, and the `/ui` dashboard outside it. The handler parses, asks the core for the report,
//! and maps the result; the local API server mounts the same handler.

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use lambda_http::{Body, Request, Response};
use metering_core::counters::dynamodb_client;
use metering_core::error::REQUEST_ID_HEADER;
use metering_core::limits::service::LimitsService;
use metering_core::tenant_registry::{tenant_registry_on_aws, TenantRegistry};
use metering_core::usage_config::{DashboardConfig, UsageApiConfig};
use metering_core::usage_report::access::{may_list_tenants, readable_tenant};
use metering_core::usage_report::{Answer, DynamoUsageReader, UsageReports};
use metering_core::ApiError;
use percent_encoding::percent_decode_str;
use serde::Serialize;

pub mod dashboard;
pub mod limits;
pub mod params;
pub mod routes;

use api_gateway_lambda::{request_id_of, route_path, tenant_identity};
use params::{ListQuery, ReportQuery};
use routes::Route;

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

    /// Answers one API Gateway request; never fails: every error becomes its JSON answer.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let request_id = request_id_of(&request);
        match self.answer(&request, &request_id).await {
            Ok(response) => response,
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::warn!(request_id = %request_id, status = error.status().as_u16(), %error, "usage request failed");
                }
                error.to_response(Some(&request_id)).map(Body::from)
            }
        }
    }

    async fn answer(&self, request: &Request, request_id: &str) -> Result<Response<Body>, ApiError> {
        let route = Route::parse(route_path(request));
        if route == Route::NotFound {
            return Err(ApiError::NotFound("no such route".into()));
        }
        if let Route::OwnLimits | Route::TenantLimits(_) = route {
            return self.limits_answer(request, request_id, &route).await;
        }
        if request.method() != http::Method::GET {
            return Err(ApiError::MethodNotAllowed("use GET".into()));
        }
        if let Route::Dashboard(asset) = route {
            return dashboard::response(asset, &self.dashboard, &self.admin_group);
        }
        let identity = tenant_identity(request, self.tenants.as_ref()).await?;
        let query = request.uri().query();
        let today = (self.today)();
        let answer = match route {
            Route::OwnUsage => self.tenant_report(&identity.tenant_id, ReportQuery::parse(query, today)?, today).await?,
            Route::TenantUsage(segment) => {
                // Decoded exactly once: `%42` is `B`; `B%2F..` is `B/..`, which no tenant id can be.
                let requested = percent_decode_str(segment).decode_utf8_lossy();
                let tenant_id = readable_tenant(&identity, &requested, &self.admin_group)?;
                self.tenant_report(&tenant_id, ReportQuery::parse(query, today)?, today).await?
            }
            Route::AllTenants => {
                may_list_tenants(&identity, &self.admin_group)?;
                let ListQuery { cursor, limit } = ListQuery::parse(query, today)?;
                json_answer(self.reports.tenant_ranking(cursor, limit, today).await?)?
            }
            Route::Dashboard(_) | Route::NotFound | Route::OwnLimits | Route::TenantLimits(_) => {
                return Err(ApiError::NotFound("no such route".into()))
            }
        };
        tracing::info!(
            request_id,
            tenant_id = %identity.tenant_id,
            items_read = answer.stats.items_read,
            queries = answer.stats.queries,
            "usage report served"
        );
        json_response(answer, request_id)
    }

    async fn limits_answer(&self, request: &Request, request_id: &str, route: &Route<'_>) -> Result<Response<Body>, ApiError> {
        let limits = self.limits.as_ref().ok_or_else(|| ApiError::NotFound("limits are not served here".into()))?;
        let identity = tenant_identity(request, self.tenants.as_ref()).await?;
        let method = request.method();
        let answer = match route {
            Route::OwnLimits => limits::own_limits(limits, &identity, method).await?,
            Route::TenantLimits(segment) => {
                limits::tenant_limits(limits, &identity, &self.admin_group, method, segment, request.body().as_ref()).await?
            }
            _ => return Err(ApiError::NotFound("no such route".into())),
        };
        limits::json_response(&answer, request_id)
    }

    async fn tenant_report(&self, tenant_id: &str, query: ReportQuery, today: NaiveDate) -> Result<JsonAnswer, ApiError> {
        json_answer(self.reports.tenant_report(tenant_id, query.period, query.filter, today).await?)
    }
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

fn json_response(answer: JsonAnswer, request_id: &str) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/json")
        // Usage is private to the caller: no shared cache may keep it.
        .header(CACHE_CONTROL, "private, no-store")
        .header(REQUEST_ID_HEADER, request_id)
        .header(ITEMS_READ_HEADER, answer.stats.items_read)
        .header(QUERIES_HEADER, answer.stats.queries)
        .body(Body::from(answer.report))
        .map_err(|error| ApiError::Internal(format!("could not build the response: {error}")))
}
