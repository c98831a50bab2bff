//! The Claude proxy in the local API server: built from the proxy function's own variables, its routes
//! mounted by `api_server::router` as API Gateway serves them (`/v1/messages...` and `/v1/gateway-key/...`
//! without an authorizer, the gateway key being checked by the handler; `/v1/keys...` behind the Cognito
//! authorizer), and its streams drained at shutdown. Answers stream through as the handler produces them.

use std::sync::Arc;

use claude_proxy::config::ProxyConfig;
use claude_proxy::ProxyHandler;
use metering_core::usage::UsageLog;
use tokio::time::Instant;

/// The proxy in the local API server: on when `API_KEY_TABLE_NAME` is set, configured from the proxy
/// function's own variables (see crates/claude-proxy/README.md).
pub struct LocalProxy {
    handler: ProxyHandler,
}

impl LocalProxy {
    /// Must be called inside the Tokio runtime: a provider key in a secret starts being read at once.
    pub fn from_env(
        sdk_config: &aws_config::SdkConfig,
        usage_log: Arc<dyn UsageLog>,
        limits: metering_core::limits::service::LimitsService,
    ) -> Result<Option<Self>, Box<dyn std::error::Error>> {
        if std::env::var("API_KEY_TABLE_NAME").map_or(true, |table| table.trim().is_empty()) {
            return Ok(None);
        }
        let config = ProxyConfig::from_env()?;
        config.log_start();
        let service = claude_proxy::aws::proxy_service_on_aws(&config, sdk_config, usage_log).with_limits(limits);
        let tenants = metering_core::tenant_registry::tenant_registry_on_aws(sdk_config, config.usage_table_name.clone());
        let handler = ProxyHandler::new(service, config.max_body_bytes, tenants)
            .with_key_holder_reports(claude_proxy::key_holder::key_holder_reports_on_aws(&config, sdk_config));
        Ok(Some(Self { handler }))
    }

    /// The proxy's handler, whose routes the local API server mounts (`api_server::router`).
    pub fn handler(&self) -> &ProxyHandler {
        &self.handler
    }

    /// After the server stopped: finish the streams still being read (their usage lines are written when they
    /// end), then the proxy's counter updates, all by `deadline` (the chat's drain bound); counter updates still
    /// pending then get `counter_update` lines.
    pub async fn drain(&self, deadline: Instant) {
        let service = self.handler.service();
        tracing::info!(streams = service.in_flight().count(), pending = service.metering().pending_jobs(), "draining the proxy");
        if !service.in_flight().idle_within(deadline.saturating_duration_since(Instant::now())).await {
            tracing::warn!(
                streams = service.in_flight().count(),
                "streams still open at the drain deadline; their usage lines are not written"
            );
        }
        service.metering().shutdown(deadline).await;
    }
}
