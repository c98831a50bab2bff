/**
 * BedrockMeteringStack: tenants' identities, the REST API, the chat, usage and Claude proxy functions, the
 * usage counters and the proxy's gateway keys.
 */
import { CfnOutput, Duration, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { MeteringApi } from './api';
import { ADMIN_GROUP, TenantAuth } from './auth';
import { ClaudeProxy } from './claude-proxy';
import { acknowledgeAnyRegionModelArns, bedrockModelArns, invokeModelStatement } from './bedrock/model-access';
import { MeteringConfig } from './config';
import { RustFunction } from './lambda/rust-function';
import { meteredFunctionTimeout } from './lambda/timeout-budget';
import { UsageTable } from './usage-table';

export interface BedrockMeteringStackProps extends StackProps {
  readonly config: MeteringConfig;
}

export class BedrockMeteringStack extends Stack {
  public readonly auth: TenantAuth;
  public readonly usageTable: UsageTable;
  public readonly chatApi: RustFunction;
  public readonly usageApi: RustFunction;
  public readonly claudeProxy: ClaudeProxy;
  public readonly api: MeteringApi;
  /** The log groups holding the usage lines (one JSON line per answered chat or Claude proxy request). */
  public readonly usageLogGroups: logs.ILogGroup[];

  constructor(scope: Construct, id: string, props: BedrockMeteringStackProps) {
    super(scope, id, props);
    const { config } = props;
    const removalPolicy = config.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    this.auth = new TenantAuth(this, 'Auth', { removalPolicy });
    this.usageTable = new UsageTable(this, 'Usage', { removalPolicy });

    const corsEnvironment: Record<string, string> =
      config.api.corsAllowOrigins.length > 0 ? { CORS_ALLOW_ORIGINS: config.api.corsAllowOrigins.join(',') } : {};

    this.chatApi = new RustFunction(this, 'ChatApi', {
      binaryName: 'chat-api',
      functionName: `${this.stackName}-ChatApi`,
      description: 'POST /bedrock/chat: answers a tenant with Bedrock and meters its tokens',
      // Mostly waiting on Bedrock; 256 MB gives enough CPU for TLS and JSON at a low price per ms.
      memorySize: 256,
      // Bedrock's BEDROCK_TIMEOUT_MS (25 s by default, under API Gateway's 29 s) + the metering bound + a
      // margin: an answer at the last moment is still metered before Lambda ends the invocation.
      timeout: meteredFunctionTimeout(config.chat.bedrockTimeoutMs),
      environment: {
        BEDROCK_MODEL_ID: config.modelId,
        USAGE_TABLE_NAME: this.usageTable.table.tableName,
        USAGE_DAILY_TTL_DAYS: String(config.chat.usageDailyTtlDays),
        USAGE_WEEKLY_TTL_DAYS: String(config.chat.usageWeeklyTtlDays),
        BEDROCK_TIMEOUT_MS: String(config.chat.bedrockTimeoutMs),
        ...(config.anthropic.version ? { ANTHROPIC_VERSION: config.anthropic.version } : {}),
        ...(config.anthropic.maxTokens ? { ANTHROPIC_MAX_TOKENS: String(config.anthropic.maxTokens) } : {}),
        ...corsEnvironment,
      },
      assetDir: config.lambdaAssetDir,
      logRetention: config.logRetention,
      removalPolicy,
    });
    this.usageTable.grantIncrementCounters(this.chatApi.role);
    this.usageTable.grantTenantRegistry(this.chatApi.role);
    this.usageTable.grantEnforceLimits(this.chatApi.role);
    const modelTarget = {
      partition: this.partition,
      region: this.region,
      account: this.account,
      profileRegions: config.inferenceProfileRegions,
    };
    this.chatApi.role.addToPrincipalPolicy(invokeModelStatement(config.modelId, modelTarget));
    acknowledgeAnyRegionModelArns(this.chatApi.role, bedrockModelArns(config.modelId, modelTarget));

    this.usageApi = new RustFunction(this, 'UsageApi', {
      binaryName: 'usage-api',
      functionName: `${this.stackName}-UsageApi`,
      description: 'GET /v1/usage*: token usage per tenant from the counters; GET /ui: the usage UI',
      // DynamoDB queries and small JSON bodies: the smallest sensible size is enough.
      memorySize: 256,
      // The admin list over days=366 is one Query per day (8 in flight, pages followed): give it all of API
      // Gateway's 29 s rather than cut it at a guess.
      timeout: Duration.seconds(29),
      // No CORS_ALLOW_ORIGINS: the usage function never reads it (its UI is same-origin).
      environment: {
        USAGE_TABLE_NAME: this.usageTable.table.tableName,
        ADMIN_GROUP,
        // The app client the /ui dashboard signs in with (USER_PASSWORD_AUTH from the browser).
        COGNITO_CLIENT_ID: this.auth.userPoolClient.userPoolClientId,
        // As on the chat function: a period older than the counters gets a warning instead of silent zeros.
        USAGE_DAILY_TTL_DAYS: String(config.chat.usageDailyTtlDays),
        USAGE_WEEKLY_TTL_DAYS: String(config.chat.usageWeeklyTtlDays),
      },
      assetDir: config.lambdaAssetDir,
      logRetention: config.logRetention,
      removalPolicy,
    });
    this.usageTable.grantQueryCounters(this.usageApi.role);
    this.usageTable.grantTenantRegistry(this.usageApi.role);
    this.usageTable.grantManageLimits(this.usageApi.role);

    this.claudeProxy = new ClaudeProxy(this, 'ClaudeProxy', {
      config: config.claudeProxy,
      counters: config.chat,
      usageTable: this.usageTable,
      modelTarget: { partition: this.partition, region: this.region, account: this.account },
      assetDir: config.lambdaAssetDir,
      logRetention: config.logRetention,
      removalPolicy,
    });

    this.api = new MeteringApi(this, 'Api', {
      config: config.api,
      userPool: this.auth.userPool,
      chatFunction: this.chatApi.function,
      usageFunction: this.usageApi.function,
      claudeProxyFunction: this.claudeProxy.proxy.function,
      logRetention: config.logRetention,
      removalPolicy,
    });

    // Both write usage lines (chat: request_type bedrock; the proxy: anthropic or bedrock): the export reads both.
    this.usageLogGroups = [this.chatApi.logGroup, this.claudeProxy.proxy.logGroup];

    // Exact names: scripts/* and the operators read these outputs.
    output(this, 'UserPoolId', this.auth.userPool.userPoolId, 'Cognito user pool of the tenants');
    output(this, 'UserPoolClientId', this.auth.userPoolClient.userPoolClientId, 'App client (no secret): USER_PASSWORD_AUTH, SRP');
    output(this, 'ApiGatewayUrl', this.api.url, 'Base URL of the API (no trailing slash): POST <url>/bedrock/chat');
    output(this, 'UiUrl', `${this.api.url}/ui`, 'The usage UI');
    output(this, 'UsageTableName', this.usageTable.table.tableName, 'DynamoDB table of the usage counters');
    output(this, 'ChatLogGroupName', this.chatApi.logGroup.logGroupName, 'Log group of the chat function: the usage lines');
    output(this, 'ChatFunctionName', this.chatApi.function.functionName, 'The chat Lambda');
    output(this, 'UsageFunctionName', this.usageApi.function.functionName, 'The usage Lambda');
    output(this, 'UsageLogGroupName', this.usageApi.logGroup.logGroupName, 'Log group of the usage function');
    output(this, 'ApiAccessLogGroupName', this.api.accessLogGroup.logGroupName, 'API Gateway access logs (JSON)');
    output(this, 'BedrockModelId', config.modelId, 'The model every chat request goes to');
    output(this, 'AdminGroupName', ADMIN_GROUP, 'Cognito group of the operators');
    output(this, 'ClaudeProxyUrl', this.api.url, 'ANTHROPIC_BASE_URL for Claude Code and the Anthropic SDKs (POST <url>/v1/messages)');
    output(this, 'ApiKeyTableName', this.claudeProxy.apiKeys.table.tableName, 'DynamoDB table of the gateway keys (hashes only)');
    output(this, 'RateLimitTableName', this.claudeProxy.rateLimits.table.tableName, "DynamoDB table of the proxy's rate-limit memory");
    output(this, 'ClaudeProxyFunctionName', this.claudeProxy.proxy.function.functionName, 'The Claude proxy Lambda');
    output(this, 'ClaudeProxyLogGroupName', this.claudeProxy.proxy.logGroup.logGroupName, 'Log group of the Claude proxy: its usage lines');
    if (this.claudeProxy.anthropicApiKey) {
      output(this, 'AnthropicApiKeySecretArn', this.claudeProxy.anthropicApiKey.secretArn, "Secret holding the provider's Anthropic key (managed mode): put it there");
    }
  }
}

function output(stack: Stack, id: string, value: string, description: string): void {
  new CfnOutput(stack, id, { value, description });
}
