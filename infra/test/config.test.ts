/** The configuration: context first, then BM_* environment variables, then defaults; bad values fail early. */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { DEFAULT_CLAUDE_PROXY_MODEL_MAP } from '../lib/claude-proxy/model-map';
import { ConfigError, envVarName, INFRA_DIR, loadConfig, lookupFrom } from '../lib/config';

const load = (context: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) =>
  loadConfig(lookupFrom((key) => context[key], env));

describe('loadConfig', () => {
  it('has defaults that need no account and point at the cargo-lambda output', () => {
    const config = load({});
    assert.equal(config.modelId, 'anthropic.claude-3-haiku-20240307-v1:0');
    assert.equal(config.lambdaAssetDir, path.resolve(INFRA_DIR, '..', 'target', 'lambda'));
    assert.equal(config.logRetention, RetentionDays.ONE_MONTH);
    assert.equal(config.retainData, false);
    assert.deepEqual(config.api, { stageName: 'prod', throttlingRateLimit: 50, throttlingBurstLimit: 100, corsAllowOrigins: [] });
    assert.equal(config.chat.bedrockTimeoutMs, 25_000);
    assert.deepEqual(config.anthropic, { version: undefined, maxTokens: undefined });
  });

  it('prefers context over the environment', () => {
    assert.equal(load({ modelId: 'a.b-v1:0' }, { BM_MODEL_ID: 'c.d-v1:0' }).modelId, 'a.b-v1:0');
    assert.equal(load({}, { BM_MODEL_ID: 'c.d-v1:0' }).modelId, 'c.d-v1:0');
    assert.equal(envVarName('athenaBytesScannedCutoffBytes'), 'BM_ATHENA_BYTES_SCANNED_CUTOFF_BYTES');
  });

  it('parses strings from -c as numbers, booleans and lists', () => {
    const config = load({ logRetentionDays: '90', retainData: 'true', corsAllowOrigins: 'https://a.example, https://b.example' });
    assert.equal(config.logRetention, RetentionDays.THREE_MONTHS);
    assert.equal(config.retainData, true);
    assert.deepEqual(config.api.corsAllowOrigins, ['https://a.example', 'https://b.example']);
  });

  it('fails early with the key and its environment variable on bad values', () => {
    assert.throws(() => load({ logRetentionDays: '31' }), (e: unknown) => e instanceof ConfigError && /BM_LOG_RETENTION_DAYS/.test(String(e)));
    assert.throws(() => load({ bedrockTimeoutMs: '60000' }), /bedrockTimeoutMs.*between 1000 and 28000/);
    assert.throws(() => load({ retainData: 'yes' }), /true or false/);
    assert.throws(() => load({ modelId: 'arn:aws:bedrock:us-east-1::foundation-model/x' }), /not an ARN/);
    assert.throws(() => load({ athenaBytesScannedCutoffBytes: '1000' }), /athenaBytesScannedCutoffBytes/);
  });

  it('runs the Claude proxy in managed mode with a stack-made secret, fallback on 429 and the crate\'s model map by default', () => {
    assert.deepEqual(load({}).claudeProxy, {
      credentialMode: 'managed',
      anthropicApiKeySecretName: undefined,
      bedrockFallback: true,
      fallbackOn: undefined,
      familyFallback: undefined,
      profileGeographies: undefined,
      modelMap: DEFAULT_CLAUDE_PROXY_MODEL_MAP,
      forceRateLimitTest: false,
      rateLimitScope: undefined,
    });
  });

  it('reads the Claude proxy settings from context or BM_CLAUDE_PROXY_*, the model map as JSON or an object', () => {
    const config = load(
      {
        claudeProxyCredentialMode: 'passthrough',
        claudeProxyFallbackOn: '429, 5xx',
        claudeProxyModelMap: '{"claude-x": "eu.anthropic.x-v1:0"}',
        claudeProxyRateLimitScope: 'tenant',
      },
      { BM_CLAUDE_PROXY_FORCE_RATE_LIMIT_TEST: 'true', BM_CLAUDE_PROXY_BEDROCK_FALLBACK: 'false' },
    ).claudeProxy;
    assert.equal(config.credentialMode, 'passthrough');
    assert.deepEqual(config.fallbackOn, ['429', '5xx']);
    assert.deepEqual(config.modelMap, { 'claude-x': 'eu.anthropic.x-v1:0' });
    assert.equal(config.rateLimitScope, 'tenant');
    assert.equal(config.forceRateLimitTest, true);
    assert.equal(config.bedrockFallback, false);
    // cdk.json context can hold the map as an object.
    assert.deepEqual(load({ claudeProxyModelMap: { 'claude-y': 'global.anthropic.y-v1:0' } }).claudeProxy.modelMap, { 'claude-y': 'global.anthropic.y-v1:0' });
    assert.equal(load({ anthropicApiKeySecretName: 'team/anthropic' }).claudeProxy.anthropicApiKeySecretName, 'team/anthropic');
  });

  it('refuses bad Claude proxy settings, naming the key', () => {
    assert.throws(() => load({ claudeProxyCredentialMode: 'both' }), /claudeProxyCredentialMode.*managed, passthrough/);
    assert.throws(() => load({ claudeProxyFallbackOn: '429,404' }), /claudeProxyFallbackOn.*429, 529, 5xx/);
    assert.throws(() => load({ claudeProxyModelMap: 'not json' }), /claudeProxyModelMap.*JSON object/);
    assert.throws(() => load({ claudeProxyModelMap: '{}' }), /claudeProxyModelMap.*non-empty/);
    assert.throws(() => load({ claudeProxyModelMap: '{"claude-x": "arn:aws:bedrock:us-east-1::foundation-model/x"}' }), /claudeProxyModelMap.*not an ARN/);
    assert.throws(() => load({ claudeProxyRateLimitScope: 'org' }), /BM_CLAUDE_PROXY_RATE_LIMIT_SCOPE/);
    assert.throws(() => load({ claudeProxyFamilyFallback: '{"poem": "us.anthropic.x-v1:0"}' }), /claudeProxyFamilyFallback.*expected opus, sonnet, haiku/);
    assert.throws(() => load({ claudeProxyFamilyFallback: '{"opus": "arn:aws:bedrock:us-east-1::foundation-model/x"}' }), /not an ARN/);
    assert.throws(() => load({ claudeProxyProfileGeographies: 'us,mars' }), /claudeProxyProfileGeographies.*expected a comma-separated list/);
    assert.throws(() => load({ claudeProxyForceRateLimitTest: 'sometimes' }), /true or false/);
    assert.throws(() => load({ anthropicApiKeySecretName: 'has spaces' }), /anthropicApiKeySecretName/);
    assert.throws(
      () => load({ claudeProxyCredentialMode: 'passthrough', anthropicApiKeySecretName: 'team/anthropic' }),
      /passthrough mode.*no provider key/,
    );
  });
});
