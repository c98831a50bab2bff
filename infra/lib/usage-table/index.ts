/**
 * The usage counters: one item per tenant, period (day or ISO week), request type and model, incremented by
 * the chat and proxy functions with `ADD` updates in one idempotent `TransactWriteItems` (with a
 * `COUNTED#<batch id>` marker item; README "Usage counters in DynamoDB") and read by the usage function with
 * `Query`.
 */
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

export const USAGE_BY_PERIOD_INDEX = 'gsi1';
/** The `pk` prefix of the tenant registry's items (crates/metering-core/src/tenant_registry.rs). */
export const TENANT_REGISTRY_PARTITION_PREFIX = 'TENANT_ID#';
/** The `pk` prefix of counter items (`TENANT#<tenant_id>`). */
export const COUNTER_PARTITION_PREFIX = 'TENANT#';
/** The `pk` prefix of the idempotency markers the counter transactions put (crates/metering-core/src/counters.rs). */
export const COUNTER_MARKER_PARTITION_PREFIX = 'COUNTED#';
/** Tenant limits (`sk = CONFIG` or `KEY#<key_id>`), README "Budgets and quotas". */
export const LIMITS_PARTITION_PREFIX = 'LIMITS#';
/** Budget use counters (reserved and settled) per tenant or key and period. */
export const BUDGET_PARTITION_PREFIX = 'BUDGET#';
/** Alert markers: one item per threshold, budget and period, so each alert is sent once. */
export const BUDGET_ALERT_PARTITION_PREFIX = 'BUDGETALERT#';
/** Operation markers: one item per reservation or settlement, put in its transaction so a retry applies once. */
export const BUDGET_OPERATION_PARTITION_PREFIX = 'BUDGETOP#';

export interface UsageTableProps {
  readonly removalPolicy: RemovalPolicy;
}

export class UsageTable extends Construct {
  public readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string, props: UsageTableProps) {
    super(scope, id);
    this.table = new dynamodb.Table(this, 'Table', {
      // pk = TENANT#<tenant_id>, sk = DAY#<date>#<request_type>#<model_id> | WEEK#<week>#...
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
      // Traffic follows tenants' chats: on-demand costs nothing while idle.
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      // Counters expire by themselves (USAGE_DAILY_TTL_DAYS / USAGE_WEEKLY_TTL_DAYS of the chat function).
      timeToLiveAttribute: 'ttl',
      // Encrypted at rest with an AWS owned key: no KMS request charges on every counter update.
      encryption: dynamodb.TableEncryption.DEFAULT,
      removalPolicy: props.removalPolicy,
    });
    // All tenants of one period (the admin view): gsi1pk = DAY#<date> | WEEK#<week>.
    this.table.addGlobalSecondaryIndex({
      indexName: USAGE_BY_PERIOD_INDEX,
      partitionKey: { name: 'gsi1pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'gsi1sk', type: dynamodb.AttributeType.STRING },
      projectionType: dynamodb.ProjectionType.ALL,
    });
  }

  /**
   * The metering functions only increment counters: a `TransactWriteItems` needs the permission of each of its
   * actions, so UpdateItem on the counter partitions (`TENANT#*`) and PutItem on the marker partitions
   * (`COUNTED#*`), on the table, not on its index.
   */
  public grantIncrementCounters(grantee: iam.IGrantable): void {
    const onPartitions = (prefix: string) => ({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${prefix}*`] } });
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'IncrementUsageCounters',
        actions: ['dynamodb:UpdateItem'],
        resources: [this.table.tableArn],
        conditions: onPartitions(COUNTER_PARTITION_PREFIX),
      }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'PutCounterMarkers',
        actions: ['dynamodb:PutItem'],
        resources: [this.table.tableArn],
        conditions: onPartitions(COUNTER_MARKER_PARTITION_PREFIX),
      }),
    );
  }

  /**
   * The tenant registry (`pk = TENANT_ID#<lowercased id>`): every function that turns Cognito claims into a
   * tenant looks its id up (GetItem) and registers it on first sight (conditional PutItem), and may touch no
   * other item with these actions: `dynamodb:LeadingKeys` holds them to the registry's partitions.
   */
  public grantTenantRegistry(grantee: iam.IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'LookUpAndRegisterTenants',
        actions: ['dynamodb:GetItem', 'dynamodb:PutItem'],
        resources: [this.table.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${TENANT_REGISTRY_PARTITION_PREFIX}*`] } },
      }),
    );
  }

  /**
   * Enforcing limits (chat and proxy functions): read the limits (GetItem, BatchGetItem on `LIMITS#*`),
   * reserve and settle use (TransactWriteItems of UpdateItem, BatchGetItem on `BUDGET#*`, with one marker put on
   * `BUDGETOP#*` that makes each transaction apply once), and write or remove alert markers (PutItem, DeleteItem
   * on `BUDGETALERT#*`); plus PutEvents on the default event bus.
   */
  public grantEnforceLimits(grantee: iam.IGrantable): void {
    const onPartitions = (prefix: string) => ({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${prefix}*`] } });
    const principal = grantee.grantPrincipal;
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadTenantLimits',
        actions: ['dynamodb:GetItem', 'dynamodb:BatchGetItem'],
        resources: [this.table.tableArn],
        conditions: onPartitions(LIMITS_PARTITION_PREFIX),
      }),
    );
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReserveAndSettleBudgets',
        actions: ['dynamodb:UpdateItem', 'dynamodb:BatchGetItem'],
        resources: [this.table.tableArn],
        conditions: onPartitions(BUDGET_PARTITION_PREFIX),
      }),
    );
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'PutBudgetOperationMarkers',
        actions: ['dynamodb:PutItem'],
        resources: [this.table.tableArn],
        conditions: onPartitions(BUDGET_OPERATION_PARTITION_PREFIX),
      }),
    );
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'MarkBudgetAlerts',
        actions: ['dynamodb:PutItem', 'dynamodb:DeleteItem'],
        resources: [this.table.tableArn],
        conditions: onPartitions(BUDGET_ALERT_PARTITION_PREFIX),
      }),
    );
    const stack = Stack.of(this);
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'SendBudgetAlerts',
        actions: ['events:PutEvents'],
        resources: [stack.formatArn({ service: 'events', resource: 'event-bus', resourceName: 'default' })],
      }),
    );
  }

  /** The usage function serves the limits API: reads and writes `LIMITS#*`, reads `BUDGET#*`. */
  public grantManageLimits(grantee: iam.IGrantable): void {
    const onPartitions = (prefix: string) => ({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${prefix}*`] } });
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ManageTenantLimits',
        actions: ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:PutItem', 'dynamodb:DeleteItem'],
        resources: [this.table.tableArn],
        conditions: onPartitions(LIMITS_PARTITION_PREFIX),
      }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadBudgetUse',
        actions: ['dynamodb:BatchGetItem'],
        resources: [this.table.tableArn],
        conditions: onPartitions(BUDGET_PARTITION_PREFIX),
      }),
    );
  }

  /** The usage function only reads counters: Query on the table and on gsi1, nothing else. */
  public grantQueryCounters(grantee: iam.IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'QueryUsageCounters',
        actions: ['dynamodb:Query'],
        resources: [this.table.tableArn, `${this.table.tableArn}/index/${USAGE_BY_PERIOD_INDEX}`],
      }),
    );
  }
}
