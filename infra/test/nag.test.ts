/**
 * cdk-nag's AwsSolutions pack over both stacks, as bin/app.ts applies it: synthesis fails on any finding
 * that has no acknowledgement, and every acknowledgement carries a reason.
 */
import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Stack, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { buildApp } from '../lib/app';
import { testApp } from './helpers';

function synthWithNag(context: Record<string, unknown> = {}) {
  const app = testApp(context);
  const built = buildApp(app, {});
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, built, assembly: app.synth() };
}

describe('cdk-nag AwsSolutionsChecks', () => {
  it('finds nothing unacknowledged in either stack', () => {
    const { assembly } = synthWithNag();
    assert.deepEqual(
      assembly.stacks.map((stack) => stack.stackName).sort(),
      ['BedrockMeteringStack', 'MeteringAnalyticsStack'],
    );
  });

  it('finds nothing unacknowledged with CORS on, an inference profile and retained data', () => {
    synthWithNag({
      corsAllowOrigins: 'https://console.example.com',
      modelId: 'us.anthropic.claude-3-5-haiku-20241022-v1:0',
      retainData: 'true',
    });
  });

  it('finds nothing unacknowledged with a global inference profile (region wildcard acknowledged)', () => {
    synthWithNag({ modelId: 'global.anthropic.claude-sonnet-4-5-20250929-v1:0' });
  });

  it('finds nothing unacknowledged with the Claude proxy on global profiles and an existing secret', () => {
    synthWithNag({
      claudeProxyModelMap: JSON.stringify({ 'claude-sonnet-4-5': 'global.anthropic.claude-sonnet-4-5-20250929-v1:0' }),
      anthropicApiKeySecretName: 'team/anthropic-api-key',
    });
  });

  it('finds nothing unacknowledged with the Claude proxy in passthrough mode', () => {
    synthWithNag({ claudeProxyCredentialMode: 'passthrough' });
  });

  it('finds nothing unacknowledged without a region (env-agnostic stacks, pseudo parameters)', () => {
    const { assembly } = synthWithNag({ region: undefined, modelId: 'global.anthropic.claude-sonnet-4-5-20250929-v1:0' });
    const template = JSON.stringify(assembly.getStackByName('BedrockMeteringStack').template);
    assert.match(template, /"Ref":"AWS::Partition"\},":bedrock:\*::foundation-model\/anthropic\.claude-sonnet-4-5/);
  });

  it('does fail synthesis on an unacknowledged finding (the check is live)', () => {
    const app = testApp();
    const stack = new Stack(app, 'Careless');
    new s3.Bucket(stack, 'Unlogged', { enforceSSL: false });
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    // The CDK prints the failed report; keep it out of the test log and look at it instead.
    const printed: string[] = [];
    const write = process.stderr.write;
    const error = console.error;
    process.stderr.write = ((chunk: string | Uint8Array) => printed.push(String(chunk)) > 0) as typeof process.stderr.write;
    console.error = (...parts: unknown[]) => void printed.push(parts.map(String).join(' '));
    try {
      assert.throws(() => app.synth(), /[Vv]alidation failed/);
    } finally {
      process.stderr.write = write;
      console.error = error;
    }
    assert.match(printed.join('\n'), /AwsSolutions-S1/);
  });
});
