/**
 * The Claude-compatible proxy (crates/claude-proxy): `POST /v1/messages` forwarded to Anthropic and, on a 429,
 * served by Bedrock instead; every answer metered in the usage table like /bedrock/chat. Here: its function,
 * its two tables, the provider's Anthropic key (managed mode) and exactly the permissions the code uses.
 * Its routes are on the REST API (lib/api), streamed; the key holder's own routes are listed in routes.ts.
 */
import { Annotations, Arn, ArnFormat, RemovalPolicy, Stack, Token, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import {
  acknowledgeAnyRegionModelArns,
  bedrockModelsArns,
  INFERENCE_PROFILE_REGIONS,
  ModelTarget,
  parseModelId,
  spelledForNag,
} from '../bedrock/model-access';
import { ChatConfig, ClaudeProxyConfig } from '../config';
import { RustFunction } from '../lambda/rust-function';
import { meteredFunctionTimeout } from '../lambda/timeout-budget';
import { COUNTER_PARTITION_PREFIX, UsageTable } from '../usage-table';
import { mappedBedrockModelIds } from './model-map';
import { ApiKeyTable, RateLimitTable } from './tables';

/** Upstream timeouts of the proxy (the crate defaults, 10 minutes each, would not fit Lambda's 15 together). */
export const PROXY_ANTHROPIC_TIMEOUT_MS = 440_000;
export const PROXY_BEDROCK_TIMEOUT_MS = 440_000;

export interface ClaudeProxyProps {
  readonly config: ClaudeProxyConfig;
  /** Counter TTLs, the same as the chat function's. */
  readonly counters: Pick<ChatConfig, 'usageDailyTtlDays' | 'usageWeeklyTtlDays'>;
  readonly usageTable: UsageTable;
  /** Where Bedrock is called (the stack's partition, region and account); profile regions per prefix. */
  readonly modelTarget: Omit<ModelTarget, 'profileRegions'>;
  readonly assetDir: string;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

/**
 * The Bedrock calls of a fallback: InvokeModel, InvokeModelWithResponseStream (streamed requests) and
 * CountTokens (`/v1/messages/count_tokens` while Anthropic is rate limited; crates/claude-proxy/src/bedrock.rs).
 */
export const PROXY_BEDROCK_ACTIONS = ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream', 'bedrock:CountTokens'];

/**
 * Model discovery (crates/claude-proxy/src/model_resolution.rs): `ListInferenceProfiles` in the stack's region,
 * then the fallback calls on whichever system-defined Claude profile it found (a model newer than the map).
 * So: the Anthropic profiles of this account and region, and the Claude foundation models they route to in
 * any of their source regions. Nothing of other providers, no application profiles, no provisioned models.
 */
export function discoveryStatements(target: Omit<ModelTarget, 'profileRegions'>): iam.PolicyStatement[] {
  const profiles = `arn:${target.partition}:bedrock:${target.region}:${target.account}:inference-profile/*`;
  return [
    new iam.PolicyStatement({ sid: 'ListInferenceProfiles', actions: ['bedrock:ListInferenceProfiles'], resources: [profiles] }),
    new iam.PolicyStatement({
      sid: 'InvokeDiscoveredClaudeModels',
      actions: PROXY_BEDROCK_ACTIONS,
      resources: [
        `arn:${target.partition}:bedrock:${target.region}:${target.account}:inference-profile/*.anthropic.claude-*`,
        `arn:${target.partition}:bedrock:*::foundation-model/anthropic.claude-*`,
      ],
    }),
  ];
}

export class ClaudeProxy extends Construct {
  public readonly apiKeys: ApiKeyTable;
  public readonly rateLimits: RateLimitTable;
  /** The provider's Anthropic key (managed mode only). */
  public readonly anthropicApiKey?: secretsmanager.ISecret;
  public readonly proxy: RustFunction;

  constructor(scope: Construct, id: string, props: ClaudeProxyProps) {
    super(scope, id);
    const { config } = props;
    const stack = Stack.of(this);

    this.apiKeys = new ApiKeyTable(this, 'ApiKeys', { removalPolicy: props.removalPolicy });
    this.rateLimits = new RateLimitTable(this, 'RateLimits', { removalPolicy: props.removalPolicy });

    let secretEnvironment: Record<string, string> = {};
    let secretPolicyArn: string | undefined;
    if (config.credentialMode === 'managed') {
      const named = config.anthropicApiKeySecretName;
      if (named === undefined) {
        // No key in the repo or the template: CloudFormation fills the secret with a JSON object whose
        // `api_key` is empty (plus a random filler it insists on): the function answers its messages with
        // 529s and logs "the secret holds no key" until the operator puts the real key in (see the README).
        const secret = new secretsmanager.Secret(this, 'AnthropicApiKey', {
          description: 'Provider Anthropic API key of the Claude proxy (managed mode): {"api_key": "sk-ant-..."}',
          generateSecretString: {
            secretStringTemplate: JSON.stringify({ api_key: '' }),
            generateStringKey: 'placeholder',
          },
          removalPolicy: props.removalPolicy,
        });
        Validations.of(secret).acknowledge({
          id: 'AwsSolutions-SMG4',
          reason:
            'A third-party (Anthropic) API key: Secrets Manager cannot rotate it; the operator replaces it in ' +
            'the Anthropic console and here (put-secret-value).',
        });
        this.anthropicApiKey = secret;
        secretEnvironment = { ANTHROPIC_API_KEY_SECRET_ID: secret.secretArn };
        secretPolicyArn = secret.secretArn;
      } else if (named.startsWith('arn:')) {
        this.anthropicApiKey = secretsmanager.Secret.fromSecretCompleteArn(this, 'AnthropicApiKey', named);
        secretEnvironment = { ANTHROPIC_API_KEY_SECRET_ID: named };
        secretPolicyArn = named;
      } else {
        this.anthropicApiKey = secretsmanager.Secret.fromSecretNameV2(this, 'AnthropicApiKey', named);
        secretEnvironment = { ANTHROPIC_API_KEY_SECRET_ID: named };
        // A secret's ARN ends in `-` and six random characters.
        secretPolicyArn = Arn.format(
          { service: 'secretsmanager', resource: 'secret', resourceName: `${named}-??????`, arnFormat: ArnFormat.COLON_RESOURCE_NAME },
          stack,
        );
      }
    }

    this.proxy = new RustFunction(this, 'Default', {
      binaryName: 'claude-proxy',
      functionName: `${stack.stackName}-ClaudeProxy`,
      description: 'POST /v1/messages (Anthropic API, Bedrock on 429, metered) and /v1/keys (gateway keys)',
      // Mostly waiting on Anthropic or Bedrock, but every streamed byte is copied and its SSE events parsed
      // for metering while TLS runs both ways: 512 MB buys the CPU for that without paying for idle memory.
      memorySize: 512,
      // A Claude Code answer can stream for minutes: API Gateway's STREAM mode and Lambda both stop at 15
      // minutes. The worst case is a full Anthropic wait followed by the Bedrock fallback, so the two upstream
      // timeouts + the metering bound + a margin must fit: 440 + 440 + 10 + 3 = 893 s.
      timeout: meteredFunctionTimeout(PROXY_ANTHROPIC_TIMEOUT_MS + PROXY_BEDROCK_TIMEOUT_MS),
      environment: {
        USAGE_TABLE_NAME: props.usageTable.table.tableName,
        USAGE_DAILY_TTL_DAYS: String(props.counters.usageDailyTtlDays),
        USAGE_WEEKLY_TTL_DAYS: String(props.counters.usageWeeklyTtlDays),
        API_KEY_TABLE_NAME: this.apiKeys.table.tableName,
        RATE_LIMIT_TABLE_NAME: this.rateLimits.table.tableName,
        ANTHROPIC_CREDENTIAL_MODE: config.credentialMode,
        ...secretEnvironment,
        BEDROCK_FALLBACK: String(config.bedrockFallback),
        ...(config.fallbackOn ? { FALLBACK_ON: config.fallbackOn.join(',') } : {}),
        // Always explicit, even when it is the crate's default: IAM below is derived from this very map.
        BEDROCK_MODEL_MAP: JSON.stringify(config.modelMap),
        // Ids the map does not name are looked up in Bedrock's listing (geography from AWS_REGION).
        BEDROCK_MODEL_DISCOVERY: 'true',
        ...(config.familyFallback ? { BEDROCK_FAMILY_FALLBACK: JSON.stringify(config.familyFallback) } : {}),
        ...(config.profileGeographies ? { BEDROCK_PROFILE_GEOGRAPHIES: config.profileGeographies.join(',') } : {}),
        ...(config.rateLimitScope ? { RATE_LIMIT_SCOPE: config.rateLimitScope } : {}),
        FORCE_RATE_LIMIT_TEST: String(config.forceRateLimitTest),
        ANTHROPIC_TIMEOUT_MS: String(PROXY_ANTHROPIC_TIMEOUT_MS),
        BEDROCK_TIMEOUT_MS: String(PROXY_BEDROCK_TIMEOUT_MS),
      },
      assetDir: props.assetDir,
      logRetention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    const role = this.proxy.role;

    props.usageTable.grantIncrementCounters(role);
    props.usageTable.grantTenantRegistry(role);
    // GET /v1/gateway-key/usage/me (crates/claude-proxy/src/key_holder.rs): one tenant's counters, `Query` on
    // the table's counter partitions only; never the all-tenants index, never an item of the registry.
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'QueryTenantUsageCounters',
        actions: ['dynamodb:Query'],
        resources: [props.usageTable.table.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${COUNTER_PARTITION_PREFIX}*`] } },
      }),
    );
    props.usageTable.grantEnforceLimits(role);
    this.apiKeys.grantManageKeys(role);
    this.rateLimits.grantRememberLimits(role);

    // The family fallback's ids are invoked like the map's.
    const modelIds = [
      ...new Set([...mappedBedrockModelIds(config.modelMap), ...Object.values(config.familyFallback ?? {})]),
    ].sort();
    const modelArns = bedrockModelsArns(modelIds, props.modelTarget);
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'InvokeMappedBedrockModels', actions: PROXY_BEDROCK_ACTIONS, resources: modelArns }),
    );
    acknowledgeAnyRegionModelArns(role, modelArns);
    for (const statement of discoveryStatements(props.modelTarget)) {
      role.addToPrincipalPolicy(statement);
      for (const arn of statement.resources) {
        Validations.of(role).acknowledge({
          id: `AwsSolutions-IAM5[Resource::${spelledForNag(stack, arn)}]`,
          reason:
            'Model discovery: ListInferenceProfiles on the profiles of this account and region, and the fallback on ' +
            "the Claude profiles it finds (anthropic.claude-*) and their foundation models in the profiles' source regions.",
        });
      }
    }
    this.warnAboutProfilesOutsideRegion(modelIds, stack.region);

    if (secretPolicyArn !== undefined) {
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ReadAnthropicApiKey',
          // Read once at cold start. A secret under a customer managed KMS key also needs kms:Decrypt: add it.
          actions: ['secretsmanager:GetSecretValue'],
          resources: [secretPolicyArn],
        }),
      );
    }
  }

  /**
   * A geographic inference profile (`us.`, `eu.`, ...) can only be invoked from its source regions: a map
   * of `us.` profiles in eu-west-1 deploys, then fails every fallback. Say so at synthesis.
   */
  private warnAboutProfilesOutsideRegion(modelIds: readonly string[], region: string): void {
    if (Token.isUnresolved(region)) return;
    const elsewhere = modelIds.filter((modelId) => {
      const prefix = parseModelId(modelId).profilePrefix;
      return prefix !== undefined && prefix !== 'global' && !INFERENCE_PROFILE_REGIONS[prefix].includes(region);
    });
    if (elsewhere.length > 0) {
      Annotations.of(this).addWarningV2(
        'bedrock-metering:claudeProxyModelMapRegion',
        `The Claude proxy's Bedrock model map names inference profiles that ${region} does not serve ` +
          `(${elsewhere.join(', ')}): every fallback to them would fail. Set -c claudeProxyModelMap='{...}' ` +
          'with profiles of this region\'s geography (eu., apac., ...) or global. ones.',
      );
    }
  }
}
