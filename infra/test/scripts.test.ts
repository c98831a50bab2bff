/**
 * The operator scripts this app ships (scripts/deploy, destroy, athena-query): their --help, and a clear
 * message when AWS credentials are missing. Nothing here reaches AWS: credentials are pointed at nothing.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { INFRA_DIR, PLACEHOLDER_ASSET_DIR } from './helpers';

const SCRIPTS = path.resolve(INFRA_DIR, '..', 'scripts');

function run(script: string, args: string[]) {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    AWS_CONFIG_FILE: '/nonexistent',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_REGION: 'us-east-1',
  };
  return spawnSync('bash', [path.join(SCRIPTS, script), ...args], { env, encoding: 'utf8', timeout: 60_000 });
}

describe('operator scripts', () => {
  for (const [script, mentions] of [
    ['deploy', /cargo lambda build --release --arm64 --output-format zip[\s\S]*claude-proxy[\s\S]*cdk deploy --all/],
    ['destroy', /cdk destroy --all --force[\s\S]*--yes/],
    ['athena-query', /bedrock-metering-workgroup/],
  ] as const) {
    it(`${script} --help explains itself and exits 0`, () => {
      const result = run(script, ['--help']);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, mentions);
    });
  }

  it('deploy builds every Rust function the stacks deploy (one placeholder package each)', () => {
    const script = fs.readFileSync(path.join(SCRIPTS, 'deploy'), 'utf8');
    const bins = /^lambda_bins=\(([^)]*)\)/m.exec(script)?.[1].trim().split(/\s+/);
    assert.ok(bins, 'no lambda_bins=(...) in scripts/deploy');
    assert.deepEqual(bins.sort(), fs.readdirSync(PLACEHOLDER_ASSET_DIR).sort());
  });

  it('deploy stops with a clear message without AWS credentials', () => {
    const result = run('deploy', ['--skip-build']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /^deploy: .*(credentials|AWS CLI)/m);
  });

  it('destroy stops with a clear message without AWS credentials', () => {
    const result = run('destroy', ['--yes']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /^destroy: .*(credentials|AWS CLI)/m);
  });

  it('athena-query stops with a clear message without AWS credentials', () => {
    const result = run('athena-query', ['SELECT 1']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /^athena-query: (no usable AWS credentials|boto3 is required)/m);
  });
});
