/**
 * Stream mode (`exportMode: "stream"`): the usage lines reach S3 within minutes, at any volume, without the
 * daily run's FilterLogEvents ceiling.
 *
 *   usage log groups --subscription filter `{ $.event = "token_usage" }`--> Amazon Data Firehose stream
 *     -> Decompression (GZIP: CloudWatch Logs sends gzip batches)
 *     -> CloudWatchLogProcessing (DataMessageExtraction: one record per log message, the usage line itself)
 *     -> MetadataExtraction (jq: year/month/day from the line's own `timestamp`, as the daily export does)
 *     -> record format conversion (OpenX JSON -> Parquet, with the Glue table's schema)
 *     -> s3://<bucket>/logs/year=YYYY/month=MM/day=DD/stream-<...>.parquet
 *
 * The Glue table, its partition projection and every query are unchanged. The stream cannot price a row or
 * know its counter outcome: `cost_usd`, `price_version`, `base_model_id` and `counter_outcome` are null in
 * its rows until the log processor re-exports the day (`scripts/export-logs --aws --date D`), which replaces
 * the partition's `.parquet` objects, the stream's included, and writes the `_SUCCESS` manifest.
 *
 * Sources: https://docs.aws.amazon.com/firehose/latest/dev/writing-with-cloudwatch-logs-decompression.html,
 * https://docs.aws.amazon.com/firehose/latest/dev/Message_extraction.html,
 * https://docs.aws.amazon.com/firehose/latest/dev/dynamic-partitioning.html,
 * https://docs.aws.amazon.com/firehose/latest/dev/record-format-conversion.html.
 */
import { Aws, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as glue from 'aws-cdk-lib/aws-glue';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as firehose from 'aws-cdk-lib/aws-kinesisfirehose';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

/** The same server-side filter as the daily export's (crates/log-processor/src/ports.rs). */
export const STREAM_FILTER_PATTERN = '{ $.event = "token_usage" }';
/**
 * The partition of a line: the UTC day of its own `timestamp` (`2026-11-23T10:00:00.123Z`, always UTC `Z` as
 * every writer logs it), never the arrival time: a request answered after midnight stays in its own day.
 */
export const PARTITION_QUERY = '{year: .timestamp[0:4], month: .timestamp[5:7], day: .timestamp[8:10]}';
/** Under the bucket, outside `logs/`: records the stream could not convert or partition, for inspection. */
export const STREAM_ERRORS_PREFIX = 'stream-errors/';
/** Objects of the stream start with this, right in the day's partition beside (or instead of) the export's. */
export const STREAM_OBJECT_PREFIX = 'stream-';

export interface UsageStreamProps {
  readonly usageLogGroups: readonly logs.ILogGroup[];
  readonly bucket: s3.IBucket;
  /** With a trailing slash, e.g. `logs/`. */
  readonly logsPrefix: string;
  /** The Glue table whose schema the Parquet is written with. */
  readonly table: glue.CfnTable;
  readonly databaseName: string;
  readonly tableName: string;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

export class UsageStream extends Construct {
  public readonly deliveryStream: firehose.CfnDeliveryStream;
  /** Assumed by Firehose: writes under `logs/` and `stream-errors/`, reads the Glue table's schema. */
  public readonly deliveryRole: iam.Role;
  /** Assumed by CloudWatch Logs: puts the subscribed lines into the stream, nothing else. */
  public readonly subscriptionRole: iam.Role;
  public readonly subscriptionFilters: logs.CfnSubscriptionFilter[];
  public readonly errorLogGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: UsageStreamProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const streamName = `${stack.stackName}-UsageLines`;
    const streamArn = stack.formatArn({ service: 'firehose', resource: 'deliverystream', resourceName: streamName });

    this.errorLogGroup = new logs.LogGroup(this, 'DeliveryErrors', {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    const errorLogStream = new logs.LogStream(this, 'S3DeliveryErrors', {
      logGroup: this.errorLogGroup,
      removalPolicy: props.removalPolicy,
    });

    this.deliveryRole = new iam.Role(this, 'DeliveryRole', {
      description: 'Firehose: writes the usage lines as Parquet under logs/, reads the Glue table schema',
      assumedBy: new iam.ServicePrincipal('firehose.amazonaws.com', {
        conditions: { StringEquals: { 'sts:ExternalId': Aws.ACCOUNT_ID } },
      }),
    });
    this.deliveryRole.addToPolicy(
      new iam.PolicyStatement({
        sid: 'WriteStreamObjects',
        actions: ['s3:PutObject', 's3:AbortMultipartUpload'],
        resources: [
          props.bucket.arnForObjects(`${props.logsPrefix}*`),
          props.bucket.arnForObjects(`${STREAM_ERRORS_PREFIX}*`),
        ],
      }),
    );
    this.deliveryRole.addToPolicy(
      new iam.PolicyStatement({
        sid: 'LocateBucket',
        // Firehose checks the bucket before delivering (https://docs.aws.amazon.com/firehose/latest/dev/controlling-access.html#using-iam-s3).
        actions: ['s3:GetBucketLocation', 's3:ListBucket', 's3:ListBucketMultipartUploads'],
        resources: [props.bucket.bucketArn],
      }),
    );
    this.deliveryRole.addToPolicy(
      new iam.PolicyStatement({
        sid: 'ReadTableSchema',
        actions: ['glue:GetTable', 'glue:GetTableVersion', 'glue:GetTableVersions'],
        resources: [
          stack.formatArn({ service: 'glue', resource: 'catalog' }),
          stack.formatArn({ service: 'glue', resource: 'database', resourceName: props.databaseName }),
          stack.formatArn({ service: 'glue', resource: 'table', resourceName: `${props.databaseName}/${props.tableName}` }),
        ],
      }),
    );
    this.deliveryRole.addToPolicy(
      new iam.PolicyStatement({
        sid: 'LogDeliveryErrors',
        actions: ['logs:PutLogEvents'],
        resources: [`${this.errorLogGroup.logGroupArn}`],
      }),
    );
    const bucketResource = props.bucket.node.defaultChild;
    const bucketId = bucketResource ? stack.getLogicalId(bucketResource as never) : 'Bucket';
    Validations.of(this.deliveryRole).acknowledge(
      {
        id: `AwsSolutions-IAM5[Resource::<${bucketId}.Arn>/${props.logsPrefix}*]`,
        reason: 'Firehose names its objects itself, one per buffer, under the day partitions of logs/.',
      },
      {
        id: `AwsSolutions-IAM5[Resource::<${bucketId}.Arn>/${STREAM_ERRORS_PREFIX}*]`,
        reason: 'Records the stream could not convert go under stream-errors/, named by Firehose.',
      },
    );

    const partition = 'year=!{partitionKeyFromQuery:year}/month=!{partitionKeyFromQuery:month}/day=!{partitionKeyFromQuery:day}/';
    this.deliveryStream = new firehose.CfnDeliveryStream(this, 'Default', {
      deliveryStreamName: streamName,
      deliveryStreamType: 'DirectPut',
      deliveryStreamEncryptionConfigurationInput: { keyType: 'AWS_OWNED_CMK' },
      extendedS3DestinationConfiguration: {
        bucketArn: props.bucket.bucketArn,
        roleArn: this.deliveryRole.roleArn,
        prefix: `${props.logsPrefix}${partition}${STREAM_OBJECT_PREFIX}`,
        errorOutputPrefix: `${STREAM_ERRORS_PREFIX}!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/`,
        // The daily export deletes a partition's other `.parquet` objects when it re-exports the day.
        fileExtension: '.parquet',
        // Format conversion and dynamic partitioning both need at least 64 MB; larger buffers, fewer and larger
        // Parquet objects (Athena reads few large files faster than many small ones).
        bufferingHints: { sizeInMBs: 128, intervalInSeconds: 900 },
        // The Parquet serializer compresses; the S3 object itself must then be left uncompressed.
        compressionFormat: 'UNCOMPRESSED',
        cloudWatchLoggingOptions: {
          enabled: true,
          logGroupName: this.errorLogGroup.logGroupName,
          logStreamName: errorLogStream.logStreamName,
        },
        processingConfiguration: {
          enabled: true,
          processors: [
            { type: 'Decompression', parameters: [{ parameterName: 'CompressionFormat', parameterValue: 'GZIP' }] },
            {
              type: 'CloudWatchLogProcessing',
              parameters: [{ parameterName: 'DataMessageExtraction', parameterValue: 'true' }],
            },
            {
              type: 'MetadataExtraction',
              parameters: [
                { parameterName: 'MetadataExtractionQuery', parameterValue: PARTITION_QUERY },
                { parameterName: 'JsonParsingEngine', parameterValue: 'JQ-1.6' },
              ],
            },
          ],
        },
        dynamicPartitioningConfiguration: { enabled: true, retryOptions: { durationInSeconds: 300 } },
        dataFormatConversionConfiguration: {
          enabled: true,
          inputFormatConfiguration: { deserializer: { openXJsonSerDe: {} } },
          outputFormatConfiguration: { serializer: { parquetSerDe: { compression: 'SNAPPY' } } },
          schemaConfiguration: {
            catalogId: Aws.ACCOUNT_ID,
            databaseName: props.databaseName,
            tableName: props.tableName,
            region: Aws.REGION,
            roleArn: this.deliveryRole.roleArn,
            versionId: 'LATEST',
          },
        },
      },
    });
    // The role's policy and the table must exist before Firehose checks them.
    this.deliveryStream.node.addDependency(this.deliveryRole, props.table);

    this.subscriptionRole = new iam.Role(this, 'SubscriptionRole', {
      description: 'CloudWatch Logs: puts the subscribed usage lines into the Firehose stream',
      assumedBy: new iam.ServicePrincipal('logs.amazonaws.com', {
        conditions: {
          // Only for this account's log groups (confused deputy).
          StringLike: { 'aws:SourceArn': `arn:${Aws.PARTITION}:logs:${Aws.REGION}:${Aws.ACCOUNT_ID}:*` },
        },
      }),
    });
    this.subscriptionRole.addToPolicy(
      new iam.PolicyStatement({
        sid: 'PutUsageLines',
        actions: ['firehose:PutRecord', 'firehose:PutRecordBatch'],
        resources: [streamArn],
      }),
    );

    this.subscriptionFilters = props.usageLogGroups.map((group, index) => {
      const filter = new logs.CfnSubscriptionFilter(this, `Subscription${index}`, {
        logGroupName: group.logGroupName,
        filterPattern: STREAM_FILTER_PATTERN,
        destinationArn: this.deliveryStream.attrArn,
        roleArn: this.subscriptionRole.roleArn,
      });
      filter.node.addDependency(this.subscriptionRole);
      return filter;
    });
  }

  /** The stream's name: the dimension of its AWS/Firehose metrics. */
  public get streamName(): string {
    return this.deliveryStream.deliveryStreamName ?? '';
  }
}

/** Longer than this between a line and its delivery alarms: 1.5 times the 15-minute buffer (buffering docs), and slack. */
export const STREAM_FRESHNESS_LIMIT = Duration.minutes(30);
