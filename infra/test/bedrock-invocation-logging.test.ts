/**
 * Bedrock model invocation logging (lib/bedrock/invocation-logging.ts): on by default, to the analytics
 * bucket under its own prefix, text and metadata only, never replacing a foreign configuration silently,
 * with least-privilege permissions, a Glue table over the records, and absent when the setting is off.
 */
import * as assert from 'node:assert/strict';
import * as vm from 'node:vm';
import { describe, it } from 'node:test';
import { Validations } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { buildApp } from '../lib/app';
import { BEDROCK_LOGS_PREFIX, BEDROCK_LOGS_TABLE_NAME } from '../lib/bedrock/invocation-logging';
import { actionsOf, resourcesOf, resourcesOfStatement, statementsOfRole, synth, testApp } from './helpers';

const LOGGING_TYPE = 'Custom::BedrockInvocationLogging';

describe('Bedrock invocation logging, on by default', () => {
  const { analyticsTemplate: template, meteringTemplate } = synth();

  it('configures logging to the analytics bucket under its own prefix, text and metadata only', () => {
    template.hasResourceProperties(LOGGING_TYPE, {
      BucketName: { Ref: Match.stringLikeRegexp('^AnalyticsBucket') },
      KeyPrefix: BEDROCK_LOGS_PREFIX,
      OverwriteExisting: 'false',
    });
    const handler = Object.values(resourcesOf(template, 'AWS::Lambda::Function')).find((fn) =>
      JSON.stringify(fn.Properties?.Code).includes('PutModelInvocationLoggingConfiguration'),
    );
    assert.ok(handler, 'the custom resource handler is in the template');
    const code = JSON.stringify(handler.Properties?.Code);
    for (const wanted of ['textDataDeliveryEnabled: true', 'imageDataDeliveryEnabled: false', 'embeddingDataDeliveryEnabled: false',
      'videoDataDeliveryEnabled: false', 'GetModelInvocationLoggingConfigurationCommand']) {
      assert.ok(code.includes(wanted), `handler code has ${wanted}`);
    }
    assert.equal(meteringTemplate.findResources(LOGGING_TYPE) && Object.keys(meteringTemplate.findResources(LOGGING_TYPE)).length, 0);
  });

  it('lets only Bedrock of this account write the records, under the prefix', () => {
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Sid: 'BedrockInvocationLogsDelivery',
            Principal: { Service: 'bedrock.amazonaws.com' },
            Action: 's3:PutObject',
            Condition: {
              StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
              ArnLike: { 'aws:SourceArn': Match.anyValue() },
            },
          }),
        ]),
      },
    });
  });

  it('gives the handler only the three logging actions and its own log group', () => {
    const statements = statementsOfRole(template, 'BedrockInvocationLoggingHandlerRole');
    const actions = statements.flatMap(actionsOf).sort();
    assert.deepEqual(actions, [
      'bedrock:DeleteModelInvocationLoggingConfiguration',
      'bedrock:GetModelInvocationLoggingConfiguration',
      'bedrock:PutModelInvocationLoggingConfiguration',
      'logs:CreateLogStream',
      'logs:PutLogEvents',
    ]);
    const logsStatement = statements.find((s) => actionsOf(s).includes('logs:PutLogEvents'));
    assert.ok(logsStatement && !resourcesOfStatement(logsStatement).includes('*'));
    const roles = resourcesOf(template, 'AWS::IAM::Role');
    const role = Object.entries(roles).find(([id]) => id.startsWith('BedrockInvocationLoggingHandlerRole'));
    assert.ok(role && !role[1].Properties?.ManagedPolicyArns, 'no managed policy');
  });

  it('puts a Glue table over the records, partitioned by the delivery day', () => {
    template.hasResourceProperties('AWS::Glue::Table', {
      TableInput: Match.objectLike({
        Name: BEDROCK_LOGS_TABLE_NAME,
        Parameters: Match.objectLike({
          'projection.enabled': 'true',
          'projection.day.format': 'yyyy/MM/dd',
          'storage.location.template': Match.anyValue(),
        }),
        StorageDescriptor: Match.objectLike({
          SerdeInfo: Match.objectLike({ SerializationLibrary: 'org.openx.data.jsonserde.JsonSerDe' }),
          Columns: Match.arrayWith([Match.objectLike({ Name: 'requestmetadata', Type: 'map<string,string>' })]),
        }),
      }),
    });
  });

  it('expires the records (they hold prompt text) under the prefix only', () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      LifecycleConfiguration: {
        Rules: Match.arrayWith([
          Match.objectLike({ Id: 'expire-bedrock-invocation-logs', Prefix: BEDROCK_LOGS_PREFIX, Status: 'Enabled' }),
        ]),
      },
    });
  });

  it('passes the explicit overwrite setting through', () => {
    const { analyticsTemplate } = synth({ bedrockInvocationLoggingOverwrite: 'true' });
    analyticsTemplate.hasResourceProperties(LOGGING_TYPE, { OverwriteExisting: 'true' });
  });

  it('is clean under cdk-nag', () => {
    const app = testApp();
    buildApp(app, {});
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    app.synth();
  });
});

describe('Bedrock invocation logging, off', () => {
  it('has no configuration, handler, bucket statement or table', () => {
    const { analyticsTemplate: template } = synth({ bedrockInvocationLogging: 'false' });
    template.resourceCountIs(LOGGING_TYPE, 0);
    assert.ok(!JSON.stringify(template.toJSON()).includes('PutModelInvocationLoggingConfiguration'));
    assert.ok(!JSON.stringify(template.toJSON()).includes('BedrockInvocationLogsDelivery'));
    const tables = Object.values(resourcesOf(template, 'AWS::Glue::Table')).map(
      (table) => (table.Properties?.TableInput as { Name: string }).Name,
    );
    assert.ok(!tables.includes(BEDROCK_LOGS_TABLE_NAME));
  });
});

/** The handler's decisions, run against a stand-in Bedrock client (pure logic, no AWS). */
describe('the custom resource handler', () => {
  function loadHandler(existing: unknown) {
    const { analyticsTemplate } = synth();
    const fn = Object.values(resourcesOf(analyticsTemplate, 'AWS::Lambda::Function')).find((f) =>
      JSON.stringify(f.Properties?.Code).includes('PutModelInvocationLoggingConfiguration'),
    );
    const source = (fn?.Properties?.Code as { ZipFile: string }).ZipFile;
    const calls: { name: string; input: unknown }[] = [];
    const responses: { Status: string; Reason: string }[] = [];
    class Command {
      constructor(public readonly name: string, public readonly input: unknown) {}
    }
    const sdk = {
      BedrockClient: class {
        async send(command: Command) {
          calls.push({ name: command.name, input: command.input });
          return command.name === 'Get' ? { loggingConfig: existing } : {};
        }
      },
      GetModelInvocationLoggingConfigurationCommand: class extends Command { constructor(i: unknown) { super('Get', i); } },
      PutModelInvocationLoggingConfigurationCommand: class extends Command { constructor(i: unknown) { super('Put', i); } },
      DeleteModelInvocationLoggingConfigurationCommand: class extends Command { constructor(i: unknown) { super('Delete', i); } },
    };
    const https = {
      request: (_url: string, _options: unknown, callback: (answer: { resume(): void; on(e: string, f: () => void): void }) => void) => ({
        on: () => undefined,
        end: (body: string) => {
          responses.push(JSON.parse(body));
          callback({ resume: () => undefined, on: (_e, f) => f() });
        },
      }),
    };
    const module = { exports: {} as { handler?: (event: unknown) => Promise<void> } };
    const require = (name: string) => (name === 'https' ? https : sdk);
    vm.runInNewContext(source, { module, exports: module.exports, require, console: { log() {}, error() {} }, Buffer, JSON, String, Promise });
    return { handler: module.exports.handler!, calls, responses };
  }
  const event = (type: string, overwrite = 'false') => ({
    RequestType: type,
    ResponseURL: 'https://example.invalid/response',
    StackId: 's', RequestId: 'r', LogicalResourceId: 'l',
    ResourceProperties: { BucketName: 'analytics', KeyPrefix: BEDROCK_LOGS_PREFIX, OverwriteExisting: overwrite },
    OldResourceProperties: { BucketName: 'analytics', KeyPrefix: BEDROCK_LOGS_PREFIX },
  });

  it('sets the configuration when there is none', async () => {
    const { handler, calls, responses } = loadHandler(undefined);
    await handler(event('Create'));
    assert.deepEqual(calls.map((c) => c.name), ['Get', 'Put']);
    assert.equal(responses[0].Status, 'SUCCESS');
  });

  it('refuses to replace a foreign configuration, and says how to proceed', async () => {
    const { handler, calls, responses } = loadHandler({ s3Config: { bucketName: 'security-team', keyPrefix: 'x/' } });
    await handler(event('Create'));
    assert.deepEqual(calls.map((c) => c.name), ['Get']);
    assert.equal(responses[0].Status, 'FAILED');
    assert.match(responses[0].Reason, /already configured.*s3:\/\/security-team\/x\/.*bedrockInvocationLoggingOverwrite=true/);
  });

  it('replaces a foreign configuration only when told to', async () => {
    const { handler, calls, responses } = loadHandler({ cloudWatchConfig: { logGroupName: 'g' } });
    await handler(event('Create', 'true'));
    assert.deepEqual(calls.map((c) => c.name), ['Get', 'Put']);
    assert.equal(responses[0].Status, 'SUCCESS');
  });

  it('on delete, removes only its own configuration', async () => {
    const own = loadHandler({ s3Config: { bucketName: 'analytics', keyPrefix: BEDROCK_LOGS_PREFIX } });
    await own.handler(event('Delete'));
    assert.deepEqual(own.calls.map((c) => c.name), ['Get', 'Delete']);
    const foreign = loadHandler({ s3Config: { bucketName: 'security-team', keyPrefix: '' } });
    await foreign.handler(event('Delete'));
    assert.deepEqual(foreign.calls.map((c) => c.name), ['Get']);
    assert.equal(foreign.responses[0].Status, 'SUCCESS');
  });
});
