/**
 * The Glue table Athena reads the exported usage lines through. Partition projection computes the
 * `year=YYYY/month=MM/day=DD` locations from the query's filter, so a new day is queryable as soon as its
 * file is written: no crawler, no `MSCK REPAIR TABLE`, no partition API calls by the exporter.
 */
import { Stack } from 'aws-cdk-lib';
import * as glue from 'aws-cdk-lib/aws-glue';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { GLUE_DATABASE_NAME, GLUE_TABLE_NAME } from './example-queries';

/** The export's Parquet schema (/tmp/contract.md, "Export/Glue columns"). */
export const TOKEN_USAGE_COLUMNS: readonly glue.CfnTable.ColumnProperty[] = [
  { name: 'timestamp', type: 'string', comment: 'RFC 3339 UTC time of the request, e.g. 2026-11-23T10:00:00.123Z' },
  { name: 'tenant_id', type: 'string' },
  { name: 'user_id', type: 'string' },
  { name: 'model_id', type: 'string' },
  { name: 'request_type', type: 'string' },
  { name: 'request_id', type: 'string' },
  { name: 'input_tokens', type: 'bigint' },
  { name: 'output_tokens', type: 'bigint' },
  { name: 'total_tokens', type: 'bigint' },
  { name: 'latency_ms', type: 'bigint' },
  { name: 'cache_creation_input_tokens', type: 'bigint' },
  { name: 'cache_read_input_tokens', type: 'bigint' },
  { name: 'cost_usd', type: 'double', comment: 'USD, priced at export by pricing.json (the usage API table); null when unpriced' },
  { name: 'price_version', type: 'string', comment: 'The price table that priced the row (as_of and a hash)' },
  { name: 'base_model_id', type: 'string', comment: 'model_id without ARN, inference profile prefix, date and version' },
  { name: 'client_user_id', type: 'string', comment: 'The end user the client named; null when none' },
  { name: 'requested_model_id', type: 'string', comment: 'The model the client asked for; null when none' },
  { name: 'usage_estimated', type: 'boolean', comment: 'True when the token counts are the gateway estimate' },
  {
    name: 'counter_outcome',
    type: 'string',
    comment: 'applied, failed or unknown: did the request reach the DynamoDB counters; null in rows of the stream',
  },
];

export const PARTITION_KEYS: readonly glue.CfnTable.ColumnProperty[] = [
  { name: 'year', type: 'string', comment: 'YYYY (UTC)' },
  { name: 'month', type: 'string', comment: 'MM, zero-padded' },
  { name: 'day', type: 'string', comment: 'DD, zero-padded' },
];

export interface UsageLogCatalogProps {
  readonly bucket: s3.IBucket;
  /** Where the exports live in the bucket, with a trailing slash (`logs/`). */
  readonly logsPrefix: string;
  /** First year partition projection enumerates. */
  readonly firstYear?: number;
}

export class UsageLogCatalog extends Construct {
  public readonly database: glue.CfnDatabase;
  public readonly table: glue.CfnTable;
  public readonly databaseName = GLUE_DATABASE_NAME;
  public readonly tableName = GLUE_TABLE_NAME;

  constructor(scope: Construct, id: string, props: UsageLogCatalogProps) {
    super(scope, id);
    const catalogId = Stack.of(this).account;
    const location = `s3://${props.bucket.bucketName}/${props.logsPrefix}`;

    this.database = new glue.CfnDatabase(this, 'Database', {
      catalogId,
      databaseInput: {
        name: GLUE_DATABASE_NAME,
        description: 'bedrock-metering: exported token usage lines',
      },
    });

    this.table = new glue.CfnTable(this, 'TokenUsageLogs', {
      catalogId,
      databaseName: GLUE_DATABASE_NAME,
      tableInput: {
        name: GLUE_TABLE_NAME,
        description: 'One row per answered chat request (the usage lines of the chat function), one Parquet file per day',
        tableType: 'EXTERNAL_TABLE',
        parameters: {
          classification: 'parquet',
          EXTERNAL: 'TRUE',
          'projection.enabled': 'true',
          'projection.year.type': 'integer',
          'projection.year.range': `${props.firstYear ?? 2025},2099`,
          'projection.month.type': 'integer',
          'projection.month.range': '1,12',
          'projection.month.digits': '2',
          'projection.day.type': 'integer',
          'projection.day.range': '1,31',
          'projection.day.digits': '2',
          // Not a CloudFormation substitution: Athena fills ${year} etc. from the projected values.
          'storage.location.template': `${location}year=\${year}/month=\${month}/day=\${day}/`,
        },
        partitionKeys: [...PARTITION_KEYS],
        storageDescriptor: {
          location,
          columns: [...TOKEN_USAGE_COLUMNS],
          inputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat',
          outputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat',
          serdeInfo: {
            serializationLibrary: 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe',
            parameters: { 'serialization.format': '1' },
          },
          compressed: false,
          storedAsSubDirectories: false,
        },
      },
    });
    this.table.addResourceDependency(this.database);
  }
}
