/**
 * The Athena workgroup operators query the exports in: its settings are enforced (clients cannot send results
 * elsewhere or lift the cutoff), results land encrypted under `athena-results/`, and the example queries are
 * installed as its named queries, with the monthly statement's (scripts/statement).
 */
import * as athena from 'aws-cdk-lib/aws-athena';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { ATHENA_RESULTS_PREFIX } from './bucket';
import { EXAMPLE_QUERIES, GLUE_DATABASE_NAME } from './example-queries';
import { MONTHLY_STATEMENT } from './statement-query';

export const ATHENA_WORKGROUP_NAME = 'bedrock-metering-workgroup';

export interface UsageAnalyticsWorkgroupProps {
  readonly bucket: s3.IBucket;
  /** A query scanning more is cancelled (and billed for what it scanned): guards against runaway costs. */
  readonly bytesScannedCutoffPerQuery: number;
}

export class UsageAnalyticsWorkgroup extends Construct {
  public readonly workgroup: athena.CfnWorkGroup;
  public readonly namedQueries: athena.CfnNamedQuery[];
  public readonly workgroupName = ATHENA_WORKGROUP_NAME;

  constructor(scope: Construct, id: string, props: UsageAnalyticsWorkgroupProps) {
    super(scope, id);

    this.workgroup = new athena.CfnWorkGroup(this, 'Workgroup', {
      name: ATHENA_WORKGROUP_NAME,
      description: 'bedrock-metering: queries over the exported token usage (bedrock_metering_db)',
      state: 'ENABLED',
      // `cdk destroy` must be able to delete the workgroup even after queries ran in it.
      recursiveDeleteOption: true,
      workGroupConfiguration: {
        enforceWorkGroupConfiguration: true,
        publishCloudWatchMetricsEnabled: true,
        bytesScannedCutoffPerQuery: props.bytesScannedCutoffPerQuery,
        engineVersion: { selectedEngineVersion: 'Athena engine version 3' },
        resultConfiguration: {
          outputLocation: props.bucket.s3UrlForObject(ATHENA_RESULTS_PREFIX),
          encryptionConfiguration: { encryptionOption: 'SSE_S3' },
        },
      },
    });

    this.namedQueries = [...EXAMPLE_QUERIES, MONTHLY_STATEMENT].map((query) => {
      const namedQuery = new athena.CfnNamedQuery(this, query.id, {
        name: query.name,
        description: query.description,
        database: GLUE_DATABASE_NAME,
        queryString: query.sql,
        workGroup: this.workgroup.ref,
      });
      return namedQuery;
    });
  }
}
