/**
 * The Claude proxy's two DynamoDB tables, with the only grants its function needs (crates/claude-proxy:
 * api_keys.rs and rate_limits.rs hold the key schemas and every call).
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

export const KEYS_BY_OWNER_INDEX = 'gsi1';

export interface ProxyTableProps {
  readonly removalPolicy: RemovalPolicy;
}

/**
 * Gateway keys: `pk = KEY#<id>` holds the key's SHA-256 (never the key), tenant, user, name, creation and
 * revocation times; revoked items expire (`ttl`, 90 days later). Losing it would cut off every client at
 * once, hence point-in-time recovery.
 */
export class ApiKeyTable extends Construct {
  public readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string, props: ProxyTableProps) {
    super(scope, id);
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      // A key check per proxied request, a write per key created or revoked: on-demand costs nothing idle.
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: 'ttl',
      encryption: dynamodb.TableEncryption.DEFAULT,
      removalPolicy: props.removalPolicy,
    });
    // One user's keys (GET /v1/keys): gsi1pk = TENANT#<tenant>, gsi1sk = USER#<user>#KEY#<created_at>#<id>.
    this.table.addGlobalSecondaryIndex({
      indexName: KEYS_BY_OWNER_INDEX,
      partitionKey: { name: 'gsi1pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'gsi1sk', type: dynamodb.AttributeType.STRING },
      projectionType: dynamodb.ProjectionType.ALL,
    });
  }

  /**
   * As the proxy uses it: GetItem (check a key, strongly consistent), PutItem (create), UpdateItem (revoke)
   * on the table; Query on gsi1 only (list a user's keys) — the table itself is never queried.
   */
  public grantManageKeys(grantee: iam.IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'CheckAndManageGatewayKeys',
        actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'],
        resources: [this.table.tableArn],
      }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ListGatewayKeysOfUser',
        actions: ['dynamodb:Query'],
        resources: [`${this.table.tableArn}/index/${KEYS_BY_OWNER_INDEX}`],
      }),
    );
  }
}

/**
 * The rate-limit memory: `pk = LIMIT#<scope>` while a 429 from Anthropic is in force (`limited_until`), so
 * the next requests go straight to Bedrock; items expire an hour later (`ttl`).
 */
export class RateLimitTable extends Construct {
  public readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string, props: ProxyTableProps) {
    super(scope, id);
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      // Hour-long items need no recovery, but PITR is billed by table size (bytes here) and keeps every
      // table of the stack under the same rule (cdk-nag DDB3).
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: 'ttl',
      encryption: dynamodb.TableEncryption.DEFAULT,
      removalPolicy: props.removalPolicy,
    });
  }

  /** GetItem (is a 429 in force for this caller?) and PutItem (record one), nothing else. */
  public grantRememberLimits(grantee: iam.IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'RememberRateLimits',
        actions: ['dynamodb:GetItem', 'dynamodb:PutItem'],
        resources: [this.table.tableArn],
      }),
    );
  }
}
