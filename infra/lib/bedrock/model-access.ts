/**
 * Which ARNs a role needs to call one Bedrock model, and the policy statement granting exactly that.
 *
 * - A foundation model id (`anthropic.claude-3-haiku-20240307-v1:0`) is invoked in the stack's region:
 *   `arn:<partition>:bedrock:<region>::foundation-model/<modelId>`.
 * - A cross-region inference profile id (`us.anthropic.claude-...`) is invoked through the profile in the
 *   stack's region, which routes the request to the foundation model in any of the profile's source regions:
 *   Bedrock authorizes the profile ARN and the foundation model ARN in each of those regions
 *   (https://docs.aws.amazon.com/bedrock/latest/userguide/cross-region-inference-prereq.html).
 */
import { Stack, Token, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { IConstruct } from 'constructs';

/**
 * Source regions of the geographic cross-region inference profiles, by id prefix. Profiles of different
 * models may cover fewer regions; a longer list only allows invoking the same model elsewhere. Override it
 * with the `inferenceProfileRegions` context key when AWS adds regions.
 */
export const INFERENCE_PROFILE_REGIONS: Readonly<Record<string, readonly string[]>> = {
  us: ['us-east-1', 'us-east-2', 'us-west-1', 'us-west-2'],
  'us-gov': ['us-gov-east-1', 'us-gov-west-1'],
  eu: ['eu-central-1', 'eu-central-2', 'eu-north-1', 'eu-south-1', 'eu-south-2', 'eu-west-1', 'eu-west-2', 'eu-west-3'],
  apac: [
    'ap-northeast-1', 'ap-northeast-2', 'ap-northeast-3', 'ap-south-1', 'ap-south-2',
    'ap-southeast-1', 'ap-southeast-2', 'ap-southeast-3', 'ap-southeast-4',
  ],
  jp: ['ap-northeast-1', 'ap-northeast-3'],
  au: ['ap-southeast-2', 'ap-southeast-4'],
  ca: ['ca-central-1', 'ca-west-1'],
  // Global profiles route to any commercial region; Bedrock names the model without a region there.
  global: ['*', ''],
};

export interface ModelTarget {
  readonly partition: string;
  /** The region the function calls Bedrock in (the stack's region, possibly a token). */
  readonly region: string;
  readonly account: string;
  /** Overrides INFERENCE_PROFILE_REGIONS for the model's profile. */
  readonly profileRegions?: readonly string[];
}

export interface ModelReference {
  /** The id as sent to Bedrock (BEDROCK_MODEL_ID). */
  readonly modelId: string;
  /** The foundation model behind it. */
  readonly foundationModelId: string;
  /** The inference profile prefix (`us`, `eu`, ...) or undefined for a plain foundation model. */
  readonly profilePrefix?: string;
}

export function parseModelId(modelId: string): ModelReference {
  if (modelId.startsWith('arn:')) {
    throw new Error(`modelId must be a model id or inference profile id, not an ARN: ${modelId}`);
  }
  const dot = modelId.indexOf('.');
  const prefix = dot > 0 ? modelId.slice(0, dot) : '';
  if (prefix in INFERENCE_PROFILE_REGIONS) {
    return { modelId, foundationModelId: modelId.slice(dot + 1), profilePrefix: prefix };
  }
  return { modelId, foundationModelId: modelId };
}

/** Every ARN `bedrock:InvokeModel*` must be allowed on to use `modelId`; never `*`. */
export function bedrockModelArns(modelId: string, target: ModelTarget): string[] {
  const model = parseModelId(modelId);
  const foundationModelArn = (region: string) =>
    `arn:${target.partition}:bedrock:${region}::foundation-model/${model.foundationModelId}`;
  if (model.profilePrefix === undefined) {
    return [foundationModelArn(target.region)];
  }
  const regions = target.profileRegions ?? INFERENCE_PROFILE_REGIONS[model.profilePrefix];
  return [
    `arn:${target.partition}:bedrock:${target.region}:${target.account}:inference-profile/${model.modelId}`,
    ...regions.map(foundationModelArn),
  ];
}

/** `bedrock:InvokeModel` covers Converse, `bedrock:InvokeModelWithResponseStream` covers ConverseStream. */
export function invokeModelStatement(modelId: string, target: ModelTarget): iam.PolicyStatement {
  return new iam.PolicyStatement({
    sid: 'InvokeConfiguredBedrockModel',
    actions: ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'],
    resources: bedrockModelArns(modelId, target),
  });
}

/** Every ARN of several models, without duplicates (profiles of one model share its foundation model ARNs). */
export function bedrockModelsArns(modelIds: readonly string[], target: ModelTarget): string[] {
  return [...new Set(modelIds.flatMap((modelId) => bedrockModelArns(modelId, target)))];
}

/**
 * cdk-nag flags the region wildcard of a `global.` profile's foundation model ARN (IAM5): acknowledge
 * exactly those ARNs on `role`, nothing broader.
 */
export function acknowledgeAnyRegionModelArns(role: IConstruct, arns: readonly string[]): void {
  for (const arn of arns.filter((candidate) => candidate.includes('*'))) {
    Validations.of(role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${spelledForNag(Stack.of(role), arn)}]`,
      reason: 'A global cross-region inference profile routes to the model in any region; Bedrock documents this ARN.',
    });
  }
}

/** cdk-nag spells unresolved pseudo parameters `<AWS::Partition>` etc. in its finding ids. */
export function spelledForNag(stack: Stack, arn: string): string {
  const pseudo: [string, string][] = [
    [stack.partition, '<AWS::Partition>'],
    [stack.region, '<AWS::Region>'],
    [stack.account, '<AWS::AccountId>'],
  ];
  return pseudo
    .filter(([value]) => Token.isUnresolved(value))
    .reduce((text, [value, spelled]) => text.split(value).join(spelled), arn);
}
