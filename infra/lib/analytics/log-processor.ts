/**
 * The daily export: at 01:00 UTC the log processor reads the previous day's usage lines from the usage log
 * groups and writes them as Parquet under `logs/year=YYYY/month=MM/day=DD/` of the analytics bucket.
 * It may filter those log groups, and write, replace and list objects under `logs/`, nothing more.
 */
import { CfnResource, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { RustFunction } from '../lambda/rust-function';

export const DAILY_EXPORT_SCHEDULE = 'cron(0 1 * * ? *)';
/** The check that yesterday has a complete export (its `_SUCCESS` manifest) by 03:00 UTC. */
export const EXPORT_CHECK_SCHEDULE = 'cron(0 3 * * ? *)';

export interface LogProcessorProps {
  /** The log groups holding the usage lines (the chat function's, from BedrockMeteringStack). */
  readonly usageLogGroups: readonly logs.ILogGroup[];
  readonly bucket: s3.IBucket;
  /** With a trailing slash, e.g. `logs/`. */
  readonly logsPrefix: string;
  readonly assetDir: string;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
  /**
   * The usage counters' table: with it the processor also rebuilds counters from the lines on the event
   * `{"rebuild_counters": "YYYY-MM-DD"}` (Query on its index gsi1, UpdateItem on the table; nothing else).
   */
  readonly usageTable?: dynamodb.ITable;
  /**
   * False in stream mode: the Firehose stream exports the lines, the function stays for backfills and
   * rebuilds by hand (`scripts/export-logs --aws --date D`), with no 01:00 schedule and no 03:00 check.
   */
  readonly scheduled?: boolean;
}

export class LogProcessor extends Construct {
  public readonly processor: RustFunction;
  /** Absent in stream mode (see `LogProcessorProps.scheduled`). */
  public readonly schedule?: events.Rule;
  public readonly check?: events.Rule;
  /** Scheduled invocations that still failed after their retries (or expired) land here. */
  public readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: LogProcessorProps) {
    super(scope, id);
    const stack = Stack.of(this);

    this.processor = new RustFunction(this, 'Default', {
      binaryName: 'log-processor',
      functionName: `${stack.stackName}-LogProcessor`,
      description: 'Daily export of the usage lines from CloudWatch Logs to Parquet in S3 (for Athena)',
      // The day is streamed, never held: log pages become 100,000-row Parquet row groups, sent as 8 MiB parts
      // of a multipart upload, so memory stays flat whatever the size of the day. 512 MB buys the CPU for the
      // ZSTD encoding.
      memorySize: 512,
      // Paging through a busy day of FilterLogEvents takes minutes (a day of 10 million lines is about 1,000
      // calls): the Lambda maximum, so a big day is not cut short.
      timeout: Duration.minutes(15),
      environment: {
        USAGE_LOG_GROUPS: props.usageLogGroups.map((group) => group.logGroupName).join(','),
        ANALYTICS_BUCKET: props.bucket.bucketName,
        LOGS_PREFIX: props.logsPrefix,
        ...(props.usageTable ? { USAGE_TABLE_NAME: props.usageTable.tableName } : {}),
      },
      assetDir: props.assetDir,
      logRetention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });

    this.processor.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadUsageLines',
        actions: ['logs:FilterLogEvents'],
        // The log groups' `Arn` attribute, `arn:...:log-group:<name>:*`: the form IAM evaluates FilterLogEvents
        // against (https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_LogGroup.html).
        resources: props.usageLogGroups.map((group) => group.logGroupArn),
      }),
    );
    this.processor.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'WriteExports',
        // PutObject covers the multipart calls (Create/UploadPart/Complete); a failed upload is aborted; a
        // re-run replaces the day, deleting (DeleteObjects) the parts it no longer writes.
        // GetObject: the days' _SUCCESS manifests (shrink guard, catch-up, the 03:00 check).
        actions: ['s3:PutObject', 's3:GetObject', 's3:AbortMultipartUpload', 's3:DeleteObject'],
        resources: [props.bucket.arnForObjects(`${props.logsPrefix}*`)],
      }),
    );
    this.processor.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ListExports',
        // ListObjectsV2 of one day's prefix, to find the objects a re-run replaces; nothing outside logs/.
        actions: ['s3:ListBucket'],
        resources: [props.bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': `${props.logsPrefix}*` } },
      }),
    );
    if (props.usageTable) {
      this.processor.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'RebuildCounters',
          // Read a day's or week's counter items (one Query on gsi1), SET them from the lines (UpdateItem).
          // No PutItem, DeleteItem or Scan: a rebuild never removes an item, it sets stale ones to zero.
          actions: ['dynamodb:Query', 'dynamodb:UpdateItem'],
          resources: [props.usageTable.tableArn, `${props.usageTable.tableArn}/index/gsi1`],
        }),
      );
    }
    const bucketResource = props.bucket.node.defaultChild as CfnResource;
    Validations.of(this.processor.role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::<${stack.getLogicalId(bucketResource)}.Arn>/${props.logsPrefix}*]`,
      reason: 'The exporter writes (and replaces) the objects of one day under logs/year=YYYY/month=MM/day=DD/: the prefix, not the bucket.',
    });

    this.deadLetterQueue = new sqs.Queue(this, 'ScheduleDeadLetters', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      removalPolicy: props.removalPolicy,
    });
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue of the export schedule.',
    });

    if (props.scheduled === false) {
      return;
    }
    this.schedule = new events.Rule(this, 'DailyExport', {
      description: 'Exports the previous day of usage lines at 01:00 UTC, and every earlier day without a complete export',
      schedule: events.Schedule.expression(DAILY_EXPORT_SCHEDULE),
      targets: [
        new targets.LambdaFunction(this.processor.function, {
          retryAttempts: 2,
          maxEventAge: Duration.hours(6),
          deadLetterQueue: this.deadLetterQueue,
        }),
      ],
    });
    this.check = new events.Rule(this, 'DailyExportCheck', {
      description: 'Checks at 03:00 UTC that yesterday has a complete export (_SUCCESS manifest)',
      schedule: events.Schedule.expression(EXPORT_CHECK_SCHEDULE),
      targets: [
        new targets.LambdaFunction(this.processor.function, {
          event: events.RuleTargetInput.fromObject({ check_export: events.EventField.time }),
          retryAttempts: 2,
          deadLetterQueue: this.deadLetterQueue,
        }),
      ],
    });
  }
}
