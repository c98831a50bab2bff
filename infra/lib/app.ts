/**
 * Builds both stacks into an app; shared by bin/app.ts and the tests so they synthesize the same thing.
 */
import { App, Tags } from 'aws-cdk-lib';
import { BedrockMeteringStack } from './bedrock-metering-stack';
import { loadConfig, lookupFrom, MeteringConfig } from './config';
import { MeteringAnalyticsStack } from './metering-analytics-stack';

export const METERING_STACK_NAME = 'BedrockMeteringStack';
export const ANALYTICS_STACK_NAME = 'MeteringAnalyticsStack';

export interface MeteringApp {
  readonly config: MeteringConfig;
  readonly metering: BedrockMeteringStack;
  readonly analytics: MeteringAnalyticsStack;
}

export function buildApp(app: App, env: NodeJS.ProcessEnv = process.env): MeteringApp {
  const lookup = lookupFrom((key) => app.node.tryGetContext(key), env);
  const config = loadConfig(lookup);
  const region = (lookup('region') as string | undefined) ?? env.CDK_DEFAULT_REGION;
  const stackEnv = { account: env.CDK_DEFAULT_ACCOUNT, region };

  const metering = new BedrockMeteringStack(app, METERING_STACK_NAME, {
    env: stackEnv,
    description: 'bedrock-metering: Cognito, REST API, chat, usage and Claude proxy Lambdas, usage counters and gateway keys (DynamoDB)',
    config,
  });
  const analytics = new MeteringAnalyticsStack(app, ANALYTICS_STACK_NAME, {
    env: stackEnv,
    description: 'bedrock-metering: daily export of usage lines to S3, Glue table and Athena workgroup',
    config,
    usageLogGroups: metering.usageLogGroups,
    usageTable: metering.usageTable.table,
    operations: {
      restApiName: metering.api.restApi.restApiName,
      functions: [
        { label: 'chat', function: metering.chatApi.function },
        { label: 'usage', function: metering.usageApi.function },
        { label: 'proxy', function: metering.claudeProxy.proxy.function },
      ],
      proxyLogGroup: metering.claudeProxy.proxy.logGroup,
    },
  });
  analytics.addStackDependency(metering, 'exports the usage log groups of BedrockMeteringStack');
  Tags.of(app).add('project', 'bedrock-metering');
  return { config, metering, analytics };
}
