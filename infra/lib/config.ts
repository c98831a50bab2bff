/**
 * The app's configuration, read once from CDK context (`-c key=value` or cdk.json), then from the
 * environment (`BM_<KEY_IN_UPPER_SNAKE_CASE>`, e.g. `BM_MODEL_ID`), then from the defaults below.
 * Nothing account-specific lives here: account and region come from the CDK CLI's environment.
 */
import * as path from 'node:path';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { DEFAULT_CLAUDE_PROXY_MODEL_MAP } from './claude-proxy/model-map';

export const DEFAULT_MODEL_ID = 'anthropic.claude-3-haiku-20240307-v1:0';

/** The infra/ directory: relative paths in the configuration are resolved against it, not the cwd. */
export const INFRA_DIR = path.resolve(__dirname, '..');

/** Where `cargo lambda build --release --arm64 --output-format zip` leaves `<bin>/bootstrap.zip`. */
export const DEFAULT_LAMBDA_ASSET_DIR = '../target/lambda';

/** Every context key the app reads; the README lists them for operators. */
export const CONTEXT_KEYS = [
  'region',
  'modelId',
  'inferenceProfileRegions',
  'lambdaAssetDir',
  'logRetentionDays',
  'retainData',
  'apiStageName',
  'apiThrottleRateLimit',
  'apiThrottleBurstLimit',
  'corsAllowOrigins',
  'bedrockTimeoutMs',
  'usageDailyTtlDays',
  'usageWeeklyTtlDays',
  'athenaBytesScannedCutoffBytes',
  'anthropicVersion',
  'anthropicMaxTokens',
  'claudeProxyCredentialMode',
  'anthropicApiKeySecretName',
  'claudeProxyBedrockFallback',
  'claudeProxyFallbackOn',
  'claudeProxyModelMap',
  'claudeProxyFamilyFallback',
  'claudeProxyProfileGeographies',
  'claudeProxyForceRateLimitTest',
  'claudeProxyRateLimitScope',
  'bedrockInvocationLogging',
  'bedrockInvocationLoggingOverwrite',
  'exportMode',
  'budgetAlertEmail',
] as const;
export type ContextKey = (typeof CONTEXT_KEYS)[number];

export interface ApiConfig {
  readonly stageName: string;
  /** Steady-state requests per second over the whole stage. */
  readonly throttlingRateLimit: number;
  readonly throttlingBurstLimit: number;
  /** Browser origins allowed to call the API from another origin; empty: no CORS (the UI is same-origin). */
  readonly corsAllowOrigins: readonly string[];
}

export interface ChatConfig {
  readonly bedrockTimeoutMs: number;
  readonly usageDailyTtlDays: number;
  readonly usageWeeklyTtlDays: number;
}

/**
 * Placeholders for Anthropic request settings the chat function may read later
 * (ANTHROPIC_VERSION, ANTHROPIC_MAX_TOKENS); they reach the function only when set.
 */
export interface AnthropicConfig {
  readonly version?: string;
  readonly maxTokens?: number;
}

export type ClaudeProxyCredentialMode = 'managed' | 'passthrough';
export type ClaudeProxyRateLimitScope = 'user' | 'tenant' | 'deployment';
export type ClaudeProxyFallbackStatus = '429' | '529' | '5xx';

/** The Claude-compatible proxy (crates/claude-proxy): how it reaches Anthropic and when it falls back. */
export type ClaudeFamily = 'opus' | 'sonnet' | 'haiku';
const CLAUDE_FAMILIES: readonly ClaudeFamily[] = ['opus', 'sonnet', 'haiku'];
/** `PROFILE_GEOGRAPHIES` in crates/claude-proxy/src/model_resolution.rs. */
const PROFILE_GEOGRAPHIES = ['us', 'us-gov', 'eu', 'apac', 'jp', 'au', 'ca', 'global'];

export interface ClaudeProxyConfig {
  /** `managed`: the gateway pays Anthropic with the provider's key; `passthrough`: users' own credentials. */
  readonly credentialMode: ClaudeProxyCredentialMode;
  /**
   * Managed mode: name (or full ARN) of an existing Secrets Manager secret holding the provider's Anthropic
   * key. Unset: the stack creates a secret holding no key yet, for the operator to fill.
   */
  readonly anthropicApiKeySecretName?: string;
  /** BEDROCK_FALLBACK: false sends Anthropic's 429 back to the client. */
  readonly bedrockFallback: boolean;
  /** FALLBACK_ON; unset: the function's default (429 only). */
  readonly fallbackOn?: readonly ClaudeProxyFallbackStatus[];
  /** BEDROCK_MODEL_MAP: Anthropic model id -> Bedrock model or inference profile id; IAM follows it. */
  readonly modelMap: Readonly<Record<string, string>>;
  /**
   * BEDROCK_FAMILY_FALLBACK: the Bedrock id for a Claude id neither the map nor discovery resolves, per family
   * (`opus`, `sonnet`, `haiku`); IAM follows it. Unset: such ids answer with Anthropic's 429.
   */
  readonly familyFallback?: Readonly<Partial<Record<ClaudeFamily, string>>>;
  /** BEDROCK_PROFILE_GEOGRAPHIES: discovery's preferred profile geographies, in order; unset: the region's. */
  readonly profileGeographies?: readonly string[];
  /** FORCE_RATE_LIMIT_TEST: every Anthropic call behaves as a 429 (to prove the fallback when deployed). */
  readonly forceRateLimitTest: boolean;
  /** RATE_LIMIT_SCOPE; unset: the function's default (user). */
  readonly rateLimitScope?: ClaudeProxyRateLimitScope;
}

/**
 * How usage lines reach the analytics bucket: `daily`, the scheduled log processor (FilterLogEvents, one run
 * a day); `stream`, a subscription filter to an Amazon Data Firehose stream (see analytics/usage-stream.ts).
 */
export type ExportMode = 'daily' | 'stream';

export interface MeteringConfig {
  readonly modelId: string;
  /** Overrides the source regions assumed for a cross-region inference profile (see bedrock/model-access.ts). */
  readonly inferenceProfileRegions?: readonly string[];
  /** Absolute directory holding `<bin>/bootstrap.zip` (or `<bin>/bootstrap`) for every Rust function. */
  readonly lambdaAssetDir: string;
  readonly logRetention: RetentionDays;
  /** Keep the user pool, the usage table, the log groups and the analytics bucket on `cdk destroy`. */
  readonly retainData: boolean;
  readonly api: ApiConfig;
  readonly chat: ChatConfig;
  readonly anthropic: AnthropicConfig;
  readonly claudeProxy: ClaudeProxyConfig;
  readonly athenaBytesScannedCutoffBytes: number;
  /** Bedrock model invocation logging to the analytics bucket (account-wide; README "Bedrock invocation logs"). */
  readonly bedrockInvocationLogging: { readonly enabled: boolean; readonly overwriteExisting: boolean };
  readonly exportMode: ExportMode;
  /** Subscribed by e-mail to the alerts topic, which receives the budget alerts (README "Budgets and quotas"). */
  readonly budgetAlertEmail?: string;
}

/** Reads a raw value: context first, then `BM_<KEY>` from the environment. */
export type RawLookup = (key: ContextKey) => unknown;

export function envVarName(key: ContextKey): string {
  return 'BM_' + key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

export function lookupFrom(
  tryGetContext: (key: string) => unknown,
  env: NodeJS.ProcessEnv = process.env,
): RawLookup {
  return (key) => {
    const fromContext = tryGetContext(key);
    if (fromContext !== undefined && fromContext !== null && fromContext !== '') return fromContext;
    const fromEnv = env[envVarName(key)];
    return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
  };
}

export class ConfigError extends Error {
  constructor(key: ContextKey, value: unknown, reason: string) {
    super(`invalid configuration ${key}=${JSON.stringify(value)} (context key or ${envVarName(key)}): ${reason}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(lookup: RawLookup): MeteringConfig {
  const modelId = str(lookup, 'modelId') ?? DEFAULT_MODEL_ID;
  if (!/^[a-z0-9][a-z0-9.:_-]*$/i.test(modelId)) {
    throw new ConfigError('modelId', modelId, 'expected a Bedrock model id or inference profile id, not an ARN');
  }
  const retentionDays = int(lookup, 'logRetentionDays', 1, 3653) ?? 30;
  if (!Object.values(RetentionDays).includes(retentionDays)) {
    throw new ConfigError('logRetentionDays', retentionDays, 'not a CloudWatch Logs retention (1, 3, 5, 7, 14, 30, 60, 90, ...)');
  }
  const dailyTtl = int(lookup, 'usageDailyTtlDays', 1, 3650) ?? 90;
  const weeklyTtl = int(lookup, 'usageWeeklyTtlDays', 1, 3650) ?? 400;
  const stageName = str(lookup, 'apiStageName') ?? 'prod';
  if (!/^[A-Za-z0-9_]+$/.test(stageName)) {
    throw new ConfigError('apiStageName', stageName, 'letters, digits and underscores only');
  }
  return {
    modelId,
    inferenceProfileRegions: list(lookup, 'inferenceProfileRegions'),
    lambdaAssetDir: path.resolve(INFRA_DIR, str(lookup, 'lambdaAssetDir') ?? DEFAULT_LAMBDA_ASSET_DIR),
    logRetention: retentionDays as RetentionDays,
    retainData: bool(lookup, 'retainData') ?? false,
    api: {
      stageName,
      throttlingRateLimit: int(lookup, 'apiThrottleRateLimit', 1, 10_000) ?? 50,
      throttlingBurstLimit: int(lookup, 'apiThrottleBurstLimit', 1, 5_000) ?? 100,
      corsAllowOrigins: list(lookup, 'corsAllowOrigins') ?? [],
    },
    chat: {
      // API Gateway gives a REST integration 29 s: the chat function must answer (504 with a JSON body) first.
      bedrockTimeoutMs: int(lookup, 'bedrockTimeoutMs', 1_000, 28_000) ?? 25_000,
      usageDailyTtlDays: dailyTtl,
      usageWeeklyTtlDays: weeklyTtl,
    },
    anthropic: {
      version: str(lookup, 'anthropicVersion'),
      maxTokens: int(lookup, 'anthropicMaxTokens', 1, 200_000),
    },
    claudeProxy: loadClaudeProxyConfig(lookup),
    // Athena refuses cutoffs under 10 MB.
    athenaBytesScannedCutoffBytes: int(lookup, 'athenaBytesScannedCutoffBytes', 10_000_000, Number.MAX_SAFE_INTEGER) ?? 1_073_741_824,
    bedrockInvocationLogging: {
      enabled: bool(lookup, 'bedrockInvocationLogging') ?? true,
      overwriteExisting: bool(lookup, 'bedrockInvocationLoggingOverwrite') ?? false,
    },
    exportMode: oneOf(lookup, 'exportMode', ['daily', 'stream'] as const) ?? 'daily',
    budgetAlertEmail: email(lookup, 'budgetAlertEmail'),
  };
}

/** An e-mail address, or undefined when unset. */
function email(lookup: RawLookup, key: ContextKey): string | undefined {
  const value = str(lookup, key);
  if (value !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(value)) {
    throw new ConfigError(key, value, 'must be an e-mail address');
  }
  return value;
}

function loadClaudeProxyConfig(lookup: RawLookup): ClaudeProxyConfig {
  const credentialMode = oneOf(lookup, 'claudeProxyCredentialMode', ['managed', 'passthrough'] as const) ?? 'managed';
  const secretName = str(lookup, 'anthropicApiKeySecretName');
  // Secrets Manager names: letters, digits and /_+=.@-; or a secret's full ARN.
  if (secretName !== undefined && !/^(arn:[a-z-]+:secretsmanager:[a-z0-9-]+:\d{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$/.test(secretName)) {
    throw new ConfigError('anthropicApiKeySecretName', secretName, 'expected a Secrets Manager secret name or ARN');
  }
  if (secretName !== undefined && credentialMode === 'passthrough') {
    throw new ConfigError('anthropicApiKeySecretName', secretName, 'passthrough mode uses the callers\' own Anthropic credentials: no provider key');
  }
  const fallbackOn = list(lookup, 'claudeProxyFallbackOn');
  for (const status of fallbackOn ?? []) {
    if (!['429', '529', '5xx'].includes(status)) {
      throw new ConfigError('claudeProxyFallbackOn', fallbackOn!.join(','), 'expected a comma-separated list of 429, 529, 5xx');
    }
  }
  return {
    credentialMode,
    anthropicApiKeySecretName: secretName,
    bedrockFallback: bool(lookup, 'claudeProxyBedrockFallback') ?? true,
    fallbackOn: fallbackOn as ClaudeProxyFallbackStatus[] | undefined,
    modelMap: modelMap(lookup, 'claudeProxyModelMap') ?? DEFAULT_CLAUDE_PROXY_MODEL_MAP,
    familyFallback: familyFallback(lookup),
    profileGeographies: profileGeographies(lookup),
    forceRateLimitTest: bool(lookup, 'claudeProxyForceRateLimitTest') ?? false,
    rateLimitScope: oneOf(lookup, 'claudeProxyRateLimitScope', ['user', 'tenant', 'deployment'] as const),
  };
}

/** A JSON object (a string from -c or BM_*, or an object in cdk.json) of non-empty ids; values never ARNs. */
function modelMap(lookup: RawLookup, key: ContextKey): Record<string, string> | undefined {
  const value = lookup(key);
  if (value === undefined) return undefined;
  let parsed: unknown = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch (error) {
      throw new ConfigError(key, value, `expected a JSON object of Anthropic model id -> Bedrock id: ${(error as Error).message}`);
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || Object.keys(parsed).length === 0) {
    throw new ConfigError(key, value, 'expected a non-empty JSON object of Anthropic model id -> Bedrock id');
  }
  for (const [from, to] of Object.entries(parsed)) {
    if (from.trim() === '' || typeof to !== 'string' || !/^[a-z0-9][a-z0-9.:_-]*$/i.test(to)) {
      throw new ConfigError(key, value, `entry ${JSON.stringify(from)}: expected a Bedrock model or inference profile id, not an ARN`);
    }
  }
  return parsed as Record<string, string>;
}

function familyFallback(lookup: RawLookup): Partial<Record<ClaudeFamily, string>> | undefined {
  const map = modelMap(lookup, 'claudeProxyFamilyFallback');
  if (map === undefined) return undefined;
  for (const family of Object.keys(map)) {
    if (!(CLAUDE_FAMILIES as readonly string[]).includes(family)) {
      throw new ConfigError('claudeProxyFamilyFallback', JSON.stringify(map), `family ${JSON.stringify(family)}: expected ${CLAUDE_FAMILIES.join(', ')}`);
    }
  }
  return map as Partial<Record<ClaudeFamily, string>>;
}

function profileGeographies(lookup: RawLookup): string[] | undefined {
  const geographies = list(lookup, 'claudeProxyProfileGeographies');
  for (const geography of geographies ?? []) {
    if (!PROFILE_GEOGRAPHIES.includes(geography)) {
      throw new ConfigError('claudeProxyProfileGeographies', geographies!.join(','), `expected a comma-separated list of ${PROFILE_GEOGRAPHIES.join(', ')}`);
    }
  }
  return geographies;
}

function oneOf<T extends string>(lookup: RawLookup, key: ContextKey, allowed: readonly T[]): T | undefined {
  const value = str(lookup, key);
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new ConfigError(key, value, `expected ${allowed.join(', ')}`);
  return value as T;
}

function str(lookup: RawLookup, key: ContextKey): string | undefined {
  const value = lookup(key);
  if (value === undefined) return undefined;
  if (typeof value !== 'string' && typeof value !== 'number') throw new ConfigError(key, value, 'expected a string');
  const text = String(value).trim();
  return text === '' ? undefined : text;
}

function int(lookup: RawLookup, key: ContextKey, min: number, max: number): number | undefined {
  const value = lookup(key);
  if (value === undefined || value === '') return undefined;
  const number = typeof value === 'number' ? value : Number(String(value).trim());
  if (!Number.isInteger(number) || number < min || number > max) {
    throw new ConfigError(key, value, `expected an integer between ${min} and ${max}`);
  }
  return number;
}

function bool(lookup: RawLookup, key: ContextKey): boolean | undefined {
  const value = lookup(key);
  if (value === undefined) return undefined;
  if (value === true || value === 'true') return true;
  if (value === false || value === 'false') return false;
  throw new ConfigError(key, value, 'expected true or false');
}

function list(lookup: RawLookup, key: ContextKey): string[] | undefined {
  const value = lookup(key);
  if (value === undefined) return undefined;
  const items = Array.isArray(value) ? value.map(String) : String(value).split(',');
  const cleaned = items.map((item) => item.trim()).filter((item) => item !== '');
  return cleaned.length === 0 ? undefined : cleaned;
}
