/** Which Bedrock ARNs the chat function may invoke, for each kind of model id. */
import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bedrockModelArns, parseModelId } from '../lib/bedrock/model-access';

const target = { partition: 'aws', region: 'eu-west-1', account: '111122223333' };

describe('bedrockModelArns', () => {
  it('gives a foundation model in the stack region only', () => {
    assert.deepEqual(bedrockModelArns('anthropic.claude-3-haiku-20240307-v1:0', target), [
      'arn:aws:bedrock:eu-west-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0',
    ]);
  });

  it('gives an inference profile and its foundation model in every source region of the profile', () => {
    const arns = bedrockModelArns('eu.anthropic.claude-3-7-sonnet-20250219-v1:0', target);
    assert.equal(arns[0], 'arn:aws:bedrock:eu-west-1:111122223333:inference-profile/eu.anthropic.claude-3-7-sonnet-20250219-v1:0');
    assert.ok(arns.includes('arn:aws:bedrock:eu-central-1::foundation-model/anthropic.claude-3-7-sonnet-20250219-v1:0'));
    assert.ok(arns.includes('arn:aws:bedrock:eu-west-3::foundation-model/anthropic.claude-3-7-sonnet-20250219-v1:0'));
    assert.ok(arns.every((arn) => !arn.includes('us-east-1')));
  });

  it('lets the operator narrow the profile regions', () => {
    assert.deepEqual(
      bedrockModelArns('us.amazon.nova-lite-v1:0', { ...target, region: 'us-east-1', profileRegions: ['us-east-1', 'us-west-2'] }),
      [
        'arn:aws:bedrock:us-east-1:111122223333:inference-profile/us.amazon.nova-lite-v1:0',
        'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0',
        'arn:aws:bedrock:us-west-2::foundation-model/amazon.nova-lite-v1:0',
      ],
    );
  });

  it('never grants every resource', () => {
    for (const id of ['anthropic.claude-3-haiku-20240307-v1:0', 'us.anthropic.claude-3-5-haiku-20241022-v1:0', 'global.anthropic.claude-sonnet-4-5-20250929-v1:0']) {
      for (const arn of bedrockModelArns(id, target)) {
        assert.notEqual(arn, '*');
        assert.match(arn, /^arn:aws:bedrock:[a-z0-9*-]*:(111122223333)?:(foundation-model|inference-profile)\/.+/);
      }
    }
  });

  it('refuses ARNs as model ids', () => {
    assert.throws(() => parseModelId('arn:aws:bedrock:us-east-1::foundation-model/x'), /not an ARN/);
  });

  it('does not take a provider for a profile prefix', () => {
    assert.equal(parseModelId('meta.llama3-8b-instruct-v1:0').profilePrefix, undefined);
    assert.equal(parseModelId('us-gov.anthropic.claude-3-haiku-20240307-v1:0').profilePrefix, 'us-gov');
  });
});
