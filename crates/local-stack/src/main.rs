//! `local-stack`: the project's own local servers (see `local-stack --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use claude_proxy::anthropic::HttpAnthropic;
use local_stack::api_server::{self, ApiState};
use local_stack::authorizer::{self, CognitoAuthorizer, CognitoSettings};
use local_stack::bench_floor;
use local_stack::cloudwatch_usage_log::{CloudWatchLogStream, CloudWatchUsageLog, TeeUsageLog};
use local_stack::fake_anthropic::{self, FakeAnthropicSettings};
use local_stack::fake_bedrock::{self, FakeBedrockSettings};
use local_stack::fake_bedrock_audit::{InvocationLog, InvocationLogBucket};
use local_stack::fake_bedrock_strict::{ModelCatalogue, Strictness};
use local_stack::proxy_routes::LocalProxy;
use local_stack::serve::{bind, serve_http1, shutdown_signal, HEADER_READ_TIMEOUT};
use metering_core::chat::{chat_service_on_aws, limits_service_on_aws, load_sdk_config};
use metering_core::config::ChatConfig;
use metering_core::limits::period::Clock;
use metering_core::model::BedrockChatModel;
use metering_core::tenant_registry::tenant_registry_on_aws;
use metering_core::usage_config::UsageApiConfig;

/// How long the CloudWatch Logs copy may still send after the metering drain (its last counter_update lines).
const COPY_GRACE_AFTER_DRAIN: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(
    version,
    about = "Local servers of bedrock-metering: the API (Lambda handlers behind a Cognito authorizer) \
and a fake Amazon Bedrock Runtime. AWS services come from moto; scripts/dev starts everything."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POST /bedrock/chat, GET /v1/usage..., GET|PUT|DELETE /v1/limits... (and GET /health) with the Lambdas' handlers, verifying
    /// Cognito IdTokens, and the /ui dashboard without a token (the usage settings: USAGE_TABLE_NAME,
    /// ADMIN_GROUP, PRICING_JSON/PRICING_FILE; the dashboard signs in at AWS_ENDPOINT_URL, moto).
    /// AWS endpoints, region and credentials come from the standard AWS environment (AWS_ENDPOINT_URL,
    /// AWS_ENDPOINT_URL_BEDROCK_RUNTIME, AWS_REGION, ...); the chat settings from the chat Lambda's variables
    /// (USAGE_TABLE_NAME, BEDROCK_MODEL_ID, BEDROCK_TIMEOUT_MS, ...), the limits' from LIMITS_* (README "Budgets and quotas").
    Api {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// File to write the bound port to, once listening.
        #[arg(long)]
        port_file: Option<PathBuf>,
        /// The user pool's JWKS URL (moto: http://127.0.0.1:<port>/<pool_id>/.well-known/jwks.json).
        #[arg(long, env = "COGNITO_JWKS_URL")]
        jwks_url: String,
        /// Expected `iss`: https://cognito-idp.<region>.amazonaws.com/<pool_id>.
        #[arg(long, env = "COGNITO_ISSUER")]
        issuer: String,
        /// Expected `aud`: the app client id.
        #[arg(long, env = "COGNITO_CLIENT_ID")]
        client_id: String,
        /// Seconds a verified IdToken is answered from the authorizer's cache at most (never past its `exp`),
        /// as API Gateway's authorizer caches its results; 0 verifies every request.
        #[arg(long, env = "LOCAL_AUTHORIZER_CACHE_TTL_SECONDS", default_value_t = authorizer::DEFAULT_CACHE_TTL_SECONDS,
              value_parser = clap::value_parser!(u64).range(0..=authorizer::MAX_CACHE_TTL_SECONDS))]
        token_cache_ttl_seconds: u64,
        /// CloudWatch Logs group that also receives the usage lines (as Lambda's log capture would).
        #[arg(long, env = "USAGE_LOG_GROUP")]
        usage_log_group: Option<String>,
        /// For tests of the limits' periods: a file holding a number of seconds added to the clock of the
        /// limits (read on every use; absent or empty = 0), so a test can cross a minute, day or month.
        #[arg(long, env = "LOCAL_LIMITS_CLOCK_OFFSET_FILE")]
        limits_clock_offset_file: Option<PathBuf>,
    },
    /// Serve a wire-compatible fake of the Bedrock Runtime (Converse, ConverseStream, InvokeModel,
    /// InvokeModelWithResponseStream, CountTokens, ListInferenceProfiles) that checks requests as Bedrock
    /// does (SigV4 form, model ids, Converse's message rules, request metadata) and records every served call
    /// in Bedrock's invocation log format.
    FakeBedrock {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8081")]
        addr: SocketAddr,
        /// File to write the bound port to, once listening.
        #[arg(long)]
        port_file: Option<PathBuf>,
        /// Delay added to every answer, in milliseconds (for benchmarks).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Bucket that receives a model invocation log record of every served call, as Bedrock's invocation
        /// logging writes them (S3 endpoint and credentials from the standard AWS environment: moto locally).
        /// Without it the records are only listed at GET /fake/invocation-logs.
        #[arg(long, env = "FAKE_BEDROCK_INVOCATION_LOG_BUCKET")]
        invocation_log_bucket: Option<String>,
        /// Key prefix of the invocation records in that bucket.
        #[arg(long, env = "FAKE_BEDROCK_INVOCATION_LOG_PREFIX", default_value = "bedrock-invocation-logs/")]
        invocation_log_prefix: String,
        /// The region a request's SigV4 credential scope must name.
        #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
        region: String,
        /// The model ids served, comma-separated (foundation models and inference profiles); others are
        /// refused as Bedrock refuses them. Default: every model and profile ListInferenceProfiles lists.
        #[arg(long, env = "FAKE_BEDROCK_MODEL_IDS", value_delimiter = ',')]
        model_ids: Vec<String>,
    },
    /// Serve a wire-compatible fake of the Anthropic Messages API (/v1/messages, streamed or not, and
    /// /v1/messages/count_tokens) with deterministic usage and `[fake:...]` directives (429 with retry-after, ...).
    FakeAnthropic {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8082")]
        addr: SocketAddr,
        /// File to write the bound port to, once listening.
        #[arg(long)]
        port_file: Option<PathBuf>,
        /// Delay added to every answer, in milliseconds (for benchmarks).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// A benchmark instrument (scripts/bench chat|proxy): the floor under the gateway's overhead. Serves one
    /// route on the same server as `api`, making the same upstream call with the same client code, and nothing
    /// else (no authorizer, no key check, no limits, no metering, no log line): `chat` is POST /bedrock/chat,
    /// one Converse call through the AWS SDK (the chat's settings: BEDROCK_MODEL_ID, BEDROCK_TIMEOUT_MS, ...,
    /// and the standard AWS environment); `proxy` is POST /v1/messages, forwarded with the proxy's HTTP client
    /// and the provider key, the answer streamed back. It answers anyone: never expose it.
    BenchFloor {
        /// Which route: chat or proxy.
        #[arg(value_enum)]
        route: FloorRoute,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        /// File to write the bound port to, once listening.
        #[arg(long)]
        port_file: Option<PathBuf>,
        /// (proxy) The Anthropic API to forward to.
        #[arg(long, env = "ANTHROPIC_BASE_URL", default_value = claude_proxy::config::DEFAULT_ANTHROPIC_BASE_URL)]
        anthropic_base_url: String,
        /// (proxy) The provider's key sent upstream, as the proxy's managed mode sends it.
        #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true)]
        anthropic_api_key: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FloorRoute {
    Chat,
    Proxy,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    metering_core::telemetry::init_json_tracing();
    match Cli::parse().command {
        Command::Api {
            addr,
            port_file,
            jwks_url,
            issuer,
            client_id,
            token_cache_ttl_seconds,
            usage_log_group,
            limits_clock_offset_file,
        } => {
            let config = ChatConfig::from_env()?;
            let sdk_config = load_sdk_config().await;
            let cloudwatch = match usage_log_group {
                Some(group) if !group.trim().is_empty() => {
                    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk_config);
                    let stream = CloudWatchLogStream::create(client, group).await?;
                    Some(CloudWatchUsageLog::start(Arc::new(stream)))
                }
                _ => None,
            };
            let tee = Arc::new(TeeUsageLog { cloudwatch });
            let usage_log: Arc<dyn metering_core::usage::UsageLog> = tee.clone();
            let tenants = tenant_registry_on_aws(&sdk_config, config.usage_table_name.clone());
            let usage_config = UsageApiConfig::from_env()?;
            // One limits service for the chat, the proxy and the limits routes: a change through the API is
            // seen at once here (in AWS, by each function within LIMITS_CACHE_SECONDS).
            let limits = limits_service_on_aws(
                &config.limits,
                &sdk_config,
                config.usage_table_name.clone(),
                Arc::new(usage_config.pricing.clone()),
                Arc::clone(&usage_log),
            );
            let limits = match limits_clock_offset_file {
                Some(path) => limits.with_clock_of(offset_clock(path)),
                None => limits,
            };
            let chat_service = chat_service_on_aws(&config, &sdk_config, Arc::clone(&usage_log)).with_limits(limits.clone());
            let chat = chat_api::ChatHandler::new(chat_service, tenants);
            let usage = usage_api::usage_handler_on_aws(usage_config, &sdk_config).with_limits(limits.clone());
            let cache_ttl = Duration::from_secs(token_cache_ttl_seconds);
            let authorizer = Arc::new(CognitoAuthorizer::new(CognitoSettings { jwks_url, issuer, client_id, cache_ttl }));
            // The Claude proxy (/v1/messages, /v1/keys) when API_KEY_TABLE_NAME is set.
            let proxy = LocalProxy::from_env(&sdk_config, usage_log, limits.clone())?;
            let state =
                ApiState { authorizer, chat: chat.clone(), usage, proxy: proxy.as_ref().map(|proxy| proxy.handler().clone()) };
            let router = api_server::router(state);
            let listener = bind(addr, port_file.as_deref()).await?;
            serve_http1(listener, router, HEADER_READ_TIMEOUT, shutdown_signal()).await?;
            // Every answered request's usage line is written. The chat's and the proxy's counters (and the
            // proxy's streams still being read) get one drain bound, METERING_DRAIN_TIMEOUT_MS, together; what is
            // still pending then is reported as counter_update lines, which the CloudWatch copy gets a moment for.
            let deadline = tokio::time::Instant::now() + config.metering.drain_timeout;
            tracing::info!(pending = chat.metering().pending_jobs(), "draining metering jobs");
            let drain_proxy = async {
                if let Some(proxy) = &proxy {
                    proxy.drain(deadline).await;
                }
            };
            tokio::join!(drain_proxy, chat.metering().shutdown(deadline), async {
                limits.flush_within(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
            });
            tee.close(deadline.max(tokio::time::Instant::now()) + COPY_GRACE_AFTER_DRAIN).await;
        }
        Command::FakeBedrock { addr, port_file, delay_ms, invocation_log_bucket, invocation_log_prefix, region, model_ids } => {
            let invocation_log = match invocation_log_bucket {
                Some(bucket) if !bucket.is_empty() => {
                    let sdk_config = load_sdk_config().await;
                    let region = sdk_config.region().map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
                    let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(true).build();
                    InvocationLog::with_bucket(InvocationLogBucket {
                        client: aws_sdk_s3::Client::from_conf(s3_config),
                        bucket,
                        prefix: invocation_log_prefix,
                        region,
                    })
                }
                _ => InvocationLog::default(),
            };
            let models = if model_ids.is_empty() { ModelCatalogue::listed() } else { ModelCatalogue::of(model_ids) };
            let settings = FakeBedrockSettings {
                fixed_delay: Duration::from_millis(delay_ms),
                invocation_log,
                strictness: Strictness { region, models: Arc::new(models) },
                request_log: Arc::default(),
            };
            let listener = bind(addr, port_file.as_deref()).await?;
            axum::serve(listener, fake_bedrock::router(settings)).with_graceful_shutdown(shutdown_signal()).await?;
        }
        Command::FakeAnthropic { addr, port_file, delay_ms } => {
            let settings = FakeAnthropicSettings { fixed_delay: Duration::from_millis(delay_ms) };
            let listener = bind(addr, port_file.as_deref()).await?;
            // Small stream events must leave at once (no Nagle delay), as from the real API.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, fake_anthropic::router(settings)).with_graceful_shutdown(shutdown_signal()).await?;
        }
        Command::BenchFloor { route, addr, port_file, anthropic_base_url, anthropic_api_key } => {
            let router = match route {
                FloorRoute::Chat => {
                    let config = ChatConfig::from_env()?;
                    let sdk_config = load_sdk_config().await;
                    let model = BedrockChatModel::new(
                        &sdk_config,
                        config.bedrock_timeout,
                        config.bedrock_max_attempts,
                        config.throttle_retry_after_seconds,
                    );
                    bench_floor::chat_router(model, config.model_id)
                }
                FloorRoute::Proxy => {
                    let anthropic = HttpAnthropic::new(&anthropic_base_url, Duration::from_secs(600));
                    bench_floor::proxy_router(anthropic, anthropic_api_key)
                }
            };
            let listener = bind(addr, port_file.as_deref()).await?;
            serve_http1(listener, router, HEADER_READ_TIMEOUT, shutdown_signal()).await?;
        }
    }
    Ok(())
}

/// The system clock plus the seconds in `path` (a test moves the limits' clock by rewriting the file).
fn offset_clock(path: PathBuf) -> Clock {
    Arc::new(move || {
        let offset = std::fs::read_to_string(&path).ok().and_then(|text| text.trim().parse::<f64>().ok()).unwrap_or(0.0);
        chrono::Utc::now() + chrono::Duration::milliseconds((offset * 1000.0) as i64)
    })
}
