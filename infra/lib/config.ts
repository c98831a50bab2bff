/**
 * The app's configuration, read once from CDK context (`-c key=value` or cdk.json), then from the
 * environment (`BM_<KEY_IN_UPPER_SNAKE_CASE>`, e.g. `BM_MODEL_ID`), then from the defaults below.
 * Nothing account-specific lives here: account and region come from the CDK CLI's environment.
 */
import * as path from 'node:path';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';

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
  readonly athenaBytesScannedCutoffBytes: number;
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
    // Athena refuses cutoffs under 10 MB.
    athenaBytesScannedCutoffBytes: int(lookup, 'athenaBytesScannedCutoffBytes', 10_000_000, Number.MAX_SAFE_INTEGER) ?? 1_073_741_824,
  };
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
