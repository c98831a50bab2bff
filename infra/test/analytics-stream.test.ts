/**
 * exportMode: "daily" (the default) vs "stream": the usage lines subscribed to a Firehose stream that writes
 * Parquet with the Glue table's schema into the same logs/year=/month=/day= partitions; the log processor
 * stays (for backfills and rebuilds) without its schedule; least-privilege roles; cdk-nag clean.
 */
import * as assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { buildApp } from '../lib/app';
import { PARTITION_QUERY, STREAM_FILTER_PATTERN } from '../lib/analytics/usage-stream';
import { actionsOf, logicalIdOf, resourcesOf, statementsOfRole, synth, testApp } from './helpers';

type Props = Record<string, unknown>;

let daily: Template;
let stream: Template;
let streamMetering: Template;

before(() => {
  daily = synth().analyticsTemplate;
  const built = synth({ exportMode: 'stream' });
  stream = built.analyticsTemplate;
  streamMetering = built.meteringTemplate;
});

function deliveryStreamOf(template: Template): Props {
  const streams = Object.values(resourcesOf(template, 'AWS::KinesisFirehose::DeliveryStream'));
  assert.equal(streams.length, 1);
  return streams[0].Properties as Props;
}

function rulesOf(template: Template): string[] {
  return Object.keys(resourcesOf(template, 'AWS::Events::Rule'));
}

describe('exportMode', () => {
  it('defaults to daily: the scheduled log processor, no stream, no subscription', () => {
    template(daily).resourceCountIs('AWS::KinesisFirehose::DeliveryStream', 0);
    template(daily).resourceCountIs('AWS::Logs::SubscriptionFilter', 0);
    assert.ok(rulesOf(daily).some((id) => id.startsWith('LogProcessorDailyExport')));
    assert.ok(rulesOf(daily).some((id) => id.startsWith('LogProcessorDailyExportCheck')));
  });

  it('refuses any other value', () => {
    assert.throws(() => synth({ exportMode: 'hourly' }), /exportMode.*daily, stream/);
  });
});

describe('stream mode', () => {
  it('subscribes every usage log group, filtered on token_usage, to the Firehose stream', () => {
    const filters = Object.values(resourcesOf(stream, 'AWS::Logs::SubscriptionFilter')).map((f) => f.Properties as Props);
    const groups = Object.keys(resourcesOf(streamMetering, 'AWS::Logs::LogGroup'));
    assert.ok(filters.length >= 1);
    const streamId = logicalIdOf(stream, 'AWS::KinesisFirehose::DeliveryStream', 'UsageStream');
    const roleId = logicalIdOf(stream, 'AWS::IAM::Role', 'UsageStreamSubscriptionRole');
    for (const filter of filters) {
      assert.equal(filter.FilterPattern, STREAM_FILTER_PATTERN);
      assert.deepEqual(filter.DestinationArn, { 'Fn::GetAtt': [streamId, 'Arn'] });
      assert.deepEqual(filter.RoleArn, { 'Fn::GetAtt': [roleId, 'Arn'] });
      assert.ok(JSON.stringify(filter.LogGroupName).includes('BedrockMeteringStack'), 'the log groups of BedrockMeteringStack');
    }
    assert.ok(groups.length >= filters.length);
  });

  it('decompresses, extracts the messages and partitions by the line\'s own timestamp into logs/year=/month=/day=', () => {
    const s3 = deliveryStreamOf(stream).ExtendedS3DestinationConfiguration as Props;
    assert.equal(s3.Prefix, 'logs/year=!{partitionKeyFromQuery:year}/month=!{partitionKeyFromQuery:month}/day=!{partitionKeyFromQuery:day}/stream-');
    assert.equal(s3.FileExtension, '.parquet', 'a re-export of the day replaces the stream\'s objects');
    assert.ok(String(s3.ErrorOutputPrefix).startsWith('stream-errors/'), 'errors never land under logs/');
    assert.deepEqual(s3.DynamicPartitioningConfiguration, { Enabled: true, RetryOptions: { DurationInSeconds: 300 } });
    const processors = (s3.ProcessingConfiguration as { Enabled: boolean; Processors: { Type: string; Parameters: unknown[] }[] });
    assert.equal(processors.Enabled, true);
    assert.deepEqual(processors.Processors, [
      { Type: 'Decompression', Parameters: [{ ParameterName: 'CompressionFormat', ParameterValue: 'GZIP' }] },
      { Type: 'CloudWatchLogProcessing', Parameters: [{ ParameterName: 'DataMessageExtraction', ParameterValue: 'true' }] },
      {
        Type: 'MetadataExtraction',
        Parameters: [
          { ParameterName: 'MetadataExtractionQuery', ParameterValue: PARTITION_QUERY },
          { ParameterName: 'JsonParsingEngine', ParameterValue: 'JQ-1.6' },
        ],
      },
    ]);
    assert.ok((s3.BufferingHints as { SizeInMBs: number }).SizeInMBs >= 64, 'format conversion needs at least 64 MB');
  });

  it('converts to Parquet with the Glue table\'s schema', () => {
    const s3 = deliveryStreamOf(stream).ExtendedS3DestinationConfiguration as Props;
    const conversion = s3.DataFormatConversionConfiguration as Props;
    assert.equal(conversion.Enabled, true);
    assert.deepEqual(conversion.InputFormatConfiguration, { Deserializer: { OpenXJsonSerDe: {} } });
    assert.deepEqual(conversion.OutputFormatConfiguration, { Serializer: { ParquetSerDe: { Compression: 'SNAPPY' } } });
    const schema = conversion.SchemaConfiguration as Props;
    assert.equal(schema.DatabaseName, 'bedrock_metering_db');
    assert.equal(schema.TableName, 'token_usage_logs');
    assert.equal(schema.VersionId, 'LATEST');
    assert.equal(s3.CompressionFormat, 'UNCOMPRESSED');
    assert.deepEqual(deliveryStreamOf(stream).DeliveryStreamEncryptionConfigurationInput, { KeyType: 'AWS_OWNED_CMK' });
  });

  it('gives CloudWatch Logs only PutRecord(Batch) on the stream, for this account\'s log groups', () => {
    const statements = statementsOfRole(stream, 'UsageStreamSubscriptionRole');
    assert.deepEqual(statements.map((s) => [...actionsOf(s)].sort()), [['firehose:PutRecord', 'firehose:PutRecordBatch']]);
    assert.ok(JSON.stringify(statements[0].Resource).includes('deliverystream/MeteringAnalyticsStack-UsageLines'));
    template(stream).hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: {
        Statement: [Match.objectLike({
          Principal: { Service: 'logs.amazonaws.com' },
          Condition: { StringLike: { 'aws:SourceArn': Match.anyValue() } },
        })],
      },
    });
  });

  it('gives Firehose only writes under logs/ and stream-errors/, the bucket check, the table schema and its error log', () => {
    const statements = statementsOfRole(stream, 'UsageStreamDeliveryRole');
    const bySid = Object.fromEntries(statements.map((s) => [s.Sid, [...actionsOf(s)].sort()]));
    assert.deepEqual(bySid, {
      WriteStreamObjects: ['s3:AbortMultipartUpload', 's3:PutObject'],
      LocateBucket: ['s3:GetBucketLocation', 's3:ListBucket', 's3:ListBucketMultipartUploads'],
      ReadTableSchema: ['glue:GetTable', 'glue:GetTableVersion', 'glue:GetTableVersions'],
      LogDeliveryErrors: ['logs:PutLogEvents'],
    });
    const writes = JSON.stringify(statements.find((s) => s.Sid === 'WriteStreamObjects')!.Resource);
    assert.ok(writes.includes('/logs/*') && writes.includes('/stream-errors/*'), writes);
    assert.ok(!statements.some((s) => actionsOf(s).some((a) => a.endsWith('*'))), 'no wildcard action');
  });

  it('keeps the log processor for backfills, without the 01:00 schedule or the 03:00 manifest check', () => {
    template(stream).resourceCountIs('AWS::Lambda::Function', Object.keys(resourcesOf(daily, 'AWS::Lambda::Function')).length);
    assert.ok(!rulesOf(stream).some((id) => id.startsWith('LogProcessorDailyExport')), rulesOf(stream).join());
  });

  it('alarms on late delivery, failed conversions and the partition limit instead of a missing manifest', () => {
    const alarms = Object.values(resourcesOf(stream, 'AWS::CloudWatch::Alarm')).map((a) => a.Properties as Props);
    const metrics = alarms.map((a) => `${a.Namespace}/${a.MetricName}`);
    assert.ok(!metrics.includes('BedrockMetering/LogExport/MissingDailyExport'), metrics.join());
    for (const name of ['DeliveryToS3.DataFreshness', 'FailedConversion.Records', 'PartitionCountExceeded']) {
      const alarm = alarms.find((a) => a.MetricName === name);
      assert.ok(alarm, `no alarm on AWS/Firehose ${name}`);
      assert.equal(alarm.Namespace, 'AWS/Firehose');
      assert.equal((alarm.AlarmActions as unknown[]).length, 1, 'to the alerts topic');
    }
    const dailyMetrics = Object.values(resourcesOf(daily, 'AWS::CloudWatch::Alarm')).map((a) => (a.Properties as Props).MetricName);
    assert.ok(dailyMetrics.includes('MissingDailyExport') && !dailyMetrics.includes('FailedConversion.Records'));
  });

  it('finds nothing unacknowledged by cdk-nag', () => {
    const app = testApp({ exportMode: 'stream' });
    buildApp(app, {});
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    app.synth();
  });
});

function template(t: Template): Template {
  return t;
}
