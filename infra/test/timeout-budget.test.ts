/**
 * The timeout budget of every Rust function, on the synthesized templates: upstream timeouts + the metering
 * bound + the margin fit in the Lambda timeout, and each function is told its own timeout.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import {
  BUDGET_MARGIN_SECONDS,
  FUNCTION_TIMEOUT_ENV,
  meteredFunctionTimeout,
  METERING_BOUND_SECONDS,
} from '../lib/lambda/timeout-budget';
import { INFRA_DIR, resourcesOf, synth, SynthesizedApp } from './helpers';

interface RustFunctionResource {
  readonly id: string;
  readonly timeout: number;
  readonly env: Record<string, string>;
}

function rustFunctions(built: SynthesizedApp): RustFunctionResource[] {
  return [built.meteringTemplate, built.analyticsTemplate].flatMap((template) =>
    Object.entries(resourcesOf(template, 'AWS::Lambda::Function'))
      .filter(([, resource]) => resource.Properties?.Handler === 'bootstrap')
      .map(([id, resource]) => {
        const props = resource.Properties as { Timeout: number; Environment: { Variables: Record<string, string> } };
        return { id, timeout: props.Timeout, env: props.Environment.Variables };
      }),
  );
}

/** The upstream waits a function's code allows, from its environment (as its config reads them). */
function upstreamMs(env: Record<string, string>): number {
  const ms = (name: string) => Number(env[name] ?? 'NaN');
  // The proxy: a full Anthropic wait, then the Bedrock fallback.
  if ('ANTHROPIC_CREDENTIAL_MODE' in env) return ms('ANTHROPIC_TIMEOUT_MS') + ms('BEDROCK_TIMEOUT_MS');
  if ('BEDROCK_TIMEOUT_MS' in env) return ms('BEDROCK_TIMEOUT_MS');
  return 0;
}

/** A constant's value in a Rust source file (`NAME: Duration = Duration::from_secs(N)`). */
function rustSeconds(file: string, name: string): number {
  const source = fs.readFileSync(path.join(INFRA_DIR, '..', file), 'utf8');
  const match = source.match(new RegExp(`${name}: Duration = Duration::from_secs\\((\\d+)\\)`));
  assert.ok(match, `${name} not found in ${file}`);
  return Number(match[1]);
}

describe('timeout budget', () => {
  let built: SynthesizedApp;
  before(() => {
    built = synth();
  });

  it('holds for every Rust function: upstream + metering + margin <= Lambda timeout, told in FUNCTION_TIMEOUT_SECONDS', () => {
    const functions = rustFunctions(built);
    assert.equal(functions.length, 4, JSON.stringify(functions.map((f) => f.id)));
    const metered = functions.filter((f) => upstreamMs(f.env) > 0);
    assert.equal(metered.length, 2, 'the chat function and the Claude proxy have an upstream and metering');
    for (const f of functions) {
      assert.equal(f.env[FUNCTION_TIMEOUT_ENV], String(f.timeout), f.id);
      const metering = upstreamMs(f.env) > 0 ? METERING_BOUND_SECONDS : 0;
      const needed = Math.ceil(upstreamMs(f.env) / 1000) + metering + BUDGET_MARGIN_SECONDS;
      assert.ok(Number.isFinite(needed) && needed <= f.timeout, `${f.id}: needs ${needed} s, has ${f.timeout} s`);
    }
  });

  it('follows a longer Bedrock timeout for the chat function (28 s -> 41 s)', () => {
    const chat = rustFunctions(synth({ bedrockTimeoutMs: '28000' })).find((f) => f.id.startsWith('ChatApi'));
    assert.ok(chat);
    assert.equal(chat.env.BEDROCK_TIMEOUT_MS, '28000');
    assert.equal(chat.timeout, 28 + METERING_BOUND_SECONDS + BUDGET_MARGIN_SECONDS);
  });

  it("uses the Rust code's own bounds (metering-core's counter timeout, api-gateway-lambda's margin)", () => {
    assert.equal(rustSeconds('crates/metering-core/src/config.rs', 'DEFAULT_COUNTER_TIMEOUT'), METERING_BOUND_SECONDS);
    assert.equal(rustSeconds('crates/api-gateway-lambda/src/budget.rs', 'BUDGET_MARGIN'), BUDGET_MARGIN_SECONDS);
  });

  it("refuses upstream timeouts that cannot fit Lambda's 15 minutes", () => {
    assert.throws(() => meteredFunctionTimeout(890_000), /exceed Lambda's 900 s/);
    assert.equal(meteredFunctionTimeout(25_000).toSeconds(), 38);
  });
});
