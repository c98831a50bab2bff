/**
 * MeteringAnalyticsStack: the daily export of usage lines to S3 and the Glue/Athena layer over it.
 */
import { CfnOutput, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { UsageAnalyticsWorkgroup } from './analytics/athena';
import { AnalyticsBucket, LOGS_PREFIX } from './analytics/bucket';
import { UsageLogCatalog } from './analytics/glue-catalog';
import { ExportAlarms } from './analytics/alarms';
import { BudgetAlerts } from './analytics/budget-alerts';
import { LogProcessor } from './analytics/log-processor';
import { ModelPricesView } from './analytics/model-prices';
import { BedrockInvocationLogging } from './bedrock/invocation-logging';
import { STREAM_FRESHNESS_LIMIT, UsageStream } from './analytics/usage-stream';
import { MeteringConfig } from './config';
import { DashboardFunction, OperationsDashboard } from './operations/dashboard';

export interface MeteringAnalyticsStackProps extends StackProps {
  readonly config: MeteringConfig;
  /** The log groups of BedrockMeteringStack holding the usage lines (cross-stack references). */
  readonly usageLogGroups: readonly logs.ILogGroup[];
  /** The usage counters' table of BedrockMeteringStack: the log processor rebuilds counters in it. */
  readonly usageTable?: dynamodb.ITable;
  /** What the operations dashboard watches in BedrockMeteringStack (no dashboard when absent). */
  readonly operations?: {
    readonly restApiName: string;
    readonly functions: readonly DashboardFunction[];
    readonly proxyLogGroup: logs.ILogGroup;
  };
}

export class MeteringAnalyticsStack extends Stack {
  public readonly analyticsBucket: AnalyticsBucket;
  public readonly catalog: UsageLogCatalog;
  public readonly workgroup: UsageAnalyticsWorkgroup;
  public readonly logProcessor: LogProcessor;
  public readonly modelPrices: ModelPricesView;
  public readonly alarms: ExportAlarms;
  public readonly budgetAlerts: BudgetAlerts;
  /** Bedrock's own record of the calls, when `bedrockInvocationLogging` is on. */
  public readonly invocationLogging?: BedrockInvocationLogging;
  /** Present in stream mode (`exportMode: "stream"`). */
  public readonly usageStream?: UsageStream;
  /** The gateway's CloudWatch dashboard (when `operations` is given). */
  public readonly operationsDashboard?: OperationsDashboard;

  constructor(scope: Construct, id: string, props: MeteringAnalyticsStackProps) {
    super(scope, id, props);
    const { config } = props;
    const removalPolicy = config.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    this.analyticsBucket = new AnalyticsBucket(this, 'Analytics', { removalPolicy });
    const bucket = this.analyticsBucket.bucket;

    this.catalog = new UsageLogCatalog(this, 'Catalog', { bucket, logsPrefix: LOGS_PREFIX });
    this.workgroup = new UsageAnalyticsWorkgroup(this, 'Athena', {
      bucket,
      bytesScannedCutoffPerQuery: config.athenaBytesScannedCutoffBytes,
    });
    this.logProcessor = new LogProcessor(this, 'LogProcessor', {
      usageLogGroups: props.usageLogGroups,
      bucket,
      logsPrefix: LOGS_PREFIX,
      assetDir: config.lambdaAssetDir,
      logRetention: config.logRetention,
      removalPolicy,
      usageTable: props.usageTable,
      scheduled: config.exportMode === 'daily',
    });
    if (config.exportMode === 'stream') {
      this.usageStream = new UsageStream(this, 'UsageStream', {
        usageLogGroups: props.usageLogGroups,
        bucket,
        logsPrefix: LOGS_PREFIX,
        table: this.catalog.table,
        databaseName: this.catalog.databaseName,
        tableName: this.catalog.tableName,
        logRetention: config.logRetention,
        removalPolicy,
      });
    }

    this.modelPrices = new ModelPricesView(this, 'ModelPrices', { database: this.catalog.database });
    this.alarms = new ExportAlarms(this, 'ExportAlarms', {
      processor: this.logProcessor.processor.function,
      deadLetterQueue: this.logProcessor.deadLetterQueue,
      stream: this.usageStream && { streamName: this.usageStream.streamName, freshnessLimit: STREAM_FRESHNESS_LIMIT },
    });
    if (props.operations) {
      this.operationsDashboard = new OperationsDashboard(this, 'Operations', {
        restApiName: props.operations.restApiName,
        functions: [
          ...props.operations.functions,
          { label: 'log processor', function: this.logProcessor.processor.function },
        ],
        usageLogGroups: props.usageLogGroups,
        proxyLogGroup: props.operations.proxyLogGroup,
        exportLogGroup: this.logProcessor.processor.logGroup,
        alarms: this.alarms.alarms,
      });
      new CfnOutput(this, 'OperationsDashboardName', {
        value: this.operationsDashboard.dashboard.dashboardName,
        description: "CloudWatch dashboard of the gateway's health",
      });
    }
    if (config.bedrockInvocationLogging.enabled) {
      this.invocationLogging = new BedrockInvocationLogging(this, 'BedrockInvocationLogging', {
        bucket,
        database: this.catalog.database,
        databaseName: this.catalog.databaseName,
        overwriteExisting: config.bedrockInvocationLogging.overwriteExisting,
        logRetention: config.logRetention,
      });
      new CfnOutput(this, 'BedrockInvocationLogsPrefix', {
        value: this.invocationLogging.prefix,
        description: "Where Bedrock's model invocation logs land in the analytics bucket (scripts/reconcile --with-bedrock-logs)",
      });
    }
    this.budgetAlerts = new BudgetAlerts(this, 'BudgetAlerts', { topic: this.alarms.alertsTopic, email: config.budgetAlertEmail });
    new CfnOutput(this, 'AlertsTopicArn', { value: this.alarms.alertsTopic.topicArn, description: 'SNS topic of the export alarms (subscribe to be told); for budget alerts too' });
    new CfnOutput(this, 'AnalyticsBucketName', { value: bucket.bucketName, description: 'Exports under logs/, Athena results under athena-results/' });
    new CfnOutput(this, 'LogProcessorFunctionName', { value: this.logProcessor.processor.function.functionName, description: 'Daily export Lambda (invoke it to export a day now)' });
    new CfnOutput(this, 'LogProcessorLogGroupName', { value: this.logProcessor.processor.logGroup.logGroupName, description: 'Log group of the export Lambda' });
    new CfnOutput(this, 'AthenaWorkgroupName', { value: this.workgroup.workgroupName, description: 'Athena workgroup to query the exports in' });
    new CfnOutput(this, 'GlueDatabaseName', { value: this.catalog.databaseName, description: 'Glue database of the exports' });
    if (this.usageStream) {
      new CfnOutput(this, 'UsageStreamName', { value: this.usageStream.streamName, description: 'Firehose stream writing the usage lines to logs/ (exportMode stream)' });
    }
    new CfnOutput(this, 'GlueTableName', { value: this.catalog.tableName, description: 'Glue table of the exports (partitioned by year, month, day)' });
  }
}
