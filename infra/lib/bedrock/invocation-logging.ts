/**
 * Bedrock model invocation logging to the analytics bucket: Bedrock's own record of every call, which the
 * gateway tags with the tenant, user, request id and request type (request metadata), so an auditor can
 * compare the bill with what AWS recorded (README "Bedrock invocation logs", scripts/reconcile
 * --with-bedrock-logs).
 *
 * The setting is account-wide: Bedrock keeps ONE logging configuration per account and region, and
 * CloudFormation has no resource for it. A custom resource calls PutModelInvocationLoggingConfiguration, but
 * first reads the current configuration: one that is not this stack's (another bucket or prefix, or CloudWatch
 * Logs) makes the deployment fail with an explanation, unless `overwriteExisting` is set. On delete it removes
 * the configuration only if it is still this stack's.
 *
 * Delivered: text and metadata only (no images, embeddings or video), under
 * `<prefix>AWSLogs/<account>/BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH/`, with a Glue table over it
 * (partition projection on the day folder).
 */
import { CustomResource, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as glue from 'aws-cdk-lib/aws-glue';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export const BEDROCK_LOGS_PREFIX = 'bedrock-invocation-logs/';
export const BEDROCK_LOGS_TABLE_NAME = 'bedrock_invocation_logs';

/** The columns Athena reads from Bedrock's records (the JSON SerDe matches keys case-insensitively). */
export const BEDROCK_LOG_COLUMNS: readonly glue.CfnTable.ColumnProperty[] = [
  { name: 'schematype', type: 'string' },
  { name: 'schemaversion', type: 'string' },
  { name: 'timestamp', type: 'string', comment: 'ISO 8601 UTC time of the invocation' },
  { name: 'accountid', type: 'string' },
  { name: 'region', type: 'string' },
  { name: 'requestid', type: 'string', comment: "Bedrock's request id (the gateway's is requestmetadata['request_id'])" },
  { name: 'operation', type: 'string', comment: 'Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream' },
  { name: 'modelid', type: 'string' },
  { name: 'identity', type: 'struct<arn:string>' },
  {
    name: 'input',
    type: 'struct<inputcontenttype:string,inputtokencount:bigint,cachereadinputtokencount:bigint,cachewriteinputtokencount:bigint>',
  },
  { name: 'output', type: 'struct<outputcontenttype:string,outputtokencount:bigint>' },
  { name: 'requestmetadata', type: 'map<string,string>', comment: 'tenant_id, user_id, request_id, request_type' },
  { name: 'errorcode', type: 'string' },
];

export interface BedrockInvocationLoggingProps {
  readonly bucket: s3.IBucket;
  /** The Glue database the table goes in. */
  readonly databaseName: string;
  readonly database: glue.CfnDatabase;
  /** Key prefix of the records, with a trailing slash. */
  readonly prefix?: string;
  /** Replace a logging configuration this stack did not make (default false: the deployment fails instead). */
  readonly overwriteExisting?: boolean;
  /** How long the records (which hold prompt and answer text) are kept. */
  readonly retention?: Duration;
  readonly logRetention: logs.RetentionDays;
}

/** The custom resource's handler: small enough to read here, no bundling step (the runtime's SDK v3). */
const HANDLER = `
const https = require('https');
const { BedrockClient, GetModelInvocationLoggingConfigurationCommand, PutModelInvocationLoggingConfigurationCommand,
  DeleteModelInvocationLoggingConfigurationCommand } = require('@aws-sdk/client-bedrock');
const bedrock = new BedrockClient({});

function describe(config) {
  if (!config) return 'none';
  const where = [];
  if (config.s3Config) where.push('s3://' + config.s3Config.bucketName + '/' + (config.s3Config.keyPrefix || ''));
  if (config.cloudWatchConfig) where.push('CloudWatch Logs group ' + config.cloudWatchConfig.logGroupName);
  return where.join(' and ') || 'a configuration without destination';
}

function isOurs(config, bucket, prefix) {
  return !!config && !!config.s3Config && config.s3Config.bucketName === bucket &&
    (config.s3Config.keyPrefix || '') === prefix && !config.cloudWatchConfig;
}

async function current() {
  const answer = await bedrock.send(new GetModelInvocationLoggingConfigurationCommand({}));
  return answer.loggingConfig;
}

async function apply(event) {
  const props = event.ResourceProperties;
  const bucket = props.BucketName, prefix = props.KeyPrefix;
  if (event.RequestType === 'Delete') {
    const existing = await current();
    if (isOurs(existing, bucket, prefix)) await bedrock.send(new DeleteModelInvocationLoggingConfigurationCommand({}));
    else console.log('left the logging configuration alone (not this stack\\'s): ' + describe(existing));
    return {};
  }
  const existing = await current();
  const ownedBefore = event.RequestType === 'Update' && isOurs(existing, event.OldResourceProperties.BucketName,
    event.OldResourceProperties.KeyPrefix);
  if (existing && !isOurs(existing, bucket, prefix) && !ownedBefore && props.OverwriteExisting !== 'true') {
    throw new Error('Bedrock model invocation logging is already configured in this account and region (' +
      describe(existing) + '). This stack does not replace it: deploy with -c bedrockInvocationLogging=false to keep it, ' +
      'or -c bedrockInvocationLoggingOverwrite=true to replace it with s3://' + bucket + '/' + prefix);
  }
  await bedrock.send(new PutModelInvocationLoggingConfigurationCommand({ loggingConfig: {
    s3Config: { bucketName: bucket, keyPrefix: prefix },
    textDataDeliveryEnabled: true, imageDataDeliveryEnabled: false,
    embeddingDataDeliveryEnabled: false, videoDataDeliveryEnabled: false,
  } }));
  return { Replaced: existing && !isOurs(existing, bucket, prefix) ? describe(existing) : 'none' };
}

function respond(event, status, reason, data) {
  const body = JSON.stringify({ Status: status, Reason: reason, PhysicalResourceId: 'bedrock-invocation-logging',
    StackId: event.StackId, RequestId: event.RequestId, LogicalResourceId: event.LogicalResourceId, Data: data });
  return new Promise((resolve, reject) => {
    const request = https.request(event.ResponseURL, { method: 'PUT',
      headers: { 'content-type': '', 'content-length': Buffer.byteLength(body) } }, (answer) => { answer.resume(); answer.on('end', resolve); });
    request.on('error', reject);
    request.end(body);
  });
}

exports.handler = async (event) => {
  try {
    const data = await apply(event);
    await respond(event, 'SUCCESS', 'ok', data);
  } catch (error) {
    console.error(error);
    await respond(event, 'FAILED', String(error && error.message || error).slice(0, 3000), {});
  }
};
`;

export class BedrockInvocationLogging extends Construct {
  public readonly prefix: string;
  public readonly table: glue.CfnTable;
  public readonly configuration: CustomResource;
  public readonly handler: lambda.Function;

  constructor(scope: Construct, id: string, props: BedrockInvocationLoggingProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.prefix = props.prefix ?? BEDROCK_LOGS_PREFIX;
    const recordsPrefix = `${this.prefix}AWSLogs/${stack.account}/BedrockModelInvocationLogs/`;

    // Bedrock writes the records itself, as the account's service principal, for this account only.
    props.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'BedrockInvocationLogsDelivery',
        principals: [new iam.ServicePrincipal('bedrock.amazonaws.com')],
        actions: ['s3:PutObject'],
        resources: [props.bucket.arnForObjects(`${recordsPrefix}*`)],
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnLike: { 'aws:SourceArn': `arn:${stack.partition}:bedrock:${stack.region}:${stack.account}:*` },
        },
      }),
    );
    if (props.bucket instanceof s3.Bucket) {
      props.bucket.addLifecycleRule({
        id: 'expire-bedrock-invocation-logs',
        prefix: this.prefix,
        expiration: props.retention ?? Duration.days(400),
      });
    }

    const logGroup = new logs.LogGroup(this, 'HandlerLogs', { retention: props.logRetention });
    const role = new iam.Role(this, 'HandlerRole', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: 'Reads and sets the Bedrock model invocation logging configuration of this account and region',
    });
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [logGroup.logGroupArn],
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [
          'bedrock:GetModelInvocationLoggingConfiguration',
          'bedrock:PutModelInvocationLoggingConfiguration',
          'bedrock:DeleteModelInvocationLoggingConfiguration',
        ],
        // These actions have no resource type: IAM only accepts "*" for them.
        resources: ['*'],
      }),
    );
    Validations.of(role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'The Bedrock model invocation logging configuration actions support no resource-level permissions (the ' +
        'configuration is one per account and region); the role allows only those three actions.',
    });
    Validations.of(role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::<${stack.getLogicalId(logGroup.node.defaultChild as logs.CfnLogGroup)}.Arn>]`,
      reason: "The handler writes its own log group's streams (the group ARN ends in :*).",
    });

    this.handler = new lambda.Function(this, 'Handler', {
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      handler: 'index.handler',
      code: lambda.Code.fromInline(HANDLER),
      timeout: Duration.minutes(1),
      role,
      logGroup,
      description: 'bedrock-metering: Bedrock model invocation logging to the analytics bucket (never replaces a foreign configuration silently)',
    });

    this.configuration = new CustomResource(this, 'Configuration', {
      serviceToken: this.handler.functionArn,
      resourceType: 'Custom::BedrockInvocationLogging',
      properties: {
        BucketName: props.bucket.bucketName,
        KeyPrefix: this.prefix,
        OverwriteExisting: props.overwriteExisting ? 'true' : 'false',
      },
    });
    // The bucket policy must exist before Bedrock checks it on Put.
    if (props.bucket.policy) this.configuration.node.addDependency(props.bucket.policy);

    const location = `s3://${props.bucket.bucketName}/${recordsPrefix}${stack.region}/`;
    this.table = new glue.CfnTable(this, 'Table', {
      catalogId: stack.account,
      databaseName: props.databaseName,
      tableInput: {
        name: BEDROCK_LOGS_TABLE_NAME,
        description: "Bedrock's own record of every model invocation in this account and region (model invocation logs)",
        tableType: 'EXTERNAL_TABLE',
        parameters: {
          classification: 'json',
          EXTERNAL: 'TRUE',
          'projection.enabled': 'true',
          'projection.day.type': 'date',
          'projection.day.format': 'yyyy/MM/dd',
          'projection.day.range': '2024/01/01,NOW',
          'projection.day.interval': '1',
          'projection.day.interval.unit': 'DAYS',
          // Not a CloudFormation substitution: Athena fills ${day} from the projected value.
          'storage.location.template': `${location}\${day}/`,
        },
        partitionKeys: [{ name: 'day', type: 'string', comment: 'YYYY/MM/DD (UTC), the delivery folder' }],
        storageDescriptor: {
          location,
          columns: [...BEDROCK_LOG_COLUMNS],
          inputFormat: 'org.apache.hadoop.mapred.TextInputFormat',
          outputFormat: 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat',
          serdeInfo: {
            serializationLibrary: 'org.openx.data.jsonserde.JsonSerDe',
            parameters: { 'ignore.malformed.json': 'true', 'case.insensitive': 'true' },
          },
          compressed: true,
          storedAsSubDirectories: true,
        },
      },
    });
    this.table.addResourceDependency(props.database);
  }
}
