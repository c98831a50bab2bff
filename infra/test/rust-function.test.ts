/** Where the Rust functions' packages come from, and the message when they are missing. */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { resolveRustAsset } from '../lib/lambda/rust-function';
import { PLACEHOLDER_ASSET_DIR, synth } from './helpers';

describe('resolveRustAsset', () => {
  it("prefers cargo-lambda's bootstrap.zip", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bm-asset-'));
    fs.mkdirSync(path.join(dir, 'chat-api'));
    fs.writeFileSync(path.join(dir, 'chat-api', 'bootstrap'), '');
    fs.writeFileSync(path.join(dir, 'chat-api', 'bootstrap.zip'), '');
    assert.equal(resolveRustAsset(dir, 'chat-api'), path.join(dir, 'chat-api', 'bootstrap.zip'));
    fs.rmSync(dir, { recursive: true });
  });

  it('takes a directory with a bootstrap (the committed placeholder)', () => {
    for (const bin of ['chat-api', 'usage-api', 'log-processor', 'claude-proxy']) {
      assert.equal(resolveRustAsset(PLACEHOLDER_ASSET_DIR, bin), path.join(PLACEHOLDER_ASSET_DIR, bin));
    }
  });

  it('says how to build when the package is missing', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bm-asset-'));
    assert.throws(() => resolveRustAsset(dir, 'chat-api'), /cargo lambda build --release --arm64 --output-format zip.*lambdaAssetDir=test\/placeholder-lambda/s);
    assert.throws(() => synth({ lambdaAssetDir: dir }), /No Lambda package for the Rust binary 'chat-api'/);
    fs.rmSync(dir, { recursive: true });
  });
});
