/**
 * MeteringAnalyticsStack's synthesized template: the bucket, the Glue table with partition projection, the
 * Athena workgroup and its named queries, the log processor with its schedule and narrow permissions.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { modelPricesSql, PRICING_FILE } from '../lib/analytics/model-prices';
import { EXAMPLE_QUERIES } from '../lib/analytics/example-queries';
import {
  actionsOf,
  INFRA_DIR,
  logicalIdOf,
  resourcesOf,
  resourcesOfStatement,
  statementsOfRole,
  synth,
  SynthesizedApp,
} from './helpers';

let built: SynthesizedApp;
let template: Template;
let bucketId: string;

before(() => {
  built = synth();
  template = built.analyticsTemplate;
  bucketId = logicalIdOf(template, 'AWS::S3::Bucket', 'AnalyticsBucket');
});

describe('analytics bucket', () => {
  it('is encrypted, private, versioned, lifecycle-managed and logs access to its own log bucket', () => {
    const logsBucket = logicalIdOf(template, 'AWS::S3::Bucket', 'AnalyticsAccessLogs');
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      VersioningConfiguration: { Status: 'Enabled' },
      LoggingConfiguration: { DestinationBucketName: { Ref: logsBucket }, LogFilePrefix: 'analytics-bucket/' },
      LifecycleConfiguration: {
        Rules: Match.arrayWith([
          Match.objectLike({ Prefix: 'athena-results/', ExpirationInDays: 30, Status: 'Enabled' }),
          Match.objectLike({ NoncurrentVersionExpiration: { NoncurrentDays: 30 }, Status: 'Enabled' }),
        ]),
      },
    });
  });

  it('refuses requests without TLS', () => {
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: bucketId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Principal: { AWS: '*' },
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });
});

describe('Glue catalog', () => {
  it('has the bedrock_metering_db database', () => {
    template.hasResourceProperties('AWS::Glue::Database', { DatabaseInput: { Name: 'bedrock_metering_db' } });
  });

  it('has token_usage_logs: Parquet over logs/, the export columns, year/month/day string partitions', () => {
    template.hasResourceProperties('AWS::Glue::Table', {
      DatabaseName: 'bedrock_metering_db',
      TableInput: {
        Name: 'token_usage_logs',
        TableType: 'EXTERNAL_TABLE',
        PartitionKeys: [
          Match.objectLike({ Name: 'year', Type: 'string' }),
          Match.objectLike({ Name: 'month', Type: 'string' }),
          Match.objectLike({ Name: 'day', Type: 'string' }),
        ],
        StorageDescriptor: Match.objectLike({
          Location: { 'Fn::Join': ['', ['s3://', { Ref: bucketId }, '/logs/']] },
          InputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat',
          OutputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat',
          SerdeInfo: Match.objectLike({
            SerializationLibrary: 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe',
          }),
        }),
      },
    });
    const table = Object.values(resourcesOf(template, 'AWS::Glue::Table')).find(
      (t) => (t.Properties?.TableInput as { Name: string }).Name === 'token_usage_logs',
    )!;
    const columns = (table.Properties?.TableInput as { StorageDescriptor: { Columns: { Name: string; Type: string }[] } })
      .StorageDescriptor.Columns.map((column) => `${column.Name}:${column.Type}`);
    assert.deepEqual(columns, [
      'timestamp:string',
      'tenant_id:string',
      'user_id:string',
      'model_id:string',
      'request_type:string',
      'request_id:string',
      'input_tokens:bigint',
      'output_tokens:bigint',
      'total_tokens:bigint',
      'latency_ms:bigint',
      'cache_creation_input_tokens:bigint',
      'cache_read_input_tokens:bigint',
      'cost_usd:double',
      'price_version:string',
      'base_model_id:string',
      'client_user_id:string',
      'requested_model_id:string',
      'usage_estimated:boolean',
      'counter_outcome:string',
    ]);
  });

  it('has model_prices: an Athena view over every model of pricing.json', () => {
    const pricing = JSON.parse(fs.readFileSync(PRICING_FILE, 'utf8')) as { models: Record<string, unknown> };
    const view = Object.values(resourcesOf(template, 'AWS::Glue::Table')).find(
      (t) => (t.Properties?.TableInput as { Name: string }).Name === 'model_prices',
    );
    assert.ok(view, 'no model_prices table');
    const input = view.Properties?.TableInput as { TableType: string; ViewOriginalText: string };
    assert.equal(input.TableType, 'VIRTUAL_VIEW');
    const encoded = /^\/\* Presto View: (.*) \*\/$/.exec(input.ViewOriginalText)![1];
    const sql = (JSON.parse(Buffer.from(encoded, 'base64').toString()) as { originalSql: string }).originalSql;
    assert.equal(sql, modelPricesSql());
    for (const model of Object.keys(pricing.models)) {
      assert.ok(sql.includes(`'${model}'`), `model_prices lacks ${model}`);
    }
  });

  it('projects partitions, so new days are queryable without a crawler or MSCK REPAIR', () => {
    template.hasResourceProperties('AWS::Glue::Table', {
      TableInput: Match.objectLike({
        Parameters: Match.objectLike({
          classification: 'parquet',
          'projection.enabled': 'true',
          'projection.year.type': 'integer',
          'projection.year.range': Match.stringLikeRegexp('^20\\d\\d,20\\d\\d$'),
          'projection.month.type': 'integer',
          'projection.month.range': '1,12',
          'projection.month.digits': '2',
          'projection.day.type': 'integer',
          'projection.day.range': '1,31',
          'projection.day.digits': '2',
          'storage.location.template': {
            'Fn::Join': ['', ['s3://', { Ref: bucketId }, '/logs/year=${year}/month=${month}/day=${day}/']],
          },
        }),
      }),
    });
  });
});

describe('Athena workgroup', () => {
  it('is bedrock-metering-workgroup, enforced, with encrypted results under athena-results/ and a scan cutoff', () => {
    template.hasResourceProperties('AWS::Athena::WorkGroup', {
      Name: 'bedrock-metering-workgroup',
      State: 'ENABLED',
      RecursiveDeleteOption: true,
      WorkGroupConfiguration: {
        EnforceWorkGroupConfiguration: true,
        BytesScannedCutoffPerQuery: 1073741824,
        PublishCloudWatchMetricsEnabled: true,
        ResultConfiguration: {
          OutputLocation: { 'Fn::Join': ['', ['s3://', { Ref: bucketId }, '/athena-results/']] },
          EncryptionConfiguration: { EncryptionOption: 'SSE_S3' },
        },
      },
    });
  });

  it('takes the cutoff from the athenaBytesScannedCutoffBytes context key', () => {
    synth({ athenaBytesScannedCutoffBytes: '104857600' }).analyticsTemplate.hasResourceProperties('AWS::Athena::WorkGroup', {
      WorkGroupConfiguration: Match.objectLike({ BytesScannedCutoffPerQuery: 104857600 }),
    });
  });

  it('installs every example query as a named query of the workgroup', () => {
    const workgroup = logicalIdOf(template, 'AWS::Athena::WorkGroup', 'AthenaWorkgroup');
    template.resourceCountIs('AWS::Athena::NamedQuery', EXAMPLE_QUERIES.length + 1); // + monthly-statement (analytics-statement.test.ts)
    for (const query of EXAMPLE_QUERIES) {
      template.hasResourceProperties('AWS::Athena::NamedQuery', {
        Name: query.name,
        Database: 'bedrock_metering_db',
        WorkGroup: { Ref: workgroup },
        QueryString: query.sql,
      });
    }
  });
});

describe('example queries', () => {
  it('cover tenants of a day, models used, daily usage, hourly pattern and monthly cost', () => {
    assert.deepEqual(
      EXAMPLE_QUERIES.map((query) => query.name),
      ['tenants-of-a-day', 'models-used', 'daily-usage-per-tenant', 'hourly-pattern-per-tenant', 'cost-per-tenant-per-month'],
    );
  });

  it('read bedrock_metering_db.token_usage_logs and prune partitions', () => {
    for (const query of EXAMPLE_QUERIES) {
      assert.match(query.sql, /FROM bedrock_metering_db\.token_usage_logs/, query.name);
      assert.match(query.sql, /WHERE[\s\S]*\byear\b/, `${query.name} must filter on the partition keys`);
      assert.doesNotMatch(query.sql, /[^"]\btimestamp\b[^"]/i, `${query.name}: quote "timestamp", a reserved word`);
    }
  });

  it('are quoted verbatim by infra/README.md (the operator section)', () => {
    const readme = fs.readFileSync(path.join(INFRA_DIR, 'README.md'), 'utf8');
    for (const query of EXAMPLE_QUERIES) {
      assert.ok(readme.includes(`\`\`\`sql\n${query.sql}\n\`\`\``), `README lacks the current SQL of ${query.name}`);
    }
  });

  it('use the Trino date and time functions', () => {
    const all = EXAMPLE_QUERIES.map((query) => query.sql).join('\n');
    for (const fn of ['from_iso8601_timestamp(', 'date(', 'extract(hour from', 'date_trunc(', 'date_format(']) {
      assert.ok(all.includes(fn), `no query uses ${fn}`);
    }
  });
});

describe('log processor', () => {
  it('rebuilds counters with Query on the usage table index gsi1 and UpdateItem on the table, nothing more', () => {
    const rebuild = statementsOfRole(template, 'LogProcessorRole').find((s) => s.Sid === 'RebuildCounters');
    assert.ok(rebuild, 'no RebuildCounters statement');
    assert.deepEqual(actionsOf(rebuild).sort(), ['dynamodb:Query', 'dynamodb:UpdateItem']);
    const resources = JSON.stringify(resourcesOfStatement(rebuild));
    assert.ok(resources.includes('UsageTable') && resources.includes('/index/gsi1'), resources);
    assert.equal(resourcesOfStatement(rebuild).length, 2, resources);
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: Match.stringLikeRegexp('LogProcessor'),
      Environment: { Variables: Match.objectLike({ USAGE_TABLE_NAME: Match.anyValue() }) },
    });
  });

  it('is an arm64 Rust function named *LogProcessor*, 512 MB, 15 minutes, configured through its environment', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: Match.stringLikeRegexp('LogProcessor'),
      Runtime: 'provided.al2023',
      Architectures: ['arm64'],
      Handler: 'bootstrap',
      MemorySize: 512,
      Timeout: 900,
      LoggingConfig: { LogFormat: 'JSON', LogGroup: { Ref: logicalIdOf(template, 'AWS::Logs::LogGroup', 'LogProcessorLogGroup') } },
      Environment: {
        Variables: Match.objectLike({
          ANALYTICS_BUCKET: { Ref: bucketId },
          LOGS_PREFIX: 'logs/',
          USAGE_LOG_GROUPS: Match.anyValue(),
        }),
      },
    });
  });

  it('reads the chat log group name from BedrockMeteringStack (cross-stack reference)', () => {
    const fn = Object.values(resourcesOf(template, 'AWS::Lambda::Function')).find((f) =>
      String(f.Properties?.FunctionName).includes('LogProcessor'),
    );
    const usageLogGroups = JSON.stringify((fn?.Properties?.Environment as { Variables: Record<string, unknown> }).Variables.USAGE_LOG_GROUPS);
    const chatLogGroup = logicalIdOf(built.meteringTemplate, 'AWS::Logs::LogGroup', 'ChatApiLogGroup');
    assert.match(usageLogGroups, /BedrockMeteringStack/);
    assert.ok(usageLogGroups.includes(chatLogGroup), usageLogGroups);
    const dependencies = built.analytics.dependencies.map((stack) => stack.stackName);
    assert.deepEqual(dependencies, ['BedrockMeteringStack']);
  });

  it('may only FilterLogEvents on the usage log groups, and write, delete and list under logs/', () => {
    const statements = statementsOfRole(template, 'LogProcessorRole');
    assert.deepEqual(
      statements.map((s) => [s.Sid, actionsOf(s)]),
      [
        ['WriteOwnLogGroup', ['logs:CreateLogStream', 'logs:PutLogEvents']],
        ['ReadUsageLines', ['logs:FilterLogEvents']],
        ['WriteExports', ['s3:AbortMultipartUpload', 's3:DeleteObject', 's3:GetObject', 's3:PutObject']],
        ['ListExports', ['s3:ListBucket']],
        ['RebuildCounters', ['dynamodb:Query', 'dynamodb:UpdateItem']],
      ],
    );
    const read = statements[1];
    const chatLogGroup = logicalIdOf(built.meteringTemplate, 'AWS::Logs::LogGroup', 'ChatApiLogGroup');
    assert.ok(JSON.stringify(resourcesOfStatement(read)).includes(chatLogGroup), JSON.stringify(read.Resource));
    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: logicalIdOf(template, 'AWS::IAM::Role', 'LogProcessorRole') }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          {
            Sid: 'WriteExports',
            Effect: 'Allow',
            Action: ['s3:AbortMultipartUpload', 's3:DeleteObject', 's3:GetObject', 's3:PutObject'],
            Resource: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/logs/*']] },
          },
          {
            Sid: 'ListExports',
            Effect: 'Allow',
            Action: 's3:ListBucket',
            Resource: { 'Fn::GetAtt': [bucketId, 'Arn'] },
            Condition: { StringLike: { 's3:prefix': 'logs/*' } },
          },
        ]),
      },
    });
  });

  it('checks at 03:00 UTC that yesterday has a complete export, with the time of the event', () => {
    const fn = logicalIdOf(template, 'AWS::Lambda::Function', 'LogProcessorFunction');
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'cron(0 3 * * ? *)',
      Targets: [
        Match.objectLike({
          Arn: { 'Fn::GetAtt': [fn, 'Arn'] },
          InputTransformer: Match.objectLike({ InputTemplate: '{"check_export":<time>}' }),
          DeadLetterConfig: { Arn: Match.anyValue() },
        }),
      ],
    });
  });

  it('alarms on errors, malformed lines, a missing daily export and dead letters, into one SNS topic', () => {
    const alarms = Object.values(resourcesOf(template, 'AWS::CloudWatch::Alarm'));
    const topic = logicalIdOf(template, 'AWS::SNS::Topic', 'ExportAlarmsAlerts');
    const byMetric = new Map(alarms.map((a) => [a.Properties?.MetricName as string, a.Properties!]));
    assert.deepEqual([...byMetric.keys()].sort(), ['ApproximateNumberOfMessagesVisible', 'Errors', 'MissingDailyExport', 'SkippedMalformed']);
    for (const name of ['MissingDailyExport', 'SkippedMalformed']) {
      assert.equal(byMetric.get(name)!.Namespace, 'BedrockMetering/LogExport');
    }
    for (const alarm of byMetric.values()) {
      assert.deepEqual([alarm.Threshold, alarm.ComparisonOperator, alarm.AlarmActions], [0, 'GreaterThanThreshold', [{ Ref: topic }]]);
    }
    template.hasOutput('AlertsTopicArn', { Value: { Ref: topic } });
  });

  it('runs every day at 01:00 UTC', () => {
    const fn = logicalIdOf(template, 'AWS::Lambda::Function', 'LogProcessorFunction');
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'cron(0 1 * * ? *)',
      State: 'ENABLED',
      Targets: [
        Match.objectLike({
          Arn: { 'Fn::GetAtt': [fn, 'Arn'] },
          RetryPolicy: Match.objectLike({ MaximumRetryAttempts: 2 }),
          DeadLetterConfig: { Arn: Match.anyValue() },
        }),
      ],
    });
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'events.amazonaws.com',
      FunctionName: { 'Fn::GetAtt': [fn, 'Arn'] },
    });
  });
});

describe('outputs', () => {
  it('has the names the scripts read', () => {
    template.hasOutput('AnalyticsBucketName', { Value: { Ref: bucketId } });
    template.hasOutput('LogProcessorFunctionName', {
      Value: { Ref: logicalIdOf(template, 'AWS::Lambda::Function', 'LogProcessorFunction') },
    });
    template.hasOutput('AthenaWorkgroupName', { Value: 'bedrock-metering-workgroup' });
    template.hasOutput('GlueDatabaseName', { Value: 'bedrock_metering_db' });
    template.hasOutput('GlueTableName', { Value: 'token_usage_logs' });
  });
});

describe('budget alerts', () => {
  it('routes BudgetThresholdCrossed from bedrock-metering to the alerts topic', () => {
    const topic = logicalIdOf(template, 'AWS::SNS::Topic', 'ExportAlarmsAlerts');
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: { source: ['bedrock-metering'], 'detail-type': ['BudgetThresholdCrossed'] },
      Targets: [Match.objectLike({ Arn: { Ref: topic } })],
    });
    template.resourceCountIs('AWS::SNS::Subscription', 0);
  });

  it('subscribes budgetAlertEmail to the topic, and refuses what is not an address', () => {
    const withEmail = synth({ budgetAlertEmail: 'ops@example.com' }).analyticsTemplate;
    withEmail.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
    assert.throws(() => synth({ budgetAlertEmail: 'not-an-address' }), /budgetAlertEmail/);
  });
});
